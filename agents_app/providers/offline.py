"""The offline model: a deterministic, network-free `Model` that streams like the Responses API."""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import AsyncIterator
from typing import Any

from agents import FunctionTool, Handoff, ModelSettings, Tool
from agents.agent_output import AgentOutputSchemaBase
from agents.items import ModelResponse, TResponseInputItem, TResponseStreamEvent
from agents.models.interface import Model, ModelProvider, ModelTracing
from agents.tracing import generation_span
from agents.usage import Usage
from django.conf import settings
from openai.types.responses import Response
from openai.types.responses.response_prompt_param import ResponsePromptParam

from ..db import in_sync_thread
from . import responses_stream
from .offline_intents import best_match, tool_requests
from .offline_replies import Conversation, compose_text
from .offline_schema import OfflineRequest, get_structured_composer, schema_instance

DEFAULT_OFFLINE_MODEL = "offline-echo-1"


class OfflineModel(Model):
    """Answers from rules over the conversation; calls shipped tools, hands off, emits structured output."""

    def __init__(self, model: str = DEFAULT_OFFLINE_MODEL):
        self.model = model

    async def get_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None = None,
        conversation_id: str | None = None,
        prompt: ResponsePromptParam | None = None,
    ) -> ModelResponse:
        with generation_span(model=self.model, disabled=tracing.is_disabled()) as span:
            response = await self._respond(
                system_instructions, input, model_settings, tools, output_schema, handoffs
            )
            _record_span(span, tracing, input, response)
        tokens = response.usage
        usage = Usage(requests=1)
        if tokens is not None:
            usage = Usage(
                requests=1,
                input_tokens=tokens.input_tokens,
                output_tokens=tokens.output_tokens,
                total_tokens=tokens.total_tokens,
            )
        return ModelResponse(output=list(response.output), usage=usage, response_id=response.id)

    async def stream_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None = None,
        conversation_id: str | None = None,
        prompt: ResponsePromptParam | None = None,
    ) -> AsyncIterator[TResponseStreamEvent]:
        # Not marked current: a span set inside an async generator would leak into the consumer's context.
        span = generation_span(model=self.model, disabled=tracing.is_disabled())
        span.start(mark_as_current=False)
        try:
            response = await self._respond(
                system_instructions, input, model_settings, tools, output_schema, handoffs
            )
            delay = settings.OFFLINE_MODEL_DELAY
            for event in responses_stream.stream_events(response):
                yield event
                if event.type in (responses_stream.TEXT_DELTA, responses_stream.ARGUMENTS_DELTA):
                    # sleep(0) still yields, so cancellation and other runs get a turn between deltas.
                    await asyncio.sleep(delay)
            _record_span(span, tracing, input, response)
        finally:
            span.finish(reset_current=False)

    async def _respond(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff],
    ) -> Response:
        conversation = Conversation(input)
        function_tools = {tool.name: tool for tool in tools if isinstance(tool, FunctionTool)}
        calls = plan_calls(conversation, function_tools, handoffs, model_settings)
        if calls:
            output: list[responses_stream.OutputItem] = [
                responses_stream.function_call_item(name, arguments) for name, arguments in calls
            ]
            produced = sum(len(json.dumps(arguments)) for _, arguments in calls)
        else:
            if output_schema is not None and not output_schema.is_plain_text():
                request = OfflineRequest(
                    system_instructions=system_instructions or "",
                    items=conversation.items,
                    user_text=conversation.user_text,
                    tool_names=list(function_tools),
                )
                text = await structured_text(output_schema, request)
            else:
                text = compose_text(conversation, list(function_tools), [h.agent_name for h in handoffs])
            output = [responses_stream.message_item(text)]
            produced = len(text)
        consumed = len(system_instructions or "") + len(json.dumps(conversation.items, default=str))
        usage = responses_stream.usage(consumed // 4 + 1, produced // 4 + 1)
        return responses_stream.build_response(self.model, output, usage)


def plan_calls(
    conversation: Conversation,
    function_tools: dict[str, FunctionTool],
    handoffs: list[Handoff],
    model_settings: ModelSettings,
) -> list[tuple[str, dict[str, Any]]]:
    """The tool or handoff calls to make now; empty when it is time to answer."""
    choice = model_settings.tool_choice
    if choice == "none" or conversation.last_is_tool_output():
        return []
    text = conversation.user_text
    called = {call.get("name") for call in conversation.calls_since_user()}
    calls = [
        (name, args) for name, args in tool_requests(text) if name in function_tools and name not in called
    ]
    if calls:
        return calls
    forced = choice if isinstance(choice, str) and choice in function_tools else None
    if choice == "required" and function_tools:
        forced = next(iter(function_tools))
    if forced and forced not in called:
        return [(forced, schema_instance(function_tools[forced].params_json_schema, text))]
    # Once control has moved to a specialist, or a tool has run, the current agent answers.
    if handoffs and not called:
        handoff = best_match(text, [(h, f"{h.agent_name}. {h.tool_description}") for h in handoffs])
        if handoff is not None:
            schema = handoff.input_json_schema
            return [(handoff.tool_name, schema_instance(schema, text) if schema else {})]
    return []


async def structured_text(output_schema: AgentOutputSchemaBase, request: OfflineRequest) -> str:
    """JSON for the output type: a registered composer's, else a generic instance of its schema."""
    composer = get_structured_composer(output_schema.name())
    if composer is None:
        return json.dumps(schema_instance(output_schema.json_schema(), request.user_text), ensure_ascii=False)
    # Sync composers run in a thread so they may use the ORM.
    if inspect.iscoroutinefunction(composer):
        value = await composer(request)
    else:
        value = await in_sync_thread(composer)(request)
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json")
    return json.dumps(wrapped_for_schema(output_schema.json_schema(), value), ensure_ascii=False)


def wrapped_for_schema(schema: dict[str, Any], value: Any) -> Any:
    """`value`, or `value` as the one property of an object when the schema wants that.

    The SDK's output schema wraps a type that is not an object (list[str], int...) as
    {"response": value}; an app's own schema may wrap under another key. The schema says which.
    (Not `validate_json()` to try both: a failed try marks the current trace span as an error.)"""
    properties = schema.get("properties") or {}
    if schema.get("type") != "object" or len(properties) != 1 or schema.get("required") != list(properties):
        return value
    [key] = properties
    return value if isinstance(value, dict) and key in value else {key: value}


def _record_span(span: Any, tracing: ModelTracing, input: Any, response: Response) -> None:
    if tracing.include_data():
        span.span_data.input = [{"role": "user", "content": input}] if isinstance(input, str) else input
        span.span_data.output = [item.model_dump() for item in response.output]
    if response.usage is not None:
        span.span_data.usage = {
            "input_tokens": response.usage.input_tokens,
            "output_tokens": response.usage.output_tokens,
        }


class OfflineModelProvider(ModelProvider):
    """Hands out offline models; any model name is accepted."""

    def get_model(self, model_name: str | None) -> Model:
        return OfflineModel(model_name or DEFAULT_OFFLINE_MODEL)
