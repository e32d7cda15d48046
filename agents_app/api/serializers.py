"""Request validation and response shapes of the REST API."""

from django.conf import settings
from rest_framework import serializers

from ..errors import NotFound
from ..models import Conversation, ConversationItem, Run, RunEvent
from ..registry import AgentSpec, all_specs, get_spec, slugs
from ..runs.start import IF_BUSY, RunRequest
from ..text import blank

EVENT_SETS = ("standard", "full")
# The input items a run accepts, by type, with the fields each needs and their JSON types.
INPUT_ITEM_FIELDS = {
    "message": {"role": "string", "content": "string or array"},
    "function_call": {"call_id": "string", "name": "string", "arguments": "string"},
    "function_call_output": {"call_id": "string", "output": "string or array"},
    "reasoning": {"summary": "array"},
}
JSON_TYPES = {"string": str, "array": list, "string or array": str | list}
ROLES = ("user", "assistant", "system", "developer")
# The parts a message's content list may hold, by type, with the text field each needs.
CONTENT_PARTS = {
    "input_text": "text",
    "output_text": "text",
    "refusal": "refusal",
    "input_image": None,
    "input_file": None,
    "input_audio": None,
}


def spec_or_404(slug) -> AgentSpec:
    """The agent a request names, or a 404 listing the agents there are."""
    spec = get_spec(slug) if isinstance(slug, str) else None
    if spec is None:
        raise NotFound(f"unknown agent {slug!r}", agents=slugs())
    return spec


def validate_run_input(value):
    """A non-empty string, or a non-empty list of SDK input items (dicts), within the size limit."""
    limit = settings.AGENTS_MAX_INPUT_CHARS
    if isinstance(value, str):
        if blank(value):
            raise serializers.ValidationError("input must not be empty")
        if len(value) > limit:
            raise serializers.ValidationError(f"input is longer than {limit} characters")
        return value
    if isinstance(value, list):
        if not value:
            raise serializers.ValidationError("input list must not be empty")
        if len(value) > settings.AGENTS_MAX_INPUT_ITEMS:
            raise serializers.ValidationError(
                f"input has {len(value)} items, more than the limit of {settings.AGENTS_MAX_INPUT_ITEMS}"
            )
        if not all(isinstance(item, dict) for item in value):
            raise serializers.ValidationError("every input item must be an object")
        for item in value:
            # A message (role and content) or an item a conversation's history holds (a tool call
            # and its output, reasoning): anything else fails at the model, after it was saved to
            # the conversation's memory.
            kind = item.get("type", "message" if "role" in item else None)
            if not isinstance(kind, str) or kind not in INPUT_ITEM_FIELDS:
                raise serializers.ValidationError(
                    f"input items are messages (role and content) or of type {', '.join(INPUT_ITEM_FIELDS)}; "
                    f"not {kind!r}"
                )
            fields = INPUT_ITEM_FIELDS[kind]
            missing = [name for name in fields if name not in item]
            if missing:
                raise serializers.ValidationError(f"a {kind} input item needs {', '.join(missing)}")
            for name, json_type in fields.items():
                if not isinstance(item[name], JSON_TYPES[json_type]):
                    raise serializers.ValidationError(f"a {kind} input item's {name} must be a {json_type}")
            if "content" in item:
                check_content(item["content"])
            if "role" in item and item["role"] not in ROLES:
                raise serializers.ValidationError(f"unknown role {item['role']!r}")
        if len(str(value)) > limit:
            raise serializers.ValidationError(f"input is larger than {limit} characters")
        return value
    raise serializers.ValidationError("input must be a string or a list of input items")


def check_content(content) -> None:
    """A message's content: text, or a list of content parts (CONTENT_PARTS)."""
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise serializers.ValidationError("input item content must be a string or a list")
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if not isinstance(kind, str) or kind not in CONTENT_PARTS:
            raise serializers.ValidationError(
                f"content parts are objects of type {', '.join(CONTENT_PARTS)}; not {kind!r}"
            )
        field = CONTENT_PARTS[kind]
        if field and not isinstance(part.get(field), str):
            raise serializers.ValidationError(f"a {kind} content part needs its {field} (a string)")


class Text(serializers.CharField):
    """A string field that takes strings only (DRF's CharField turns a number into its text)."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class RunInputField(serializers.Field):
    def to_internal_value(self, data):
        return validate_run_input(data)

    def to_representation(self, value):
        return value


class RunRequestSerializer(serializers.Serializer):
    input = RunInputField()
    context = serializers.DictField(required=False, default=dict)
    # null is the same as leaving the field out (clients send `"conversation_id": null` for "new").
    session_id = Text(required=False, allow_null=True, min_length=1, max_length=128, allow_blank=False)
    conversation_id = serializers.UUIDField(required=False, allow_null=True)
    on_disconnect = serializers.ChoiceField(choices=["continue", "cancel"], default="continue")
    # What a message to a conversation with an active run does: 409 (reject), wait its turn
    # (enqueue), or cancel the active run and start (interrupt).
    if_busy = serializers.ChoiceField(choices=list(IF_BUSY), default="reject")
    # Which raw model events the stream carries: those with text or arguments (`standard`), or
    # all of them (`full`, the reference server's stream; the default on /chat/stream and
    # /assistant/stream).
    events = serializers.ChoiceField(choices=list(EVENT_SETS), required=False)

    def validate_context(self, value):
        if len(str(value)) > 8_000:
            raise serializers.ValidationError("context is too large")
        return value

    def validate(self, attrs):
        if attrs.get("session_id") and attrs.get("conversation_id"):
            raise serializers.ValidationError("give session_id or conversation_id, not both")
        return attrs


def parse_run_request(request) -> dict:
    """A run request's body, validated (a DRF ValidationError names what is wrong)."""
    if not isinstance(request.data, dict):
        raise serializers.ValidationError({"non_field_errors": ["the request body must be a JSON object"]})
    serializer = RunRequestSerializer(data=request.data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def run_request(
    user, spec, data: dict, on_disconnect: str | None = None, events: str = "standard"
) -> RunRequest:
    """The engine's RunRequest for a validated run request body (`events`: the event set when
    the body names none)."""
    return RunRequest(
        user=user,
        spec=spec,
        input=data["input"],
        context=data.get("context") or {},
        conversation_id=data.get("conversation_id"),
        session_key=data.get("session_id"),
        on_disconnect=on_disconnect or data["on_disconnect"],
        if_busy=data["if_busy"],
        options={"events": "full"} if data.get("events", events) == "full" else {},
    )


class CancelRequestSerializer(serializers.Serializer):
    mode = serializers.ChoiceField(choices=["immediate", "after_turn"], default="immediate")


class RunSerializer(serializers.ModelSerializer):
    usage = serializers.DictField(read_only=True)
    duration = serializers.FloatField(read_only=True, allow_null=True)

    class Meta:
        model = Run
        fields = [
            "id",
            "agent",
            "conversation",
            "input",
            "status",
            "final_output",
            "error",
            "error_code",
            "provider",
            "model",
            "response_id",
            "usage",
            "current_turn",
            "created_at",
            "started_at",
            "finished_at",
            "duration",
            "cancel_requested_at",
        ]
        read_only_fields = fields


class ConversationSerializer(serializers.ModelSerializer):
    title = Text(max_length=200, required=False, allow_blank=True)

    class Meta:
        model = Conversation
        fields = ["id", "agent", "title", "session_key", "created_at", "updated_at"]
        read_only_fields = ["id", "agent", "session_key", "created_at", "updated_at"]


class MemoryAgentField(Text):
    """The slug of an agent that keeps memory (the schema lists them)."""


class ConversationCreateSerializer(serializers.Serializer):
    """A new, empty conversation with an agent that keeps memory; titled by its first message
    unless a title is given."""

    agent = MemoryAgentField(max_length=64)
    title = Text(max_length=200, required=False, allow_blank=True, default="")

    def validate(self, attrs):
        # Refused, not ignored: a misspelt `title` would otherwise make an untitled conversation.
        unknown = sorted(set(self.initial_data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError({name: ["unknown field"] for name in unknown})
        return attrs

    def validate_agent(self, value):
        spec = get_spec(value)
        if spec is None or not spec.uses_memory:
            names = ", ".join(s.slug for s in all_specs() if s.uses_memory)
            raise serializers.ValidationError(f"unknown agent {value!r}: one of {names}")
        return value


class ConversationItemSerializer(serializers.ModelSerializer):
    class Meta:
        model = ConversationItem
        fields = ["id", "data", "created_at"]


class RunEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = RunEvent
        fields = ["seq", "type", "data", "created_at"]
