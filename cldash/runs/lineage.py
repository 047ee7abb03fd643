"""A run's lineage: resume it from its last checkpoint, or fork a new run from a checkpoint after task K.

**Resume** continues an interrupted, failed or cancelled run from its last checkpoint: the run keeps its id,
the rows its unfinished task wrote are deleted (so nothing counts twice), and the run is queued again
(cldash.runs.recovery.requeue). On CPU the result is bit-identical to an uninterrupted run. **Fork** starts
a new run from a run's checkpoint after task K with changed options: its rows up to task K are copies of the
parent's, and it records its parent and fork point. With the same method and method options it continues
the parent's method; with another method, or other method options, the new method starts on the parent's
merged weights (each adapted layer's effective weight), so its spectra measure the update since the fork.
Replay switched on at a fork starts with a buffer filled from tasks 1..K; EWC switched on consolidates
tasks 1..K on the weights at the fork. The checkpoint files themselves are cldash.engine.checkpoints.
"""

from __future__ import annotations

from cldash.config import RunConfig, describe_run, resolve
from cldash.core.errors import UserError
from cldash.engine.checkpoints import available, copy, listed
from cldash.runs.queue import schedule
from cldash.runs.recovery import requeue

FIXED_AT_FORK = ("stream", "backbone", "backbone_options", "stream_options", "steps_per_task", "targets")


def resume(store, run_id: int, start: bool = True) -> int:
    """Queue a run again to continue from its last checkpoint (0: from the start, when it has none), and start
    it when a slot is free (unless `start` is False). Returns the task it continues after."""
    task = requeue(store, run_id)
    if start:
        schedule(store)
    return task


def fork(store, run_id: int, after_task: int, changes: dict, start: bool = True, launch_key: str | None = None) -> int:
    """A new run from run `run_id`'s checkpoint after task `after_task`, with `changes` (run options and
    method_options, as `cldash.config.resolve` takes them) over the parent's configuration; queued. Raises
    one sentence for what cannot fork (another stream or backbone, a task without a checkpoint)."""
    parent = store.get_run(run_id)
    n = parent["num_tasks"] or len(parent["config"].get("stream_options", {}).get("angles", [])) or 0
    if not 1 <= after_task < max(n, 2):
        raise UserError(f"a fork of run {run_id} starts after one of its tasks 1 to {max(1, n - 1)} (got "
                        f"{after_task}); after its last task there is nothing left to train.")
    if after_task not in available(store, run_id):
        raise UserError(f"run {run_id} has no checkpoint after task {after_task} ("
                        f"{listed(available(store, run_id))}); run it with --checkpoints all to fork after any task.")
    for key in FIXED_AT_FORK:   # before resolving: "stream skills needs a causal-lm backbone" would say less
        if key in changes and changes[key] != parent["config"].get(key):
            raise UserError(_fixed(key, parent["config"].get(key), changes[key]))
    base = dict(parent["config"])
    new_method = changes.get("method", base["method"])
    if new_method != base["method"]:   # the new method's own defaults, not the parent method's options
        for key in ("method_options", "policy", "lr", "regime"):
            base.pop(key, None)
    values = {**base, **{k: v for k, v in changes.items() if k != "method_options"},
              "method_options": {**(base.get("method_options") or {}), **(changes.get("method_options") or {})}}
    values.pop("regime", None)
    cfg = resolve(values).to_dict()
    for key in FIXED_AT_FORK:
        if cfg[key] != parent["config"].get(key, cfg[key]):
            raise UserError(_fixed(key, parent["config"].get(key), cfg[key]))
    label = describe_run(RunConfig(**cfg))
    # created ended, and queued only once its rows and its checkpoint are in place: a fork cut short by a crash
    # reads as failed with the reason, never as a queued run that would start from the pre-trained model
    new = store.create_run(cfg, status="failed", name=f"{label} · fork of #{run_id} after task {after_task}",
                           group_key=parent["group_key"], launch_key=launch_key)
    made = store.get_run(new)
    if made["parent_id"] == run_id:   # the same launch key again: that fork already exists
        return new
    store.update_run(new, parent_id=run_id, fork_task=after_task, finished_at=made["created_at"],
                     error=f"the fork of run {run_id} after task {after_task} was not completed")
    steps = cfg["steps_per_task"]
    store.copy_rows(run_id, new, after_task * steps)
    try:
        copy(store, run_id, new, after_task)
    except OSError as exc:   # the parent, still running, replaced it with a later task's
        raise UserError(f"cannot copy run {run_id}'s checkpoint after task {after_task} ({exc.strerror or exc}); "
                        f"run {new} records the failed fork.") from None
    store.update_run(new, status="queued", error=None, finished_at=None, resume_task=after_task,
                     checkpoint_task=after_task, step=after_task * steps, task=after_task,
                     num_tasks=parent["num_tasks"], total_steps=parent["total_steps"],
                     primary_metric=parent["primary_metric"],
                     progress=after_task * steps / max(1, parent["total_steps"] or 1))
    if start:
        schedule(store)
    return new


def _fixed(key: str, was, got) -> str:
    return (f"a fork continues its parent's {key.replace('_', ' ')} ({was!r}); {key} cannot change at a fork "
            f"(got {got!r}): launch a new run for that.")


