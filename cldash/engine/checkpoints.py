"""Task-boundary checkpoints: save, resume, fork.

At the end of each task a run writes everything it needs to continue exactly (`state`):

- the model and the method as one object graph, so every reference between them survives: the method's
  branches and merged weights, and its memories (EBLoRA's F, InfLoRA's DualGPM bases, O-LoRA's frozen
  pairs, SD-LoRA's directions, CoDyRA's merged components), whatever attributes they live in;
- the heads (in the model);
- the replay buffer and EWC's Fisher and anchors (keyed by the model's own parameters);
- the RNG states (torch's global generator, CUDA's, the run's generator; each task's own generator is
  seeded from the seed and the task, and the replay buffer keeps its generator), the step and the
  scores so far.

It is a torch pickle (`weights_only=False`: the graph holds the method's own classes), written to a
temporary file and renamed into place, so a reader sees the old checkpoint or the new one, never half of
one; its SHA-256 goes to the run row with the task, and a file that does not match is refused rather
than unpickled. Only files cldash wrote next to the store are ever loaded. By default only the latest
task's checkpoint is kept (``checkpoints: all`` keeps every task's, so a fork can start after any task).

**Resume** (`resume`) continues an interrupted, failed or cancelled run from its last checkpoint: the run
keeps its id, the rows its unfinished task wrote are deleted (so nothing counts twice), and the run is
queued again. On CPU the result is bit-identical to an uninterrupted run. **Fork** (`fork`) starts a new
run from a run's checkpoint after task K with changed options: its rows up to task K are copies of the
parent's, and it records its parent and fork point. With the same method and method options it continues
the parent's method; with another method, or other method options, the new method starts on the parent's
merged weights (each adapted layer's effective weight), so its spectra measure the update since the fork.
Replay switched on at a fork starts with a buffer filled from tasks 1..K; EWC switched on consolidates
tasks 1..K on the weights at the fork.
"""

from __future__ import annotations

import os
from pathlib import Path

from cldash.core.errors import UserError   # torch is imported where a checkpoint is written or read: the
                                      # dashboard's scheduler imports this module and never trains

RESUMABLE = ("interrupted", "failed", "cancelled")
AUTO_RESUME_SETTING = "auto_resume"
AUTO_RESUME_LIMIT = 3           # automatic resumes of one run before it is left for a person to look at
FIXED_AT_FORK = ("stream", "backbone", "backbone_options", "stream_options", "steps_per_task", "targets")


def path(store, run_id: int, task: int) -> Path:
    return store.checkpoint_dir(run_id) / f"task-{task}.pt"


def available(store, run_id: int) -> list[int]:
    """The tasks after which the run has a checkpoint on this machine, in order."""
    d = store.checkpoint_dir(run_id)
    if not d.is_dir():
        return []
    return sorted(int(p.stem.split("-", 1)[1]) for p in d.glob("task-*.pt") if p.stem.split("-", 1)[1].isdigit())


def _sha256(file: Path) -> str:
    from cldash.backbones.weights import sha256_file

    return sha256_file(file)


def save(store, run_id: int, task: int, state: dict, keep: str = "latest") -> Path:
    """Write a checkpoint atomically (a temporary file renamed into place); with ``keep="latest"`` remove the
    earlier tasks' afterwards. Returns its path."""
    target = path(store, run_id, task)
    target.parent.mkdir(parents=True, exist_ok=True)
    import torch

    tmp = target.with_suffix(f".tmp{os.getpid()}")
    torch.save(state, tmp)
    with open(tmp, "rb") as fh:   # on disk before the rename names it
        os.fsync(fh.fileno())
    os.replace(tmp, target)
    digest = _sha256(target)
    sums = dict(_sums(store, run_id), **{str(task): digest})
    if keep == "latest":
        for old in available(store, run_id):
            if old != task:
                path(store, run_id, old).unlink(missing_ok=True)
                sums.pop(str(old), None)
    _write_sums(store, run_id, sums)
    return target


def _sums_path(store, run_id: int) -> Path:
    return store.checkpoint_dir(run_id) / "sha256.json"


def _sums(store, run_id: int) -> dict:
    import json

    try:
        return json.loads(_sums_path(store, run_id).read_text())
    except (OSError, ValueError):
        return {}


def _write_sums(store, run_id: int, sums: dict) -> None:
    import json

    p = _sums_path(store, run_id)
    tmp = p.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(sums))
    os.replace(tmp, p)


def load(store, run_id: int, task: int) -> dict:
    """A checkpoint's state, after checking it against the SHA-256 recorded when it was written."""
    file = path(store, run_id, task)
    if not file.exists():
        raise UserError(f"run {run_id} has no checkpoint after task {task} on this machine (at {file}); "
                        f"it has {_listed(available(store, run_id))}.")
    want = _sums(store, run_id).get(str(task))
    if want is None or _sha256(file) != want:
        raise UserError(f"the checkpoint of run {run_id} after task {task} ({file}) does not match the checksum "
                        "recorded when it was written; it is not loaded (resume from an earlier task, or run again).")
    import torch

    try:
        return torch.load(file, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - a checkpoint of another cldash or transformers: its classes moved
        raise UserError(f"cannot load the checkpoint of run {run_id} after task {task} ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:200] if str(exc) else 'no detail'}); it may come from another "
                        f"version of cldash or transformers; remove {file} and resume to start from the first "
                        "task.") from None


def _listed(tasks: list[int]) -> str:
    if not tasks:
        return "none"
    return "checkpoints after task " + ", ".join(map(str, tasks))


def copy(store, source: int, target: int, task: int) -> None:
    """Give run `target` run `source`'s checkpoint after `task` as its own (a fork starts from it)."""
    import shutil

    src = path(store, source, task)
    dst = path(store, target, task)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_suffix(f".tmp{os.getpid()}")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
    _write_sums(store, target, {str(task): _sums(store, source)[str(task)]})


# -- resume ----------------------------------------------------------------------------------------

def resume(store, run_id: int, start: bool = True) -> int:
    """Queue a run again to continue from its last checkpoint (0: from the start, when it has none). Its rows
    after that task's end are deleted in the same transaction that queues it. Returns the task."""
    from cldash.runs.launch import schedule

    run = store.get_run(run_id)
    if run["status"] not in RESUMABLE:
        raise UserError(f"run {run_id} is {run['status']}; only an interrupted, failed or cancelled run can be "
                        "resumed.")
    if run["launcher"] not in (None, "local", "cli"):
        raise UserError(f"run {run_id} ran on a {run['launcher']} cluster, whose node keeps its checkpoints; "
                        "resume it there (cldash resume runs it on this machine's queue).")
    tasks = available(store, run_id)
    task = max([t for t in tasks if t <= (run["checkpoint_task"] or 0)], default=0)
    steps = run["config"]["steps_per_task"]
    # from the start, row 0 is evaluated again: nothing of the run's rows stays
    store.truncate_after(run_id, task * steps if task else -1, status="queued", resume_task=task, step=task * steps, task=task,
                         progress=task * steps / max(1, run["total_steps"] or 1), error=None, finished_at=None,
                         pid=None, host=None, cancel_requested_at=None, summary=None, launcher="local",
                         resumes=(run["resumes"] or 0) + 1)
    if start:
        schedule(store)
    return task


def auto_resume(store) -> list[int]:
    """With the store's auto-resume setting on, queue every interrupted run again from its checkpoint (a
    reboot or a lost node costs at most one task); a run is resumed automatically at most AUTO_RESUME_LIMIT
    times. Returns the ids queued."""
    if store.get_setting(AUTO_RESUME_SETTING) != "on":
        return []
    out = []
    for run in store.runs(status=["interrupted"]):
        if (run["resumes"] or 0) < AUTO_RESUME_LIMIT and run["launcher"] in (None, "local", "cli"):
            try:
                resume(store, run["id"], start=False)
            except UserError:
                continue
            out.append(run["id"])
    return out


# -- fork ------------------------------------------------------------------------------------------

def fork(store, run_id: int, after_task: int, changes: dict, start: bool = True, launch_key: str | None = None) -> int:
    """A new run from run `run_id`'s checkpoint after task `after_task`, with `changes` (run options and
    method_options, as `cldash.config.resolve` takes them) over the parent's configuration; queued. Raises
    one sentence for what cannot fork (another stream or backbone, a task without a checkpoint)."""
    from cldash.config import describe_run, resolve, RunConfig
    from cldash.runs.launch import schedule

    parent = store.get_run(run_id)
    n = parent["num_tasks"] or len(parent["config"].get("stream_options", {}).get("angles", [])) or 0
    if not 1 <= after_task < max(n, 2):
        raise UserError(f"a fork of run {run_id} starts after one of its tasks 1 to {max(1, n - 1)} (got "
                        f"{after_task}); after its last task there is nothing left to train.")
    if after_task not in available(store, run_id):
        raise UserError(f"run {run_id} has no checkpoint after task {after_task} ("
                        f"{_listed(available(store, run_id))}); run it with --checkpoints all to fork after any task.")
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


def continues_method(saved_config: dict, config: dict) -> bool:
    """Whether a run continues its checkpoint's method object (same method, options and policy) or starts a
    new one on the merged weights."""
    return all(saved_config.get(k) == config.get(k) for k in ("method", "method_options", "policy"))

