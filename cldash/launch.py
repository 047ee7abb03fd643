"""Runs in the background: launch, schedule, cancel, reconcile.

A run is a separate OS process, ``python -m cldash --db URL execute RUN_ID`` (an argument list,
never a shell string), in its own process group (session), writing straight to the store with
a heartbeat. `launch` records queued runs (idempotently, by launch key); `schedule` starts
queued runs while fewer than the concurrency limit are active (the dashboard calls it on every
refresh, and every run process calls it when it ends, so the queue drains with the browser
closed); `reconcile` makes the store agree with the processes: a run whose process is gone is
marked interrupted, so nothing shows as running forever.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from cldash.backbones.base import cache_dir, cache_key, file_lock
from cldash.errors import UserError
from cldash.store import Store

STALE_SECONDS = 300   # a run on another host with no heartbeat for this long is interrupted


def log_path(store: Store, run_id: int) -> Path:
    """Where a background run's output goes (per store, so two stores' run 1 do not collide)."""
    return cache_dir() / "logs" / cache_key({"store": store.url}) / f"run-{run_id}.log"


def gpu_count() -> int:
    """NVIDIA GPUs visible to this machine, without importing torch in the dashboard process."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    gpus = Path("/proc/driver/nvidia/gpus")
    return len(list(gpus.iterdir())) if gpus.is_dir() else 0


def default_limit() -> int:
    """How many runs may be active at once: one per GPU, else the number of CPU cores."""
    return gpu_count() or os.cpu_count() or 1


def max_concurrent(store: Store) -> int:
    value = store.get_setting("max_concurrent")
    return int(value) if value and value.isdigit() and int(value) > 0 else default_limit()


def launch(store: Store, configs: list[dict], launch_keys: list[str] | None = None,
           group_key: str | None = None, names: list[str] | None = None, start: bool = True) -> list[int]:
    """Queue one run per (already resolved) config and start as many as the limit allows.

    With launch keys, launching the same keys again returns the same runs (a double click
    starts one run per config, not two).
    """
    ids = [store.create_run(cfg, status="queued", launch_key=(launch_keys or [None] * len(configs))[i],
                            group_key=group_key, name=(names or [""] * len(configs))[i])
           for i, cfg in enumerate(configs)]
    if start:
        schedule(store)
    return ids


def schedule(store: Store) -> list[int]:
    """Start queued runs while fewer than `max_concurrent` runs are active; returns the started ids."""
    started = []
    with file_lock(cache_dir() / "locks" / f"{cache_key({'store': store.url})}.lock"):
        reconcile(store)
        limit = max_concurrent(store)
        active = store.runs(status=["running"]) + [r for r in store.runs(status=["queued"]) if r["pid"]]
        waiting = [r for r in store.runs(status=["queued"]) if not r["pid"]]
        threads = max(1, (os.cpu_count() or 1) // max(1, min(limit, len(active) + len(waiting))))
        for run in waiting[:max(0, limit - len(active))]:
            spawn(store, run["id"], extra_env={"CLDASH_THREADS": str(threads)})
            started.append(run["id"])
    return started


def spawn(store: Store, run_id: int, extra_env: dict | None = None) -> subprocess.Popen:
    """Start the process that executes a queued run; it claims the run itself."""
    path = log_path(store, run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **(extra_env or {}), "PYTHONUNBUFFERED": "1"}
    with open(path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "cldash", "--db", store.url, "execute", str(run_id)],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=env, close_fds=True)
    store.update_run(run_id, pid=proc.pid, host=socket.gethostname())
    # reap the child when it ends, so a long-lived dashboard does not collect zombie processes
    threading.Thread(target=proc.wait, name=f"reap-run-{run_id}", daemon=True).start()
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
    for run in store.runs(status=["queued"]):
        # a queued run whose process was started but died before claiming it
        if run["pid"] and run["host"] == host and not is_run_process(run["pid"]):
            store.update_run(run["id"], status="failed", finished_at=now,
                             error=f"the run's process (pid {run['pid']}) exited before starting; "
                                   f"see {log_path(store, run['id'])}")
            changed.append(run["id"])
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


def rerun(store: Store, run_id: int, seed: int, launch_key: str | None = None) -> int:
    """Queue a copy of a run's configuration with another seed (and start it when a slot is free)."""
    from cldash.config import describe_run, resolve

    config = dict(store.get_run(run_id)["config"], seed=seed)
    resolved = resolve(config)
    return launch(store, [resolved.to_dict()], [launch_key] if launch_key else None,
                  names=[describe_run(resolved.config)])[0]


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


DEMO_STREAM = "digits-rotate"


def demo_configs(seed: int = 0) -> list[dict]:
    """The default demo comparison: LoRA, full fine-tuning and every other registered method on
    digits-rotate with their defaults (one seed)."""
    from cldash.config import resolve
    from cldash.methods import REGISTRY

    order = ["lora", "full"] + sorted(n for n in REGISTRY if n not in ("lora", "full"))
    return [resolve({"method": name, "stream": DEMO_STREAM, "seed": seed}).to_dict() for name in order]


def launch_demo(store: Store, launch_key: str = "demo") -> list[int]:
    from cldash.config import RunConfig, describe_run

    configs = demo_configs()
    names = [describe_run(RunConfig(**c)) for c in configs]
    return launch(store, configs, [f"{launch_key}:{c['method']}" for c in configs], group_key=launch_key, names=names)
