"""The fake upstream (runs in its own process: --role fake), and the call that reconfigures it between
phases."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .common import HOST, ROOT


def fake_main(args: argparse.Namespace) -> None:
    """tests/fake_openai.FakeOpenAI, plus `POST /bench/config` so one process serves every scenario."""
    sys.path.insert(0, str(ROOT))
    import uvicorn

    from tests.fake_openai import FakeOpenAI, read_body

    fake = FakeOpenAI(deltas=args.deltas, delay=args.delay, record_limit=100)

    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/bench/config":
            config = json.loads(await read_body(receive))
            fake.deltas = int(config["deltas"])
            fake.text = " ".join(f"word{i}" for i in range(fake.deltas))
            fake.delay = float(config["delay"])
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        await fake(scope, receive, send)

    uvicorn.run(app, host=HOST, port=args.port, log_level="warning", lifespan="off", access_log=False)


def configure_fake(port: int, deltas: int, delay_s: float) -> None:
    import urllib.request

    body = json.dumps({"deltas": deltas, "delay": delay_s}).encode()
    request = urllib.request.Request(f"http://{HOST}:{port}/bench/config", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        if response.status != 204:
            raise RuntimeError(f"fake config failed: HTTP {response.status}")
