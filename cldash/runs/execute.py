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
from collections.abc import Callable
from contextlib import contextmanager

from cldash.config import resolve
from cldash.core.errors import RunFailed, UserError
from cldash.engine import checkpoints
from cldash.engine.adapters import save_adapters
from cldash.engine.loop import Cancelled, ContinualRun, Progress, pick_device, versions
from cldash.runs.processes import clear_end, record_end, reserve_end
from cldash.store import Store, write_failure
from cldash.store.artifacts import local_only_warning

END_RETRIES = (0.2, 0.5, 1.0)   # seconds between the tries of the final status write (a disk freeing up)
_WARNED: set[str] = set()       # stores whose local-only artifacts this process has warned about (once each)


def execute(store: Store, run_id: int, progress: Callable[[Progress], None] | None = None) -> str:
    """Run a stored run to its end and record how it ended. Returns the final status."""
    run = store.get_run(run_id)
    if run["status"] != "queued":
        raise UserError(f"run {run_id} is {run['status']}; only a queued run can be executed "
                        "(re-run it with a new run instead).")
    if not store.claim(run_id, pid=os.getpid(), host=socket.gethostname()):
        return store.get_run(run_id)["status"]   # another process took it first
    reserve_end(store, run_id)   # room for how the run ends, taken while the disk has some
    _warn_if_local_only(store, run)
    writer = store.writer(run_id)
    crun = None
    with _sigterm_cancels():
        try:
            resolved = resolve(run["config"])
            _record_start(store, run_id, resolved)
            crun = ContinualRun(resolved, writer=writer, progress=progress)
            _record_structure(store, run_id, crun)
            after = run["resume_task"] or 0
            if after:
                crun.restore(checkpoints.load(store, run_id, after), after)
            crun.checkpoint = _checkpointer(store, run_id, resolved.config.checkpoints)
            summary = crun.run(after_task=after)
            _record_finish(store, run_id, crun, summary)
            return "finished"
        except (Exception, KeyboardInterrupt) as exc:   # Cancelled and RunFailed are Exceptions
            status, error = _how_it_ended(exc, crun)
    _finish_unclean(store, writer, run_id, {"status": status, "error": error, **(crun.position() if crun else {})})
    return status


def _warn_if_local_only(store: Store, run: dict) -> None:
    """One line, once per store in a process: a shared store's run whose files only this machine will see."""
    warning = local_only_warning(store.url, run.get("artifacts"))
    if warning and store.url not in _WARNED:
        _WARNED.add(store.url)
        print(warning, file=sys.stderr, flush=True)


def _on_term(signum, frame):
    raise Cancelled()


@contextmanager
def _sigterm_cancels():
    """SIGTERM (what `cldash cancel` sends) raises Cancelled while the run trains, where Python lets a handler
    be set (the main thread); the previous handler is back afterwards."""
    if not _in_main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, _on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _record_start(store: Store, run_id: int, resolved) -> None:
    store.update_run(run_id, versions=versions(), device=str(pick_device(resolved.config.device)),
                     total_steps=resolved.config.steps_per_task, heartbeat_at=time.time())


def _record_structure(store: Store, run_id: int, crun: ContinualRun) -> None:
    """The run's backbone weights, what it actually uses (precision, compile, the anytime subset, the data's
    provenance), its tasks and modules, and its size, once the model is assembled."""
    store.update_run(run_id, weights=crun.backbone.info, runtime=crun.runtime())
    tasks, modules = crun.structure()
    store.write_structure(run_id, tasks, modules)
    store.update_run(run_id, total_steps=crun.total_steps, num_tasks=len(crun.tasks),
                     primary_metric=crun.stream.primary_metric)


def _checkpointer(store: Store, run_id: int, keep: str) -> Callable[[int, dict], None] | None:
    """What the run calls at each task's end to write its checkpoint (None for ``checkpoints: none``)."""
    if keep == "none":
        return None

    def save(task: int, state: dict) -> None:
        try:
            checkpoints.save(store, run_id, task, state, keep=keep)
        except (OSError, TypeError, AttributeError, RuntimeError) as exc:   # an aid, not the run itself
            print(f"cldash: no checkpoint after task {task} ({type(exc).__name__}: {exc}); the run goes on, "
                  "and a resume would start from an earlier task", file=sys.stderr, flush=True)
            return
        store.update_run(run_id, checkpoint_task=task)
    return save


def _record_finish(store: Store, run_id: int, crun: ContinualRun, summary: dict) -> None:
    save_adapters(crun, store, run_id)
    store.update_run(run_id, status="finished", summary=summary, finished_at=time.time(), resume_task=None,
                     **crun.position())
    clear_end(store, run_id)


def _how_it_ended(exc: BaseException, crun: ContinualRun | None) -> tuple[str, str]:
    """(status, error) for the exception that ended the run; called while it is handled (its traceback)."""
    if isinstance(exc, Cancelled):
        return "cancelled", f"cancelled at step {crun.done if crun else 0}"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", f"interrupted (Ctrl-C) at step {crun.done if crun else 0}"
    if isinstance(exc, RunFailed):
        return "failed", str(exc)
    refused = write_failure(exc)
    if refused:   # a full disk, a read-only store: one sentence, the traceback says nothing more
        return "failed", f"{refused}; the run stopped " + (f"at step {crun.done}" if crun else
                                                            "before training started")
    if isinstance(exc, UserError):   # one sentence already: a checkpoint that cannot be loaded
        return "failed", str(exc)
    where = f" at step {crun.step}" if crun else " before training started"
    return "failed", f"{type(exc).__name__}{where}: {exc}\n\n{traceback.format_exc()}"


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


