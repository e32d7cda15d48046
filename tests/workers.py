"""Loaded before Django's settings (pyproject.toml: `-p tests.workers`). Under pytest-xdist each
worker process runs its own share of the suite; pytest-django gives each a test database of its
own, and this gives each a Redis database of its own (`REDIS_URL`'s database number + the worker's
number + 1), so that the cache (throttle and login counters keyed by user ids, which the workers'
databases reuse) and the channel layer are not shared either. The live servers a worker starts
inherit its environment."""

import os
from urllib.parse import urlsplit, urlunsplit

worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # "gw0", "gw1", ... in xdist's workers
redis_url = os.environ.get("REDIS_URL", "")
if worker.startswith("gw") and redis_url:
    parts = urlsplit(redis_url)
    base = int(parts.path.strip("/") or 0)
    database = f"/{base + int(worker[2:]) + 1}"
    os.environ["REDIS_URL"] = urlunsplit((parts.scheme, parts.netloc, database, parts.query, parts.fragment))
