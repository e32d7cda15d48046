"""Signals for apps built on the run engine (research reports follow their runs' ends)."""

from django.dispatch import Signal

# Sent by the journal in the transaction that ends a run (whoever ends it: its own process, its
# process stopping, the stale sweep of another process), with `run_id`, `agent` (its slug),
# `status` (what the run now is) and `error`. A receiver's writes commit or roll back with the
# run's end, and cost every run's end: return at once for the agents it is not about.
run_ended = Signal()
