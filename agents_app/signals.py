"""Signals for apps built on the run machinery (research reports follow their runs' ends)."""

from django.dispatch import Signal

# Sent in the transaction that marks a run `interrupted` because its process died (the stale
# sweep), with `run` (the Run) and `error` (what the run now records). A run interrupted by
# its own process stopping ends in that process instead, through its code's cancellation
# (see RunContext.interrupted).
run_interrupted = Signal()
