"""The local launcher: each run is a child process of this machine, in its own process group, started
while fewer than the concurrency limit are active. `queue` and `start_waiting` are this machine's slots;
cldash.runs.queue.schedule reconciles the store first and then fills them."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections import deque
from contextlib import contextmanager

from cldash.core.cache import cache_dir, cache_key, file_lock
from cldash.core.errors import StoreWriteError
from cldash.runs.launchers.base import JobState, Resources, is_local, register_launcher
from cldash.runs.priority import start_order
from cldash.runs.processes import (
    default_limit,
    gpu_count,
    gpu_ids,
    is_run_process,
    log_path,
    max_concurrent,
    signal_group,
    spawn,
)


def tail_lines(path, tail: int) -> str:
    """The last `tail` lines of a text file, read without holding the whole file."""
    with open(path, "rb") as fh:
        lines = deque(fh, maxlen=max(1, tail))
    return b"".join(lines).decode("utf-8", "replace")


@register_launcher("local")
class LocalLauncher:
    spec_help = "local"
    title = "this machine (the local queue)"
    address = None

    @classmethod
    def from_spec(cls, spec: str) -> LocalLauncher | None:
        return cls() if spec == "local" else None

    @classmethod
    def suggested_spec(cls) -> str:
        return "local"

    @classmethod
    def for_info(cls, info: dict) -> LocalLauncher:
        return cls()

    def info(self, resources: Resources) -> dict:
        return {}

    def check_store(self, url: str) -> None:
        pass   # every local run shares this machine's disk: any store works

    def default_gpus(self, backbones: list[str]) -> float:
        return 0.0   # the local scheduler gives each run one GPU of its own, shared by runs_per_gpu (least_used_gpu)

    def submit(self, store, runs: list[dict], resources: Resources | None = None) -> list[int]:
        with slots_lock(store):
            return start_waiting(store)   # queued rows: start what the limit allows

    def cancel(self, store, run: dict, timeout: float = 2.0) -> None:
        """SIGTERM the run's process group (the run records itself as cancelled), SIGKILL after `timeout`."""
        pid = run["pid"]
        if not (pid and run["host"] == socket.gethostname() and is_run_process(pid) and pid != os.getpid()):
            return   # another host's process: the cancel request on its row reaches it at its next flush
        signal_group(pid, signal.SIGTERM)
        deadline = time.time() + timeout
        while time.time() < deadline and is_run_process(pid):
            time.sleep(0.05)
        if is_run_process(pid):
            signal_group(pid, signal.SIGKILL)

    def status(self, store, run: dict) -> JobState:
        if run["host"] != socket.gethostname() or not run["pid"]:
            return JobState("unknown" if run["pid"] else "pending")
        return JobState("running") if is_run_process(run["pid"]) else JobState("ended", f"pid {run['pid']} is gone")

    def logs(self, store, run: dict, tail: int = 200) -> str:
        if run.get("launcher") == "cli":
            return (f"run {run['id']} ran in the foreground (`cldash run`) on {run['host'] or 'its host'}: its "
                    "output went to that terminal.")
        path = log_path(store, run["id"])
        if run["host"] and run["host"] != socket.gethostname():
            return f"run {run['id']} ran on host {run['host']}; its log is there, at {path}."
        try:
            return tail_lines(path, tail) or f"run {run['id']} has written nothing to its log yet."
        except FileNotFoundError:
            return f"run {run['id']} has no log yet (it has not started), at {path}."
        except OSError as exc:
            return f"cannot read the log of run {run['id']} at {path}: {exc.strerror or exc}."

    def resources(self, store=None) -> dict:
        return {"nodes": 1, "CPU": float(os.cpu_count() or 1), "GPU": float(gpu_count()),
                "limit": max_concurrent(store) if store is not None else default_limit()}


def gpu_for(run: dict, active: list[dict]) -> tuple[str | None, bool]:
    """The visible GPU a starting run takes, and whether it should see only that one (CUDA_VISIBLE_DEVICES): a run
    on device auto or cuda gets the GPU holding the fewest `active` runs, so two runs on a two-GPU machine do not
    both take GPU 0; a run that names cuda:N keeps its N (it is counted on that GPU, and sees them all); a CPU run
    or a machine without a GPU, (None, False)."""
    ids = gpu_ids()
    device = str((run.get("config") or {}).get("device", "auto"))
    if not ids or not device.startswith(("auto", "cuda")):
        return None, False
    if device.startswith("cuda:"):
        n = device.split(":", 1)[1]
        return (ids[int(n)] if n.isdigit() and int(n) < len(ids) else None), False
    load = {i: 0 for i in ids}
    for other in active:
        gpu = (other.get("launcher_info") or {}).get("gpu")
        if gpu in load:
            load[gpu] += 1
    return min(ids, key=lambda i: load[i]), True


def queue(store) -> tuple[list[dict], list[dict]]:
    """The runs holding a slot (running, or started and not claimed yet, a foreground `cldash run`
    included) and the runs waiting for one, in the order `start_waiting` starts them: interactive runs before
    batch ones, oldest first within each (cldash.runs.priority)."""
    queued = store.runs(status=["queued"])
    # a cluster's runs take the cluster's slots, not this machine's
    active = sorted([r for r in store.runs(status=["running"]) + [r for r in queued if r["pid"]]
                     if is_local(r["launcher"])], key=lambda r: r["id"])
    # cli: its own process runs it; ray: the cluster's scheduler starts it
    waiting = sorted([r for r in queued if not r["pid"] and r["launcher"] in (None, "local")], key=start_order)
    return active, waiting


@contextmanager
def slots_lock(store):
    """One process at a time decides what starts in this store's slots on this machine."""
    with file_lock(cache_dir() / "locks" / f"{cache_key({'store': store.url})}.lock"):
        yield


def start_waiting(store) -> list[int]:
    """Start waiting runs while fewer than `max_concurrent` are active (hold `slots_lock`); the started ids.
    A store that refuses writes (read-only) starts nothing."""
    started = []
    limit = max_concurrent(store)
    active, waiting = queue(store)
    threads = max(1, (os.cpu_count() or 1) // max(1, min(limit, len(active) + len(waiting))))
    for run in waiting[:max(0, limit - len(active))]:
        try:   # a write before starting anything: a process could not claim a run in a read-only store
            store.update_run(run["id"], host=socket.gethostname())
        except StoreWriteError:
            break
        env = {"CLDASH_THREADS": str(threads)}
        gpu, only = gpu_for(run, active)
        if gpu is not None:
            if only:
                env["CUDA_VISIBLE_DEVICES"] = gpu
            store.update_run(run["id"], launcher_info={"gpu": gpu})
            active.append({**run, "launcher_info": {"gpu": gpu}})
        spawn(store, run["id"], extra_env=env)
        started.append(run["id"])
    return started
