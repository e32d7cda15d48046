"""drf-spectacular extensions for this project's own classes (registered when imported, by
AgentsAppConfig.ready)."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension, OpenApiSerializerFieldExtension


class TokenScheme(OpenApiAuthenticationExtension):
    """An API token (tokens_app) sent as `Authorization: Token <key>`."""

    target_class = "tokens_app.auth.ApiTokenAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "An API token, as `Token <key>` (create one at /account/ or POST /api/tokens/).",
        }


class BearerTokenScheme(OpenApiAuthenticationExtension):
    """The same API token sent as `Authorization: Bearer <key>`."""

    target_class = "tokens_app.auth.BearerTokenAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "An API token, as `Bearer <key>`."}


class RunInputFieldSchema(OpenApiSerializerFieldExtension):
    """A run's `input`: text, or a list of input items."""

    target_class = "agents_app.api.serializers.RunInputField"

    def map_serializer_field(self, auto_schema, direction):
        return {
            "oneOf": [
                {"type": "string", "description": "The user's message."},
                {
                    "type": "array",
                    "description": "Input items: messages ({role, content}) or function_call, "
                    "function_call_output, reasoning items.",
                    "items": {"type": "object", "additionalProperties": True},
                },
            ]
        }
