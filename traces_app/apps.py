from django.apps import AppConfig


class TracesAppConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "traces_app"
    verbose_name = "Traces"
