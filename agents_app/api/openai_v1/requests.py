"""Reading OpenAI-shaped requests: which agent (`model`), what input, and a 400 naming every
field the agents cannot honour.

The agents run their own tools on the server, with the model and settings their definition
gives them, so a client's own `tools`, sampling settings or extra choices would be silently
ignored: they are refused instead, naming the field. Fields that change nothing here (`user`,
`metadata`, `store` on chat completions, `parallel_tool_calls` without tools...) are accepted.
A field sent as null counts as absent, as clients send unset options that way."""

from typing import Any

from rest_framework.exceptions import ValidationError

from ...registry import AgentSpec, all_specs, get_spec
from ..serializers import validate_run_input
from .errors import OpenAIError

# Fields about the model's sampling or shape that the server's agent settings decide.
FIXED_SETTINGS = (
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "max_output_tokens",
    "max_tool_calls",
    "frequency_penalty",
    "presence_penalty",
    "seed",
    "stop",
    "logit_bias",
    "top_logprobs",
    "reasoning_effort",
    "reasoning",
    "verbosity",
    "service_tier",
    "prediction",
    "audio",
    "web_search_options",
    "prompt",
    "conversation",
    "prompt_cache_key",
    "safety_identifier",
)
CHAT_FIELDS = {"model", "messages", "stream", "stream_options", "user", "metadata", "store", "n", "tools"}
CHAT_FIELDS |= {"tool_choice", "parallel_tool_calls", "response_format", "logprobs", "modalities"}
RESPONSES_FIELDS = {"model", "input", "instructions", "stream", "stream_options", "background", "store"}
RESPONSES_FIELDS |= {"previous_response_id", "metadata", "user", "include", "tools", "tool_choice"}
RESPONSES_FIELDS |= {"parallel_tool_calls", "text", "truncation"}
CONTENT_PARTS = ("input_text", "input_image", "output_text", "refusal")


def refuse(param: str, why: str) -> OpenAIError:
    return OpenAIError(400, f"{param}: {why}", param=param, code="unsupported_parameter")


def body_object(body: Any) -> dict:
    if not isinstance(body, dict):
        raise OpenAIError(400, "the request body must be a JSON object", code="invalid_json")
    return {key: value for key, value in body.items() if value is not None}


def chat_models() -> list[AgentSpec]:
    """The agents offered as models: those that answer in text. A pipeline (research) answers
    with a structured report built by several inner agents, whose text is not an answer."""
    return [spec for spec in all_specs() if spec.pipeline is None]


def agent_for(body: dict) -> AgentSpec:
    """The agent a request names as its `model` (a 404 `model_not_found` otherwise)."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise OpenAIError(400, "model: required, the slug of an agent (GET /v1/models)", param="model")
    spec = get_spec(model)
    if spec is not None and spec.pipeline is not None:
        raise OpenAIError(
            404,
            f"`{model}` is not a chat model: its answer is a stored report (use /api/research/)",
            param="model",
            code="model_not_found",
        )
    if spec is None:
        names = ", ".join(s.slug for s in chat_models())
        raise OpenAIError(
            404,
            f"The model `{model}` does not exist: the models are {names}",
            param="model",
            code="model_not_found",
        )
    return spec


def check_fields(body: dict, allowed: set[str]) -> None:
    for key in body:
        if key in FIXED_SETTINGS:
            raise refuse(key, "the agent's model and its settings are chosen by this server")
        if key not in allowed:
            raise refuse(key, "not supported by this server's agents")
    if body.get("tools"):
        raise refuse(
            "tools", "the agents run their own tools on the server; client-side tools are not supported"
        )
    if body.get("tool_choice") not in (None, "auto", "none"):
        raise refuse("tool_choice", "only 'auto' or 'none': the agents choose their own tools")
    for flag in ("stream", "background", "store", "logprobs"):
        if flag in body and not isinstance(body[flag], bool):
            raise OpenAIError(400, f"{flag}: must be true or false", param=flag)
    check_metadata(body.get("metadata"))


# OpenAI's bounds on `metadata`: up to 16 pairs, keys up to 64 characters, string values up to 512.
METADATA_PAIRS, METADATA_KEY, METADATA_VALUE = 16, 64, 512


def check_metadata(metadata) -> None:
    """`metadata` as OpenAI bounds it, or a 400 in its error shape naming the problem."""
    if metadata is None:
        return
    if not isinstance(metadata, dict):
        raise OpenAIError(400, "metadata: must be an object", param="metadata")
    if len(metadata) > METADATA_PAIRS:
        raise OpenAIError(400, f"metadata: at most {METADATA_PAIRS} key-value pairs", param="metadata")
    for key, value in metadata.items():
        if len(key) > METADATA_KEY:
            raise OpenAIError(400, f"metadata: keys are at most {METADATA_KEY} characters", param="metadata")
        if not isinstance(value, str) or len(value) > METADATA_VALUE:
            why = f"must be a string of at most {METADATA_VALUE} characters"
            raise OpenAIError(400, f"metadata.{key}: {why}", param=f"metadata.{key}")


def chat_options(body: dict) -> dict:
    """The chat completion request's own options, checked (`stream`, `include_usage`)."""
    check_fields(body, CHAT_FIELDS)
    if body.get("n", 1) != 1:
        raise refuse("n", "only one choice per request (n=1)")
    if body.get("logprobs"):
        raise refuse("logprobs", "log probabilities are not available")
    if body.get("response_format", {"type": "text"}) != {"type": "text"}:
        raise refuse("response_format", "the agent's output type is fixed by its definition")
    if body.get("modalities", ["text"]) != ["text"]:
        raise refuse("modalities", "only text")
    options = body.get("stream_options", {})
    if not isinstance(options, dict):
        raise OpenAIError(400, "stream_options: must be an object", param="stream_options")
    return {"stream": body.get("stream", False), "include_usage": bool(options.get("include_usage"))}


def _text_parts(content: Any, param: str, image_ok: bool) -> str | list[dict]:
    """Chat message content -> Responses input content (text, or parts)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise OpenAIError(400, f"{param}: must be a string or a list of content parts", param=param)
    parts: list[dict] = []
    for index, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            parts.append({"type": "input_text", "text": part["text"]})
        elif kind == "image_url" and image_ok and isinstance(part.get("image_url"), dict):
            parts.append({"type": "input_image", "image_url": part["image_url"].get("url"), "detail": "auto"})
        else:
            raise refuse(f"{param}[{index}]", f"content parts of type {kind!r} are not supported here")
    if all(p["type"] == "input_text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def chat_input(messages: Any) -> list[dict]:
    """Chat Completions `messages` -> the run's input items (the whole history: these runs keep
    no memory of their own)."""
    if not isinstance(messages, list) or not messages:
        raise OpenAIError(400, "messages: a non-empty list of messages is required", param="messages")
    items = []
    for index, message in enumerate(messages):
        param = f"messages[{index}]"
        role = message.get("role") if isinstance(message, dict) else None
        if role in ("tool", "function"):
            raise refuse(
                f"{param}.role", "tool results from the client are not supported (no client-side tools)"
            )
        if role not in ("system", "developer", "user", "assistant"):
            raise OpenAIError(400, f"{param}.role: must be system, developer, user or assistant", param=param)
        if message.get("tool_calls") or message.get("function_call"):
            raise refuse(f"{param}.tool_calls", "client-side tool calls are not supported")
        content = message.get("content")
        if content is None and role == "assistant":
            continue
        items.append({"role": role, "content": _text_parts(content, f"{param}.content", role == "user")})
    if not any(item["role"] == "user" for item in items):
        raise OpenAIError(400, "messages: at least one user message is required", param="messages")
    return _checked(items, "messages")


def responses_input(body: dict) -> list[dict] | str:
    """A Responses request's `input` (and `instructions`, which become its first message)."""
    check_fields(body, RESPONSES_FIELDS)
    if body.get("include"):
        raise refuse("include", "no extra output data is available")
    text_format = body.get("text", {}).get("format") if isinstance(body.get("text"), dict) else None
    if text_format not in (None, {"type": "text"}):
        raise refuse("text.format", "the agent's output type is fixed by its definition")
    raw = body.get("input")
    if raw is None:
        raise OpenAIError(400, "input: required", param="input")
    items: list[dict] = [{"role": "user", "content": raw}] if isinstance(raw, str) else raw
    if not isinstance(items, list):
        raise OpenAIError(400, "input: must be a string or a list of input items", param="input")
    for index, item in enumerate(items):
        kind = item.get("type", "message") if isinstance(item, dict) else None
        if kind != "message":
            raise refuse(
                f"input[{index}]", f"items of type {kind!r} are not supported (no client-side tools)"
            )
        content = item.get("content")
        for part_index, part in enumerate(content if isinstance(content, list) else []):
            part_type = part.get("type") if isinstance(part, dict) else None
            if part_type not in CONTENT_PARTS:
                param = f"input[{index}].content[{part_index}]"
                raise refuse(param, f"content parts of type {part_type!r} are not supported here")
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise OpenAIError(400, "instructions: must be a string", param="instructions")
        items = [{"role": "developer", "content": instructions}, *items]
    return _checked(items, "input")


def _checked(items: list[dict], param: str) -> list[dict]:
    """The engine's own input rules (size, roles, content), as an OpenAI error."""
    try:
        return validate_run_input(items)
    except ValidationError as exc:
        raise OpenAIError(400, f"{param}: {exc.detail[0]}", param=param) from None
