"""What one run's code sees (`RunContext`): it numbers and journals the run's events, streams its
SDK agents (the only place that iterates `Runner.run_streamed(...).stream_events()`: cancelling
the task that does so cancels the run, and `result.cancel()` in `finally` stops the SDK's own
task), follows the answer so far and the usage, takes cancel requests, and in worker mode
checkpoints the run's SDK state at every turn boundary. `execute.execute` is a run's life."""

import time
from datetime import datetime
from typing import Any

from agents import Runner, RunState

from .. import metrics, providers
from ..models import Run
from ..providers.responses_stream import TEXT_DELTA
from ..registry import AgentSpec
from ..session import DjangoSession
from .events import FIRST_OUTPUT_TYPES, translate
from .jobs import in_workers
from .journal import Journal
from .store import Checkpoint


class Resume:
    """What a paused run goes on from: the SDK state stored at its pause and the decisions on its
    calls (`Approval`s by call id)."""

    def __init__(self, state: dict, decisions: dict) -> None:
        self.state = state
        self.decisions = decisions


class Restart:
    """A run taken over from a worker that stopped: it says so first (`turn_restarted`: the turn it
    does again, why, and the last event that stays), then goes on from its checkpoint (the
    context's `resume`) or, with none, from its start. `memory`: the checkpoint's unwritten
    conversation items."""

    def __init__(self, turn: int, reason: str, after_seq: int, memory: list, usage: dict) -> None:
        self.turn = turn
        self.reason = reason
        self.after_seq = after_seq
        self.memory = memory
        self.usage = usage  # of the model calls made before (a taken-over run's count too)

    def event(self) -> dict:
        body = {"type": "turn_restarted", "turn": self.turn, "reason": self.reason}
        return {**body, "after_seq": self.after_seq}


class Paused:
    """A run's body ended on tool calls that need approval (the SDK result's `interruptions`)."""

    def __init__(self, result: Any) -> None:
        self.result = result


class RunContext:
    """What one run's code sees: emit events, stream SDK agents, check for cancellation.

    A pipeline (several agents, as research runs them) streams its agents through `stream_agent`
    and may set `partial_output`: what the run keeps if it is cancelled or fails. A single agent's
    run keeps the text of the agent that was answering."""

    def __init__(self, run: Run, spec: AgentSpec, journal: Journal, fresh_conversation: bool = False) -> None:
        self.run = run
        self.run_key = str(run.pk)
        self.spec = spec
        self.journal = journal
        self.fresh_conversation = fresh_conversation  # no memory to read yet
        self.seq = run.last_seq  # 0, or the events stored before it began (worker mode's run_queued)
        self.cancel_mode: str | None = None
        # Set when the serving process stops before the run ends (RunExecutor.shutdown).
        self.interrupted = False
        # Set when the journal could not store the run's events: the run ends `failed`.
        self.lost: BaseException | None = None
        # A cancel request the database does not hold yet: the run's end records it.
        self.unrecorded_cancel_at: datetime | None = None
        self.answer: list[str] = []
        self.partial_output: Any = None
        self.response_id = ""
        self.current_turn = 0
        self.session: DjangoSession | None = None  # its deferred items are written with the end
        self.usage = {"requests": 0, "input_tokens": 0, "output_tokens": 0, "total_tokens": 0}
        self.full_events = (run.options or {}).get("events") == "full"
        self._results: list = []
        self._tool_names: dict[str, str] = {}
        self._first_output = False
        self.began = time.monotonic()
        self._first_token = False
        self.resume: Resume | None = None  # set for a run that goes on after its pause
        self.restart: Restart | None = None  # set for a run taken over from a stopped worker
        # Worker mode: the run's SDK state is stored at every turn boundary (a single agent's).
        self.checkpoints = in_workers() and spec.pipeline is None
        # Set when its worker stops and hands the run to another (`worker.release`).
        self.released = False

    def next_event(self, body: dict) -> dict:
        """`body` as this run's next event: numbered, with the run's id."""
        self.seq += 1
        # `type` first, as on the wire; `**body` sets it again to the same value, in place.
        return {"type": body["type"], "seq": self.seq, "run_id": self.run_key, **body}

    def emit(self, body: dict) -> dict:
        event = self.next_event(body)
        urgent = not self._first_output and body["type"] in FIRST_OUTPUT_TYPES
        if urgent:
            self._first_output = True  # the client waits for it: no batching delay
        if not self._first_token and body.get("event_type") == TEXT_DELTA:
            self._first_token = True
            metrics.TIME_TO_FIRST_TOKEN.labels(self.run.agent).observe(time.monotonic() - self.began)
        self.journal.append(self.run_key, event, urgent)
        return event

    async def stream_agent(self, agent: Any, input: Any, *, answering: bool = True, **kwargs: Any) -> Any:
        """Run one SDK agent streamed, translating its events into this run's stream.

        `answering`: its text is the run's answer so far (what a cancelled run keeps); a
        pipeline's inner agents (planners, parallel searches) pass False."""
        kwargs.setdefault("run_config", providers.run_config())
        result = Runner.run_streamed(agent, input, **kwargs)
        self._results.append(result)
        if self.cancel_mode == "after_turn":
            result.cancel(mode="after_turn")
        if answering:
            self.answer = []
        boundary = TurnBoundary(input) if self.checkpoints and answering else None
        try:
            async for sdk_event in result.stream_events():
                if boundary is not None and boundary.crossed(sdk_event):
                    self._checkpoint(result, boundary)
                body = translate(sdk_event, self.full_events)
                if body is None:
                    continue
                if answering:
                    self._follow_answer(body)
                self._name_tool_output(body)
                if body["type"] == "raw_response" and body.get("response_id"):
                    self.response_id = body["response_id"]
                self.emit(body)
        finally:
            # Stops the SDK's background run task if we leave early (cancel or error).
            result.cancel()
            self._results.remove(result)
            self._add_usage(result)
        return result

    def _checkpoint(self, result: Any, boundary: "TurnBoundary") -> None:
        """The SDK's state now that a turn ended and the next began, stored with the events it
        covers (those emitted so far). Skipped when the SDK has already gone further than the
        events read (its state holds items not yet streamed): the last checkpoint stays."""
        state = result.to_state().to_json()
        if len(state.get("generated_items") or ()) != boundary.items:
            return
        turn = state["current_turn"]  # the turn that began: a restart does it again
        state["current_turn"] = turn - 1
        memory = self.session.pending_items() if self.session is not None else []
        self.journal.checkpoint(self.run_key, Checkpoint(state, self.seq, turn, memory))

    def _follow_answer(self, body: dict) -> None:
        if body["type"] == "agent_updated":
            self.answer = []  # a handoff: the new agent answers from here
        elif body["type"] == "raw_response" and body["event_type"] == TEXT_DELTA:
            self.answer.append(body["delta"])

    def _name_tool_output(self, body: dict) -> None:
        """Tool outputs only carry the call id; name the tool like the call did."""
        if body["type"] != "run_item" or not body.get("call_id"):
            return
        if body["name"] == "tool_called":
            self._tool_names[body["call_id"]] = body["tool_name"]
        elif body["name"] == "tool_output":
            body["tool_name"] = self._tool_names.get(body["call_id"])

    def request_cancel(self, mode: str) -> None:
        self.cancel_mode = mode
        for result in list(self._results):
            result.cancel(mode="after_turn")

    @property
    def cancelled(self) -> bool:
        return self.cancel_mode is not None

    def _add_usage(self, result: Any) -> None:
        usage = result.context_wrapper.usage
        self.usage["requests"] += usage.requests
        self.usage["input_tokens"] += usage.input_tokens
        self.usage["output_tokens"] += usage.output_tokens
        self.usage["total_tokens"] += usage.total_tokens
        self.current_turn += getattr(result, "current_turn", 0) or 0

    def partial(self, status: str) -> Any:
        """What a run that did not complete keeps as its output."""
        if self.spec.pipeline is not None:
            return self.partial_output
        text = "".join(self.answer)
        return text if text or status != Run.Status.FAILED else None


class TurnBoundary:
    """Where a streamed agent's turn ends: its model call completed (and its tools ran), and the
    next call's first event comes. Counts the items the stream has shown, to compare with the
    SDK's state (`input`: a state the agent goes on from already holds its own)."""

    def __init__(self, input: Any) -> None:
        self.items = len(input.to_json().get("generated_items") or ()) if isinstance(input, RunState) else 0
        self._completed = False

    def crossed(self, sdk_event: Any) -> bool:
        if sdk_event.type == "run_item_stream_event":
            self.items += 1
        elif sdk_event.type == "raw_response_event":
            if self._completed:
                self._completed = False
                return True
            self._completed = getattr(sdk_event.data, "type", "") == "response.completed"
        return False
