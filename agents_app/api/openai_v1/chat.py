"""`POST /v1/chat/completions`: an agent run as a chat completion, streamed as chunks or answered
whole once the run has ended.

Chat Completions is stateless: the client sends the whole history in `messages` every time. So
these runs keep no conversation (`RunRequest(memory=False)`): the history is their input, and
the run is stored like any other (its input, events, usage). The agent's tool calls and
handoffs happen on the server; the completion carries the text of its answer (the messages of
a run, separated by a blank line when there are several, e.g. before and after a handoff).

A run that pauses for approval ends the completion there: `finish_reason` `length` (the answer
is incomplete) and a `metadata` object beside the choices saying why and where to decide
(`pause_metadata`); the run goes on once decided over REST, and its answer is the run's."""

import time
from typing import Any

import orjson
from openai.types import CompletionUsage
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessage
from openai.types.chat import chat_completion as completion_types
from openai.types.chat import chat_completion_chunk as chunk_types

from ...models import Run
from ...providers.responses_stream import TEXT_DELTA
from ...runs.errors import UPSTREAM_ERROR_CODES
from ...runs.read import Batch
from ...runs.start import RunRequest, start_run
from ..auth import authenticated_request
from ..sse import RunStreamConsumer
from ..throttles import RUN_START, STREAM_OPEN, check_throttles
from .errors import NO_RETRY, from_api_error, openai_error, retry_headers
from .requests import agent_for, body_object, chat_input, chat_options
from .response_events import pause_metadata

DONE = b"data: [DONE]\n\n"


def failure_status(code: str) -> int:
    """A failed run as an HTTP status: 502 when the model's provider failed, else 500."""
    return 502 if code in UPSTREAM_ERROR_CODES else 500


def usage_of(usage: dict) -> CompletionUsage:
    return CompletionUsage(
        prompt_tokens=usage.get("input_tokens", 0),
        completion_tokens=usage.get("output_tokens", 0),
        total_tokens=usage.get("total_tokens", 0),
    )


class ChatTranslator:
    """A run's journalled events -> chat completion chunks, and the whole completion at the end."""

    def __init__(self, run: Run, model: str, include_usage: bool) -> None:
        self.id = f"chatcmpl-{run.pk.hex}"
        self.created = int(run.created_at.timestamp()) if run.created_at else int(time.time())
        self.model = model
        self.include_usage = include_usage
        self.text: list[str] = []
        self.item_id: str | None = None
        self.started = False
        self.end: dict | None = None  # the terminal event
        self.pause: dict | None = None  # the run's pause for approval, while it waits

    def _chunk(
        self, delta: dict | None, finish: str | None = None, usage: dict | None = None, **extra: Any
    ) -> bytes:
        """One chunk's frame: a delta of the one choice, or (`delta` None) the usage chunk."""
        choices = []
        if delta is not None:
            choices = [
                chunk_types.Choice(index=0, delta=chunk_types.ChoiceDelta(**delta), finish_reason=finish)
            ]
        fields = {"usage": usage_of(usage)} if usage is not None else {}
        fields.update(extra)
        chunk = ChatCompletionChunk(
            id=self.id,
            object="chat.completion.chunk",
            created=self.created,
            model=self.model,
            choices=choices,
            **fields,
        )
        return b"data: " + chunk.model_dump_json(exclude_unset=True).encode() + b"\n\n"

    def feed(self, event: dict) -> bytes:
        """The SSE frames for one event (often none: tool calls, handoffs... stay on the server)."""
        kind = event["type"]
        if kind == "raw_response" and event.get("event_type") == TEXT_DELTA:
            delta = event["delta"]
            if self.item_id is not None and event.get("item_id") != self.item_id and self.text:
                delta = "\n\n" + delta  # a new message of the run
            self.item_id = event.get("item_id")
            self.text.append(delta)
            opening = b"" if self.started else self._chunk({"role": "assistant", "content": ""})
            self.started = True
            return opening + self._chunk({"content": delta})
        if kind == "approval_required":
            self.pause = event
            return b""
        if kind == "approval_decided" and event.get("pending") == 0:
            self.pause = None
            return b""
        if kind == "stream_complete":
            self.end = event
            frames = self._chunk({}, finish="stop")
            if self.include_usage:
                frames += self._chunk(None, usage=event.get("usage") or {})
            return frames + DONE
        if kind == "error":
            self.end = event
            # The openai clients raise an APIError for a streamed `error` object.
            body = openai_error(
                failure_status(event.get("code", "")), event.get("message", ""), code=event.get("code")
            )
            return b"data: " + orjson.dumps(body) + b"\n\n"
        return b""

    def paused_end(self) -> bytes:
        """The streamed completion's end at the run's pause: `length` and the pause's metadata."""
        return self._chunk({}, finish="length", metadata=pause_metadata(self.pause)) + DONE

    def completion(self) -> tuple[int, dict, list]:
        """The non-streamed answer once the run has ended, or paused: status, body, headers."""
        end = self.end or {}
        if end.get("type") == "error":
            status = failure_status(end.get("code", ""))
            return status, openai_error(status, end.get("message", ""), code=end.get("code")), NO_RETRY
        paused = {"metadata": pause_metadata(self.pause)} if self.pause and not self.end else {}
        completion = ChatCompletion(
            id=self.id,
            object="chat.completion",
            created=self.created,
            model=self.model,
            choices=[
                completion_types.Choice(
                    index=0,
                    message=ChatCompletionMessage(role="assistant", content="".join(self.text)),
                    finish_reason="length" if paused else "stop",
                )
            ],
            usage=usage_of(end.get("usage") or {}),
            **paused,
        )
        return 200, completion.model_dump(mode="json", exclude_unset=True), []


class ChatCompletionsConsumer(RunStreamConsumer):
    """POST /v1/chat/completions."""

    methods = ("POST",)
    until_paused = True
    translator: ChatTranslator

    async def open(self, body: bytes):
        run = await start_run(lambda: self.run_request(body), reader=self.reader.inbox)
        self.translator = ChatTranslator(run, run.agent, self.options["include_usage"])
        return run, 0, True

    def run_request(self, body: bytes) -> RunRequest:
        request = authenticated_request(self.scope, body, RUN_START)
        data = body_object(request.data)
        spec = agent_for(data)
        self.options = chat_options(data)
        self.streaming = self.options["stream"]
        if self.streaming:
            check_throttles(request, STREAM_OPEN)
        return RunRequest(user=request.user, spec=spec, input=chat_input(data.get("messages")), memory=False)

    def prologue(self) -> bytes:
        return b""

    def frames(self, batch: Batch) -> bytes:
        return b"".join(self.translator.feed(orjson.loads(text)) for _seq, text in batch)

    def pause_frames(self) -> bytes:
        return self.translator.paused_end()

    def result(self) -> tuple[int, dict, list]:
        return self.translator.completion()

    def refusal(self, status: int, body: dict) -> tuple[int, Any, list]:
        return status, from_api_error(status, body), retry_headers(status)
