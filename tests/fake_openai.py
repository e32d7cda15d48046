"""A local stand-in for the OpenAI API that speaks its real wire format.

Serves `POST /v1/responses` and `POST /v1/chat/completions`, streaming (SSE) or not, with payloads
built from the `openai` package's own types. In tests: `with FakeOpenAI(text="hi") as fake:` and point
a client at `fake.base_url`. As a process (benchmarks): `python tests/fake_openai.py --port 8765
--deltas 200 --delay 0`.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from openai.types import CompletionUsage
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessage
from openai.types.chat import chat_completion as completion_types
from openai.types.chat import chat_completion_chunk as chunk_types
from openai.types.chat.chat_completion_message_function_tool_call import (
    ChatCompletionMessageFunctionToolCall,
    Function,
)

if __package__ in (None, ""):
    # Run as a script: make the project importable for the shared schema and event builders.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents_app.providers import responses_stream
from agents_app.providers.offline_schema import schema_instance

Scope = dict[str, Any]


@dataclass
class RecordedRequest:
    path: str
    body: dict[str, Any]
    authorization: str | None


@dataclass
class Turn:
    """What a request asks for, whichever API it came through."""

    user_text: str = ""
    tools: list[str] = field(default_factory=list)
    called: list[str] = field(default_factory=list)
    tool_outputs: list[str] = field(default_factory=list)
    schema: dict[str, Any] | None = None


@dataclass
class Reply:
    text: str | None = None
    tool: tuple[str, dict[str, Any]] | None = None


async def read_body(receive: Any) -> bytes:
    """The whole body of an ASGI HTTP request."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


class FakeOpenAI:
    """ASGI app + background server. Reply text, pace, tool script and usage are per instance."""

    def __init__(
        self,
        *,
        text: str | None = None,
        deltas: int | None = None,
        delay: float = 0.0,
        tool_calls: dict[str, dict[str, Any]] | None = None,
        input_tokens: int = 12,
        record_limit: int = 10_000,
        fail: tuple[int, str] | None = None,
        fail_first: int = 0,
        cut_after: int | None = None,
        stall_after: int | None = None,
        hang_first: int = 0,
        retry_after: str | None = None,
    ):
        if text is None:
            count = deltas or 8
            text = "".join(f"word{i} " for i in range(count)).rstrip()
        self.text = text
        self.deltas = deltas
        self.delay = delay
        # If the request offers tool X and X has not been called yet, call it first with these arguments.
        self.tool_calls = tool_calls or {}
        self.input_tokens = input_tokens
        # Upstream failures: every request answered with this HTTP status and OpenAI error type
        # (e.g. (429, "rate_limit_exceeded")), or streams that drop after `cut_after` deltas.
        self.fail = fail
        self.fail_first = fail_first  # fail only the first N requests, then answer (0: all)
        self.failed = 0
        self.cut_after = cut_after
        # Or streams that go silent after `stall_after` deltas, their connection left open.
        self.stall_after = stall_after
        # The first N requests never get response headers (an upstream that accepts and hangs).
        self.hang_first = hang_first
        # The failures' Retry-After header (default: `retry-after-ms: 1`).
        self.retry_after = retry_after
        self.requests: collections.deque[RecordedRequest] = collections.deque(maxlen=record_limit)
        self.usages: collections.deque[tuple[int, int]] = collections.deque(maxlen=record_limit)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None

    # --- server lifecycle -------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def start(self, host: str = "127.0.0.1", port: int = 0) -> FakeOpenAI:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self, log_level="warning", lifespan="off", access_log=False, timeout_graceful_shutdown=1
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("fake OpenAI server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- ASGI -------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        path = scope["path"]
        if scope["method"] != "POST" or path not in ("/v1/responses", "/v1/chat/completions"):
            await _json(
                send, 404, {"error": {"message": f"Unknown path {path}", "type": "invalid_request_error"}}
            )
            return
        try:
            request = json.loads(body)
        except json.JSONDecodeError:
            await _json(
                send, 400, {"error": {"message": "Body is not JSON", "type": "invalid_request_error"}}
            )
            return
        headers = {key.decode().lower(): value.decode() for key, value in scope["headers"]}
        self.requests.append(RecordedRequest(path, request, headers.get("authorization")))
        if len(self.requests) <= self.hang_first:
            while (await receive())["type"] != "http.disconnect":
                pass
            return
        if self.fail is not None and (not self.fail_first or self.failed < self.fail_first):
            self.failed += 1
            status, kind = self.fail
            # OpenAI's error body; `retry-after-ms` keeps the client's own retries quick.
            error = {"error": {"message": f"fake upstream failure ({kind})", "type": kind, "code": kind}}
            wait = (b"retry-after-ms", b"1")
            if self.retry_after:
                wait = (b"retry-after", self.retry_after.encode())
            await _json(send, status, error, [wait])
            return

        chat = path.endswith("/chat/completions")
        reply = self.reply(_chat_turn(request) if chat else _responses_turn(request))
        usage = (self.input_tokens, len(self.chunks(reply.text)) if reply.text is not None else 5)
        self.usages.append(usage)
        model = request.get("model", "fake-model")
        if chat:
            if request.get("stream"):
                include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
                await self._stream(send, receive, _chat_frames(self, reply, model, usage, include_usage))
            else:
                await _json(send, 200, _chat_completion(reply, model, usage).model_dump(mode="json"))
            return
        response = self._response(reply, model, usage)
        if request.get("stream"):
            await self._stream(send, receive, _responses_frames(self, response))
        else:
            await _json(send, 200, response.model_dump(mode="json"))

    async def _stream(self, send: Any, receive: Any, frames: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
            }
        )
        disconnected = asyncio.Event()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            disconnected.set()

        watcher = asyncio.create_task(watch())
        sent = 0
        try:
            for frame, is_delta in frames:
                if disconnected.is_set():
                    return
                if is_delta and sent == self.cut_after:
                    # The connection drops mid-answer: the response body never completes.
                    raise UpstreamCut(f"stream cut after {sent} deltas")
                if is_delta and sent == self.stall_after:
                    await disconnected.wait()  # silent until the client gives up
                    return
                await send({"type": "http.response.body", "body": frame, "more_body": True})
                sent += is_delta
                if is_delta and self.delay:
                    await asyncio.sleep(self.delay)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            watcher.cancel()

    # --- what to answer ---------------------------------------------------------------------

    def reply(self, turn: Turn) -> Reply:
        for name, arguments in self.tool_calls.items():
            if name in turn.tools and name not in turn.called:
                return Reply(tool=(name, arguments))
        if turn.schema is not None:
            return Reply(text=json.dumps(schema_instance(turn.schema, turn.user_text)))
        if turn.tool_outputs:
            return Reply(text=f"Tool results: {'; '.join(turn.tool_outputs)}. {self.text}")
        return Reply(text=self.text)

    def chunks(self, text: str) -> list[str]:
        """`deltas` near-equal pieces when set, else word-sized ones; they always join to `text`."""
        if not self.deltas:
            return responses_stream.text_chunks(text)
        count = min(self.deltas, len(text))
        size, longer = divmod(len(text), count) if count else (0, 0)
        bounds = [i * size + min(i, longer) for i in range(count + 1)]
        return [text[bounds[i] : bounds[i + 1]] for i in range(count)]

    def _response(self, reply: Reply, model: str, usage: tuple[int, int]) -> Any:
        if reply.tool is not None:
            item: responses_stream.OutputItem = responses_stream.function_call_item(*reply.tool)
        else:
            item = responses_stream.message_item(reply.text or "")
        return responses_stream.build_response(model, [item], responses_stream.usage(*usage))


def _responses_turn(request: dict[str, Any]) -> Turn:
    turn = Turn(tools=[t["name"] for t in request.get("tools") or [] if t.get("type") == "function"])
    items = request.get("input") or []
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    for item in items:
        if item.get("type") == "function_call":
            turn.called.append(item.get("name", ""))
        elif item.get("type") == "function_call_output":
            turn.tool_outputs.append(_text(item.get("output")))
        elif item.get("role") == "user":
            turn.user_text = _text(item.get("content"))
    text_format = (request.get("text") or {}).get("format") or {}
    if text_format.get("type") == "json_schema":
        turn.schema = text_format.get("schema") or {}
    return turn


def _chat_turn(request: dict[str, Any]) -> Turn:
    turn = Turn(tools=[t["function"]["name"] for t in request.get("tools") or [] if "function" in t])
    for message in request.get("messages") or []:
        role = message.get("role")
        if role == "assistant":
            turn.called += [c["function"]["name"] for c in message.get("tool_calls") or [] if "function" in c]
        elif role == "tool":
            turn.tool_outputs.append(_text(message.get("content")))
        elif role == "user":
            turn.user_text = _text(message.get("content"))
    response_format = request.get("response_format") or {}
    if response_format.get("type") == "json_schema":
        turn.schema = (response_format.get("json_schema") or {}).get("schema") or {}
    return turn


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(part.get("text", "") for part in content if isinstance(part, dict))
    return json.dumps(content)


def _responses_frames(fake: FakeOpenAI, response: Any):
    for event in responses_stream.stream_events(response, chunker=fake.chunks):
        frame = f"event: {event.type}\ndata: {event.model_dump_json()}\n\n".encode()
        yield frame, event.type == "response.output_text.delta"


def _chat_frames(fake: FakeOpenAI, reply: Reply, model: str, usage: tuple[int, int], include_usage: bool):
    base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": model}

    def frame(choices: list[Any], **extra: Any) -> bytes:
        chunk = ChatCompletionChunk(object="chat.completion.chunk", choices=choices, **base, **extra)
        return f"data: {chunk.model_dump_json()}\n\n".encode()

    def choice(finish_reason: Any = None, **delta: Any) -> chunk_types.Choice:
        return chunk_types.Choice(
            index=0, delta=chunk_types.ChoiceDelta(**delta), finish_reason=finish_reason
        )

    yield frame([choice(role="assistant", content="")]), False
    if reply.tool is not None:
        name, arguments = reply.tool
        call = chunk_types.ChoiceDeltaToolCall(
            index=0,
            id=f"call_{uuid.uuid4().hex}",
            type="function",
            function=chunk_types.ChoiceDeltaToolCallFunction(name=name, arguments=""),
        )
        yield frame([choice(tool_calls=[call])]), False
        args = chunk_types.ChoiceDeltaToolCall(
            index=0, function=chunk_types.ChoiceDeltaToolCallFunction(arguments=json.dumps(arguments))
        )
        yield frame([choice(tool_calls=[args])]), True
        yield frame([choice("tool_calls")]), False
    else:
        for piece in fake.chunks(reply.text or ""):
            yield frame([choice(content=piece)]), True
        yield frame([choice("stop")]), False
    if include_usage:
        yield frame([], usage=_completion_usage(usage)), False
    yield b"data: [DONE]\n\n", False


def _completion_usage(usage: tuple[int, int]) -> CompletionUsage:
    return CompletionUsage(prompt_tokens=usage[0], completion_tokens=usage[1], total_tokens=sum(usage))


def _chat_completion(reply: Reply, model: str, usage: tuple[int, int]) -> ChatCompletion:
    tool_calls = None
    if reply.tool is not None:
        name, arguments = reply.tool
        function = Function(name=name, arguments=json.dumps(arguments))
        tool_calls = [
            ChatCompletionMessageFunctionToolCall(
                id=f"call_{uuid.uuid4().hex}", type="function", function=function
            )
        ]
    message = ChatCompletionMessage(role="assistant", content=reply.text, tool_calls=tool_calls)
    return ChatCompletion(
        id=f"chatcmpl-{uuid.uuid4().hex}",
        object="chat.completion",
        created=int(time.time()),
        model=model,
        choices=[
            completion_types.Choice(
                index=0, message=message, finish_reason="tool_calls" if tool_calls else "stop"
            )
        ],
        usage=_completion_usage(usage),
    )


class UpstreamCut(Exception):
    """Raised inside a streamed response: the server drops the connection mid-body."""


async def _json(send: Any, status: int, payload: dict[str, Any], headers=()) -> None:
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--text", help="reply text (default: generated words)")
    parser.add_argument("--deltas", type=int, help="split each reply into this many deltas")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds to wait after each delta")
    parser.add_argument(
        "--tool", action="append", default=[], metavar="NAME=JSON", help="call tool NAME first when offered"
    )
    args = parser.parse_args(argv)
    tool_calls = {}
    for spec in args.tool:
        name, _, arguments = spec.partition("=")
        tool_calls[name] = json.loads(arguments or "{}")
    fake = FakeOpenAI(
        text=args.text, deltas=args.deltas, delay=args.delay, tool_calls=tool_calls, record_limit=100
    )
    print(f"fake OpenAI API on http://{args.host}:{args.port}/v1", flush=True)
    uvicorn.run(fake, host=args.host, port=args.port, log_level="warning", lifespan="off", access_log=False)


if __name__ == "__main__":
    main()
