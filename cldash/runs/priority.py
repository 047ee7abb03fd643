"""Queue priorities: which waiting runs the local queue starts first.

A run a person launched and is watching (a lesson, the demo, the Launch page, a re-run, an order) is
interactive; the runs a program queues by the dozen (the claims' runs, a sweep, a search's trials) are batch.
Waiting runs start by (priority, id): an interactive run goes ahead of every batch run that waits, and runs of
one priority start oldest first. A running batch run is never stopped for an interactive one; the interactive
run takes the next free slot. The store keeps the number (runs.priority, NULL read as interactive)."""

from __future__ import annotations

from cldash.core.errors import UserError

PRIORITIES = {"interactive": 0, "batch": 1}   # name -> the number stored; lower starts first
NAMES = {v: k for k, v in PRIORITIES.items()}


def priority_value(name: str) -> int:
    """The stored number of a priority's name; a name that is not one is one sentence."""
    try:
        return PRIORITIES[name]
    except KeyError:
        raise UserError(f"unknown queue priority {name!r}; the priorities are "
                        f"{', '.join(PRIORITIES)}.") from None


def priority_name(run: dict) -> str:
    """A run's priority by name (a run stored before priorities existed is interactive)."""
    return NAMES.get(run.get("priority") or 0, str(run.get("priority")))


def start_order(run: dict) -> tuple[int, int]:
    """The key the local queue sorts waiting runs by."""
    return (run.get("priority") or 0, run["id"])
