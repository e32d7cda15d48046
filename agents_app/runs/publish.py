"""Publishing what the journal committed: to this process's readers directly, and to readers in
other processes through the run's channel-layer group.

The channel layer only wakes readers up (the database holds every event), so a run's events go
to its group only once a reader in another process has asked for them (`watch`), or when the run
is not this process's (the stale sweep ends runs of dead processes).
"""

import logging
from collections.abc import Callable
from typing import Any

from . import layer
from .retry import FailureLog

log = logging.getLogger(__name__)

# A reader in this process: called with each `run.events` message of its run, must not block.
Reader = Callable[[dict], None]


def events_message(
    run_id: str, seqs: list[int], texts: list[str], terminal: bool, paused: bool = False
) -> dict:
    """The message that wakes readers: encoded events plus their seqs, so nobody re-parses.
    `paused`: the run left its process to wait for approvals (its readers follow its group now)."""
    message = {"type": layer.EVENTS, "run_id": run_id, "events": texts, "seqs": seqs, "terminal": terminal}
    if paused:
        message["paused"] = True
    return message


class Hub:
    """The runs this process executes and their local readers (one per event loop)."""

    def __init__(self) -> None:
        self.owned: set[str] = set()
        self.readers: dict[str, list[Reader]] = {}
        self.watched: set[str] = set()
        self._failures = FailureLog()

    def own(self, run_id: Any) -> None:
        self.owned.add(str(run_id))

    def disown(self, run_id: Any) -> None:
        key = str(run_id)
        self.owned.discard(key)
        self.readers.pop(key, None)
        self.watched.discard(key)

    def owns(self, run_id: Any) -> bool:
        return str(run_id) in self.owned

    def subscribe(self, run_id: Any, reader: Reader) -> bool:
        """Hand this run's future batches to `reader`; False if this process does not run it."""
        key = str(run_id)
        if key not in self.owned:
            return False
        self.readers.setdefault(key, []).append(reader)
        return True

    def unsubscribe(self, run_id: Any, reader: Reader) -> None:
        readers = self.readers.get(str(run_id))
        if readers and reader in readers:
            readers.remove(reader)

    def watch(self, run_id: Any) -> None:
        """A reader in another process follows one of our runs: publish it to the group too."""
        if str(run_id) in self.owned:
            self.watched.add(str(run_id))

    async def publish(self, message: dict) -> None:
        """One run's committed batch (`events_message`) to its readers."""
        key = message["run_id"]
        for reader in tuple(self.readers.get(key, ())):
            try:
                reader(message)
            except Exception:
                log.exception("a reader of run %s failed", key)
        if key in self.owned and key not in self.watched:
            return
        try:
            await layer.group_send(layer.run_group(key), message)
        except Exception:
            # Readers fall back to the database; a lost wake-up costs latency, not data.
            self._failures.failed("could not publish events of run %s", key)
        else:
            self._failures.ok("publishing to the channel layer")
