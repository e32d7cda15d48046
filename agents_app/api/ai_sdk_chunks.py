"""Our journalled run events as the Vercel AI SDK's UI message stream chunks (docs/ai-sdk.md).

The translation is a pure function of the event sequence from the run's first event: a resumed
stream replays the run from seq 1 and must give the client the very same chunks (the SDK's
resume treats the new response as a replay of the whole message). A run's pause for approval
ends a response (`paused_end`); the response to the client's approval answers goes on with the
same message: it reads the run from seq 1 too and writes what follows the pause (`after`).
"""

import json
from typing import Any

import orjson

from ..providers.responses_stream import REASONING_DELTAS, TEXT_DELTAS
from ..runs.read import Batch

DONE = b"data: [DONE]\n\n"


def sse(chunk: dict) -> bytes:
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def tool_input(arguments: Any) -> Any:
    """The tool call's arguments as the JSON value they encode (the SDK's `input`); text that
    is not JSON is passed on as it is."""
    if not isinstance(arguments, str):
        return arguments
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments


class UIMessageTranslator:
    """One run's events -> UI message chunks, keeping what is open between batches.

    A step (`start-step`/`finish-step`) is one model call and the tools it called, as the SDK's
    own `streamText` writes them: a step ends when the model writes again after tool results or
    a handoff. Text and reasoning parts are keyed by the model's item id and closed when the
    model's response completes, when the step ends, or at the end of the run."""

    def __init__(self, after: int = 0) -> None:
        self.after = after  # the events through this seq are read, not written
        self.started = False
        self.step_open = False
        self.step_has_results = False
        self.texts: list[str] = []  # open text part ids
        self.reasonings: list[str] = []  # open reasoning part ids
        self.any_text = False
        self.tool_calls: set[str] = set()
        self.pending_handoffs: list[str] = []
        self.denied: set[str] = set()  # calls whose approval was rejected
        self.pause: dict | None = None
        self.ended = False
        self.done = False  # `[DONE]` sent
        self.began: dict[str, int] = {}  # the seq each part and tool call began at (`turn_restarted`)

    def frames(self, batch: Batch) -> bytes:
        out = bytearray()
        for seq, text in batch:
            chunks = self.chunks(orjson.loads(text))
            if seq > self.after:
                for chunk in chunks:
                    out += sse(chunk)
        if self.ended and not self.done:
            self.done = True
            out += DONE
        return bytes(out)

    def chunks(self, event: dict) -> list[dict]:
        kind = event["type"]
        if kind in ("run_queued", "run_started"):
            return self._started(event)
        if kind == "raw_response":
            return self._raw(event)
        if kind == "run_item":
            return self._item(event)
        if kind == "agent_updated":
            return [{"type": "message-metadata", "messageMetadata": {"agent_name": event["agent_name"]}}]
        if kind == "research_progress":
            data = {k: v for k, v in event.items() if k not in ("type", "seq", "run_id")}
            return [{"type": "data-research-progress", "id": "research-progress", "data": data}]
        if kind == "approval_required":
            return self._approval_required(event)
        if kind == "turn_restarted":
            return self._restarted(event)
        if kind == "approval_decided":
            if event.get("decision") == "rejected":
                self.denied.add(event.get("call_id"))
            return []
        if kind == "stream_complete":
            return self._complete(event)
        if kind == "error":
            return self._error(event)
        return []

    def _started(self, event: dict) -> list[dict]:
        metadata = {"run_id": event["run_id"], "conversation_id": event.get("conversation_id")}
        if event["type"] == "run_queued":
            metadata.update(status="queued", position=event.get("position"))
        else:
            metadata.update(status="running", agent=event.get("agent"), model=event.get("model"))
        if self.started:
            return [{"type": "message-metadata", "messageMetadata": metadata}]
        self.started = True
        return [{"type": "start", "messageId": event["run_id"], "messageMetadata": metadata}]

    def _raw(self, event: dict) -> list[dict]:
        event_type = event.get("event_type")
        if event_type == "response.completed":
            return self._close_parts()
        if event_type in TEXT_DELTAS:
            return self._delta(event, "text", self.texts)
        if event_type in REASONING_DELTAS:
            return self._delta(event, "reasoning", self.reasonings)
        return []  # function call argument deltas: the whole input comes with `tool_called`

    def _delta(self, event: dict, part: str, open_ids: list[str]) -> list[dict]:
        out = self._content()
        part_id = event.get("item_id") or part
        if part_id not in open_ids:
            open_ids.append(part_id)
            self.began.setdefault(part_id, event["seq"])
            out.append({"type": f"{part}-start", "id": part_id})
        out.append({"type": f"{part}-delta", "id": part_id, "delta": event.get("delta") or ""})
        self.any_text = self.any_text or part == "text"
        return out

    def _item(self, event: dict) -> list[dict]:
        name, call_id = event.get("name"), event.get("call_id")
        if name in ("tool_called", "handoff_requested") and call_id:
            out = self._content()
            self.tool_calls.add(call_id)
            self.began.setdefault(call_id, event["seq"])
            if name == "handoff_requested":
                self.pending_handoffs.append(call_id)
            input = tool_input(event.get("tool_arguments"))
            out.append(
                {
                    "type": "tool-input-available",
                    "toolCallId": call_id,
                    "toolName": event["tool_name"],
                    "input": input,
                }
            )
            return out
        if name == "tool_output" and call_id in self.tool_calls:
            self.step_has_results = True
            if call_id in self.denied:  # the model reads why; the client, that it was denied
                return [{"type": "tool-output-denied", "toolCallId": call_id}]
            return [{"type": "tool-output-available", "toolCallId": call_id, "output": event.get("output")}]
        if name == "handoff_occured" and self.pending_handoffs:
            # Our event names the agents, not the call: it answers the oldest open handoff call.
            self.step_has_results = True
            output = {"source_agent": event.get("source_agent"), "target_agent": event.get("target_agent")}
            return [
                {
                    "type": "tool-output-available",
                    "toolCallId": self.pending_handoffs.pop(0),
                    "output": output,
                }
            ]
        return []  # message_output_created, reasoning_item_created: the deltas said it already

    def _restarted(self, event: dict) -> list[dict]:
        """A worker took the run over: the parts and tool calls that began after `after_seq` were
        the cut turn's (a client drops them), and that turn streams again, in new parts."""
        cut = [part for part, seq in self.began.items() if seq > event["after_seq"]]
        data = {"turn": event["turn"], "reason": event["reason"], "discardPartIds": cut}
        return [*self._close_parts(), {"type": "data-turn-restarted", "data": data}]

    def _approval_required(self, event: dict) -> list[dict]:
        """The calls that wait, in the step that made them, which ends here: the client answers
        each with `addToolApprovalResponse` (the approval id is ours), and the run's tool results
        open the next step."""
        self.pause = event
        requests = [
            {
                "type": "tool-approval-request",
                "approvalId": call["approval_id"],
                "toolCallId": call["call_id"],
            }
            for call in event.get("approvals") or ()
            if call.get("call_id") in self.tool_calls
        ]
        return [*self._close_parts(), *requests, *self._finish_step()]

    def paused_end(self) -> bytes:
        """The end of a response at the run's pause: `finish` with `tool-calls` (the message goes
        on once the client has answered), then `[DONE]`."""
        event = self.pause or {}
        metadata = {"run_id": event.get("run_id"), "status": "awaiting_approval"}
        self.done = True
        return sse({"type": "finish", "finishReason": "tool-calls", "messageMetadata": metadata}) + DONE

    def _content(self) -> list[dict]:
        """What comes before new model output: the end of a step whose tools have answered,
        and the start of a step."""
        out = []
        if self.step_open and self.step_has_results:
            out += self._finish_step()
        if not self.step_open:
            self.step_open, self.step_has_results = True, False
            out.append({"type": "start-step"})
        return out

    def _close_parts(self) -> list[dict]:
        out = [{"type": "text-end", "id": i} for i in self.texts]
        out += [{"type": "reasoning-end", "id": i} for i in self.reasonings]
        self.texts.clear()
        self.reasonings.clear()
        return out

    def _finish_step(self) -> list[dict]:
        out = self._close_parts()
        if self.step_open:
            self.step_open = False
            out.append({"type": "finish-step"})
        return out

    def _end(self, event: dict, status: str) -> tuple[list[dict], dict]:
        self.ended = True
        out = [] if self.started else self._started({**event, "type": "run_started"})
        metadata = {
            "run_id": event["run_id"],
            "conversation_id": event.get("conversation_id"),
            "status": status,
        }
        return out, metadata

    def _complete(self, event: dict) -> list[dict]:
        status = event.get("status") or "completed"
        out, metadata = self._end(event, status)
        final = event.get("final_output")
        if status == "completed" and not self.any_text and final not in (None, ""):
            # A run that streamed no text (a pipeline, a structured output written at once):
            # the message still carries its answer.
            out += self._content()
            text = final if isinstance(final, str) else json.dumps(final, ensure_ascii=False)
            out += [
                {"type": "text-start", "id": "final-output"},
                {"type": "text-delta", "id": "final-output", "delta": text},
            ]
            self.texts.append("final-output")
        out += self._finish_step()
        metadata.update(usage=event.get("usage"), response_id=event.get("response_id"))
        if status == "cancelled":
            return [
                *out,
                {"type": "message-metadata", "messageMetadata": metadata},
                {"type": "abort", "reason": "cancelled"},
            ]
        return [*out, {"type": "finish", "finishReason": "stop", "messageMetadata": metadata}]

    def _error(self, event: dict) -> list[dict]:
        out, metadata = self._end(event, "failed")
        metadata["error_code"] = event.get("code")
        # Metadata first: the SDK's Chat stops reading at an `error` chunk.
        return [
            *out,
            *self._finish_step(),
            {"type": "message-metadata", "messageMetadata": metadata},
            {"type": "error", "errorText": event.get("message") or "the run failed"},
        ]
