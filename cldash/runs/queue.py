"""The queue: `reconcile` makes the store agree with the processes, `schedule` starts what the limit allows.

`schedule` starts queued runs while fewer than the concurrency limit are active (the dashboard calls it on
every refresh, every cldash command that reads the store calls it, and every run process calls it when it
ends, so the queue drains with the browser closed, also after a run was killed); `reconcile` marks a run
whose process is gone as ended with the reason, so nothing shows as running forever. A foreground `cldash
run` is never started by the scheduler: its row is owned by its own process from the moment it is created
(launcher "cli"). A run whose process recorded its end in its end file (cldash.runs.processes; the store
could not take it) ends as recorded there. A store that refuses writes (read-only) is left as it is.
"""

from __future__ import annotations

import socket
import time

from cldash.core.errors import StoreWriteError, UserError
from cldash.runs.launchers import for_run, is_local
from cldash.runs.launchers.local import slots_lock, start_waiting
from cldash.runs.processes import clear_end, is_run_process, log_path, recorded_end
from cldash.runs.recovery import auto_resume
from cldash.store import Store

STALE_SECONDS = 300   # a run on another host with no heartbeat for this long is interrupted


REMOTE_GRACE = 60.0   # s: a cluster's queued run whose job the cluster does not know by then was never submitted


def schedule(store: Store) -> list[int]:
    """Reconcile, queue interrupted runs again where the store says so, and start queued runs while fewer than
    the concurrency limit are active; returns the started ids. A store that refuses writes starts nothing."""
    with slots_lock(store):
        reconcile(store)
        try:
            auto_resume(store)   # with the store's setting on: interrupted runs queue again from their checkpoint
        except StoreWriteError:
            pass
        return start_waiting(store)


def reconcile(store: Store, now: float | None = None) -> list[int]:
    """Mark runs whose process is gone as ended, with the reason; returns their ids. A run whose
    process recorded its end in its end file (the store could not take it) ends as recorded there.
    A cluster's runs (cldash.runs.launchers) are decided from the cluster's job state and the heartbeat.
    A store that refuses writes (read-only) is left as it is."""
    now = now or time.time()
    host = socket.gethostname()
    ends = {}
    active = store.runs(status=["queued", "running"])
    remote = [r for r in active if not is_local(r["launcher"])]
    remote_ids = {r["id"] for r in remote}
    for run in active:
        if run["status"] != "queued" or run["id"] in remote_ids:
            continue
        # a queued run whose process was started (or is the foreground `cldash run` that created it) but
        # died before claiming it
        if run["pid"] and run["host"] == host and not is_run_process(run["pid"]):
            if run["launcher"] == "cli":
                ends[run["id"]] = {"status": "interrupted", "error": f"the cldash run process (pid {run['pid']}) "
                                   "ended before the run started"}
            else:
                ends[run["id"]] = {"status": "failed", "error": f"the run's process (pid {run['pid']}) exited "
                                   f"before starting; see {log_path(store, run['id'])}"}
    for run in active:
        if run["status"] != "running":
            continue
        beat = run["heartbeat_at"] or run["started_at"] or run["created_at"]
        if run["host"] == host:
            if is_run_process(run["pid"]):
                continue
            ends[run["id"]] = recorded_end(store, run) or {
                "status": "interrupted", "error": f"the run's process (pid {run['pid']}) ended without recording "
                f"an end; last heartbeat {now - beat:.0f} s before, at step {run['step']}"}
        elif run["id"] not in remote_ids and now - beat > STALE_SECONDS:
            ends[run["id"]] = {"status": "interrupted", "error": f"no heartbeat from host {run['host']} for "
                               f"{now - beat:.0f} s (last at step {run['step']})"}
    ends.update(_remote_ends(store, [r for r in remote if r["id"] not in ends], now))
    changed = []
    for run_id, end in ends.items():
        try:
            store.update_run(run_id, **{"finished_at": now, **end})
        except StoreWriteError:
            break   # read-only (or a full disk): the runs read as they were recorded until it can be written
        clear_end(store, run_id)
        changed.append(run_id)
    return changed


def _remote_ends(store: Store, runs: list[dict], now: float) -> dict[int, dict]:
    """How a cluster's active runs ended, from the cluster's job states and their heartbeats. The rows are
    read again after the cluster answered: a job that ended had recorded its run's end by then, so a run
    that ended cleanly is never taken for a lost one."""
    by_launcher: dict[tuple, list[dict]] = {}
    for run in runs:
        by_launcher.setdefault((run["launcher"], (run["launcher_info"] or {}).get("address")), []).append(run)
    ends = {}
    for rows in by_launcher.values():
        try:
            launcher = for_run(rows[0])
        except UserError as exc:
            ends.update({r["id"]: {"status": "interrupted", "error": str(exc)} for r in rows})
            continue
        states = launcher.states(rows)
        for run in store.runs(ids=[r["id"] for r in rows], status=["queued", "running"]):
            state = states[run["id"]]
            job = (run["launcher_info"] or {}).get("job")
            beat = run["heartbeat_at"] or run["started_at"] or run["created_at"]
            if run["status"] == "queued":
                if state.state == "ended":
                    ends[run["id"]] = {"status": "cancelled" if run["cancel_requested_at"] else "failed",
                                       "error": f"its {launcher.name} job {job} ended before the run started "
                                                f"({state.message}); `cldash logs {run['id']}` shows its output"}
                elif state.state == "missing" and now - run["created_at"] > REMOTE_GRACE:
                    ends[run["id"]] = {"status": "failed", "error": f"{state.message}: the run was never submitted "
                                       "(the launching process stopped first); launch it again"}
            elif state.state in ("ended", "missing"):
                ends[run["id"]] = {"status": "interrupted", "error": f"its {launcher.name} job {job} ended "
                                   f"({state.message}) without the run recording an end; last heartbeat "
                                   f"{now - beat:.0f} s before, at step {run['step']}"}
            elif now - beat > STALE_SECONDS:
                where = f"host {run['host']}" if run["host"] else "its host"
                said = {"running": f"; its {launcher.name} job was still running and is stopped",
                        "unknown": f" ({state.message})" if state.message else ""}.get(state.state, "")
                if state.state == "running":
                    launcher.cancel(store, run)
                ends[run["id"]] = {"status": "interrupted", "error": f"no heartbeat from {where} for "
                                   f"{now - beat:.0f} s (last at step {run['step']}){said}"}
    return ends


