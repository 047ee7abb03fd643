"""Runs queued again from their last checkpoint: the store's side of a resume, and auto-resume.

`requeue` deletes the rows an unfinished task wrote (so nothing counts twice) and queues the run to continue
after its last checkpointed task; it starts nothing, so the scheduler can call it (`auto_resume`) as well as
`cldash resume` (cldash.runs.lineage.resume, which then schedules).
"""

from __future__ import annotations

from cldash.core.errors import UserError
from cldash.engine.checkpoints import available
from cldash.runs.launchers import is_local

RESUMABLE = ("interrupted", "failed", "cancelled")
AUTO_RESUME_SETTING = "auto_resume"
AUTO_RESUME_LIMIT = 3           # automatic resumes of one run before it is left for a person to look at


def requeue(store, run_id: int) -> int:
    """Queue a run again to continue from its last checkpoint (0: from the start, when it has none). Its rows
    after that task's end are deleted in the same transaction that queues it. Returns the task."""
    run = store.get_run(run_id)
    if run["status"] not in RESUMABLE:
        raise UserError(f"run {run_id} is {run['status']}; only an interrupted, failed or cancelled run can be "
                        "resumed.")
    if not is_local(run["launcher"]) and not run["artifacts"]:   # a shared artifact location: any machine reads it
        raise UserError(f"run {run_id} ran on a {run['launcher']} cluster, whose node keeps its checkpoints; "
                        "resume it there (cldash resume runs it on this machine's queue), or give runs a shared "
                        "artifact location (--artifacts URL) so that any machine can.")
    tasks = available(store, run_id)
    task = max([t for t in tasks if t <= (run["checkpoint_task"] or 0)], default=0)
    steps = run["config"]["steps_per_task"]
    # from the start, row 0 is evaluated again: nothing of the run's rows stays
    store.truncate_after(run_id, task * steps if task else -1, status="queued", resume_task=task,
                         step=task * steps, task=task,
                         progress=task * steps / max(1, run["total_steps"] or 1), error=None, finished_at=None,
                         pid=None, host=None, cancel_requested_at=None, summary=None, launcher="local",
                         resumes=(run["resumes"] or 0) + 1)
    return task


def auto_resume(store) -> list[int]:
    """With the store's auto-resume setting on, queue every interrupted run again from its checkpoint (a
    reboot or a lost node costs at most one task); a run is resumed automatically at most AUTO_RESUME_LIMIT
    times. Returns the ids queued."""
    if store.get_setting(AUTO_RESUME_SETTING) != "on":
        return []
    out = []
    for run in store.runs(status=["interrupted"]):
        if (run["resumes"] or 0) < AUTO_RESUME_LIMIT and is_local(run["launcher"]):
            try:
                requeue(store, run["id"])
            except UserError:
                continue
            out.append(run["id"])
    return out


