"""Runs in the background: start, cancel, reconcile.

A run is a separate OS process, ``python -m cldash --db URL execute RUN_ID`` (an argument list,
never a shell string), in its own process group (session), writing straight to the store with
a heartbeat. `reconcile` makes the store agree with the processes: a run whose process is gone
is marked interrupted, so nothing shows as running forever.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from cldash.backbones.base import cache_dir
from cldash.errors import UserError
from cldash.store import Store

STALE_SECONDS = 300   # a run on another host with no heartbeat for this long is interrupted


def log_path(run_id: int) -> Path:
    return cache_dir() / "logs" / f"run-{run_id}.log"


def spawn(store: Store, run_id: int, extra_env: dict | None = None) -> subprocess.Popen:
    """Start the process that executes a queued run; it claims the run itself."""
    path = log_path(run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **(extra_env or {}), "PYTHONUNBUFFERED": "1"}
    with open(path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "cldash", "--db", store.url, "execute", str(run_id)],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=env, close_fds=True)
    store.update_run(run_id, pid=proc.pid, host=socket.gethostname())
    return proc


def _proc_state(pid: int) -> str | None:
    """'alive', 'dead', or None when this platform cannot tell more than os.kill does."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return "dead"
    except PermissionError:
        return "alive"
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():
        try:
            state = stat.read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return "alive"
        return "dead" if state in ("Z", "X") else "alive"
    return None


def is_run_process(pid: int | None) -> bool:
    """Is `pid` a live cldash process (not a zombie, not a recycled pid of another program)?"""
    if not pid:
        return False
    state = _proc_state(pid)
    if state == "dead":
        return False
    if pid == os.getpid():
        return True
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():
        try:
            return b"cldash" in cmdline.read_bytes()
        except OSError:
            return False
    return state == "alive" or state is None


def reconcile(store: Store, now: float | None = None) -> list[int]:
    """Mark runs whose process is gone as interrupted; returns their ids."""
    now = now or time.time()
    host = socket.gethostname()
    changed = []
    for run in store.runs(status=["running"]):
        beat = run["heartbeat_at"] or run["started_at"] or run["created_at"]
        if run["host"] == host:
            if is_run_process(run["pid"]):
                continue
            reason = (f"the run's process (pid {run['pid']}) ended without recording an end; last heartbeat "
                      f"{now - beat:.0f} s before, at step {run['step']}")
        elif now - beat > STALE_SECONDS:
            reason = f"no heartbeat from host {run['host']} for {now - beat:.0f} s (last at step {run['step']})"
        else:
            continue
        store.update_run(run["id"], status="interrupted", error=reason, finished_at=now)
        changed.append(run["id"])
    return changed


def _signal(pid: int, sig: int) -> None:
    """Signal the run's whole process group when it leads one (spawned runs do), else the process."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def cancel(store: Store, run_id: int, timeout: float = 2.0) -> str:
    """Stop a run's process group (SIGTERM, then SIGKILL after `timeout`) and mark it cancelled."""
    run = store.get_run(run_id)
    if run["status"] not in ("queued", "running"):
        raise UserError(f"run {run_id} is {run['status']}, not running; there is nothing to cancel.")
    pid = run["pid"]
    if pid and run["host"] == socket.gethostname() and is_run_process(pid) and pid != os.getpid():
        _signal(pid, signal.SIGTERM)
        deadline = time.time() + timeout
        while time.time() < deadline and is_run_process(pid):
            time.sleep(0.05)
        if is_run_process(pid):
            _signal(pid, signal.SIGKILL)
    run = store.get_run(run_id)
    if run["status"] in ("queued", "running"):   # the process did not get to record it
        store.update_run(run_id, status="cancelled", error=f"cancelled at step {run['step']}",
                         finished_at=time.time())
    return "cancelled"
