"""drf-spectacular extensions for this project's own classes (registered when imported, by
AgentsAppConfig.ready)."""

from django.conf import settings
from drf_spectacular.extensions import OpenApiAuthenticationExtension, OpenApiSerializerFieldExtension

from ..registry import all_specs
from ..text import NOT_BLANK
from .serializers import CONTENT_PARTS, INPUT_ITEM_FIELDS, ROLES


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
                {
                    "type": "string",
                    "description": "The user's message (not only white space).",
                    "minLength": 1,
                    "maxLength": settings.AGENTS_MAX_INPUT_CHARS,
                    "pattern": NOT_BLANK,
                },
                {
                    "type": "array",
                    "description": "Input items: messages ({role, content}) or function_call, "
                    "function_call_output, reasoning items; AGENTS_MAX_INPUT_CHARS bounds them all.",
                    "minItems": 1,
                    "maxItems": settings.AGENTS_MAX_INPUT_ITEMS,
                    "items": {"oneOf": INPUT_ITEMS},
                },
            ]
        }


class MemoryAgentFieldSchema(OpenApiSerializerFieldExtension):
    target_class = "agents_app.api.serializers.MemoryAgentField"

    def map_serializer_field(self, auto_schema, direction):
        return {"type": "string", "enum": [spec.slug for spec in all_specs() if spec.uses_memory]}


def _item(kind: str, fields: dict) -> dict:
    """An input item of type `kind` with its fields (a message's `type` may be left out). Any
    item with a role or a content has one a message could have."""
    kinds = {"type": "string", "enum": [kind]}
    properties = {"type": kinds, "role": ROLE, "content": CONTENT}
    for name, json_type in fields.items():
        properties.setdefault(name, JSON_SCHEMAS[json_type])
    return {
        "type": "object",
        "properties": properties,
        "required": [*([] if kind == "message" else ["type"]), *fields],
        "additionalProperties": True,
    }


ROLE = {"type": "string", "enum": list(ROLES)}
# serializers.JSON_TYPES as schemas.
JSON_SCHEMAS = {
    "string": {"type": "string"},
    "array": {"type": "array"},
    "string or array": {"oneOf": [{"type": "string"}, {"type": "array"}]},
}


def _part(kind: str, field: str | None) -> dict:
    part = {
        "type": "object",
        "properties": {"type": {"type": "string", "enum": [kind]}},
        "required": ["type"],
    }
    if field:
        part["properties"][field] = {"type": "string"}
        part["required"].append(field)
    return part


CONTENT = {
    "oneOf": [
        {"type": "string"},
        {"type": "array", "items": {"oneOf": [_part(kind, field) for kind, field in CONTENT_PARTS.items()]}},
    ]
}
INPUT_ITEMS = [_item(kind, fields) for kind, fields in INPUT_ITEM_FIELDS.items()]
