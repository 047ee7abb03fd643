"""The continual loop: tasks -> steps -> evaluation -> spectra -> store.

`ContinualRun(resolved, writer).run()` trains one resolved run; cldash.runs.execute runs a stored run in
its own process. The loop reads top to bottom:

1. assemble the model (cldash.engine.assembly): load the pre-trained backbone (pre-training it on first
   use) and the stream, attach the method to the target modules;
2. evaluate every task before any training: row 0 of the accuracy matrix R (cldash.engine.evaluation);
3. for each task: the ``before_task`` hooks; then steps of task loss (+ the method's extra loss, + the aids'
   terms: replay, EWC, cldash.engine.rehearsal), backward, optimizer step, the method's ``after_step``;
   loss and learning rate every step; update spectra and method scalars every ``spectra_interval`` steps
   (dense updates every ``dense_spectra_interval``; cldash.engine.readouts); every task scored every
   ``eval_interval`` steps ("anytime" accuracy); at the task's end R[t][:] and the ``after_task`` hooks;
4. the metrics of R go into the run row.

Forward passes and losses run in the run's precision (cldash.engine.precision: autocast, float32 master
weights, fp16's gradient scaler); with ``compile`` the steps and the scoring call the model through
torch.compile where the method allows it. What the run actually used goes to the run row (`runtime`).

A non-finite loss stops the run (RunFailed) with the step and reason; so does running out of memory, with
the batch size and precision to try; a cancel request on the run row, read back at each flush, stops it as
cancelled. Everything written before stays in the store.
"""

from __future__ import annotations

import math
import os
import platform
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version

import torch
from torch import nn

from cldash import __version__
from cldash.config import Resolved
from cldash.core.errors import RunFailed
from cldash.engine.assembly import assemble, attach_method, merge_into_base
from cldash.engine.checkpoints import continues_method
from cldash.engine.evaluation import TaskScores
from cldash.engine.precision import Precision, master_weights, usable
from cldash.engine.readouts import Readouts
from cldash.engine.rehearsal import EWC, ReplayBuffer, aids_for, batch_source
from cldash.measures.spectra import Update
from cldash.methods import StepContext, TaskContext
from cldash.methods.layer import layer_index
from cldash.streams.base import Task

# A loss above this stops the run as diverged even while it is finite: no working run's loss comes near it,
# and it is within a few orders of float32's overflow (3.4e38), where the next step's sums turn into inf.
HUGE_LOSS = 1e30

# torch.compile's backend: inductor (the default, generated kernels); tests set "eager" or "aot_eager", which
# trace the same graphs without inductor's slow CPU code generation.
COMPILE_BACKEND = os.environ.get("CLDASH_COMPILE_BACKEND", "inductor")


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


def reproducible_on(device: torch.device) -> bool:
    """Make a GPU run give the same numbers again on the same GPU: cuBLAS with a fixed workspace (its reductions
    otherwise pick a split per call), cuDNN without autotuning (the patch embedding's convolution), and PyTorch's
    deterministic kernels where it has them (a warning, not an error, where it has none). Returns whether it did
    (a CPU run is deterministic at one thread already: tests/engine/test_engine.py)."""
    if device.type != "cuda":
        return False
    # read when cuBLAS makes its handle, at the first matmul on the device: the run has done none yet
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)
    return True


def versions() -> dict[str, str]:
    """The versions a run records. scikit-learn's comes from its package metadata: importing it (and SciPy
    with it) only to read its version cost a second before every run's first step."""
    import transformers  # deferred: 3 s to import, and only a backbone's build or a run's record needs it

    try:
        sklearn_version = version("scikit-learn")
    except PackageNotFoundError:   # pragma: no cover - a dependency; an unusual install without metadata
        import sklearn  # deferred: imports SciPy, only for an install without package metadata

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


def _advance(scheduler: torch.optim.lr_scheduler.LRScheduler, stepped: bool) -> None:
    """The schedule's next step, also after a step fp16's scaler skipped (the schedule counts steps taken or
    not, as PyTorch's AMP examples do); PyTorch's warning that the optimizer has not stepped yet is then
    expected, and says nothing."""
    if stepped:
        scheduler.step()
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)` before")
        scheduler.step()


@dataclass
class TaskTraining:
    """One task in training: its position and context (what the hooks see), the parameters that train with
    their optimizer and schedule, its batches, and the updates at its start (for its own spectra)."""

    index: int
    task: Task
    ctx: TaskContext
    params: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    batches: Iterator
    start: dict[str, Update]


class ContinualRun:
    """One run in memory: model, stream, method and aids, and the logging around the loop."""

    def __init__(self, resolved: Resolved, writer=None, progress: Callable[[Progress], None] | None = None):
        self.resolved = resolved
        self.cfg = cfg = resolved.config
        self.writer = writer
        self.progress = progress
        self.device = pick_device(cfg.device)
        self.deterministic = reproducible_on(self.device)
        threads = cfg.threads or int(os.environ.get("CLDASH_THREADS", "0") or 0)
        if threads:   # 1 by default; with threads=0 the launcher shares the CPU cores between concurrent runs
            torch.set_num_threads(threads)
        torch.manual_seed(cfg.seed)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        parts = assemble(resolved, self.device)
        self.backbone, self.stream, self.model, self.method, self.targets = (
            parts.backbone, parts.stream, parts.model, parts.method, parts.targets)
        self._set_heads()
        self.readouts = Readouts(self.method, writer)
        self.aids = aids_for(cfg, self.method, self.stream, self._log)   # replay and EWC: cldash.engine.rehearsal
        self.tasks = self.stream.tasks
        self.precision = Precision.for_device(cfg.precision, self.device)
        if self.precision.note:
            print(f"cldash: {self.precision.note}.", file=sys.stderr, flush=True)
        self.compile_note = self.resolved.method_cls.compile_note if cfg.compile else ""
        if self.compile_note:
            print(f"cldash: --compile is off for {cfg.method}: {self.compile_note}.", file=sys.stderr, flush=True)
        self._set_forward()
        self.scores = TaskScores(self.stream, cfg.eval_batch_size, writer, self.precision, cfg.eval_subset, cfg.seed)
        self.step = 0
        self.done, self.done_task = 0, 0    # the last step that completed and its task (how an end is recorded)
        self.total_steps = cfg.steps_per_task * len(self.tasks)
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

    def _set_forward(self) -> None:
        """What the steps and the scoring call: the model itself, or (compile) torch.compile's wrapper of it,
        which shares its parameters. The methods' hooks and the aids keep the plain model."""
        self.forward_model = self.model
        if self.cfg.compile and not self.compile_note:
            # a structure change at a task boundary (a new branch) and train/eval each compile once more: room
            # for all of them, so that torch does not fall back to eager after its default 8
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit,
                                                       4 * (len(self.tasks) + 2))
            self.forward_model = torch.compile(self.model, backend=COMPILE_BACKEND)

    def runtime(self) -> dict:
        """What the run actually used (the run row's runtime): its precision (and the one asked for, with why,
        where it fell back), compile and why not, the anytime evaluations' subset, the data's provenance."""
        compiled = self.forward_model is not self.model
        return {**self.precision.record(), "compile": compiled,
                **({"compile_note": self.compile_note} if self.compile_note else {}),
                "eval_subset": self.cfg.eval_subset, "deterministic": self.deterministic,
                "stream": dict(getattr(self.stream, "info", {}) or {})}

    def _log(self, key: str, value: float) -> None:
        """A scalar at the current step (the aids' hooks log through this)."""
        if self.writer:
            self.writer.scalar(self.step, key, value)

    # -- what the run holds, for the store, the tests and the checkpoints ---------------------------
    @property
    def replay(self) -> ReplayBuffer | None:
        """The replay buffer (for the run's replay option, or the one the method asked for), or None."""
        return self._aid_state("replay")

    @property
    def ewc(self) -> EWC | None:
        """EWC's Fisher and anchors, or None."""
        return self._aid_state("ewc")

    @property
    def train_replay(self) -> bool:
        """Whether the buffer's loss is added to the steps' (False: a buffer only the method uses)."""
        return any(aid.key == "replay" and aid.train for aid in self.aids)

    def _aid_state(self, key: str):
        return next((aid.saved() for aid in self.aids if aid.key == key), None)

    def structure(self) -> tuple[list[dict], list[dict]]:
        tasks = [{"position": self.scores.position(t), "name": t.name, "kind": t.kind,
                  "n_train": len(t.train) if t.train is not None else 0, "n_test": len(t.test)}
                 for t in self.tasks + self.stream.general]
        modules = [{"name": n, "layer": layer_index(n), "kind": n.rsplit(".", 1)[-1], "out_features": s[0],
                    "in_features": s[1]} for n, s in self.targets.items()]
        return tasks, modules

    def flush(self, **extra) -> None:
        if self.writer:
            self.writer.flush(step=self.step, progress=self.step / max(1, self.total_steps), **extra)
            if self.writer.cancel_requested:
                raise Cancelled()

    # -- the loop ---------------------------------------------------------------------------------
    def run(self, after_task: int = 0) -> dict:
        """Train through the tasks after `after_task` (0: all, from the pre-trained model; else the state was
        restored from the checkpoint after that task) and return the metrics of the accuracy matrix."""
        cfg = self.cfg
        spectra_every = cfg.spectra_interval if self.resolved.method_cls.low_rank else cfg.dense_spectra_interval
        if not after_task:
            self.evaluate(trained_through=0, final=True)   # row 0: pre-trained
            self.flush(task=0)
        for t, task in enumerate(self.tasks, start=1):
            if t <= after_task:
                continue
            training = self.begin_task(t, task)
            for s in range(1, cfg.steps_per_task + 1):
                value = self.train_step(training, s)
                self.done, self.done_task = self.step, t
                if s < cfg.steps_per_task:   # the task's last step: its end below logs and scores it
                    if spectra_every and s % spectra_every == 0:
                        self.readouts.log(self.step, t, training.start)
                    if cfg.eval_interval and s % cfg.eval_interval == 0:   # anytime accuracy
                        self.evaluate(trained_through=t, final=False)
                    if self.writer and self.writer.due():
                        self.flush(task=t)
                if self.progress:
                    self.progress(Progress(self.step, self.total_steps, t, len(self.tasks), task.name, value,
                                           self.scores.latest))
            self.readouts.log(self.step, t, training.start)
            self.evaluate(trained_through=t, final=True)   # R[t][:]
            self.end_task(training)
            self.flush(task=t)
            if self.checkpoint is not None and t < len(self.tasks):
                self.checkpoint(t, self.state())
        return self.summary()

    def begin_task(self, t: int, task: Task) -> TaskTraining:
        """The hooks before task `t`, then what its steps need: the parameters that train, their optimizer and
        schedule, the task's batches (the aids draw theirs from the same generator)."""
        cfg = self.cfg
        task_gen = torch.Generator().manual_seed(cfg.seed * 1000 + t)
        ctx = TaskContext(index=t, num_tasks=len(self.tasks), name=task.name, steps=cfg.steps_per_task,
                          model=self.model, loss_fn=lambda b, task=task: self.stream.loss(self.model, b, task),
                          batches=batch_source(self.stream, task, task_gen), generator=self.generator,
                          device=self.device, lr=cfg.lr)
        for aid in self.aids:   # first: replay hands the method a context over its buffer (ctx.extras["replay"])
            aid.before_task(ctx)
        self.method.before_task(ctx)
        start = self.readouts.snapshot() if self.writer else {}
        params = master_weights(self.trainable_parameters())
        if not params:
            raise RunFailed(f"{cfg.method} has nothing to train in task {t} ({task.name}).")
        optimizer = self.make_optimizer(params)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, _lr_lambda(cfg.lr_schedule, self.resolved.warmup(), cfg.steps_per_task))
        batches = self.stream.batches(task, cfg.batch_size, task_gen)
        for aid in self.aids:
            aid.start_steps(params, task_gen)
        self.model.train()
        return TaskTraining(t, task, ctx, params, optimizer, scheduler, batches, start)

    def evaluate(self, trained_through: int, final: bool) -> None:
        """Score every task after the current step (cldash.engine.evaluation); out of memory ends the run."""
        try:
            self.scores.evaluate(self.forward_model, self.step, trained_through, final)
        except torch.OutOfMemoryError as exc:
            raise RunFailed(self.out_of_memory(scoring=True)) from exc

    def train_step(self, training: TaskTraining, s: int) -> float:
        """Step `s` of the task: the task's loss plus the method's and the aids' terms (under the precision's
        autocast), backward, the optimizer step and the method's after_step on the float32 weights; the loss,
        the learning rate and each term logged. Returns the loss."""
        self.step += 1
        sctx = StepContext(step=self.step, task_step=s, task=training.ctx)
        try:
            with self.precision.autocast():
                terms = self.loss_terms(training, sctx)
            total = sum((part for key, part in terms.items() if key != "task_loss"), terms["task_loss"])
            value = total.item()   # the unscaled loss: a step fp16's scaler skips never reads as a divergence
            if not math.isfinite(value) or abs(value) > HUGE_LOSS:
                raise RunFailed(self.divergence(value, terms, training.index, s))
            training.optimizer.zero_grad(set_to_none=True)
            lr = training.optimizer.param_groups[0]["lr"]
            stepped = self.precision.step(total, training.optimizer, training.params, self.cfg.max_grad_norm)
        except torch.OutOfMemoryError as exc:
            raise RunFailed(self.out_of_memory(training.index)) from exc
        _advance(training.scheduler, stepped)
        sctx.loss = value
        self.method.after_step(sctx)
        if self.writer:
            self.writer.scalar(self.step, "loss", value)
            self.writer.scalar(self.step, "lr", lr)
            if self.precision.scaler is not None:   # fp16: the loss scale, and the steps it skipped
                self.writer.scalar(self.step, "loss_scale", self.precision.scaler.get_scale())
                self.writer.scalar(self.step, "skipped_step", float(not stepped))
            for key, part in terms.items():
                if key != "task_loss":
                    self.writer.scalar(self.step, key, float(part.detach()))
        return value

    def loss_terms(self, training: TaskTraining, sctx: StepContext) -> dict[str, torch.Tensor]:
        """The step's loss terms by name: the task's loss, the method's extra term and the aids' (replay, EWC)."""
        terms = {"task_loss": self.stream.loss(self.forward_model, next(training.batches), training.task),
                 "extra_loss": self.method.extra_loss(sctx)}
        for aid in self.aids:
            terms[aid.term] = aid.extra_loss(sctx)
        return {key: part for key, part in terms.items() if part is not None}

    def out_of_memory(self, t: int = 0, scoring: bool = False) -> str:
        """The sentence a run that ran out of memory ends with: where, and the sizes and precision to try."""
        cfg, used = self.cfg, self.precision.used
        memory = "GPU memory" if self.device.type == "cuda" else f"{self.device.type} memory"
        half = usable("bf16", self.device)[0]   # bf16, or fp16 on a GPU without it, or none without autocast
        lower = [f"--precision {half}"] if used == "fp32" and half != "fp32" else []
        if scoring:
            where = f"while scoring the tasks after step {self.step} with eval batch size {cfg.eval_batch_size}"
            tries = [f"--eval-batch-size {max(1, cfg.eval_batch_size // 2)}", *lower]
        else:
            where = f"at step {self.step} (task {t}) with batch size {cfg.batch_size}"
            tries = [f"--batch-size {max(1, cfg.batch_size // 2)}", *lower]
        return f"out of {memory} {where} in {used}; try {' or '.join(tries)}."

    def end_task(self, training: TaskTraining) -> None:
        """The after-task hooks: the aids' end (EWC's Fisher of the weights as they trained, before a merge
        folds them away), the method's after_task, then the aids' (replay's buffer takes the task's examples)."""
        for aid in self.aids:
            aid.end_task(training.ctx)
        self.method.after_task(training.ctx)
        for aid in self.aids:
            aid.after_task(training.ctx)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The method's parameters that train in the current task, and the heads that train."""
        return self.method.trainable_parameters() + [p for p in self.head_params if p.requires_grad]

    # -- checkpoints (cldash.engine.checkpoints) ---------------------------------------------------------
    def state(self) -> dict:
        """Everything needed to continue exactly after the task that just ended, as one object graph (the
        method's references into the model, EWC's into the parameters, survive together)."""
        return {"config": self.resolved.to_dict(), "model": self.model, "method": self.method,
                "replay": self.replay, "ewc": self.ewc, "generator": self.generator.get_state(),
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "step": self.step, "done": self.done, "done_task": self.done_task, **self.scores.state(),
                "grad_scaler": self.precision.state()}

    def restore(self, state: dict, after_task: int) -> None:
        """Continue from a checkpoint's `state`: the same method goes on where it was; another method, or the
        same one with other options (a fork), starts on the checkpoint's merged weights."""
        model = state["model"].to(self.device)
        same_method = continues_method(state["config"], self.resolved.to_dict())
        if same_method:
            self.model, self.method = model, state["method"]
        else:
            merge_into_base(model, state["method"])
            self.model, self.method = model, attach_method(self.resolved, model, self.targets)
            self.model.to(self.device)
        self._set_heads()
        self._set_forward()
        self.readouts = Readouts(self.method, self.writer)
        params = self.trainable_parameters()
        for aid in self.aids:
            aid.restore(state[aid.key], self.tasks[:after_task], same_method, self.model, params)
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.step, self.done, self.done_task = state["step"], state["done"], state["done_task"]
        self.scores.restore(state)
        self.precision.restore(state.get("grad_scaler"))   # checkpoints from before precision have none

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
        aid = next((aid for aid in self.aids if aid.term == culprit), None)
        if aid is not None:
            return f"{where}: {aid.explain(parts[culprit])}"
        if culprit == "extra_loss":
            weights = ", ".join(f"--{n.replace('_', '-')} {getattr(self.resolved.method_options, n):g}"
                                for n in self.resolved.method_cls.extra_loss_options)
            return (f"{where}: {cfg.method}'s own loss term is {parts[culprit]:.3g}" +
                    (f" with {weights}; lower {'it' if ',' not in weights else 'them'}." if weights else
                     f"; lower the learning rate ({cfg.lr:g}) or clip gradients (--max-grad-norm)."))
        if self.precision.used == "fp16" and not math.isfinite(task_loss):   # fp16 overflows past 65504
            return f"{where} in fp16; try --precision bf16 (fp16's range ends at 65504) or lower the learning rate."
        return f"{where}; lower the learning rate ({cfg.lr:g}) or clip gradients (--max-grad-norm)."

    def matrix(self) -> tuple[list[list[float]], dict[str, list[float]]]:
        """R ((T + 1) x T) and the general tasks' columns from the final evaluations."""
        return self.scores.matrix()

    def summary(self) -> dict:
        return self.scores.summary()
