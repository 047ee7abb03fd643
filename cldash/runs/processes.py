"""A run's process on this machine: its log and end files, whether it is alive, its signals, its start.

Both the scheduler (cldash.runs.queue) and the local launcher (cldash.runs.launchers.local) keep their
books here, and a run process (cldash.runs.execute) records how it ended here first: a small end file
next to its log, written before it tells the store, so that a store that cannot take it (a full disk)
does not lose the reason; reconcile reads the file once the process is gone.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

from cldash.core.cache import cache_dir, cache_key
from cldash.core.errors import UserError
from cldash.store import ENDED, Store

END_ROOM = 4096       # bytes an end file is created with (a reason, a step and a few numbers fit)


END_FIELDS = ("status", "error", "finished_at", "step", "progress", "task")


def log_path(store: Store, run_id: int) -> Path:
    """Where a background run's output goes (per store, so two stores' run 1 do not collide)."""
    return cache_dir() / "logs" / cache_key({"store": store.url}) / f"run-{run_id}.log"


def end_path(store: Store, run_id: int) -> Path:
    """Where a run's process records how the run ended before it tells the store (next to its log)."""
    return log_path(store, run_id).with_suffix(".end")


def reserve_end(store: Store, run_id: int) -> None:
    """Create the run's end file blank at its full size as the run starts: recording the end later
    overwrites bytes the file already has, so it needs no new room on a disk that has filled up since."""
    path = end_path(store, run_id)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b" " * END_ROOM)
    except OSError:
        pass   # no room even now: record_end tries again at the end


def record_end(store: Store, run_id: int, end: dict) -> bool:
    """Write how the run ended (`END_FIELDS`) to its end file, with this process's pid; False if it cannot."""
    end = {**{k: end[k] for k in END_FIELDS if k in end}, "pid": os.getpid()}
    blob = json.dumps(end).encode()
    if len(blob) > END_ROOM and end.get("error"):   # a crash's traceback: its first line says what happened
        end["error"] = end["error"].splitlines()[0][:1000]
        blob = json.dumps(end).encode()
    path = end_path(store, run_id)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        size = path.stat().st_size if path.exists() else 0
        with open(path, "r+b" if size else "wb") as fh:
            fh.write(blob.ljust(size, b" "))   # blanks past the end: the file keeps its size and its blocks
        return True
    except OSError:
        return False


def recorded_end(store: Store, run: dict) -> dict | None:
    """How the run's process recorded the run's end in its end file, if it did (the same pid), else None."""
    try:
        text = end_path(store, run["id"]).read_text().strip()
        end = json.loads(text) if text else None
    except (OSError, ValueError):
        return None
    if not isinstance(end, dict) or end.get("pid") != run["pid"] or end.get("status") not in ENDED:
        return None
    return {k: end[k] for k in END_FIELDS if k in end}


def clear_end(store: Store, run_id: int) -> None:
    """Remove the run's end file once the store holds how the run ended."""
    try:
        end_path(store, run_id).unlink(missing_ok=True)
    except OSError:
        pass


RUNS_PER_GPU_SETTING = "runs_per_gpu"   # the store's setting: how many local runs share one GPU


def gpu_ids() -> list[str]:
    """The NVIDIA GPUs visible to this machine, as CUDA_VISIBLE_DEVICES names them, without importing torch in the
    dashboard process."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    gpus = Path("/proc/driver/nvidia/gpus")
    return [str(i) for i in range(len(list(gpus.iterdir())))] if gpus.is_dir() else []


def gpu_count() -> int:
    return len(gpu_ids())


def runs_per_gpu(store: Store | None) -> int:
    """How many local runs share one GPU (the store's setting; 1 by default): small runs leave most of a large GPU
    idle, so several at once finish a sweep sooner."""
    value = store.get_setting(RUNS_PER_GPU_SETTING) if store is not None else None
    return int(value) if value and value.isdigit() and int(value) > 0 else 1


def default_limit(store: Store | None = None) -> int:
    """How many runs may be active at once: `runs_per_gpu` per GPU, else the number of CPU cores."""
    return gpu_count() * runs_per_gpu(store) or os.cpu_count() or 1


def max_concurrent(store: Store) -> int:
    value = store.get_setting("max_concurrent")
    return int(value) if value and value.isdigit() and int(value) > 0 else default_limit(store)


def start_cldash(store: Store, args: list[str], log, what: str, extra_env: dict | None = None,
                 mode: str = "ab") -> subprocess.Popen:
    """`python -m cldash ARGS` in the background: in its own process group, its output appended to (or, with
    mode "wb", written over) the file `log`, the store's URL in its environment (CLDASH_DB), not on its command
    line, which every local user can read. A thread reaps the child when it ends, so a long-lived dashboard
    does not collect zombie processes. `what` names it in the sentence said when its log cannot be written."""
    env = {**os.environ, **(extra_env or {}), "CLDASH_DB": store.url, "PYTHONUNBUFFERED": "1"}
    try:
        log.parent.mkdir(parents=True, exist_ok=True)
        out = open(log, mode)
    except OSError as exc:
        raise UserError(f"cannot {what}: cannot write its log {log} ({exc.strerror or exc}).") from None
    with out:
        proc = subprocess.Popen([sys.executable, "-m", "cldash", *args], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, env=env, close_fds=True)
    threading.Thread(target=proc.wait, name=f"reap-{args[0]}-{proc.pid}", daemon=True).start()
    return proc


def spawn(store: Store, run_id: int, extra_env: dict | None = None) -> subprocess.Popen:
    """Start the process that executes a queued run; it claims the run itself."""
    proc = start_cldash(store, ["execute", str(run_id)], log_path(store, run_id), f"start run {run_id}", extra_env)
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
            args = cmdline.read_bytes()
        except OSError:
            return False
        # empty while the process is between exec's start and its new arguments' setup: Popen returns (and spawn
        # records the pid) at exec's point of no return, before the kernel fills the new cmdline in; a concurrent
        # reconcile that read it then failed a healthy run as "exited before starting" (seen once on a loaded CI)
        return b"cldash" in args or not args
    return state == "alive" or state is None


def signal_group(pid: int, sig: int) -> None:
    """Signal the run's whole process group when it leads one (spawned runs do), else the process."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


