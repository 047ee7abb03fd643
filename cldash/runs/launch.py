"""Runs in the background: launch (queue and start), re-run with another seed, cancel.

A run is a separate OS process, ``python -m cldash execute RUN_ID`` (an argument list, never a
shell string; the store's URL goes in its environment as CLDASH_DB, since any local user can read
a command line and a URL may hold a password), in its own process group (session), writing
straight to the store with a heartbeat (cldash.runs.processes, cldash.runs.execute). `launch` records
queued runs (idempotently, by launch key) and hands them to their launcher (cldash.runs.launchers): the
local one starts what the concurrency limit allows (cldash.runs.queue.schedule), a cluster queues them as
jobs.
"""

from __future__ import annotations

import socket
import time

from cldash.config import describe_run, resolve
from cldash.core.errors import UserError
from cldash.runs.launchers import Resources, for_run
from cldash.runs.priority import priority_value
from cldash.runs.queue import schedule
from cldash.store import Store


def launch(store: Store, configs: list[dict], launch_keys: list[str] | None = None,
           group_key: str | None = None, names: list[str] | None = None, start: bool = True,
           launcher=None, resources=None, priority: str = "interactive") -> list[int]:
    """Queue one run per (already resolved) config and start as many as the limit allows.

    With launch keys, launching the same keys again returns the same runs (a double click
    starts one run per config, not two). `launcher` (cldash.runs.launchers; default: the local one)
    takes the queued runs: the local scheduler starts what its limit allows, a Ray cluster takes
    them all as jobs with `resources` (cldash.runs.launchers.Resources) each and queues what does not fit.
    `priority` (cldash.runs.priority): "interactive" runs start ahead of the "batch" runs waiting in the local queue.
    """
    rank = priority_value(priority)   # before anything is stored
    local = launcher is None or launcher.name == "local"
    if not local:
        resources = (resources or Resources()).check()
        launcher.check_store(store.url)

    def owner() -> dict:   # a cluster's run records its launcher and its own job id (launcher.info) from its INSERT
        return {} if local else {"launcher": launcher.name, "launcher_info": launcher.info(resources)}

    ids = [store.create_run(cfg, status="queued", launch_key=(launch_keys or [None] * len(configs))[i],
                            group_key=group_key, name=(names or [""] * len(configs))[i], priority=rank, **owner())
           for i, cfg in enumerate(configs)]
    if start and local:
        schedule(store)
    elif start:   # a repeated launch returns runs already submitted: the launcher leaves those as they are
        launcher.submit(store, [r for r in store.runs(ids=ids, status=["queued"]) if r["launcher"] == launcher.name],
                        resources)
    return ids


def rerun(store: Store, run_id: int, seed: int, launch_key: str | None = None) -> int:
    """Queue a copy of a run's configuration with another seed (and start it when a slot is free)."""
    config = dict(store.get_run(run_id)["config"], seed=seed)
    resolved = resolve(config)
    return launch(store, [resolved.to_dict()], [launch_key] if launch_key else None,
                  names=[describe_run(resolved.config)])[0]


def cancel(store: Store, run_id: int, timeout: float = 2.0) -> str:
    """Cancel a run wherever it runs: record the request on its row (the run polls it at every flush, on
    any host), send its launcher's own stop (SIGTERM to a local process group, SIGKILL after `timeout`;
    a Ray job's stop), give the run `timeout` to record its end itself, and else mark it cancelled."""
    run = store.get_run(run_id)
    if run["status"] not in ("queued", "running"):
        raise UserError(f"run {run_id} is {run['status']}, not running; there is nothing to cancel.")
    store.update_run(run_id, cancel_requested_at=time.time())
    try:
        launcher = for_run(run)
    except UserError:
        launcher = None
    if launcher is not None:
        launcher.cancel(store, run, timeout)
    ours = launcher is not None and launcher.name == "local" and run["host"] == socket.gethostname()
    if run["status"] == "running" and not ours:   # another host's run, or a cluster's job, ends itself
        deadline = time.time() + timeout
        while time.time() < deadline and store.get_run(run_id)["status"] == "running":
            time.sleep(0.1)
    run = store.get_run(run_id)
    if run["status"] in ("queued", "running"):   # the process did not get to record it
        # the message and the stored step come from one value, as where the engine records its own cancel
        step = run["step"] or 0
        store.update_run(run_id, status="cancelled", error=f"cancelled at step {step}", step=step,
                         finished_at=time.time())
    return "cancelled"


