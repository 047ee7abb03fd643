"""TensorBoard event files of runs, so that a researcher opens cldash's runs next to their other experiments
(`tensorboard --logdir DIR`).

`write_tensorboard(store, run_ids, folder)` writes one subfolder per run, named by its id and name
(`run-4-lora-r=8-digits-rotate-seed-0`: several runs open side by side), holding one event file written with
the tensorboard package's own writer (EventFileWriter, which needs neither TensorFlow nor torch). In it:

- the scalars over steps: `loss/train`, the run's other scalars as `train/<name>` (`train/lr`), a method's
  per-module read-outs as `<name>/<module>`, and every task's score as `<metric>/T1 · rotate 45°` (a general
  task by its name: `accuracy/general: upright digits`), anytime and task-end evaluations together;
- the metrics at each task's end (cldash.measures.metrics.after_each_task: ACC, forgetting, BWT, LA ... of the
  tasks seen so far) as `task end/<key>` (`task end/acc`, `task end/forgetting`), at the step where that task
  ended; one that is undefined there (BWT after one task) is left out;
- the singular values of every module's update as histograms over steps, at every logged step, one tag per
  module and kind of update: `singular values · cumulative/<module>` (W − W0), `singular values · task/<module>`
  (the change since the task started), and a method's own kinds.

Each tag's first point carries its description (the metric's formula, the read-out's readable name), which
TensorBoard shows beside the chart. TensorBoard keeps a scalar as float32; a histogram keeps the exact minimum,
maximum, count and sum of the singular values. The store does not keep when each step ran, so every event
carries the run's start time: read the charts by step.

Everything is read from the store before the first byte is written, and each run is written into a hidden
folder beside its place and moved there once every run is written, so a failure leaves nothing half-written; an
earlier export of the same run (a folder of event files only) is replaced. `cldash export RUN --tensorboard DIR`
and the Compare page's button both call `write_tensorboard`.
"""

from __future__ import annotations

import io
import math
import os
import re
import shutil
import tempfile
import uuid
import zipfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cldash.core.errors import UserError
from cldash.dashboard.labels import scalar_label, setting_label, task_label
from cldash.measures.metrics import METRICS, after_each_task
from cldash.store import Store

INSTALL = ("the TensorBoard export needs the tensorboard package; install it with pip install 'cldash[tensorboard]' "
           "(or pip install tensorboard).")
EVENT_FILE = "events.out.tfevents."     # how every event file's name starts (EventFileWriter)
HISTOGRAM_BUCKETS = 30                  # tensorboard's own default for a histogram (summary_v2.histogram)
KIND_TEXT = {"cumulative": "of the update W − W0, against the pre-trained weight",
             "task": "of the change since the current task started"}
TASK_END_TEXT = "over the tasks learned so far, at the step where the task ended"


@dataclass
class RunEvents:
    """What one run's event file holds, read from the store: {tag: [(step, value)]}, {tag: [(step, singular
    values)]}, a description per tag, and the time every event carries."""
    wall_time: float
    scalars: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    histograms: dict[str, list[tuple[int, np.ndarray]]] = field(default_factory=dict)
    descriptions: dict[str, str] = field(default_factory=dict)


def run_folder(run: dict) -> str:
    """A run's folder in an export: 'run-4-lora-r=8-digits-rotate-seed-0', from its id and the name the store
    keeps (else its setting and seed); anything but letters, digits and . _ = + - becomes a dash, and the name
    is cut at 80 characters (TensorBoard lists runs by their folder)."""
    name = run.get("name") or f"{setting_label(run['config'])} · seed {run['seed']}"
    slug = re.sub(r"[^A-Za-z0-9._=+-]+", "-", name).strip("-.")[:80].rstrip("-.")
    return f"run-{run['id']}" + (f"-{slug}" if slug else "")


def run_events(store: Store, run: dict) -> RunEvents:
    """Every series of `run` (a Store.get_run row) that its event file holds, tagged as the module docstring
    says."""
    out = RunEvents(float(run.get("started_at") or run["created_at"]))
    _scalars(store, run["id"], out)
    _scores(store, run["id"], out)
    _task_ends(store, run, out)
    _spectra(store, run["id"], out)
    return out


def _scalars(store: Store, run_id: int, out: RunEvents) -> None:
    scalars = store.scalars(run_id)
    for (name, module), g in scalars.groupby(["name", "module"], sort=True) if len(scalars) else []:
        tag = f"{name}/{module}" if module else "loss/train" if name == "loss" else f"train/{name}"
        out.scalars[tag] = list(zip(g.step.astype(int).tolist(), g.value.astype(float).tolist()))
        out.descriptions[tag] = scalar_label(name) + (f" of {module}" if module else "")


def _scores(store: Store, run_id: int, out: RunEvents) -> None:
    evals = store.evaluations(run_id)
    if not len(evals):
        return
    tasks = store.tasks(run_id)
    names = dict(zip(tasks.position, tasks.name))
    # one score per step: the loop scores a task's last step only at its end (cldash.engine.loop)
    for (metric, task), g in evals.groupby(["metric", "task"], sort=True):
        tag = f"{metric}/{task_label(int(task), names.get(task, str(task)))}"
        g = g.sort_values("step")
        out.scalars[tag] = list(zip(g.step.astype(int).tolist(), g.value.astype(float).tolist()))
        out.descriptions[tag] = f"{metric} on this task over steps (anytime and task-end evaluations)"


def _task_ends(store: Store, run: dict, out: RunEvents) -> None:
    matrix = store.accuracy_matrix(run["id"])
    rows = matrix["rows"]
    seen = next((i for i, r in enumerate(rows) if r != i), len(rows))   # rows 0..t, without a gap
    if seen < 2 or not matrix["tasks"]:
        return
    final = store.evaluations(run["id"], final=True)
    ends = final[final.metric == matrix["metric"]].groupby("trained_through").step.max()
    general = {name: col[:seen] for name, col in matrix["general"].items()}
    labels = {m.key: f"{m.label}: {m.formula}" for m in METRICS}
    for t, metrics in enumerate(after_each_task(matrix["R"][:seen], general), start=1):
        for key, value in metrics.items():
            if math.isfinite(value):
                tag = f"task end/{key}"
                out.scalars.setdefault(tag, []).append((int(ends[t]), float(value)))
                base = key.split(":", 1)[0]
                what = labels.get(key) or (f"{labels[base]}, of {key.split(':', 1)[1]}" if base in labels else key)
                out.descriptions[tag] = f"{what} ({TASK_END_TEXT})"


def _spectra(store: Store, run_id: int, out: RunEvents) -> None:
    spectra = store.spectra(run_id)
    for (kind, module), g in spectra.groupby(["kind", "module"], sort=True) if len(spectra) else []:
        tag = f"singular values · {kind}/{module}"
        out.histograms[tag] = [(int(s), v) for s, v in zip(g.step, g["values"]) if len(v)]
        out.descriptions[tag] = f"singular values {KIND_TEXT.get(kind, f'({kind})')} of {module}"


def _tensorboard():
    """The tensorboard package's writer and protocol buffers, or the sentence that says how to install it."""
    try:
        from tensorboard.compat.proto import event_pb2, summary_pb2  # deferred: an optional extra (cldash[tensorboard])
        from tensorboard.summary.writer.event_file_writer import EventFileWriter  # deferred: the same
    except ImportError:
        raise UserError(INSTALL) from None
    return EventFileWriter, event_pb2, summary_pb2


def histogram(values, summary_pb2):
    """TensorBoard's HistogramProto of `values`: the exact min, max, count, sum and sum of squares, and
    HISTOGRAM_BUCKETS equal buckets between min and max (bucket_limit: each bucket's right edge)."""
    v = np.asarray(values, dtype=np.float64)
    counts, edges = np.histogram(v, bins=HISTOGRAM_BUCKETS)
    return summary_pb2.HistogramProto(min=float(v.min()), max=float(v.max()), num=float(v.size), sum=float(v.sum()),
                                      sum_squares=float(np.dot(v, v)), bucket_limit=edges[1:].tolist(),
                                      bucket=counts.astype(float).tolist())


def _write_events(events: RunEvents, folder: Path, tb) -> None:
    """One event file in `folder`: every tag's points grouped by step, written in step order (TensorBoard's
    reader drops what precedes a step it has already seen)."""
    EventFileWriter, event_pb2, summary_pb2 = tb
    by_step: dict[int, list] = defaultdict(list)

    def value(tag: str, first: bool, plugin: str, **kind):
        v = summary_pb2.Summary.Value(tag=tag, **kind)
        if first:   # TensorBoard reads a tag's description from its first point, with the plugin that draws it
            v.metadata.plugin_data.plugin_name = plugin
            v.metadata.summary_description = events.descriptions.get(tag, "")
        return v

    for tag, points in events.scalars.items():
        for i, (step, x) in enumerate(points):
            by_step[step].append(value(tag, i == 0, "scalars", simple_value=x))
    for tag, points in events.histograms.items():
        for i, (step, values) in enumerate(points):
            by_step[step].append(value(tag, i == 0, "histograms", histo=histogram(values, summary_pb2)))
    writer = EventFileWriter(str(folder), max_queue_size=1024, flush_secs=3600)
    try:
        for step in sorted(by_step):
            writer.add_event(event_pb2.Event(wall_time=events.wall_time, step=step,
                                             summary=summary_pb2.Summary(value=by_step[step])))
        writer.flush()    # raises what the writer's thread met (a full disk); close() would not
    finally:
        writer.close()


def _is_export(folder: Path) -> bool:
    """A folder this export may replace: event files and nothing else."""
    return folder.is_dir() and all(p.is_file() and p.name.startswith(EVENT_FILE) for p in folder.iterdir())


def _first_missing(folder: Path) -> Path | None:
    """The outermost folder of `folder`'s path that does not exist yet (the export removes what it made)."""
    missing = None
    for p in [folder, *folder.parents]:
        if p.exists():
            break
        missing = p
    return missing


def write_tensorboard(store: Store, run_ids, folder) -> list[Path]:
    """Write each run's event file into `folder`/run_folder(run) and return those folders. Unknown runs, a
    folder that is a file or cannot be written, and a missing tensorboard package are one sentence (UserError),
    with nothing written."""
    ids = list(dict.fromkeys(int(i) for i in run_ids))
    if not ids:
        raise UserError("choose the runs to write for TensorBoard (the sidebar or the Runs page selects them).")
    runs = [store.get_run(i) for i in ids]
    tb = _tensorboard()
    if not str(folder).strip():
        raise UserError("name a folder to write the TensorBoard event files into, e.g. tensorboard/cldash.")
    root = Path(folder).expanduser()
    if root.exists() and not root.is_dir():
        raise UserError(f"{root} is a file; give a folder to write the TensorBoard event files into.")
    targets = [root / run_folder(r) for r in runs]
    for target in targets:
        if target.exists() and not _is_export(target):
            raise UserError(f"{target} holds more than TensorBoard event files; give another folder, so that "
                            "nothing of yours is replaced.")
    series = [run_events(store, r) for r in runs]      # every read before the first byte is written
    made, staged, moved = _first_missing(root), [], 0
    try:
        root.mkdir(parents=True, exist_ok=True)
        for events, target in zip(series, targets):
            staged.append(Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=root)))
            _write_events(events, staged[-1], tb)
        for tmp, target in zip(staged, targets):
            _replace(tmp, target)
            moved += 1
    except BaseException as exc:
        for tmp in staged[moved:]:
            shutil.rmtree(tmp, ignore_errors=True)
        if made is not None and not moved:
            shutil.rmtree(made, ignore_errors=True)
        if isinstance(exc, OSError):
            raise UserError(f"cannot write {exc.filename or root} ({exc.strerror or exc}); give a folder that you "
                            "can write to.") from None
        raise
    return targets


def _replace(tmp: Path, target: Path) -> None:
    """Move a written run folder into its place, replacing an earlier export of the run."""
    if target.exists():
        old = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.old")
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)


def folders_zip(root, folders) -> bytes:
    """The written run folders as one zip file (paths relative to `root`), for a browser far from the disk."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for folder in folders:
            for path in sorted(Path(folder).rglob("*")):
                if path.is_file():
                    z.write(path, path.relative_to(Path(root).expanduser()).as_posix())
    return buf.getvalue()


__all__ = ["write_tensorboard", "run_events", "run_folder", "folders_zip", "histogram", "INSTALL"]
