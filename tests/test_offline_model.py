"""Offline model through the real Runner: streamed deltas, tools, handoffs, structured output, memory."""

import enum
import json
import time

import jsonschema
import pytest
from agents import Agent, AgentOutputSchema, ModelBehaviorError, Runner
from agents.agent_output import AgentOutputSchemaBase
from pydantic import BaseModel, Field, TypeAdapter, ValidationError, create_model

from agents_app.ai_agents.assistant import build_assistant_agent
from agents_app.ai_agents.chat import build_chat_agent
from agents_app.providers import (
    OfflineModelProvider,
    get_model_provider,
    register_structured_composer,
    run_config,
    unregister_structured_composer,
)
from agents_app.providers.offline_schema import schema_instance


@pytest.fixture(autouse=True)
def offline(settings):
    settings.AGENTS_MODEL_PROVIDER = "offline"
    settings.OFFLINE_MODEL_DELAY = 0


async def run_streamed(agent, input):
    result = Runner.run_streamed(agent, input, run_config=run_config())
    events = [event async for event in result.stream_events()]
    return result, events


def text_deltas(events):
    return [
        e.data.delta
        for e in events
        if e.type == "raw_response_event" and e.data.type == "response.output_text.delta"
    ]


def run_items(events, name):
    return [e.item for e in events if e.type == "run_item_stream_event" and e.name == name]


async def test_provider_is_offline():
    assert isinstance(get_model_provider(), OfflineModelProvider)


async def test_text_streams_in_many_deltas_that_add_up_to_the_final_output():
    result, events = await run_streamed(build_chat_agent(), "Hello there!")

    deltas = text_deltas(events)
    assert len(deltas) > 5
    assert "".join(deltas) == result.final_output
    assert "Hello" in result.final_output
    kinds = [e.data.type for e in events if e.type == "raw_response_event"]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    usage = result.context_wrapper.usage
    assert usage.requests == 1 and usage.input_tokens > 0 and usage.output_tokens > 0


async def test_answer_echoes_the_question():
    result, _ = await run_streamed(build_chat_agent(), "Tell me about lighthouses")
    assert "Tell me about lighthouses" in result.final_output


async def test_calculate_tool_is_called_and_its_output_answered():
    result, events = await run_streamed(build_chat_agent(), "what is 17 * 23")

    [called] = run_items(events, "tool_called")
    assert called.raw_item.name == "calculate"
    assert json.loads(called.raw_item.arguments) == {"expression": "17 * 23"}
    [output] = run_items(events, "tool_output")
    assert output.output == "391"
    assert "391" in result.final_output
    assert result.context_wrapper.usage.requests == 2


async def test_two_tools_in_one_message_get_distinct_call_ids():
    result, events = await run_streamed(
        build_chat_agent(), "What time is it in Europe/Paris? And roll 2 dice."
    )

    calls = {item.raw_item.name: item.raw_item for item in run_items(events, "tool_called")}
    assert set(calls) == {"current_time", "roll_dice"}
    assert calls["current_time"].call_id != calls["roll_dice"].call_id
    assert json.loads(calls["current_time"].arguments) == {"timezone": "Europe/Paris"}
    assert json.loads(calls["roll_dice"].arguments) == {"sides": 6, "count": 2}
    assert "Europe/Paris" in result.final_output and "total" in result.final_output


async def test_tools_not_offered_are_never_called():
    agent = Agent(name="Plain", instructions="Answer briefly.")
    result, events = await run_streamed(agent, "what is 2 + 2")
    assert run_items(events, "tool_called") == []
    assert result.final_output


async def test_math_question_is_handed_off_once_and_the_specialist_uses_its_tool():
    result, events = await run_streamed(build_assistant_agent(), "Can you solve this math problem: 12 * 12?")

    assert len(run_items(events, "handoff_occured")) == 1
    agents_seen = [e.new_agent.name for e in events if e.type == "agent_updated_stream_event"]
    assert agents_seen == ["Assistant", "Math Specialist"]
    assert result.last_agent.name == "Math Specialist"
    assert [i.raw_item.name for i in run_items(events, "tool_called")] == ["calculate"]
    assert "144" in result.final_output


async def test_writing_request_goes_to_the_writing_specialist():
    result, _ = await run_streamed(build_assistant_agent(), "Please write a short poem about the sea")
    assert result.last_agent.name == "Writing Specialist"
    assert "sea" in result.final_output


async def test_assistant_answers_time_itself():
    result, events = await run_streamed(build_assistant_agent(), "What time is it in Tokyo?")
    assert run_items(events, "handoff_occured") == []
    assert "Asia/Tokyo" in result.final_output


class Priority(enum.Enum):
    LOW = "low"
    HIGH = "high"


class Task(BaseModel):
    title: str
    priority: Priority
    hours: float = Field(ge=0.5, le=8)
    notes: str | None


class Milestone(BaseModel):
    name: str
    tasks: list[Task] = Field(min_length=2)


class ProjectPlan(BaseModel):
    goal: str
    milestones: list[Milestone]
    owner: str | None
    approved: bool


async def test_structured_output_parses_into_a_nested_pydantic_type():
    agent = Agent(name="Planner", instructions="Plan the project.", output_type=ProjectPlan)
    result, events = await run_streamed(agent, "Launch a community garden")

    plan = result.final_output
    assert isinstance(plan, ProjectPlan)
    assert plan.milestones and all(len(m.tasks) >= 2 for m in plan.milestones)
    assert isinstance(plan.milestones[0].tasks[0].priority, Priority)
    assert "community garden" in plan.goal.lower()
    assert len(text_deltas(events)) > 3


async def test_non_object_output_types_are_wrapped_correctly():
    agent = Agent(name="Lister", instructions="List ideas.", output_type=list[str])
    result = await Runner.run(agent, "ideas for a picnic", run_config=run_config())
    assert isinstance(result.final_output, list) and all(isinstance(s, str) for s in result.final_output)


class Picnic(BaseModel):
    place: str
    guests: int


class KeyedOutput(AgentOutputSchemaBase):
    """An app's own output schema (the SDK takes any): every type, object or not, travels as `key`."""

    def __init__(self, output_type, key: str = "result"):
        self.key, self.type_name = key, AgentOutputSchema(output_type).name()
        self.model = create_model("Keyed", **{key: (output_type, ...)})

    def is_plain_text(self) -> bool:
        return False

    def name(self) -> str:
        return self.type_name

    def json_schema(self) -> dict:
        return self.model.model_json_schema()

    def is_strict_json_schema(self) -> bool:
        return False

    def validate_json(self, json_str: str):
        try:
            return getattr(self.model.model_validate_json(json_str), self.key)
        except ValidationError as error:
            raise ModelBehaviorError(str(error)) from error


@pytest.mark.parametrize(
    ("output_schema", "composed", "expected"),
    [
        (AgentOutputSchema(list[str]), ["tent", "kite"], ["tent", "kite"]),
        (AgentOutputSchema(list[str]), {"response": ["tent"]}, ["tent"]),
        (AgentOutputSchema(int), 7, 7),
        (AgentOutputSchema(Picnic), Picnic(place="park", guests=4), Picnic(place="park", guests=4)),
        (KeyedOutput(list[str]), ["tent", "kite"], ["tent", "kite"]),
        (KeyedOutput(int), 7, 7),
        (KeyedOutput(Picnic), Picnic(place="park", guests=4), Picnic(place="park", guests=4)),
    ],
)
@pytest.mark.django_db  # a composer may use the ORM: it runs through the database helper
async def test_composed_outputs_are_wrapped_as_the_output_schema_says(output_schema, composed, expected):
    register_structured_composer(output_schema.name(), lambda request: composed)
    try:
        agent = Agent(name="Picnic", instructions="Plan a picnic.", output_type=output_schema)
        result = await Runner.run(agent, "a picnic", run_config=run_config())
    finally:
        unregister_structured_composer(output_schema.name())
    assert result.final_output == expected


@pytest.fixture
def composer():
    seen = []

    def compose(request):
        seen.append(request)
        return {"goal": f"Composed: {request.user_text}", "milestones": [], "owner": "Ada", "approved": False}

    register_structured_composer("ProjectPlan", compose)
    yield seen
    unregister_structured_composer("ProjectPlan")


@pytest.mark.django_db  # a composer may use the ORM: it runs through the database helper
async def test_registered_composer_writes_the_output(composer):
    agent = Agent(name="Planner", instructions="Plan the project.", output_type=ProjectPlan)
    result = await Runner.run(agent, "Paint the fence", run_config=run_config())

    assert result.final_output == ProjectPlan(
        goal="Composed: Paint the fence", milestones=[], owner="Ada", approved=False
    )
    [request] = composer
    assert request.system_instructions == "Plan the project."
    assert request.items[-1]["content"] == "Paint the fence"


async def test_earlier_turns_are_remembered():
    agent = build_chat_agent()
    first, _ = await run_streamed(agent, "Hi, my name is Ada and my favorite color is teal.")
    assert "Ada" in first.final_output

    history = first.to_input_list()
    second, _ = await run_streamed(agent, [*history, {"role": "user", "content": "What is my name?"}])
    assert "Ada" in second.final_output

    history = second.to_input_list()
    third, _ = await run_streamed(agent, [*history, {"role": "user", "content": "What's my favorite color?"}])
    assert "teal" in third.final_output


async def test_non_streamed_run_calls_tools_and_reports_usage():
    result = await Runner.run(build_chat_agent(), "roll a d20", run_config=run_config())
    assert "total" in result.final_output
    assert result.context_wrapper.usage.requests == 2
    assert result.context_wrapper.usage.total_tokens > 0


async def test_delay_setting_paces_the_stream(settings):
    settings.OFFLINE_MODEL_DELAY = 0.01
    started = time.monotonic()
    _, events = await run_streamed(build_chat_agent(), "Hello!")
    assert time.monotonic() - started >= 0.01 * len(text_deltas(events))


class Node(BaseModel):
    label: str
    children: list["Node"]


@pytest.mark.parametrize("output_type", [ProjectPlan, Node, dict[str, list[int]], tuple[int, str]])
def test_schema_instances_are_valid(output_type):
    schema = AgentOutputSchema(output_type, strict_json_schema=False)
    value = schema_instance(schema.json_schema(), "testing schemas")
    jsonschema.validate(value, schema.json_schema())
    schema.validate_json(json.dumps(value))


def test_schema_instance_handles_constraints_and_combinators():
    schema = {
        "$defs": {"Tag": {"type": "string", "enum": ["red", "blue"]}},
        "type": "object",
        "properties": {
            "tags": {"type": "array", "items": {"$ref": "#/$defs/Tag"}, "minItems": 1, "maxItems": 2},
            "kind": {"const": "report"},
            "score": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
            "count": {"type": "integer", "minimum": 10, "multipleOf": 5},
            "maybe": {"anyOf": [{"type": "null"}, {"type": "string", "minLength": 30, "maxLength": 40}]},
            "both": {
                "allOf": [{"type": "object", "properties": {"a": {"type": "boolean"}}, "required": ["a"]}]
            },
            "when": {"type": "string", "format": "date-time"},
            "link": {"type": "string", "format": "uri"},
        },
        "required": ["tags", "kind", "score", "count", "maybe", "both", "when", "link"],
        "additionalProperties": False,
    }
    value = schema_instance(schema, "colours")
    jsonschema.validate(value, schema, format_checker=jsonschema.FormatChecker())
    assert TypeAdapter(dict).validate_python(value)["kind"] == "report"
