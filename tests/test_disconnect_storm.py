"""Disconnect storm: streams cut at random points, then resumed, over many runs (hypothesis).

SSE: the connection is closed after a random number of bytes, anywhere: inside the headers,
inside a frame, inside a multi-byte UTF-8 character (the answers quote the input, which is full
of them). The client keeps the complete frames it got, as an EventSource does, and reconnects
with Last-Event-ID. WebSocket: the socket is closed after a random number of messages and a new
one sends `resume`. Every seq must arrive exactly once, in order, and the text must be the
stored final output. The number of cuts is printed (STORM_EXAMPLES sets the examples)."""

import json
import os
import socket
import uuid

import pytest
import websockets.sync.client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents_app.models import Run

from .live_server import serving

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]
EXAMPLES = int(os.environ.get("STORM_EXAMPLES", "170"))  # about 1,100 SSE cuts and 120 socket cuts
INPUTS = ["héllo ☃ wörld 🌍 — “quotes”", "日本語のテキスト 🎉🎉", "naïve café ünïcödé ✓✓✓ ∑∫√"]
CUTS = {"sse": 0, "ws": 0}


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker, request):
    with serving(OFFLINE_MODEL_DELAY="0.002") as url:
        host, port = url.removeprefix("http://").split(":")
        yield host, int(port)
    # On the terminal even when output is captured, so CI's log shows it.
    line = f"disconnect storm: {CUTS['sse']} SSE cuts and {CUTS['ws']} WebSocket cuts, every resume complete"
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print(f"\n{line}")


def http_request(method: str, path: str, token: str, body: bytes = b"", last_event_id: int = 0) -> bytes:
    lines = [
        f"{method} {path} HTTP/1.1",
        "Host: 127.0.0.1",
        f"Authorization: Token {token}",
        "Connection: close",
    ]
    if body:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    if last_event_id:
        lines.append(f"Last-Event-ID: {last_event_id}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def read(address, request: bytes, limit: int | None) -> bytes:
    """The response's bytes, up to `limit` of them (then the connection is cut), or all."""
    with socket.create_connection(address, timeout=30) as sock:
        sock.sendall(request)
        got = b""
        while limit is None or len(got) < limit:
            chunk = sock.recv(4096 if limit is None else min(4096, limit - len(got)))
            if not chunk:
                break
            got += chunk
    return got


def complete_events(raw: bytes) -> list[dict]:
    """The events of the complete SSE frames in a (possibly cut) response body; chunked
    transfer coding is undone first, and a cut chunk or frame is dropped, as a client would."""
    head, _, body = raw.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in head.lower():
        data, rest = b"", body
        while True:
            size_line, sep, rest = rest.partition(b"\r\n")
            if not sep or not size_line.strip():
                break
            size = int(size_line.split(b";")[0], 16)
            if size == 0 or len(rest) < size + 2:
                data += rest[:size] if size else b""
                break
            data, rest = data + rest[:size], rest[size + 2 :]
        body = data
    frames = body.split(b"\n\n")[:-1]  # the last piece is a cut frame (or empty)
    events = []
    for frame in frames:
        for line in frame.decode().split("\n"):
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    return events


def check(events: list[dict], run: Run) -> None:
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1)), "a gap or a duplicate"
    assert events[-1]["type"] == "stream_complete"
    text = "".join(
        e["delta"]
        for e in events
        if e["type"] == "raw_response" and e["event_type"] == "response.output_text.delta"
    )
    assert text == run.final_output


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.sampled_from(INPUTS), cuts=st.lists(st.integers(1, 3000), min_size=1, max_size=12))
def test_sse_cut_anywhere_resumes_whole(server, alice, text, cuts):
    session = uuid.uuid4().hex
    body = json.dumps({"input": f"{text} {session}", "session_id": session}).encode()
    events = complete_events(
        read(server, http_request("POST", "/api/agents/chat/stream", alice.token, body), cuts[0])
    )
    CUTS["sse"] += 1
    run = Run.objects.get(conversation__session_key=session)
    for limit in [*cuts[1:], None]:
        last = events[-1]["seq"] if events else 0
        request = http_request("GET", f"/api/runs/{run.pk}/stream", alice.token, last_event_id=last)
        raw = read(server, request, limit)
        if raw.startswith(b"HTTP/1.1 204"):
            break  # the terminal event is already here
        events += complete_events(raw)
        CUTS["sse"] += limit is not None
        if events and events[-1]["type"] in ("stream_complete", "error"):
            break
    run.refresh_from_db()
    check(events, run)


@settings(
    max_examples=max(EXAMPLES // 3, 5),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(text=st.sampled_from(INPUTS), cuts=st.lists(st.integers(1, 40), min_size=1, max_size=6))
def test_websocket_cut_anywhere_resumes_whole(server, alice, text, cuts):
    host, port = server
    url = f"ws://{host}:{port}/ws/agents/chat/"
    headers = {"Authorization": f"Token {alice.token}"}
    events: list[dict] = []
    with websockets.sync.client.connect(url, additional_headers=headers) as ws:
        ws.send(json.dumps({"type": "run", "input": text}))
        while len(events) < cuts[0]:
            events.append(json.loads(ws.recv(timeout=30)))
            if events[-1]["type"] in ("stream_complete", "error"):
                break
    CUTS["ws"] += 1
    run_id = events[0]["run_id"]
    for limit in [*cuts[1:], None]:
        if events[-1]["type"] in ("stream_complete", "error"):
            break
        with websockets.sync.client.connect(url, additional_headers=headers) as ws:
            ws.send(json.dumps({"type": "resume", "run_id": run_id, "last_event_id": events[-1]["seq"]}))
            received = 0
            while limit is None or received < limit:
                events.append(json.loads(ws.recv(timeout=30)))
                received += 1
                if events[-1]["type"] in ("stream_complete", "error"):
                    break
        CUTS["ws"] += limit is not None
    check(events, Run.objects.get(pk=run_id))
