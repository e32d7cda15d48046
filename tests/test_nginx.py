"""The deployment's nginx config (deploy/nginx/agents.conf) in front of two web processes (and, in
worker mode, two workers that execute the runs): a run
streamed through it arrives as it is written, is joined and resumed with Last-Event-ID and
cancelled through it (round robin takes those requests to both processes), a socket runs through
it, and static files come from nginx itself."""

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
import websockets
from django.conf import settings
from django.db import connection
from httpx_sse import aconnect_sse

from agents_app.models import Run

from .live_server import ROOT, free_port, listening, start_server, start_worker

pytestmark = [
    pytest.mark.live,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not settings.REDIS_URL, reason="two web processes meet through Redis"),
]
SITE = ROOT / "deploy" / "nginx" / "agents.conf"
DELTA = "response.output_text.delta"


def nginx_config(tmp: Path, port: int, upstreams: list[int]) -> Path:
    """The deployment's site, pointed at this test's ports and directories, in a main config of
    the test's own (nginx runs in the foreground, its files under `tmp`)."""
    site = SITE.read_text()
    for default, replacement in [
        ("    server 127.0.0.1:8001;\n    server 127.0.0.1:8002;\n",
         "".join(f"    server 127.0.0.1:{p};\n" for p in upstreams)),
        ("    listen 80;\n    listen [::]:80;\n", f"    listen 127.0.0.1:{port};\n"),
        ("alias /srv/agents/staticfiles/;", f"alias {tmp}/static/;"),
    ]:  # fmt: skip
        assert default in site, f"deploy/nginx/agents.conf no longer has {default!r}"
        site = site.replace(default, replacement)
    kinds = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    temp = "".join(f"{kind}_temp_path {tmp}/{kind};\n" for kind in kinds)
    user = "user root root;" if os.geteuid() == 0 else ""
    config = tmp / "nginx.conf"
    config.write_text(
        f"daemon off;\nworker_processes 1;\npid {tmp}/nginx.pid;\nerror_log {tmp}/error.log warn;\n{user}\n"
        f"events {{ worker_connections 1024; }}\n"
        f"http {{\ninclude /etc/nginx/mime.types;\naccess_log off;\n{temp}{site}\n}}\n"
    )
    return config


@pytest.fixture(params=["in-process", "worker"])
def through_nginx(request, tmp_path):
    """The base URL of nginx in front of two web processes (in worker mode, and two workers)."""
    workers = request.param == "worker"
    if workers and connection.vendor != "postgresql":
        pytest.skip("worker mode: its queue is PostgreSQL's")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        if os.environ.get("CI"):
            pytest.fail("nginx is missing: .ci/run installs it with apt-get")
        pytest.skip("nginx is missing (apt-get install nginx-light)")
    (tmp_path / "static").mkdir()
    (tmp_path / "static" / "probe.css").write_text("body {}\n")
    procs = []
    try:
        ports = [free_port(), free_port()]
        mode = {"RUN_EXECUTION": request.param}
        procs += [start_server(port, OFFLINE_MODEL_DELAY="0.1", **mode) for port in ports]
        if workers:
            procs += [start_worker(OFFLINE_MODEL_DELAY="0.1") for _ in range(2)]
        port = free_port()
        config = nginx_config(tmp_path, port, ports)
        proxy = subprocess.Popen([nginx, "-p", str(tmp_path), "-c", str(config)])
        procs.append(listening(proxy, port, "nginx"))
        yield f"http://127.0.0.1:{port}"
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)


async def sse_events(client, method, url, headers, *, count=None, **kwargs) -> list[dict]:
    """A stream's events: `count` of them, or up to the terminal one."""
    events = []
    async with aconnect_sse(client, method, url, headers=dict(headers), **kwargs) as source:
        assert source.response.status_code == 200, await source.response.aread()
        async for sse in source.aiter_sse():
            if sse.data:
                events.append(json.loads(sse.data))
            if len(events) == count or (events and events[-1]["type"] in ("stream_complete", "error")):
                break
    return events


async def test_streams_joins_cancels_and_sockets_through_nginx(through_nginx, alice):
    base, headers = through_nginx, {"Authorization": f"Token {alice.token}"}
    async with httpx.AsyncClient(timeout=30) as client:
        static = await client.get(f"{base}/static/probe.css")
        assert static.status_code == 200 and static.headers["cache-control"] == "max-age=604800, public"

        body = {"input": "Tell me a long story about forests"}
        url = f"{base}/api/agents/chat/stream"
        first = await sse_events(client, "POST", url, headers, count=8, json=body)
        run_id = first[0]["run_id"]
        assert any(e.get("event_type") == DELTA for e in first)
        # Unbuffered: the first events came while the run was still writing.
        assert (await Run.objects.aget(pk=run_id)).status == Run.Status.RUNNING

        # Joined and resumed after the last event seen, twice: round robin takes one to each process.
        seen = first
        for _ in range(2):
            after = {**headers, "Last-Event-ID": str(seen[-1]["seq"])}
            more = await sse_events(client, "GET", f"{base}/api/runs/{run_id}/stream", after, count=4)
            assert [e["seq"] for e in more] == list(range(seen[-1]["seq"] + 1, seen[-1]["seq"] + 5))
            seen = seen + more

        # Cancelled through nginx; a join from the start sees the whole run, in order, to its end.
        cancel = await client.post(f"{base}/api/runs/{run_id}/cancel", headers=headers)
        assert cancel.status_code == 202
        whole = await sse_events(client, "GET", f"{base}/api/runs/{run_id}/stream", headers)
        assert [e["seq"] for e in whole] == list(range(1, len(whole) + 1))
        assert whole[: len(seen)] == seen
        assert whole[-1]["type"] == "stream_complete" and whole[-1]["status"] == "cancelled"

    socket_url = base.replace("http://", "ws://") + "/ws/agents/chat/"
    async with websockets.connect(socket_url, additional_headers=headers) as ws:
        await ws.send(json.dumps({"type": "run", "input": "what is 17 * 23?"}))
        events = []
        while not events or events[-1]["type"] not in ("stream_complete", "error"):
            events.append(json.loads(await asyncio.wait_for(ws.recv(), 15)))
    assert events[-1]["status"] == "completed" and "391" in events[-1]["final_output"]
