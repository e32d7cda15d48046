"""Running a node test file (node's own test runner, packages from tests/node/package.json)
against a live server: the file reads BASE_URL and TOKEN from its environment."""

import shutil
import subprocess
from pathlib import Path

import pytest

NODE_DIR = Path(__file__).resolve().parent / "node"


def run_node_tests(name: str, base_url: str, token: str, timeout: float = 120, **env: str) -> str:
    """Runs tests/node/<name>; fails the calling test with node's report unless all passed."""
    node = shutil.which("node")
    if node is None or not (NODE_DIR / "node_modules").is_dir():
        pytest.fail("node and tests/node/node_modules are needed: run `make install`")
    proc = subprocess.run(
        [node, "--test", "--test-reporter=spec", name],
        cwd=NODE_DIR,
        env={"PATH": str(Path(node).parent), "BASE_URL": base_url, "TOKEN": token, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    report = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"node --test {name} failed:\n{report}"
    return report
