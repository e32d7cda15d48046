from django.apps import AppConfig


class AgentsAppConfig(AppConfig):
    name = "agents_app"
    verbose_name = "Agents"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import providers
        from .api import schema_extensions  # noqa: F401  (registers them with drf-spectacular)

        providers.configure_tracing()
