"""Task-boundary checkpoints: the files a run writes at each task's end, and reads back to continue.

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

Resume and fork, which queue runs from these files, are cldash.runs.lineage.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from cldash.core.cache import sha256_file
from cldash.core.errors import UserError


def path(store, run_id: int, task: int) -> Path:
    return store.checkpoint_dir(run_id) / f"task-{task}.pt"


def available(store, run_id: int) -> list[int]:
    """The tasks after which the run has a checkpoint on this machine, in order."""
    d = store.checkpoint_dir(run_id)
    if not d.is_dir():
        return []
    return sorted(int(p.stem.split("-", 1)[1]) for p in d.glob("task-*.pt") if p.stem.split("-", 1)[1].isdigit())


def _sha256(file: Path) -> str:
    return sha256_file(file)


def save(store, run_id: int, task: int, state: dict, keep: str = "latest") -> Path:
    """Write a checkpoint atomically (a temporary file renamed into place); with ``keep="latest"`` remove the
    earlier tasks' afterwards. Returns its path."""
    target = path(store, run_id, task)
    target.parent.mkdir(parents=True, exist_ok=True)
    import torch  # deferred: the dashboard's scheduler imports this module and never trains

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
    try:
        return json.loads(_sums_path(store, run_id).read_text())
    except (OSError, ValueError):
        return {}


def _write_sums(store, run_id: int, sums: dict) -> None:
    p = _sums_path(store, run_id)
    tmp = p.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(sums))
    os.replace(tmp, p)


def load(store, run_id: int, task: int) -> dict:
    """A checkpoint's state, after checking it against the SHA-256 recorded when it was written."""
    file = path(store, run_id, task)
    if not file.exists():
        raise UserError(f"run {run_id} has no checkpoint after task {task} on this machine (at {file}); "
                        f"it has {listed(available(store, run_id))}.")
    want = _sums(store, run_id).get(str(task))
    if want is None or _sha256(file) != want:
        raise UserError(f"the checkpoint of run {run_id} after task {task} ({file}) does not match the checksum "
                        "recorded when it was written; it is not loaded (resume from an earlier task, or run again).")
    import torch  # deferred: the dashboard's scheduler imports this module and never trains

    try:
        return torch.load(file, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - a checkpoint of another cldash or transformers: its classes moved
        raise UserError(f"cannot load the checkpoint of run {run_id} after task {task} ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:200] if str(exc) else 'no detail'}); it may come from another "
                        f"version of cldash or transformers; remove {file} and resume to start from the first "
                        "task.") from None


def listed(tasks: list[int]) -> str:
    if not tasks:
        return "none"
    return "checkpoints after task " + ", ".join(map(str, tasks))


def copy(store, source: int, target: int, task: int) -> None:
    """Give run `target` run `source`'s checkpoint after `task` as its own (a fork starts from it)."""
    src = path(store, source, task)
    dst = path(store, target, task)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_suffix(f".tmp{os.getpid()}")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
    _write_sums(store, target, {str(task): _sums(store, source)[str(task)]})


def continues_method(saved_config: dict, config: dict) -> bool:
    """Whether a run continues its checkpoint's method object (same method, options and policy) or starts a
    new one on the merged weights."""
    return all(saved_config.get(k) == config.get(k) for k in ("method", "method_options", "policy"))

