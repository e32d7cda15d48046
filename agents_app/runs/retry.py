"""Waiting out a dependency that is away (the database, Redis) without flooding the log."""

import logging
import time
from typing import Any

from django.conf import settings
from django.db import InterfaceError, OperationalError

log = logging.getLogger(__name__)

# What a database that is away for a while raises (a restart, a failover, a lost connection,
# SQLite's "database is locked", a pool with no free connection): worth waiting out, unlike
# errors in the data itself.
OUTAGE_ERRORS = (OperationalError, InterfaceError)


class Patience:
    """Back-off for retrying a write through a database outage: 50 ms doubling up to 2 s,
    for at most RUN_DB_RETRY_SECONDS from the first failure."""

    def __init__(self) -> None:
        self.first_failure: float | None = None
        self.delay = 0.05

    def next_delay(self) -> float | None:
        """Seconds to wait before the next attempt, or None: give up."""
        now = time.monotonic()
        if self.first_failure is None:
            self.first_failure = now
        if now - self.first_failure >= settings.RUN_DB_RETRY_SECONDS:
            return None
        delay, self.delay = self.delay, min(self.delay * 2, 2.0)
        return delay


class FailureLog:
    """Logs a dependency that keeps failing (Redis down: every batch of every run fails to
    publish) without flooding the log: the first failure with its traceback, then one line
    per `every` seconds with the count, and one line when it works again."""

    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self.failures = 0
        self.unlogged = 0
        self.logged_at = 0.0

    def failed(self, message: str, *args: Any) -> None:
        self.failures += 1
        now = time.monotonic()
        if self.failures == 1:
            log.warning(message, *args, exc_info=True)
            self.logged_at = now
        elif now - self.logged_at >= self.every:
            log.warning(message + " (and %d more failures since the last report)", *args, self.unlogged)
            self.logged_at, self.unlogged = now, 0
        else:
            self.unlogged += 1

    def ok(self, what: str) -> None:
        if self.failures:
            log.warning("%s works again after %d failures", what, self.failures)
            self.failures = self.unlogged = 0
