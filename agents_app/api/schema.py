"""The streaming endpoints and the error answers in the OpenAPI schema (/docs, /redoc).

The streaming endpoints are Channels consumers, which drf-spectacular does not see: this
postprocessing hook adds their path items, with request bodies and a `text/event-stream`
response that names the event union of each protocol. Each protocol adapter describes its own
paths (`openapi_paths()`). It also documents the errors every view can answer with, by rule
(`error_codes`), which drf-spectacular cannot infer."""

from ..registry import slugs
from . import ag_ui, ai_sdk
from .errors import CURSOR_MAX

# A stream position a client resumes from (errors.cursor reads every one).
CURSOR = {"type": "integer", "minimum": 0, "maximum": CURSOR_MAX}

RUN_REQUEST = {"$ref": "#/components/schemas/RunRequest"}
ERROR = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "fields": {"type": "object"},
            },
            "required": ["code", "message"],
        }
    },
}
OPENAI_ERROR = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": "string", "nullable": True},
                "code": {"type": "string", "nullable": True},
            },
        }
    },
}


def _event(kind: str, description: str, **fields: str) -> dict:
    properties = {
        "type": {"type": "string", "enum": [kind]},
        "seq": {"type": "integer"},
        "run_id": {"type": "string"},
    }
    # Any of an event's own fields may be null (a run with no conversation, a tool output whose call
    # is not in this stream).
    properties.update({name: {"type": json_type, "nullable": True} for name, json_type in fields.items()})
    return {
        "title": kind,
        "description": description,
        "type": "object",
        "properties": properties,
        "required": ["type", "seq", "run_id"],
    }


EVENT_UNION = {
    "oneOf": [
        _event(
            "run_queued",
            "First, for a run that waits its turn.",
            conversation_id="string",
            position="integer",
        ),
        _event(
            "run_started",
            "First (after run_queued).",
            conversation_id="string",
            agent="string",
            model="string",
        ),
        _event("agent_updated", "The agent now answering.", agent_name="string"),
        _event(
            "raw_response",
            "A model event (`event_type`: the Responses stream event type). The standard set carries "
            "text, refusal, reasoning and argument deltas and response.completed; the full set "
            "(`events=full`, the default on /chat/stream and /assistant/stream) every raw event, "
            "including response.created, response.in_progress, response.output_item.added/done and "
            "response.content_part.added/done.",
            event_type="string",
            delta="string",
            item_id="string",
            output_index="integer",
        ),
        _event(
            "run_item",
            "A step: tool_called, tool_output, handoff_requested, handoff_occured, message_output_created...",
            name="string",
            item_type="string",
            tool_name="string",
            tool_arguments="string",
            call_id="string",
            target_agent="string",
        ),
        _event("research_progress", "Research stages (research agent).", stage="string", completed="integer"),
        _event(
            "stream_complete", "Terminal: completed or cancelled.", final_output="string", status="string"
        ),
        _event("error", "Terminal on failure.", message="string", code="string"),
    ]
}


def sse(description: str, data: dict | None = None) -> dict:
    """A text/event-stream response. Its schema (OpenAPI 3.0) describes one event: its `data`
    field, when given, holds JSON of the `data` schema."""
    payload = {"type": "string"}
    if data is not None:
        payload.update(contentMediaType="application/json", contentSchema=data)
    event = {
        "type": "object",
        "properties": {"id": {"type": "string"}, "event": {"type": "string"}, "data": payload},
    }
    return {"description": description, "content": {"text/event-stream": {"schema": event}}}


def refusals(shape: dict, *statuses: str) -> dict:
    return {
        status: {"description": "Refused", "content": {"application/json": {"schema": shape}}}
        for status in statuses
    }


def json_body(schema: dict) -> dict:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def native_paths() -> dict:
    slug = {"name": "slug", "in": "path", "required": True, "schema": {"type": "string"}}
    query = [
        {
            "name": "on_disconnect",
            "in": "query",
            "schema": {"type": "string", "enum": ["continue", "cancel"]},
        },
        {"name": "events", "in": "query", "schema": {"type": "string", "enum": ["standard", "full"]}},
    ]
    frames = "SSE frames `id: <seq>` + `data: <event JSON>`, a `retry:` line first, `: keep-alive` comments."
    start = {
        "tags": ["streams"],
        "requestBody": json_body(RUN_REQUEST),
        "responses": {
            "200": sse(frames, EVENT_UNION),
            **refusals(ERROR, "400", "401", "404", "409", "413", "429"),
        },
    }
    join = {
        "tags": ["streams"],
        "summary": "Replay and follow a run (resume with Last-Event-ID or ?last_event_id=)",
        "parameters": [
            {
                "name": "run_id",
                "in": "path",
                "required": True,
                "schema": {"type": "string", "format": "uuid"},
            },
            {"name": "last_event_id", "in": "query", "schema": CURSOR},
        ],
        "responses": {
            "200": sse(frames, EVENT_UNION),
            "204": {"description": "The run ended before that event: nothing more will come."},
            **refusals(ERROR, "400", "401", "404"),
        },
    }
    paths = {
        "/api/agents/{slug}/stream": {
            "post": {**start, "summary": "Start a run and stream it", "parameters": [slug, *query]}
        },
        "/api/runs/{run_id}/stream": {"get": join},
    }
    for agent in ("chat", "assistant"):
        summary = f"The reference server's stream ({agent}; every raw model event by default)"
        paths[f"/{agent}/stream"] = {"post": {**start, "summary": summary, "parameters": query}}
    return paths


def openai_request(*required: str) -> dict:
    """An OpenAI request body: its model (an agent's slug) and what it must carry; the rest is
    OpenAI's own shape (docs/openai-compatible.md)."""
    model = {"type": "string", "enum": slugs(), "description": "An agent's slug."}
    needs = {
        "messages": {"type": "array", "minItems": 1},
        "input": {"oneOf": [{"type": "string"}, {"type": "array"}]},
    }
    properties = {"model": model, **{name: needs[name] for name in required}}
    return {"type": "object", "properties": properties, "required": ["model", *required]}


def openai_paths() -> dict:
    free = {"type": "object", "additionalProperties": True}
    errors = refusals(OPENAI_ERROR, "400", "401", "404", "409", "429", "500", "502")
    response_id = {"name": "response_id", "in": "path", "required": True, "schema": {"type": "string"}}
    chunk = "With `stream: true`: `data: <chat.completion.chunk>` frames, a usage chunk with "
    chunk += '`stream_options.include_usage`, then `data: [DONE]`; a failed run: `data: {"error": ...}`.'
    events = "With `stream: true`: `event: <type>` + `data: <event>` frames with `sequence_number`: "
    events += "response.created, response.queued, response.in_progress, response.output_item.added, "
    events += "response.content_part.added, response.output_text.delta, response.output_text.done, "
    events += "response.content_part.done, response.output_item.done, then response.completed, "
    events += "response.incomplete (cancelled) or response.failed."
    return {
        "/v1/chat/completions": {
            "post": {
                "tags": ["openai"],
                "summary": "Chat completion (model = agent slug), whole or streamed",
                "requestBody": json_body(openai_request("messages")),
                "responses": {
                    "200": {
                        **sse(chunk),
                        "content": {**sse(chunk)["content"], "application/json": {"schema": free}},
                    },
                    **errors,
                },
            }
        },
        "/v1/responses": {
            "post": {
                "tags": ["openai"],
                "summary": "Create a response (stream, background, previous_response_id)",
                "requestBody": json_body(openai_request("input")),
                "responses": {
                    "200": {
                        **sse(events),
                        "content": {**sse(events)["content"], "application/json": {"schema": free}},
                    },
                    **errors,
                },
            }
        },
        "/v1/responses/{response_id}": {
            "get": {
                "tags": ["openai"],
                "summary": "Retrieve a response, or with stream=true its events after starting_after",
                "parameters": [
                    response_id,
                    {"name": "stream", "in": "query", "schema": {"type": "boolean"}},
                    {"name": "starting_after", "in": "query", "schema": CURSOR},
                ],
                "responses": {
                    "200": {
                        **sse(events),
                        "content": {**sse(events)["content"], "application/json": {"schema": free}},
                    },
                    **errors,
                },
            },
            "delete": {
                "tags": ["openai"],
                "summary": "Delete a finished response",
                "parameters": [response_id],
                "responses": {
                    "200": {"description": "Deleted", "content": {"application/json": {"schema": free}}},
                    **errors,
                },
            },
        },
    }


# REST operations that start a run: besides bad input, an unknown agent or conversation (404), a
# busy conversation (409), a rate limit or the per-user cap (429), a failing model provider (502).
RUN_STARTS = {("/api/agents/{slug}/run", "post"), ("/chat/run", "post"), ("/assistant/run", "post")}
RUN_STARTS |= {("/research", "post"), ("/api/research/", "post")}
UNSAFE = {"post", "put", "patch", "delete"}


def error_codes(path: str, method: str, operation: dict) -> list[str]:
    """The error statuses an operation can answer with: 401 for every one (all need
    credentials); 403 for unsafe methods (a session without its CSRF token, a permission); 404
    with a path parameter (missing, or another user's); 400 with a body, query or path parameters; 413
    with a body; 404, 409, 429 and 502 where a run starts."""
    codes = ["401"]
    if method in UNSAFE:
        codes.append("403")
    if "{" in path:
        codes.append("404")
    has_query = any(parameter.get("in") == "query" for parameter in operation.get("parameters", []))
    if operation.get("requestBody") or has_query or "{" in path:
        codes.append("400")
    if operation.get("requestBody"):
        codes.append("413")
    if (path, method) in RUN_STARTS:
        codes += ["404", "409", "429", "502"]
    return codes


def document_errors(result: dict) -> None:
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas["Error"], schemas["OpenAIError"] = ERROR, OPENAI_ERROR
    for path, item in result["paths"].items():
        shape = {"$ref": "#/components/schemas/" + ("OpenAIError" if path.startswith("/v1/") else "Error")}
        for method, operation in item.items():
            responses = operation.setdefault("responses", {})
            for code, response in refusals(shape, *error_codes(path, method, operation)).items():
                responses.setdefault(code, response)


# A run names its conversation one way: a session_id or a conversation_id (either may be null).
ONE_CONVERSATION = {
    "not": {
        "properties": {"session_id": {"type": "string"}, "conversation_id": {"type": "string"}},
        "required": ["session_id", "conversation_id"],
    }
}


# `always` (approve this tool for the rest of the run) goes with an approval only.
ALWAYS_APPROVES = {
    "not": {
        "properties": {
            "decision": {"type": "string", "enum": ["reject"]},
            "always": {"type": "boolean", "enum": [True]},
        },
        "required": ["decision", "always"],
    }
}


def state_rules(result: dict) -> None:
    """What the views check that their serializers cannot say."""
    schemas = result["components"]["schemas"]
    schemas["RunRequest"].update(ONE_CONVERSATION)
    schemas["ApprovalDecision"].update(ALWAYS_APPROVES)
    schemas["ConversationCreate"]["additionalProperties"] = False
    upload = result["paths"]["/api/research/documents/"]["post"]["responses"]
    upload["415"] = {
        "description": "A file that is not .md, .markdown or .txt",
        "content": upload["400"]["content"],
    }
    for path in ("/api/research/", "/api/research/documents/"):
        result["paths"][path]["post"]["requestBody"]["required"] = True


def add_stream_paths(result, generator, request, public):
    """drf-spectacular postprocessing hook: the streaming endpoints, every operation's errors,
    and the rules `state_rules` adds."""
    for paths in (native_paths(), openai_paths(), ai_sdk.openapi_paths(), ag_ui.openapi_paths()):
        for path, item in paths.items():
            for method, operation in item.items():
                words = "".join(c if c.isalnum() else "_" for c in path).strip("_")
                operation.setdefault("operationId", f"{words}_{method}")
            result["paths"].setdefault(path, {}).update(item)
    document_errors(result)
    state_rules(result)
    return result
