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

It is a torch pickle (`weights_only=False`: the graph holds the method's own classes), written atomically
to the run's artifact location (cldash.store.artifacts: next to a SQLite store by default, or a shared folder,
or an fsspec URL such as s3://bucket/prefix, so another machine can resume or fork it), so a reader sees the
old checkpoint or the new one, never half of one. Its SHA-256 goes to the run's ``sha256.json``, written last,
and a file that does not match is refused rather than unpickled: the bytes checked are the bytes loaded. Only
files cldash wrote at the run's location are ever loaded. By default only the latest task's checkpoint is kept
(``checkpoints: all`` keeps every task's, so a fork can start after any task).

Resume and fork, which queue runs from these files, are cldash.runs.lineage.
"""

from __future__ import annotations

import hashlib
import io
import json
import re

from cldash.core.errors import UserError

SUMS = "sha256.json"
_TASK_FILE = re.compile(r"^task-(\d+)\.pt$")


def path(store, run_id: int, task: int) -> str:
    """Where the run's checkpoint after `task` is, in its artifact location."""
    return _file(store.artifacts(run_id), run_id, f"task-{task}.pt")


def _file(files, run_id: int, name: str) -> str:
    """A file of the run's checkpoints (a task's, or the checksums) in the artifact location `files`."""
    return files.join(files.checkpoint_dir(run_id), name)


def available(store, run_id: int) -> list[int]:
    """The tasks after which the run has a checkpoint at its artifact location, in order."""
    files = store.artifacts(run_id)
    try:
        return _tasks(files, run_id)
    except OSError as exc:   # a location this machine cannot reach (no network, no credentials)
        raise UserError(f"cannot list the checkpoints of run {run_id} at {files.where(files.checkpoint_dir(run_id))} "
                        f"({exc.strerror or exc}).") from None


def _tasks(files, run_id: int) -> list[int]:
    found = (_TASK_FILE.match(name) for name in files.names(files.checkpoint_dir(run_id)))
    return sorted(int(m.group(1)) for m in found if m)


def save(store, run_id: int, task: int, state: dict, keep: str = "latest") -> str:
    """Write a checkpoint atomically, then its checksum; with ``keep="latest"`` remove the earlier tasks'
    afterwards. Returns where it is."""
    import torch  # deferred: the dashboard's scheduler imports this module and never trains

    files = store.artifacts(run_id)
    target = _file(files, run_id, f"task-{task}.pt")
    digest = files.write(target, lambda fh: torch.save(state, fh))
    sums = dict(_sums(files, run_id), **{str(task): digest})
    if keep == "latest":
        for old in _tasks(files, run_id):
            if old != task:
                files.remove(_file(files, run_id, f"task-{old}.pt"))
                sums.pop(str(old), None)
    _write_sums(files, run_id, sums)
    return target


def _sums(files, run_id: int) -> dict:
    try:
        return json.loads(files.read(_file(files, run_id, SUMS)))
    except (OSError, ValueError):
        return {}


def _write_sums(files, run_id: int, sums: dict) -> None:
    files.write(_file(files, run_id, SUMS), lambda fh: fh.write(json.dumps(sums).encode()))


def load(store, run_id: int, task: int) -> dict:
    """A checkpoint's state, after checking it against the SHA-256 recorded when it was written."""
    files = store.artifacts(run_id)
    file = _file(files, run_id, f"task-{task}.pt")
    try:
        data = files.read(file)
    except FileNotFoundError:
        raise UserError(f"run {run_id} has no checkpoint after task {task} at {files.where(file)}; it has "
                        f"{listed(_tasks(files, run_id))}.") from None
    except OSError as exc:
        raise UserError(f"cannot read the checkpoint of run {run_id} after task {task} at {files.where(file)} "
                        f"({exc.strerror or exc}).") from None
    want = _sums(files, run_id).get(str(task))
    if want is None or hashlib.sha256(data).hexdigest() != want:
        raise UserError(f"the checkpoint of run {run_id} after task {task} ({files.where(file)}) does not match the "
                        "checksum recorded when it was written; it is not loaded (resume from an earlier task, or run "
                        "again).")
    import torch  # deferred: the dashboard's scheduler imports this module and never trains

    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - a checkpoint of another cldash or transformers: its classes moved
        raise UserError(f"cannot load the checkpoint of run {run_id} after task {task} ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:200] if str(exc) else 'no detail'}); it may come from another "
                        f"version of cldash or transformers; remove {files.where(file)} and resume to start from the "
                        "first task.") from None


def listed(tasks: list[int]) -> str:
    if not tasks:
        return "none"
    return "checkpoints after task " + ", ".join(map(str, tasks))


def copy(store, source: int, target: int, task: int) -> None:
    """Give run `target` run `source`'s checkpoint after `task` as its own (a fork starts from it), from the
    source's artifact location to the target's (they may differ). The checksum recorded for the source goes with
    it, so a damaged file is refused when the fork loads it."""
    src, dst = store.artifacts(source), store.artifacts(target)
    data = src.read(_file(src, source, f"task-{task}.pt"))
    want = _sums(src, source).get(str(task))
    dst.write(_file(dst, target, f"task-{task}.pt"), lambda fh: fh.write(data))
    _write_sums(dst, target, {str(task): want} if want else {})


def continues_method(saved_config: dict, config: dict) -> bool:
    """Whether a run continues its checkpoint's method object (same method, options and policy) or starts a
    new one on the merged weights."""
    return all(saved_config.get(k) == config.get(k) for k in ("method", "method_options", "policy"))
