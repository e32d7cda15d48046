from django.apps import AppConfig


class TokensAppConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "tokens_app"
    verbose_name = "API tokens"
