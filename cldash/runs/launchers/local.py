"""The local launcher: each run is a child process of this machine, in its own process group, started by
the scheduler while fewer than the concurrency limit are active (cldash.runs.launch.schedule)."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections import deque

from cldash.runs.launchers import JobState, Resources


def tail_lines(path, tail: int) -> str:
    """The last `tail` lines of a text file, read without holding the whole file."""
    with open(path, "rb") as fh:
        lines = deque(fh, maxlen=max(1, tail))
    return b"".join(lines).decode("utf-8", "replace")


class LocalLauncher:
    name = "local"
    address = None

    def info(self, resources: Resources) -> dict:
        return {}

    def check_store(self, url: str) -> None:
        pass   # every local run shares this machine's disk: any store works

    def default_gpus(self, backbones: list[str]) -> float:
        return 0.0   # the local scheduler runs one run per GPU (cldash.runs.launch.default_limit)

    def submit(self, store, runs: list[dict], resources: Resources | None = None) -> list[int]:
        from cldash.runs.launch import schedule

        return schedule(store)   # queued rows: the scheduler starts what the limit allows

    def cancel(self, store, run: dict, timeout: float = 2.0) -> None:
        """SIGTERM the run's process group (the run records itself as cancelled), SIGKILL after `timeout`."""
        from cldash.runs.launch import _signal, is_run_process

        pid = run["pid"]
        if not (pid and run["host"] == socket.gethostname() and is_run_process(pid) and pid != os.getpid()):
            return   # another host's process: the cancel request on its row reaches it at its next flush
        _signal(pid, signal.SIGTERM)
        deadline = time.time() + timeout
        while time.time() < deadline and is_run_process(pid):
            time.sleep(0.05)
        if is_run_process(pid):
            _signal(pid, signal.SIGKILL)

    def status(self, store, run: dict) -> JobState:
        from cldash.runs.launch import is_run_process

        if run["host"] != socket.gethostname() or not run["pid"]:
            return JobState("unknown" if run["pid"] else "pending")
        return JobState("running") if is_run_process(run["pid"]) else JobState("ended", f"pid {run['pid']} is gone")

    def logs(self, store, run: dict, tail: int = 200) -> str:
        from cldash.runs.launch import log_path

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
        from cldash.runs.launch import default_limit, gpu_count, max_concurrent

        return {"nodes": 1, "CPU": float(os.cpu_count() or 1), "GPU": float(gpu_count()),
                "limit": max_concurrent(store) if store is not None else default_limit()}
