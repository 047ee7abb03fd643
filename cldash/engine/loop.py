"""The continual loop: tasks -> steps -> evaluation -> spectra -> store.

`ContinualRun(resolved, writer).run()` trains one resolved run; cldash.runs.execute runs a stored run in
its own process. The loop reads top to bottom:

1. resolve the stored config, load the pre-trained backbone (pre-training it on first use)
   and the stream, attach the method to the target modules;
2. evaluate every task before any training: row 0 of the accuracy matrix R;
3. for each task: the method's ``before_task``; then steps of task loss (+ the method's extra
   loss), backward, optimizer step, the method's ``after_step``; loss and learning rate every
   step; update spectra and method scalars every ``spectra_interval`` steps (dense updates
   every ``dense_spectra_interval``); every task scored every ``eval_interval`` steps
   ("anytime" accuracy); at the task's end R[t][:] and the method's ``after_task``;
4. the metrics of R go into the run row.

A non-finite loss stops the run (RunFailed) with the step and reason; a cancel request on the run row,
read back at each flush, stops it as cancelled. Everything written before stays in the store.
"""

from __future__ import annotations

import math
import os
import platform
from dataclasses import dataclass, field, replace
from typing import Callable

import torch

from cldash.measures import metrics as M
from cldash.backbones import task_model
from cldash.config import Resolved, check_against_model, resolve
from cldash.core.errors import RunFailed, UserError
from cldash.methods import StepContext, TaskContext
from cldash.methods.layer import layer_index
from cldash.engine.rehearsal import EWC, ReplayBuffer, replay_loss
from cldash.measures.spectra import TOP_K, LowRank, Update, analyze, difference, pack, top_left_singular_vectors
from cldash.store import Store


# A loss above this stops the run as diverged even while it is finite: no working run's loss comes near it,
# and it is within a few orders of float32's overflow (3.4e38), where the next step's sums turn into inf.
HUGE_LOSS = 1e30


class Cancelled(Exception):
    pass


@dataclass
class Progress:
    """What a progress display is told after each step."""

    step: int
    total_steps: int
    task: int
    num_tasks: int
    task_name: str
    loss: float
    scores: dict[int, float] = field(default_factory=dict)   # latest anytime scores by task position


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    return torch.device(name)


def versions() -> dict[str, str]:
    """The versions a run records. scikit-learn's comes from its package metadata: importing it (and SciPy
    with it) only to read its version cost a second before every run's first step."""
    from importlib.metadata import PackageNotFoundError, version

    import transformers

    from cldash import __version__

    try:
        sklearn_version = version("scikit-learn")
    except PackageNotFoundError:   # pragma: no cover - a dependency; an unusual install without metadata
        import sklearn

        sklearn_version = sklearn.__version__
    return {"cldash": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "scikit-learn": sklearn_version, "python": platform.python_version()}


def _lr_lambda(schedule: str, warmup: int, steps: int) -> Callable[[int], float]:
    def f(i: int) -> float:   # i = number of steps taken in this task
        if warmup and i < warmup:
            return (i + 1) / warmup
        if schedule == "cosine":
            span = max(1, steps - warmup)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (i - warmup) / span)))
        return 1.0
    return f


class ContinualRun:
    """One run in memory: model, stream, method, and the logging around the loop."""

    def __init__(self, resolved: Resolved, writer=None, progress: Callable[[Progress], None] | None = None):
        self.resolved = resolved
        self.cfg = cfg = resolved.config
        self.writer = writer
        self.progress = progress
        self.device = pick_device(cfg.device)
        threads = cfg.threads or int(os.environ.get("CLDASH_THREADS", "0") or 0)
        if threads:   # 1 by default; with threads=0 the launcher shares the CPU cores between concurrent runs
            torch.set_num_threads(threads)
        torch.manual_seed(cfg.seed)
        self.generator = torch.Generator().manual_seed(cfg.seed)

        self.backbone = resolved.backbone.load(resolved.backbone_options)
        self.stream = resolved.stream_cls(resolved.stream_options, self.backbone).to(self.device)
        self.stream.loss_classes = cfg.loss_classes
        self.model = task_model(self.backbone, self.stream.heads)
        self.targets = check_against_model(resolved)
        self.method = resolved.make_method()
        self.model.net.requires_grad_(resolved.method_cls.trains_backbone)
        self.method.attach(self.model.net, list(self.targets))
        self.model.to(self.device)
        self._set_heads()
        # W0's top left singular vectors: the "stays in the pre-trained subspace" indicator.
        self.w0_basis = {name: top_left_singular_vectors(layer.w0, max(1, min(layer.w0.shape) // 8))
                         for name, layer in self.method.layers.items()}
        # replay (a run option, or a buffer the method asks for) and EWC: cldash.engine.rehearsal
        memory, method_replays = self.method.replay_request()
        capacity = max(cfg.replay, memory)
        self.replay = ReplayBuffer(capacity, cfg.replay_rule, torch.Generator().manual_seed(cfg.seed * 1000 + 999)) \
            if capacity else None
        self.train_replay = self.replay is not None and (cfg.replay > 0 or method_replays)
        self.ewc = EWC(cfg.ewc_lambda, cfg.ewc_online, cfg.ewc_gamma) if cfg.ewc_lambda > 0 else None
        self.tasks = self.stream.tasks
        self.positions = {id(t): i + 1 for i, t in enumerate(self.tasks)}
        for k, t in enumerate(self.stream.general):
            self.positions[id(t)] = -k
        self.step = 0
        self.done, self.done_task = 0, 0    # the last step that completed and its task (how an end is recorded)
        self.total_steps = cfg.steps_per_task * len(self.tasks)
        self.latest_scores: dict[int, float] = {}
        self.final_scores: dict[tuple[int, int], float] = {}   # (trained through i, task position) -> score
        self.checkpoint: Callable[[int, dict], None] | None = None   # called with (task, state) at task ends

    def _set_heads(self) -> None:
        """The head parameters that train: every new head, and the pre-trained classifier with train_head."""
        cfg, resolved = self.cfg, self.resolved
        train_head = cfg.train_head if cfg.train_head is not None else resolved.method_cls.trains_backbone
        self.head_params = [p for p in self.model.heads.parameters()]
        if train_head and not resolved.method_cls.trains_backbone:
            heads = tuple(f"{m}." for m in self.backbone.head_modules)
            self.head_params += [p for n, p in self.model.net.named_parameters() if n.startswith(heads)]
            for p in self.head_params:
                p.requires_grad_(True)

    # -- structure for the store -------------------------------------------------------------------
    def structure(self) -> tuple[list[dict], list[dict]]:
        tasks = [{"position": self.positions[id(t)], "name": t.name, "kind": t.kind,
                  "n_train": len(t.train) if t.train is not None else 0, "n_test": len(t.test)}
                 for t in self.tasks + self.stream.general]
        modules = [{"name": n, "layer": layer_index(n), "kind": n.rsplit(".", 1)[-1], "out_features": s[0],
                    "in_features": s[1]} for n, s in self.targets.items()]
        return tasks, modules

    # -- evaluation -------------------------------------------------------------------------------
    def evaluate(self, trained_through: int, final: bool) -> None:
        self.model.eval()
        primary = self.stream.primary_metric
        for task in self.tasks + self.stream.general:
            scores = self.stream.evaluate(self.model, task, self.cfg.eval_batch_size)
            pos = self.positions[id(task)]
            self.latest_scores[pos] = scores.get(primary, next(iter(scores.values())))
            if final:
                self.final_scores[(trained_through, pos)] = self.latest_scores[pos]
            if self.writer:
                self.writer.evaluation(self.step, trained_through, pos, scores, final)
        self.model.train()

    # -- spectra ----------------------------------------------------------------------------------
    @torch.no_grad()
    def log_spectra(self, task_index: int, start: dict[str, Update]) -> None:
        """Spectra of every module's cumulative update (against W0), this task's update and the
        method's extra updates, analysed in one batched pass, plus the method's scalars."""
        if not self.writer:
            return
        updates, bases, same = {}, {}, []
        for name, update in self.method.updates().items():
            updates[(name, "cumulative")] = update
            before = start.get(name)
            if before is None or (isinstance(before, LowRank) and before.inner == 0):
                same.append(name)    # nothing before this task: its update is the cumulative one
            else:
                updates[(name, "task")] = difference(update, before)
        updates.update(self.method.extra_updates())
        weight_kinds = ("cumulative", "task", *self.method.weight_space_kinds)
        for key in updates:
            # energy in W0's top directions only for updates of the module's own weight (not, e.g.,
            # a tensor-train bond's unfolding, whose shape is unrelated)
            bases[key] = self.w0_basis.get(key[0]) if key[1] in weight_kinds else None
        results = analyze(updates, bases)
        for name in same:
            results[(name, "task")] = results[(name, "cumulative")]
        for (name, kind), a in results.items():
            self.writer.spectrum(self.step, task_index, name, kind, pack(a.sigma), min(len(a.sigma), TOP_K),
                                 a.measures)
        for key, value in self.method.scalars().items():
            self.writer.scalar(self.step, key, value)
        for key, per_module in self.method.module_scalars().items():
            for module, value in per_module.items():
                self.writer.scalar(self.step, key, value, module)

    def snapshot(self) -> dict[str, Update]:
        """Each module's cumulative update at the start of a task (zero updates left out, so the
        task's own update is then logged as the cumulative one without a second analysis)."""
        ups = {name: u.detach_clone() for name, u in self.method.updates().items()}
        norms = analyze(ups)
        return {name: u for name, u in ups.items() if norms[name].measures["frobenius"] > 0}

    # -- the loop ---------------------------------------------------------------------------------
    def flush(self, **extra) -> None:
        if self.writer:
            self.writer.flush(step=self.step, progress=self.step / max(1, self.total_steps), **extra)
            if self.writer.cancel_requested:
                raise Cancelled()

    def run(self, after_task: int = 0) -> dict:
        """Train through the tasks after `after_task` (0: all, from the pre-trained model; else the state was
        restored from the checkpoint after that task) and return the metrics of the accuracy matrix."""
        cfg = self.cfg
        spectra_every = cfg.spectra_interval if self.resolved.method_cls.low_rank else cfg.dense_spectra_interval
        if not after_task:
            self.evaluate(trained_through=0, final=True)     # row 0: the pre-trained model
            self.flush(task=0)
        for t, task in enumerate(self.tasks, start=1):
            if t <= after_task:
                continue
            task_gen = torch.Generator().manual_seed(cfg.seed * 1000 + t)
            ctx = TaskContext(index=t, num_tasks=len(self.tasks), name=task.name, steps=cfg.steps_per_task,
                              model=self.model, loss_fn=lambda b, task=task: self.stream.loss(self.model, b, task),
                              batches=self._batch_fn(task, task_gen), generator=self.generator, device=self.device,
                              lr=cfg.lr)
            replaying = self.replay is not None and len(self.replay) > 0
            if replaying:
                ctx.extras["replay"] = replace(
                    ctx, name="replay", loss_fn=lambda b: replay_loss(self.stream, self.model, b),
                    batches=self._replay_fn(torch.Generator().manual_seed(cfg.seed * 1000 + 500 + t)), extras={})
            self.method.before_task(ctx)
            start = self.snapshot() if self.writer else {}
            params = self.method.trainable_parameters() + [p for p in self.head_params if p.requires_grad]
            if not params:
                raise RunFailed(f"{cfg.method} has nothing to train in task {t} ({task.name}).")
            optimizer = self.make_optimizer(params)
            scheduler = torch.optim.lr_scheduler.LambdaLR(
                optimizer, _lr_lambda(cfg.lr_schedule, self.resolved.warmup(), cfg.steps_per_task))
            batches = self.stream.batches(task, cfg.batch_size, task_gen)
            replays = self.replay.batches(cfg.replay_batch_size or cfg.batch_size, task_gen) \
                if replaying and self.train_replay else None
            self.model.train()
            for s in range(1, cfg.steps_per_task + 1):
                self.step += 1
                sctx = StepContext(step=self.step, task_step=s, task=ctx)
                loss = self.stream.loss(self.model, next(batches), task)
                extra = self.method.extra_loss(sctx)
                total = loss if extra is None else loss + extra
                aids = {}
                if replays is not None:
                    aids["replay_loss"] = replay_loss(self.stream, self.model, next(replays))
                if self.ewc is not None:
                    penalty = self.ewc.penalty(params)
                    if penalty is not None:
                        aids["ewc_penalty"] = penalty
                for part in aids.values():
                    total = total + part
                value = total.item()
                if not math.isfinite(value) or abs(value) > HUGE_LOSS:
                    raise RunFailed(self.divergence(value, {"task_loss": loss, "extra_loss": extra, **aids}, t, s))
                optimizer.zero_grad(set_to_none=True)
                total.backward()
                if cfg.max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                lr = optimizer.param_groups[0]["lr"]
                optimizer.step()
                scheduler.step()
                sctx.loss = value
                self.method.after_step(sctx)
                if self.writer:
                    self.writer.scalar(self.step, "loss", value)
                    self.writer.scalar(self.step, "lr", lr)
                    if extra is not None:
                        self.writer.scalar(self.step, "extra_loss", float(extra.detach()))
                    for key, part in aids.items():
                        self.writer.scalar(self.step, key, float(part.detach()))
                self.done, self.done_task = self.step, t
                if s < cfg.steps_per_task:
                    if spectra_every and s % spectra_every == 0:
                        self.log_spectra(t, start)
                    if cfg.eval_interval and s % cfg.eval_interval == 0:
                        self.evaluate(trained_through=t, final=False)
                    if self.writer and self.writer.due():
                        self.flush(task=t)
                if self.progress:
                    self.progress(Progress(self.step, self.total_steps, t, len(self.tasks), task.name, value,
                                           self.latest_scores))
            self.log_spectra(t, start)
            self.evaluate(trained_through=t, final=True)
            if self.ewc is not None:
                self.consolidate(task, params, t)
            self.method.after_task(ctx)
            if self.replay is not None:
                self.replay.add(task)
                if self.writer:
                    self.writer.scalar(self.step, "replay_buffer_size", float(len(self.replay)))
            self.flush(task=t)
            if self.checkpoint is not None and t < len(self.tasks):
                self.checkpoint(t, self.state())
        return self.summary()

    # -- checkpoints (cldash.engine.checkpoints) ---------------------------------------------------------
    def state(self) -> dict:
        """Everything needed to continue exactly after the task that just ended, as one object graph (the
        method's references into the model, EWC's into the parameters, survive together)."""
        return {"config": self.resolved.to_dict(), "model": self.model, "method": self.method,
                "replay": self.replay, "ewc": self.ewc, "generator": self.generator.get_state(),
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "step": self.step, "done": self.done, "done_task": self.done_task,
                "latest_scores": dict(self.latest_scores), "final_scores": dict(self.final_scores)}

    def restore(self, state: dict, after_task: int) -> None:
        """Continue from a checkpoint's `state`: the same method goes on where it was; another method, or the
        same one with other options (a fork), starts on the checkpoint's merged weights."""
        from cldash.engine.checkpoints import continues_method

        model = state["model"].to(self.device)
        same_method = continues_method(state["config"], self.resolved.to_dict())
        if same_method:
            self.model, self.method = model, state["method"]
        else:
            merge_into_base(model, state["method"])
            self.model = model
            self.method = self.resolved.make_method()
            self.model.net.requires_grad_(self.resolved.method_cls.trains_backbone)
            self.method.attach(self.model.net, list(self.targets))
            self.model.to(self.device)
        self._set_heads()
        self.w0_basis = {name: top_left_singular_vectors(layer.w0, max(1, min(layer.w0.shape) // 8))
                         for name, layer in self.method.layers.items()}
        saved = state["replay"]
        if self.replay is not None:
            if saved is not None and saved.capacity == self.replay.capacity and saved.rule == self.replay.rule:
                self.replay = saved
            else:   # replay switched on (or resized) at a fork: the buffer it would hold after these tasks
                for task in self.tasks[:after_task]:
                    self.replay.add(task)
        if self.ewc is not None:
            if state["ewc"] is not None and same_method:
                self.ewc.terms = state["ewc"].terms
            else:   # switched on at a fork: the finished tasks consolidated on the weights at the fork
                params = self.method.trainable_parameters() + [p for p in self.head_params if p.requires_grad]
                for t, task in enumerate(self.tasks[:after_task], start=1):
                    self.consolidate(task, params, t)
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.step, self.done, self.done_task = state["step"], state["done"], state["done_task"]
        self.latest_scores = dict(state["latest_scores"])
        self.final_scores = dict(state["final_scores"])

    def make_optimizer(self, params) -> torch.optim.Optimizer:
        """The run's optimizer: the method's AdamW (some methods set their own betas or a Riemannian AdamW),
        or plain Adam / SGD with momentum, as some authors train (InfLoRA, SD-LoRA)."""
        cfg = self.cfg
        if cfg.optimizer == "adam":
            return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        return self.method.make_optimizer(params, cfg.lr, cfg.weight_decay)

    def position(self) -> dict:
        """The run row's step, progress and task after the last step that completed."""
        return {"step": self.done, "progress": self.done / max(1, self.total_steps), "task": self.done_task}

    def divergence(self, value: float, terms: dict, t: int, s: int) -> str:
        """Why the loss diverged, naming the term that did it where one can tell: the task loss itself (the
        model diverged: the learning rate), else the term that is not finite, or the largest (the EWC penalty,
        the replay loss or the method's own term)."""
        cfg = self.cfg
        where = (f"the loss became {value:.3g} at step {self.step} (task {t}, {self.tasks[t - 1].name}, step {s} of "
                 f"{cfg.steps_per_task})")
        parts = {k: float(v.detach()) for k, v in terms.items() if v is not None}
        task_loss = parts.pop("task_loss")
        culprit = None
        if parts and math.isfinite(task_loss) and abs(task_loss) <= HUGE_LOSS:
            culprit = next((k for k, v in parts.items() if not math.isfinite(v)), None) or \
                max(parts, key=lambda k: abs(parts[k]))
        if culprit == "ewc_penalty":
            return (f"{where}: the EWC penalty is {parts[culprit]:.3g} with --ewc-lambda {cfg.ewc_lambda:g}; "
                    "lower --ewc-lambda.")
        if culprit == "replay_loss":
            return (f"{where}: the replay loss (on finished tasks' examples) is {parts[culprit]:.3g}; lower the "
                    f"learning rate ({cfg.lr:g}), clip gradients (--max-grad-norm) or turn replay off (--replay 0).")
        if culprit == "extra_loss":
            weights = ", ".join(f"--{n.replace('_', '-')} {getattr(self.resolved.method_options, n):g}"
                                for n in self.resolved.method_cls.extra_loss_options)
            return (f"{where}: {cfg.method}'s own loss term is {parts[culprit]:.3g}" +
                    (f" with {weights}; lower {'it' if ',' not in weights else 'them'}." if weights else
                     f"; lower the learning rate ({cfg.lr:g}) or clip gradients (--max-grad-norm)."))
        return f"{where}; lower the learning rate ({cfg.lr:g}) or clip gradients (--max-grad-norm)."

    def consolidate(self, task, params, t: int) -> None:
        """EWC at a task's end: the diagonal Fisher of the parameters that trained, then the anchor."""
        gen = torch.Generator().manual_seed(self.cfg.seed * 1000 + 700 + t)
        batches = self._batch_fn(task, gen)(self.cfg.ewc_batches, self.cfg.batch_size)
        self.model.train()
        fisher = self.ewc.fisher(params, lambda b: self.stream.loss(self.model, b, task), batches)
        self.ewc.consolidate(params, fisher)
        if self.writer:
            self.writer.scalar(self.step, "ewc_fisher_top1pct_share", self.ewc.mass_top_share())

    def _replay_fn(self, generator):
        def batches(n: int, size: int):
            for _ in range(n):
                yield self.replay.sample(size, generator)
        return batches

    def _batch_fn(self, task, generator):
        def batches(n: int, size: int):
            it = self.stream.batches(task, size, generator)
            for _ in range(n):
                yield next(it)
        return batches

    def matrix(self):
        """R ((T + 1) x T) and the general tasks' columns from the final evaluations."""
        T = len(self.tasks)
        R = [[self.final_scores[(i, j)] for j in range(1, T + 1)] for i in range(T + 1)]
        general = {t.name: [self.final_scores[(i, self.positions[id(t)])] for i in range(T + 1)]
                   for t in self.stream.general}
        return R, general

    def summary(self) -> dict:
        R, general = self.matrix()
        return M.summarize(R, general)


@torch.no_grad()
def merge_into_base(model, method) -> None:
    """Replace each of the method's adapted layers in `model` by its base module holding the layer's effective
    weight (base plus every branch): the model computes the same function with no adapter left."""
    for name, layer in method.layers.items():
        w = layer.effective_weight().detach()
        layer.base.weight.copy_(w.T if layer.transposed else w)
        parent_name, _, child = name.rpartition(".")
        parent = model.net.get_submodule(parent_name) if parent_name else model.net
        setattr(parent, child, layer.base)


def save_adapters(crun: ContinualRun, path) -> None:
    """The run's final state beyond the pre-trained backbone: what the method added (its state_dict)
    and every head that trained (a class-incremental stream's new head, the pre-trained classifier
    with --train-head). Written atomically; `load_adapted_model` rebuilds the run's model from it."""
    trained = {id(p) for p in crun.head_params if p.requires_grad}
    heads = {n: p.detach().cpu().clone() for n, p in crun.model.named_parameters() if id(p) in trained}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save({"method": crun.method.state_dict(), "heads": heads}, tmp)
    os.replace(tmp, path)


def load_adapted_model(store: Store, run_id: int):
    """A finished run's final model, rebuilt on CPU from the pre-trained backbone and its saved state:
    (resolved config, stream, model (backbones.task_model), method)."""
    run = store.get_run(run_id)
    path = store.adapter_path(run_id)
    if run["status"] != "finished" or not path.exists():
        raise UserError(f"run {run_id} has no saved adapters (it is {run['status']}); only runs that finished "
                        "since adapters are saved can be exported this way.")
    resolved = resolve(run["config"])
    backbone = resolved.backbone.load(resolved.backbone_options)
    stream = resolved.stream_cls(resolved.stream_options, backbone)
    model = task_model(backbone, stream.heads)
    targets = check_against_model(resolved)
    method = resolved.make_method()
    model.net.requires_grad_(resolved.method_cls.trains_backbone)
    method.attach(model.net, list(targets))
    saved = torch.load(path, map_location="cpu", weights_only=True)
    method.load_state_dict(saved["method"])
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in saved["heads"].items():
            params[name].copy_(value)
    return resolved, stream, model.eval(), method


