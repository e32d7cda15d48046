"""The one way from async code to the database: `in_sync_thread(fn)(...)` runs `fn` in Django's
sync thread with that thread's connection checked before and given back after (to the pool on
PostgreSQL; a connection a database restart broke is replaced on the next call).

Channels' `database_sync_to_async` would be the library's own, but it checks connections before
entering the context the call runs in (asgiref 3.13 keeps Django's connections per context), and
a stale one that the call then used was not replaced: after the database killed the server's
connections, a stream's first trip through it failed on the dead one, where this helper, which
checks inside the call, reconnected (tests/test_db_faults.py). The async ORM (`aget`, `async for`
over a queryset) gives nothing back at all. `tests/test_boundaries.py` checks that project code
uses neither."""

import functools
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.db import close_old_connections

P = ParamSpec("P")
R = TypeVar("R")


def in_sync_thread(fn: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    @functools.wraps(fn)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        close_old_connections()
        try:
            return fn(*args, **kwargs)
        finally:
            close_old_connections()

    return sync_to_async(call)
