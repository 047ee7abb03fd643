"""The run process's main: claim a queued run, train it (cldash.engine), and record how it ended.

`cldash execute RUN` calls `execute`. A run is cancelled by SIGTERM (or by the cancel request on its row,
from a host that cannot signal the process), Ctrl-C ends it as interrupted, and a write the store or the
disk refuses (a full disk) ends it with one sentence. How it ended goes to its end file first
(cldash.runs.processes), so that a store that cannot take it does not lose it.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
import traceback
from typing import Callable

from cldash.config import resolve
from cldash.core.errors import RunFailed, UserError
from cldash.engine import checkpoints
from cldash.engine.loop import Cancelled, ContinualRun, Progress, pick_device, save_adapters, versions
from cldash.runs.processes import clear_end, record_end, reserve_end
from cldash.store import Store, write_failure

END_RETRIES = (0.2, 0.5, 1.0)   # seconds between the tries of the final status write (a disk freeing up)


def execute(store: Store, run_id: int, progress: Callable[[Progress], None] | None = None) -> str:
    """Run a stored run to its end and record how it ended. Returns the final status."""
    run = store.get_run(run_id)
    if run["status"] != "queued":
        raise UserError(f"run {run_id} is {run['status']}; only a queued run can be executed "
                        "(re-run it with a new run instead).")
    if not store.claim(run_id, pid=os.getpid(), host=socket.gethostname()):
        return store.get_run(run_id)["status"]   # another process took it first
    reserve_end(store, run_id)   # room for how the run ends, taken while the disk has some
    writer = store.writer(run_id)
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum, frame):
        raise Cancelled()

    in_main = _in_main_thread()
    if in_main:
        signal.signal(signal.SIGTERM, on_term)
    status, error = "failed", None
    crun = None
    try:
        resolved = resolve(run["config"])
        store.update_run(run_id, versions=versions(), device=str(pick_device(resolved.config.device)),
                         total_steps=resolved.config.steps_per_task, heartbeat_at=time.time())
        crun = ContinualRun(resolved, writer=writer, progress=progress)
        store.update_run(run_id, weights=crun.backbone.info)
        tasks, modules = crun.structure()
        store.write_structure(run_id, tasks, modules)
        store.update_run(run_id, total_steps=crun.total_steps, num_tasks=len(crun.tasks),
                         primary_metric=crun.stream.primary_metric)
        after = run["resume_task"] or 0
        if after:
            crun.restore(checkpoints.load(store, run_id, after), after)
        if resolved.config.checkpoints != "none":
            def keep(task: int, state: dict) -> None:
                try:
                    checkpoints.save(store, run_id, task, state, keep=resolved.config.checkpoints)
                except (OSError, TypeError, AttributeError, RuntimeError) as exc:   # an aid, not the run itself
                    print(f"cldash: no checkpoint after task {task} ({type(exc).__name__}: {exc}); the run goes on, "
                          "and a resume would start from an earlier task", file=sys.stderr, flush=True)
                    return
                store.update_run(run_id, checkpoint_task=task)
            crun.checkpoint = keep
        summary = crun.run(after_task=after)
        save_adapters(crun, store.adapter_path(run_id))
        store.update_run(run_id, status="finished", summary=summary, finished_at=time.time(), resume_task=None,
                         **crun.position())
        clear_end(store, run_id)
        return "finished"
    except Cancelled:
        status, error = "cancelled", f"cancelled at step {crun.done if crun else 0}"
    except KeyboardInterrupt:
        status, error = "interrupted", f"interrupted (Ctrl-C) at step {crun.done if crun else 0}"
    except RunFailed as exc:
        status, error = "failed", str(exc)
    except Exception as exc:  # noqa: BLE001 - any crash is recorded with its reason
        refused = write_failure(exc)
        if refused:   # a full disk, a read-only store: one sentence, the traceback says nothing more
            error = f"{refused}; the run stopped " + (f"at step {crun.done}" if crun else "before training started")
        elif isinstance(exc, UserError):   # one sentence already: a checkpoint that cannot be loaded
            error = str(exc)
        else:
            where = f" at step {crun.step}" if crun else " before training started"
            error = f"{type(exc).__name__}{where}: {exc}\n\n{traceback.format_exc()}"
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)
    _finish_unclean(store, writer, run_id, {"status": status, "error": error, **(crun.position() if crun else {})})
    return status


def _finish_unclean(store: Store, writer, run_id: int, end: dict) -> bool:
    """Record how the run ended (`end`: status, error, and the step, progress and task of the last step
    that completed) with whatever was buffered, in one transaction; False if the store never took it.

    The end goes to the run's end file first, so that it survives a store that cannot take it (a full
    disk): the status write is then tried again a few times, and failing that, reconcile reads the
    file once this process is gone (`cldash run` says so).
    """
    end = {**end, "finished_at": time.time()}
    record_end(store, run_id, end)
    try:
        writer.flush(**end)
    except Exception:  # noqa: BLE001 - the buffered rows are lost, the end must still land
        for pause in END_RETRIES:
            try:
                store.update_run(run_id, **end)
                break
            except Exception:  # noqa: BLE001
                time.sleep(pause)
        else:
            return False
    clear_end(store, run_id)
    return True


def _in_main_thread() -> bool:

    return threading.current_thread() is threading.main_thread()


