"""Runs in the background: launch, schedule, cancel, reconcile.

A run is a separate OS process, ``python -m cldash execute RUN_ID`` (an argument list, never a
shell string; the store's URL goes in its environment as CLDASH_DB, since any local user can read
a command line and a URL may hold a password), in its own process group (session), writing
straight to the store with a heartbeat. `launch` records queued runs (idempotently, by launch
key); `schedule` starts queued runs while fewer than the concurrency limit are active (the
dashboard calls it on every refresh, every cldash command that reads the store calls it, and
every run process calls it when it ends, so the queue drains with the browser closed, also
after a run was killed); `reconcile` makes the store agree with the processes: a run whose
process is gone is marked interrupted, so nothing shows as running forever. A foreground
`cldash run` is never started by the scheduler: its row is owned by its own process from the
moment it is created (launcher "cli").

A run's process records how the run ended in a small end file next to its log before it tells
the store, so that a store that cannot take it (a full disk) does not lose the reason: reconcile
reads the file once the process is gone. A store that refuses writes (read-only) is left as it is.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from cldash.core.cache import cache_dir, cache_key, file_lock
from cldash.core.errors import StoreWriteError, UserError
from cldash.store import ENDED, Store

STALE_SECONDS = 300   # a run on another host with no heartbeat for this long is interrupted
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
           group_key: str | None = None, names: list[str] | None = None, start: bool = True,
           launcher=None, resources=None) -> list[int]:
    """Queue one run per (already resolved) config and start as many as the limit allows.

    With launch keys, launching the same keys again returns the same runs (a double click
    starts one run per config, not two). `launcher` (cldash.runs.launchers; default: the local one)
    takes the queued runs: the local scheduler starts what its limit allows, a Ray cluster takes
    them all as jobs with `resources` (cldash.runs.launchers.Resources) each and queues what does not fit.
    """
    from cldash.runs.launchers import Resources

    local = launcher is None or launcher.name == "local"
    if not local:
        resources = (resources or Resources()).check()
        launcher.check_store(store.url)

    def owner() -> dict:   # a cluster's run records its launcher and its own job id (launcher.info) from its INSERT
        return {} if local else {"launcher": launcher.name, "launcher_info": launcher.info(resources)}

    ids = [store.create_run(cfg, status="queued", launch_key=(launch_keys or [None] * len(configs))[i],
                            group_key=group_key, name=(names or [""] * len(configs))[i], **owner())
           for i, cfg in enumerate(configs)]
    if start and local:
        schedule(store)
    elif start:   # a repeated launch returns runs already submitted: the launcher leaves those as they are
        launcher.submit(store, [r for r in store.runs(ids=ids, status=["queued"]) if r["launcher"] == launcher.name],
                        resources)
    return ids


def queue(store: Store) -> tuple[list[dict], list[dict]]:
    """The runs holding a slot (running, or started and not claimed yet, a foreground `cldash run`
    included) and the runs waiting for one, in the order `schedule` starts them."""
    queued = store.runs(status=["queued"])
    local = (None, "local", "cli")   # a cluster's runs take the cluster's slots, not this machine's
    active = sorted([r for r in store.runs(status=["running"]) + [r for r in queued if r["pid"]]
                     if r["launcher"] in local], key=lambda r: r["id"])
    # cli: its own process runs it; ray: the cluster's scheduler starts it
    waiting = [r for r in queued if not r["pid"] and r["launcher"] in (None, "local")]
    return active, waiting


def schedule(store: Store) -> list[int]:
    """Start queued runs while fewer than `max_concurrent` runs are active; returns the started ids.
    A store that refuses writes (read-only) starts nothing."""
    from cldash.engine.checkpoints import auto_resume

    started = []
    with file_lock(cache_dir() / "locks" / f"{cache_key({'store': store.url})}.lock"):
        reconcile(store)
        try:
            auto_resume(store)   # with the store's setting on: interrupted runs queue again from their checkpoint
        except StoreWriteError:
            pass
        limit = max_concurrent(store)
        active, waiting = queue(store)
        threads = max(1, (os.cpu_count() or 1) // max(1, min(limit, len(active) + len(waiting))))
        for run in waiting[:max(0, limit - len(active))]:
            try:   # a write before starting anything: a process could not claim a run in a read-only store
                store.update_run(run["id"], host=socket.gethostname())
            except StoreWriteError:
                break
            spawn(store, run["id"], extra_env={"CLDASH_THREADS": str(threads)})
            started.append(run["id"])
    return started


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


REMOTE_GRACE = 60.0   # s: a cluster's queued run whose job the cluster does not know by then was never submitted


def reconcile(store: Store, now: float | None = None) -> list[int]:
    """Mark runs whose process is gone as ended, with the reason; returns their ids. A run whose
    process recorded its end in its end file (the store could not take it) ends as recorded there.
    A cluster's runs (cldash.runs.launchers) are decided from the cluster's job state and the heartbeat.
    A store that refuses writes (read-only) is left as it is."""
    now = now or time.time()
    host = socket.gethostname()
    ends = {}
    active = store.runs(status=["queued", "running"])
    remote = [r for r in active if r["launcher"] not in (None, "local", "cli")]
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
    from cldash.runs.launchers import for_run

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
    """Cancel a run wherever it runs: record the request on its row (the run polls it at every flush, on
    any host), send its launcher's own stop (SIGTERM to a local process group, SIGKILL after `timeout`;
    a Ray job's stop), give the run `timeout` to record its end itself, and else mark it cancelled."""
    from cldash.runs.launchers import for_run

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


DEMO_STREAM = "digits-rotate"
# The quick demo: LoRA, full fine-tuning, and two that forget differently: EBLoRA balances its update's spectrum
# and forgets about half as much as LoRA on this stream (0.38 against 0.79, measured at this length); PiSSA trains
# the pre-trained weight's top directions, the ones the model relies on most. Three rotations of 100 steps each:
# the four runs finish in well under 90 s on 2 CPU cores, two at a time (QUICK_DEMO_TIME).
QUICK_DEMO_METHODS = ("lora", "full", "eblora", "pissa")
QUICK_DEMO_RUN = {"steps_per_task": 100, "stream_options": {"angles": [60.0, 120.0, 180.0]}}
# wall times on 2 CPU cores, two runs at once (the default), shown on the welcome page: `cldash demo` took 28 s
# (its start included) and `cldash demo --full` 6 min 51 s on 2026-12-02 on the reference machine's otherwise idle
# 2 cores; with the cores shared by other work (load average 6 to 7) the quick one took 76 s from launch_demo
QUICK_DEMO_TIME = "about 30 s"
FULL_DEMO_TIME = "about 7 minutes"


def demo_configs(seed: int = 0, full: bool = False) -> list[dict]:
    """The demo comparison on digits-rotate with every method's defaults (one seed). The quick one
    (`QUICK_DEMO_METHODS` on a shortened stream, under 90 s on 2 CPU cores), or with `full` LoRA, full
    fine-tuning and every other registered method on the whole stream (FULL_DEMO_TIME)."""
    from cldash.config import resolve
    from cldash.methods import REGISTRY

    if not full:
        return [resolve({"method": name, "stream": DEMO_STREAM, "seed": seed, **QUICK_DEMO_RUN}).to_dict()
                for name in QUICK_DEMO_METHODS]
    order = ["lora", "full"] + sorted(n for n in REGISTRY if n not in ("lora", "full"))
    return [resolve({"method": name, "stream": DEMO_STREAM, "seed": seed}).to_dict() for name in order]


def launch_demo(store: Store, launch_key: str = "demo", full: bool = False) -> list[int]:
    """Queue the demo (the quick one, or with `full` every method) as group `launch_key` (`launch_key`-full for
    the full one); the same key launches once."""
    from cldash.config import RunConfig, describe_run

    configs = demo_configs(full=full)
    key = f"{launch_key}-full" if full else launch_key
    names = [describe_run(RunConfig(**c)) for c in configs]
    return launch(store, configs, [f"{key}:{c['method']}" for c in configs], group_key=key, names=names)


def demo_line(run: dict) -> str:
    """One run's progress in a line: '#3 lora r=8 · task 2/3 · step 150/300 [#####.....] 50 % running'."""
    from cldash.core.text import printable

    total = run["total_steps"] if run["num_tasks"] else 0   # known once the run has built its stream
    share = 1.0 if run["status"] == "finished" else float(run["progress"] or 0.0)
    bar = "#" * round(10 * share) + "." * (10 - round(10 * share))
    where = f"task {run['task'] or 0}/{run['num_tasks']}" if run["num_tasks"] else "task -"
    steps = f"step {run['step'] or 0}/{total}" if total else "step -"
    label = printable(run["name"] or run["method"]).split(" · ")[0]
    return f"#{run['id']:<3} {label:<18} {where:<9} {steps:<14} [{bar}] {100 * share:3.0f} % {run['status']}"
