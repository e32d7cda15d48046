"""The run engine: every surface starts, cancels and reads runs through these modules.

`start` creates a run and hands it to this process's `executor`, which owns it as a task that
`execute`s it; everything a run produces goes through the `journal` (persist, then `publish`);
readers replay and follow runs with `read`; `sweep` ends the runs of dead processes; `lifespan`
starts and stops the engine with the serving process; `errors` names what can go wrong.
"""
