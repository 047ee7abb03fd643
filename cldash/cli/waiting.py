"""The store as the commands that read runs open it, and how they wait for runs to end.

Every such command reconciles the store with the processes and starts the queued runs the concurrency
limit allows, so a queue moves on after a killed run whenever any command reads the store, dashboard or
not. `--wait` (sweep, resume, fork, lessons) and the demo poll the runs until all have ended.
"""

from __future__ import annotations

import sys
import time

from cldash.core.errors import UserError
from cldash.core.text import printable
from cldash.runs.queue import reconcile, schedule
from cldash.store import ENDED, Store


def store_reconciled(db):
    """The store, reconciled with the processes, with the queued runs the limit allows started: a queue
    moves on after a killed run whenever any command reads the store, dashboard or not."""
    store = Store(db)
    start_queued(store)
    return store


def start_queued(store) -> None:
    try:
        schedule(store)
    except UserError as exc:   # a run that cannot be started (its log cannot be written) does not stop a listing
        print(f"cldash: {exc}", file=sys.stderr)


def until_ended(store, ids: list[int], show, poll: float = 1.0) -> list[dict]:
    """Read these runs every `poll` seconds (reconciling every 5 s, so a killed run ends too), hand them to
    `show` each time, and return them once all have ended."""
    last = 0.0
    while True:
        if time.monotonic() - last > 5:
            reconcile(store)
            last = time.monotonic()
        runs = store.runs(ids=ids)
        show(runs)
        if all(r["status"] in ENDED for r in runs):
            return runs
        time.sleep(poll)


def why(run: dict) -> str:
    """': the first line of its error' for a run that did not finish, else ''."""
    return f": {printable(run['error'].splitlines()[0])}" if run["error"] and run["status"] != "finished" else ""


def wait_for(store, ids: list[int], poll: float = 1.0) -> int:
    """Wait until these runs have all ended, printing a line as each ends; 0 if all finished, else 1."""
    told: list[int] = []

    def ends(runs):
        for r in runs:
            if r["status"] in ENDED and r["id"] not in told:
                told.append(r["id"])
                print(f"run {r['id']} {r['status']}{why(r)} ({len(told)}/{len(ids)})", flush=True)

    runs = until_ended(store, ids, ends, poll)
    return 0 if all(r["status"] == "finished" for r in runs) else 1
