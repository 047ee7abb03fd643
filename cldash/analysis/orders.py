"""Adversarial task orders from gradient conflict (SLICE's adversarial sequences).

The conflict between two tasks is measured on the pre-trained backbone, before any adaptation:
for each task, the gradient of its loss with respect to the full weight of every targeted module
is accumulated over a few batches (g_t[m], the direction full fine-tuning would first move
module m in); the conflict matrix is

    C[i][j] = mean over targeted modules m of cos(g_i[m], g_j[m])

(1 on the diagonal; negative where learning task j first pushes the weights against task i).
The adversarial order is the permutation p minimising the sum of consecutive cosines
sum_k C[p_k][p_{k+1}], so every task is followed by the one whose gradients oppose it most.
It is found exactly for up to 8 tasks (8! = 40,320 orders) and by a greedy start improved by
2-opt moves beyond. SLICE (reference note seed-methods.md) builds its adversarial sequences this
way from gradient cosines; which gradients (full weights of the adapted modules, mean over
modules) and the exact objective are this project's reading: a reconstruction.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from dataclasses import dataclass

import numpy as np

from cldash.config import check_against_model, resolve
from cldash.core.cache import cache_dir, cache_key, file_lock
from cldash.core.errors import UserError
from cldash.core.options import as_dict
from cldash.runs.processes import is_run_process, start_cldash

EXHAUSTIVE_UP_TO = 8


@dataclass
class Conflict:
    tasks: list[str]              # the stream's task names in its configured order
    matrix: np.ndarray            # (T, T) mean cosine over modules
    modules: list[str]            # the modules whose gradients were compared
    per_module: np.ndarray        # (M, T, T)


def order_cost(C: np.ndarray, order) -> float:
    """Sum of the cosines between consecutive tasks of `order` (lower = more adversarial)."""
    return float(sum(C[a, b] for a, b in zip(order[:-1], order[1:])))


def adversarial_order(C) -> list[int]:
    """The permutation of range(T) with the lowest `order_cost` (exact up to EXHAUSTIVE_UP_TO tasks;
    beyond, greedy from every start then 2-opt until no reversal improves)."""
    C = np.asarray(C, dtype=float)
    T = len(C)
    if C.shape != (T, T) or T < 1:
        raise ValueError(f"a conflict matrix must be square, got shape {C.shape}")
    if T <= EXHAUSTIVE_UP_TO:
        # itertools yields permutations in lexicographic order: ties go to the first, so the answer is deterministic
        return list(min(itertools.permutations(range(T)), key=lambda p: order_cost(C, p)))
    best = None
    for start in range(T):
        order, left = [start], set(range(T)) - {start}
        while left:
            nxt = min(sorted(left), key=lambda j: C[order[-1], j])
            order.append(nxt)
            left.remove(nxt)
        improved = True
        while improved:
            improved = False
            for i in range(T - 1):
                for k in range(i + 1, T):
                    cand = order[:i] + order[i:k + 1][::-1] + order[k + 1:]
                    if order_cost(C, cand) < order_cost(C, order) - 1e-12:
                        order, improved = cand, True
        if best is None or order_cost(C, order) < order_cost(C, best) - 1e-12:
            best = order
    return best


def stream_arguments(stream_options: dict) -> list[str]:
    """Stream options as `cldash run` arguments: ``["--stream-skills", "lookup,sort", "--stream-data-seed", "0"]``."""
    args = []
    for key, value in stream_options.items():
        text = ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value) \
            if isinstance(value, list) else str(value)
        args += [f"--stream-{key.replace('_', '-')}", text]
    return args


def stream_flags(stream_options: dict) -> str:
    """Stream options as `cldash run` flags: ``--stream-skills lookup,sort --stream-data-seed 0``."""
    args = stream_arguments(stream_options)
    return " ".join(f"{flag} {value}" for flag, value in zip(args[::2], args[1::2]))


def gradient_conflict(model, stream, targets: list[str], batches: int = 4, batch_size: int = 32,
                      seed: int = 0) -> Conflict:
    """Cosines of the accumulated full-weight gradients of every pair of tasks, per targeted module."""
    import torch  # (the dashboard imports this module for `stream_flags`; pages never load torch)

    modules = dict(model.net.named_modules())
    weights = {name: modules[name].weight for name in targets}
    was = {name: w.requires_grad for name, w in weights.items()}
    model.eval()     # no dropout: the gradient of the pre-trained model itself
    grads = []
    try:
        for name in weights:
            weights[name].requires_grad_(True)
        for t, task in enumerate(stream.tasks):
            if task.train is None or len(task.train) == 0:
                raise UserError(f"task {task.name} has no training examples, so its gradient cannot be measured.")
            gen = torch.Generator().manual_seed(seed * 1000 + t)
            it = stream.batches(task, batch_size, gen)
            acc = {name: torch.zeros_like(w) for name, w in weights.items()}
            for _ in range(batches):
                loss = stream.loss(model, next(it), task)
                g = torch.autograd.grad(loss, list(weights.values()), allow_unused=True)
                for name, gi in zip(weights, g):
                    if gi is not None:
                        acc[name] += gi.detach()
            grads.append(acc)
    finally:
        for name, w in weights.items():
            w.requires_grad_(was[name])
    T, M = len(grads), len(weights)
    per = np.zeros((M, T, T))
    for m, name in enumerate(weights):
        G = torch.stack([g[name].flatten().double() for g in grads])     # (T, numel)
        G = G / G.norm(dim=1, keepdim=True).clamp(min=1e-30)
        per[m] = (G @ G.T).cpu().numpy()
    return Conflict(tasks=[t.name for t in stream.tasks], matrix=per.mean(axis=0), modules=list(weights),
                    per_module=per)


def measure(values: dict, batches: int = 4, batch_size: int = 32, seed: int = 0) -> dict:
    """Resolve a run configuration (stream, backbone, targets), measure its tasks' gradient conflict on the
    pre-trained backbone, and return what the store keeps: the matrix, the adversarial order, its
    cost against the configured order's, and the stream options that run the tasks in that order."""
    import torch  # deferred: the dashboard imports this module for `stream_flags`; pages never load torch

    from cldash.engine.assembly import assemble  # deferred: imports torch

    resolved = resolve({**values, "method": "full"})
    targets = check_against_model(resolved)   # a target that matches nothing is said before any loading
    torch.manual_seed(seed)
    # the pre-trained backbone as it is: no method attached
    parts = assemble(resolved, with_method=False, targets=targets)
    stream, model = parts.stream, parts.model
    if len(stream.tasks) < 2:
        raise UserError(f"stream {resolved.config.stream} has {len(stream.tasks)} task; an order needs at least two.")
    reorder = getattr(stream, "reordered", None)
    if reorder is None:
        raise UserError(f"stream {resolved.config.stream} cannot run its tasks in another order (it has no "
                        "option listing them); choose a stream such as skills or digits-rotate.")
    model.net.requires_grad_(False)
    conflict = gradient_conflict(model, stream, list(targets), batches, batch_size, seed)
    order = adversarial_order(conflict.matrix)
    natural = list(range(len(conflict.tasks)))
    return {"stream": resolved.config.stream, "backbone": resolved.config.backbone,
            "stream_options": as_dict(resolved.stream_options), "backbone_options": as_dict(resolved.backbone_options),
            "targets": list(resolved.config.targets), "tasks": conflict.tasks, "modules": conflict.modules,
            "matrix": conflict.matrix.tolist(), "order": order, "cost": order_cost(conflict.matrix, order),
            "natural_cost": order_cost(conflict.matrix, natural),
            "ordered_options": {**as_dict(resolved.stream_options), **reorder(order)},
            "batches": batches, "batch_size": batch_size, "seed": seed}


# -- a measurement in the background (the Orders page's button) -------------------------------------
def _measurement_file(store, args: list[str]):
    """Where a background measurement of `args` (cldash order's arguments) keeps its process id and its log:
    next to the store's run logs, keyed by the store and the arguments, so that one measurement of the same
    order is running at a time."""
    folder = cache_dir() / "logs" / cache_key({"store": store.url})
    return folder / f"order-{cache_key({'args': args})}.json"


def order_args(stream: str, backbone: str = "", options: dict | None = None, batches: int = 4,
               batch_size: int = 32) -> list[str]:
    """`cldash order`'s arguments for a stream, a backbone ('' for the stream's own), stream options and the
    gradient batches (cldash order's defaults: 4 of 32)."""
    args = ["--stream", stream] + (["--backbone", backbone] if backbone else []) + stream_arguments(options or {})
    return args + ["--batches", str(int(batches)), "--batch-size", str(int(batch_size))]


def start_measurement(store, args: list[str]) -> dict:
    """Measure an order as `cldash order ARGS` does, in a background process of its own (its own process
    group, the store's URL in its environment as CLDASH_DB, never on its command line, its output in a log
    file that is kept). A measurement of the same arguments still running is returned instead of a second
    one (a double click measures once). Returns the measurement: pid, args, log path."""
    path = _measurement_file(store, args)
    with file_lock(path.with_suffix(".lock")):
        current = measurement(store, args)
        if current is not None and is_run_process(current["pid"]):
            return current
        log = path.with_suffix(".log")
        proc = start_cldash(store, ["order", *args], log, "measure the order", mode="wb")
        started = {"pid": proc.pid, "args": list(args), "log": str(log), "started_at": time.time()}
        path.write_text(json.dumps(started))
    return started


def measurement(store, args: list[str]) -> dict | None:
    """The last background measurement of `args` on this store (start_measurement), or None."""
    try:
        return json.loads(_measurement_file(store, args).read_text())
    except (OSError, ValueError):
        return None


def measurement_state(store, started: dict) -> tuple[str, object]:
    """('measuring', seconds so far), ('done', the stored order) or ('failed', its one-line reason): read from
    the process and its log (cldash order prints "order N: ..." once the order is stored, or "error: ...")."""
    try:
        text = open(started["log"], encoding="utf-8", errors="replace").read()
    except OSError:
        text = ""
    stored = re.search(r"^order (\d+): ", text, re.M)
    if stored:
        return "done", store.get_order(int(stored.group(1)))
    if is_run_process(started["pid"]):
        return "measuring", time.time() - started["started_at"]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    reason = next((ln for ln in reversed(lines) if ln.startswith("error: ")), lines[-1] if lines else "")
    reason = reason.removeprefix("error: ") or "the process ended without a word"
    return "failed", f"the measurement stopped: {reason} (its log: {started['log']})"
