"""Our journalled run events as AG-UI events (docs/ag-ui.md), built with `ag_ui.core`'s own types.

The translation is a pure function of the run's events from its first: the same run always
gives the same AG-UI events, whatever batches they came in. It keeps the order AG-UI clients
verify: one RUN_STARTED first; every text message, reasoning message and step ended before the
run's end; a tool call's END before its RESULT.

A pause for approval ends the AG-UI run with the `interrupt` outcome (`paused`); the client's
next run answers the interrupts (`resume`) and is the rest of our run: it reads the run from its
first event too, and writes what follows the pause (`after`) as a run of its own.
"""

import json
from collections.abc import Iterator
from typing import Any

import orjson
from ag_ui.core import (
    PROTOCOL_VERSION,
    BaseEvent,
    CustomEvent,
    Interrupt,
    ReasoningEndEvent,
    ReasoningMessageContentEvent,
    ReasoningMessageEndEvent,
    ReasoningMessageStartEvent,
    ReasoningStartEvent,
    RunErrorEvent,
    RunFinishedCancelledOutcome,
    RunFinishedEvent,
    RunFinishedInterruptOutcome,
    RunStartedEvent,
    StepFinishedEvent,
    StepStartedEvent,
    TextMessageContentEvent,
    TextMessageEndEvent,
    TextMessageStartEvent,
    TokenUsage,
    ToolCallArgsEvent,
    ToolCallEndEvent,
    ToolCallResultEvent,
    ToolCallStartEvent,
)

from ..providers.responses_stream import REASONING_DELTAS, TEXT_DELTAS
from ..runs.read import Batch

INTERRUPT_REASON = "tool_approval"
# What a resume entry's payload says for an interrupt (docs/ag-ui.md).
ANSWER_SCHEMA = {
    "type": "object",
    "required": ["approved"],
    "properties": {"approved": {"type": "boolean"}, "reason": {"type": "string", "maxLength": 2000}},
}


class AgUiTranslator:
    """One run's events -> AG-UI events, keeping what is open between batches.

    `thread_id` and `run_id` are the client's (AG-UI clients match the run's events on them);
    our run's own id goes into RUN_STARTED's metadata as `runId`. A text or reasoning message is
    one model output item (the deltas of one `item_id`), closed when another item starts, when
    the model's response completes, or when anything else happens. Steps are the agent answering
    (one step per agent, a handoff ends one and starts the next) and the research stages."""

    def __init__(self, thread_id: str, run_id: str, after: int = 0) -> None:
        self.thread_id = thread_id
        self.run_id = run_id
        self.after = after  # the events through this seq are read, not written
        self.resumed = False
        self.pause: dict | None = None
        self.started = False
        # The open text or reasoning message: (kind, our item id, its AG-UI message id).
        self.open: tuple[str, str, str] | None = None
        self.agent_step: str | None = None
        self.stage_step: str | None = None
        self.provider: str | None = None
        self.model: str | None = None
        self.conversation_id: str | None = None
        self.began: dict[str, int] = {}  # the seq each message and tool call began at (`turn_restarted`)

    def events(self, batch: Batch) -> Iterator[BaseEvent]:
        """A batch of our events as AG-UI events; those through `after` are only read. The first
        one after it starts the AG-UI run that answered the pause: its own RUN_STARTED, with the
        steps and messages of the paused part closed (they were, in the response that ended)."""
        for seq, text in batch:
            event = orjson.loads(text)
            if seq <= self.after:
                for _ in self.translate(event):
                    pass
                continue
            if self.after and not self.resumed:
                self.resumed = True
                for _ in self.close_all():
                    pass
                yield self.run_started({**event, "type": "run_resumed"})
            yield from self.translate(event)

    def translate(self, event: dict) -> Iterator[BaseEvent]:
        kind = event["type"]
        if kind == "run_started":  # after `run_queued` for a run that waited its turn
            self.provider, self.model = event.get("provider"), event.get("model")
        if not self.started:
            self.started = True
            yield self.run_started(event)
        if kind == "run_queued":
            yield CustomEvent(
                name="run_queued", value={"position": event["position"], "waitingFor": event["waiting_for"]}
            )
        elif kind == "raw_response":
            yield from self.raw_response(event)
        elif kind == "run_item":
            yield from self.run_item(event)
        elif kind == "agent_updated":
            yield from self.close_message()
            yield from self.enter_agent(event["agent_name"])
        elif kind == "research_progress":
            yield from self.research_progress(event)
        elif kind == "approval_required":
            yield from self.close_message()
            self.pause = event
            yield CustomEvent(name="approval_required", value={"approvals": event["approvals"]})
        elif kind == "turn_restarted":
            # A worker took the run over: what began after `after_seq` was the cut turn's (a
            # client drops it), and that turn streams again, in new messages.
            yield from self.close_message()
            cut = [key for key, seq in self.began.items() if seq > event["after_seq"]]
            value = {"turn": event["turn"], "reason": event["reason"], "discardIds": cut}
            yield CustomEvent(name="turn_restarted", value=value)
        elif kind == "approval_decided":
            keys = ("approval_id", "call_id", "tool_name", "decision", "reason", "decided_by", "surface")
            yield CustomEvent(name="approval_decided", value={key: event.get(key) for key in keys})
        elif kind == "stream_complete":
            yield from self.close_all()
            yield self.run_finished(event)
        elif kind == "error":
            yield from self.close_all()
            yield RunErrorEvent(message=event["message"], code=event.get("code"))

    def run_started(self, event: dict) -> RunStartedEvent:
        """The run's start, with this server's ids in its metadata (camelCase, as AG-UI's fields)."""
        self.conversation_id = event.get("conversation_id") or self.conversation_id
        metadata = {"runId": event["run_id"], "conversationId": self.conversation_id}
        if event["type"] == "run_started":
            metadata.update(agent=event.get("agent"), provider=self.provider, model=self.model)
        return RunStartedEvent(
            thread_id=self.thread_id, run_id=self.run_id, protocol_version=PROTOCOL_VERSION, metadata=metadata
        )

    def raw_response(self, event: dict) -> Iterator[BaseEvent]:
        event_type = event.get("event_type")
        if event_type == "response.completed":
            yield from self.close_message()
            return
        kind = (
            "text" if event_type in TEXT_DELTAS else "reasoning" if event_type in REASONING_DELTAS else None
        )
        # Function call arguments come whole with `tool_called` (their deltas name the model's
        # item, not the call id a client matches on); other raw events carry nothing to show.
        if kind is None or not event.get("delta"):
            return
        item = event.get("item_id") or f"seq-{event['seq']}"
        if self.open is None or self.open[:2] != (kind, item):
            yield from self.close_message()
            # Unique even when a provider repeats item ids (Chat Completions' placeholder id).
            message_id = f"{event['run_id']}:{event['seq']}"
            self.open = (kind, item, message_id)
            self.began[message_id] = event["seq"]
            if kind == "text":
                yield TextMessageStartEvent(message_id=message_id, role="assistant")
            else:
                yield ReasoningStartEvent(message_id=message_id)
                yield ReasoningMessageStartEvent(message_id=message_id, role="reasoning")
        message_id = self.open[2]
        if kind == "text":
            yield TextMessageContentEvent(message_id=message_id, delta=event["delta"])
        else:
            yield ReasoningMessageContentEvent(message_id=message_id, delta=event["delta"])

    def run_item(self, event: dict) -> Iterator[BaseEvent]:
        yield from self.close_message()
        name = event.get("name")
        if name == "tool_called":
            call_id = event["call_id"]
            self.began.setdefault(call_id, event["seq"])
            yield ToolCallStartEvent(tool_call_id=call_id, tool_call_name=event["tool_name"])
            arguments = event.get("tool_arguments")
            if arguments:
                yield ToolCallArgsEvent(tool_call_id=call_id, delta=as_text(arguments))
            yield ToolCallEndEvent(tool_call_id=call_id)
        elif name == "tool_output":
            yield ToolCallResultEvent(
                message_id=f"{event['run_id']}:{event['seq']}",
                tool_call_id=event["call_id"],
                content=as_text(event.get("output")),
                role="tool",
            )
        elif name == "handoff_occured":
            yield from self.enter_agent(event["target_agent"])

    def research_progress(self, event: dict) -> Iterator[BaseEvent]:
        stage = event["stage"]
        if stage != self.stage_step:
            yield from self.close_message()
            if self.stage_step is not None:
                yield StepFinishedEvent(step_name=self.stage_step)
            self.stage_step = stage
            yield StepStartedEvent(step_name=stage)
        value = {
            key: event[key] for key in ("stage", "completed", "total", "plan", "sources") if key in event
        }
        value["reportId"] = event.get("report_id")
        if "search" in event:
            value["search"] = event["search"]
        yield CustomEvent(name="research_progress", value=value)

    def enter_agent(self, name: str) -> Iterator[BaseEvent]:
        if name == self.agent_step:
            return
        if self.agent_step is not None:
            yield StepFinishedEvent(step_name=self.agent_step)
        self.agent_step = name
        yield StepStartedEvent(step_name=name)

    def close_message(self) -> Iterator[BaseEvent]:
        if self.open is None:
            return
        kind, _item, message_id = self.open
        self.open = None
        if kind == "text":
            yield TextMessageEndEvent(message_id=message_id)
        else:
            yield ReasoningMessageEndEvent(message_id=message_id)
            yield ReasoningEndEvent(message_id=message_id)

    def close_all(self) -> Iterator[BaseEvent]:
        yield from self.close_message()
        for step in (self.agent_step, self.stage_step):
            if step is not None:
                yield StepFinishedEvent(step_name=step)
        self.agent_step = self.stage_step = None

    def paused(self) -> Iterator[BaseEvent]:
        """The end of the AG-UI run at our run's pause: RUN_FINISHED with the `interrupt` outcome,
        one interrupt per call (its id the approval id); the client answers them in `resume`."""
        yield from self.close_all()
        calls = (self.pause or {}).get("approvals") or []
        interrupts = [
            Interrupt(
                id=call["approval_id"],
                reason=INTERRUPT_REASON,
                message=f"{call['tool_name']} needs approval",
                tool_call_id=call["call_id"],
                response_schema=ANSWER_SCHEMA,
                metadata={
                    "toolName": call["tool_name"],
                    "arguments": call["arguments"],
                    "agentName": call["agent_name"],
                    "runId": (self.pause or {}).get("run_id"),
                },
            )
            for call in calls
        ]
        yield RunFinishedEvent(
            thread_id=self.thread_id,
            run_id=self.run_id,
            outcome=RunFinishedInterruptOutcome(interrupts=interrupts),
        )

    def run_finished(self, event: dict) -> RunFinishedEvent:
        if event.get("status") == "cancelled":
            # AG-UI's own outcome for a run stopped on purpose: neither success nor failure.
            return RunFinishedEvent(
                thread_id=self.thread_id, run_id=self.run_id, outcome=RunFinishedCancelledOutcome()
            )
        usage = event.get("usage") or {}
        return RunFinishedEvent(
            thread_id=self.thread_id,
            run_id=self.run_id,
            result=event.get("final_output"),
            usage=[
                TokenUsage(
                    provider=self.provider,
                    model=self.model,
                    input_tokens=usage.get("input_tokens"),
                    output_tokens=usage.get("output_tokens"),
                    total_tokens=usage.get("total_tokens"),
                )
            ]
            if usage
            else None,
        )


def as_text(value: Any) -> str:
    """Tool arguments and outputs as AG-UI carries them: text (JSON for anything else)."""
    return value if isinstance(value, str) else json.dumps(value)
