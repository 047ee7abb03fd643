"""Experience replay and EWC: continual-learning aids that work with any method.

Both are run options (``replay``, ``ewc_lambda`` ... in `cldash.config.RunConfig`), not methods,
so that they can be added to LoRA, to full fine-tuning or to any adapter method alike
(reference note baseline-methods.md, sections 3.2 and 3.3).

**Replay** (Chaudhry et al., arXiv 1902.10486; Rolnick et al., arXiv 1811.11682). A buffer keeps
examples of the finished tasks; each training step adds the loss of one batch drawn uniformly
from the buffer to the current task's loss, ``L = L_t(new batch) + L(replay batch)``, each replayed
example scored by its own task's loss (its own head in a class-incremental stream). Two rules
fill the buffer after each task:

- ``balanced``: every finished task keeps an equal share of the capacity (shares shrink as tasks
  arrive, dropping a random part of each older task's examples), class-balanced within a task
  where examples carry one class label;
- ``reservoir``: reservoir sampling over every training example of the finished tasks, so each
  one is in the buffer with equal probability (Vitter's algorithm R).

A method can ask for a buffer of its own (SLICE estimates a replay gradient at each task start):
`Method.replay_request()`; the buffer is then kept even when training replay is off.

**EWC** (Kirkpatrick et al., PNAS 2017, arXiv 1612.00796; online EWC: Schwarz et al., arXiv
1805.06370). ``L = L_t + (lambda / 2) sum_k sum_i F_k,i (theta_i - theta*_k,i)^2`` over the
parameters that train (adapter parameters for adapter methods, every weight for full fine-tuning).
After each task the diagonal Fisher is estimated as TRACE's implementation does: squared
mini-batch gradients of the training loss (gold labels, the "empirical" Fisher), averaged over
``ewc_batches`` batches. Online EWC keeps one running ``F <- gamma F + F_t`` anchored at the last
task's end point instead of one term per task. A parameter that stops existing or training at a
boundary (a merged adapter, a frozen one) drops out of the penalty: with the ``merge`` policy an
adapter method's earlier tasks live in the frozen weight and EWC has nothing left to anchor.

**Hooks.** The loop reaches both through the `Aid` hooks (`ReplayAid`, `EWCAid`; `aids_for` makes a run's list),
as it reaches the method through the method's, so that the loop has no branch for either. What a checkpoint
keeps of them is the `ReplayBuffer` and the `EWC` objects themselves, under "replay" and "ewc".
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import torch
from torch import nn

from cldash.config import RunConfig
from cldash.methods import Method, StepContext, TaskContext
from cldash.streams.base import Split, Stream, Task

RULES = ("balanced", "reservoir")


@dataclass
class ReplayBatch:
    """A batch from the buffer: consecutive chunks, each of one task's examples."""

    parts: list[tuple[Task, Split]]

    def __len__(self) -> int:
        return sum(len(s) for _, s in self.parts)


class ReplayBuffer:
    """Examples of finished tasks, filled by `add(task)` after each task."""

    def __init__(self, capacity: int, rule: str, generator: torch.Generator):
        if rule not in RULES:
            raise ValueError(f"unknown replay rule {rule!r}")
        self.capacity = capacity
        self.rule = rule
        self.generator = generator
        self.tasks: list[Task] = []
        self.index: list[torch.Tensor] = []   # per task: indices into its training split
        self.seen = 0                          # reservoir: examples offered so far

    def __len__(self) -> int:
        return sum(len(i) for i in self.index)

    def add(self, task: Task) -> None:
        """Offer a finished task's training examples to the buffer."""
        if task.train is None or self.capacity <= 0:
            return
        n = len(task.train)
        if self.rule == "balanced":
            self.tasks.append(task)
            share = self.capacity // len(self.tasks)
            self.index = [self._keep(t, idx, share) for t, idx in zip(self.tasks[:-1], self.index)]
            everything = torch.arange(n)
            self.index.append(self._keep(task, everything, share))
        else:
            self._reservoir(task, n)

    def _keep(self, task: Task, idx: torch.Tensor, k: int) -> torch.Tensor:
        """At most k of `idx`, class-balanced when the task's labels are one class per example."""
        if len(idx) <= k:
            return idx
        y = task.train.y[idx.to(task.train.y.device)].cpu()
        perm = torch.randperm(len(idx), generator=self.generator)
        if y.dim() != 1:
            return idx[perm[:k]].sort().values
        # round-robin over classes, each class's examples in random order
        classes = y[perm].unique()
        per_class = [perm[y[perm] == c] for c in classes]
        chosen, i = [], 0
        while len(chosen) < k:
            for members in per_class:
                if i < len(members) and len(chosen) < k:
                    chosen.append(members[i])
            i += 1
        return idx[torch.stack(chosen)].sort().values

    def _reservoir(self, task: Task, n: int) -> None:
        known = [i for i, t in enumerate(self.tasks) if t is task]
        if not known:
            self.tasks.append(task)
            self.index.append(torch.zeros(0, dtype=torch.long))
        slots: list[tuple[int, int]] = [(t, int(i)) for t, idx in enumerate(self.index) for i in idx]
        k = known[0] if known else len(self.tasks) - 1
        for i in range(n):
            self.seen += 1
            if len(slots) < self.capacity:
                slots.append((k, i))
            else:
                j = int(torch.randint(self.seen, (1,), generator=self.generator))
                if j < self.capacity:
                    slots[j] = (k, i)
        self.index = [torch.tensor(sorted(i for t, i in slots if t == k_), dtype=torch.long)
                      for k_ in range(len(self.tasks))]

    def sample(self, size: int, generator: torch.Generator | None = None) -> ReplayBatch:
        """`size` examples drawn uniformly (with replacement) from the whole buffer."""
        sizes = torch.tensor([len(i) for i in self.index])
        total = int(sizes.sum())
        if total == 0:
            return ReplayBatch([])
        picks = torch.randint(total, (size,), generator=generator or self.generator)
        bounds = torch.cumsum(sizes, 0)
        owner = torch.bucketize(picks, bounds, right=True)
        parts = []
        for k in owner.unique().tolist():
            local = picks[owner == k] - (bounds[k] - sizes[k])
            idx = self.index[k][local].to(self.tasks[k].train.y.device)
            parts.append((self.tasks[k], Split(self.tasks[k].train.x[idx], self.tasks[k].train.y[idx])))
        return ReplayBatch(parts)

    def batches(self, size: int, generator: torch.Generator | None = None) -> Iterator[ReplayBatch]:
        while True:
            yield self.sample(size, generator)

    def counts(self) -> dict[str, int]:
        return {t.name: len(i) for t, i in zip(self.tasks, self.index)}


def replay_loss(stream, model: nn.Module, batch: ReplayBatch) -> torch.Tensor:
    """The mean loss over a replay batch, each chunk scored by its own task's loss."""
    total = len(batch)
    return sum(stream.loss(model, split, task) * (len(split) / total) for task, split in batch.parts)


class EWC:
    """The quadratic anchor of EWC (or online EWC) on a list of parameters."""

    def __init__(self, lam: float, online: bool, gamma: float):
        self.lam = lam
        self.online = online
        self.gamma = gamma
        # one (fisher, anchor) per consolidated task (online: a single running term), keyed by parameter
        self.terms: list[dict[nn.Parameter, tuple[torch.Tensor, torch.Tensor]]] = []

    def penalty(self, params: list[nn.Parameter]) -> torch.Tensor | None:
        live = {id(p): p for p in params}
        total = None
        for term in self.terms:
            for p, (fisher, anchor) in term.items():
                if id(p) in live:
                    part = (fisher * (p - anchor) ** 2).sum()
                    total = part if total is None else total + part
        return None if total is None else 0.5 * self.lam * total

    def fisher(self, params: list[nn.Parameter], loss_fn: Callable, batches: Iterator) -> dict:
        """Diagonal empirical Fisher: mean over batches of the squared mini-batch gradient."""
        sums = {p: torch.zeros_like(p) for p in params}
        n = 0
        for batch in batches:
            grads = torch.autograd.grad(loss_fn(batch), params, allow_unused=True)
            for p, g in zip(params, grads):
                if g is not None:
                    sums[p] += g.detach() ** 2
            n += 1
        return {p: s / max(1, n) for p, s in sums.items()}

    def consolidate(self, params: list[nn.Parameter], fisher: dict) -> None:
        anchors = {p: (fisher[p], p.detach().clone()) for p in params}
        if self.online and self.terms:
            old = self.terms[0]
            self.terms = [{p: (self.gamma * old[p][0] + f if p in old else f, a)
                           for p, (f, a) in anchors.items()}]
        else:
            self.terms.append(anchors)

    def mass_top_share(self, share: float = 0.01) -> float:
        """Share of the total Fisher mass in the top `share` of coordinates (the last term)."""
        if not self.terms:
            return float("nan")
        flat = torch.cat([f.flatten() for f, _ in self.terms[-1].values()])
        total = float(flat.sum())
        if total <= 0:
            return float("nan")
        k = max(1, int(share * flat.numel()))
        return float(flat.topk(k).values.sum()) / total


def batch_source(stream: Stream, task: Task, generator: torch.Generator) -> Callable[[int, int], Iterator[Any]]:
    """A TaskContext's ``batches``: (n, size) -> n training batches of `task`, drawn with `generator`."""
    def batches(n: int, size: int):
        it = stream.batches(task, size, generator)
        for _ in range(n):
            yield next(it)
    return batches


# -- the hooks the loop calls ----------------------------------------------------------------------
Log = Callable[[str, float], None]   # a scalar for the store at the run's current step


class Aid:
    """A continual-learning aid beside the method. The loop calls, for every task, in this order:

        before_task(ctx)               before the method's before_task (so the method sees what it adds to ctx)
        start_steps(params, gen)       the parameters that train in this task and the task's generator
        extra_loss(ctx) -> Tensor      each step, after the method's extra loss; logged and named as `term`
        end_task(ctx)                  after the task's final evaluation, before the method's after_task
                                       (the weights as they trained, before a merge folds them away)
        after_task(ctx)                after the method's after_task

    and, to continue from a checkpoint, `saved()` (what the checkpoint keeps under `key`) and `restore`.
    """

    key: ClassVar[str]    # its entry in a checkpoint's state
    term: ClassVar[str]   # the name of its loss term in the store and in a divergence's sentence

    def before_task(self, ctx: TaskContext) -> None:
        pass

    def start_steps(self, params: list[nn.Parameter], generator: torch.Generator) -> None:
        pass

    def extra_loss(self, ctx: StepContext) -> torch.Tensor | None:
        return None

    def end_task(self, ctx: TaskContext) -> None:
        pass

    def after_task(self, ctx: TaskContext) -> None:
        pass

    def explain(self, value: float) -> str:
        """Why the loss diverged when its term is `value`, and what to lower (a sentence's second half)."""
        raise NotImplementedError

    def saved(self) -> Any:
        raise NotImplementedError

    def restore(self, saved: Any, finished: list[Task], same_method: bool, model: nn.Module,
                params: list[nn.Parameter]) -> None:
        """Continue from a checkpoint after the `finished` tasks: `saved` is what `saved()` gave (None where the
        parent run had the aid off); `same_method`: the run continues the checkpoint's method object."""
        raise NotImplementedError


def aids_for(cfg: RunConfig, method: Method, stream: Stream, log: Log) -> list[Aid]:
    """A run's aids, replay before EWC (the order their loss terms are added, logged and checked): replay for
    the run's option or for the buffer the method asks for, EWC for a positive ``ewc_lambda``."""
    out: list[Aid] = []
    memory, method_replays = method.replay_request()
    capacity = max(cfg.replay, memory)
    if capacity:
        buffer = ReplayBuffer(capacity, cfg.replay_rule, torch.Generator().manual_seed(cfg.seed * 1000 + 999))
        out.append(ReplayAid(buffer, cfg.replay > 0 or method_replays, stream, cfg, log))
    if cfg.ewc_lambda > 0:
        out.append(EWCAid(EWC(cfg.ewc_lambda, cfg.ewc_online, cfg.ewc_gamma), stream, cfg, log))
    return out


class ReplayAid(Aid):
    """Replay: the buffer's loss added to each step's (when `train`), the buffer handed to the method as
    ``ctx.extras["replay"]``, and each finished task's examples offered to the buffer."""

    key = "replay"
    term = "replay_loss"

    def __init__(self, buffer: ReplayBuffer, train: bool, stream: Stream, cfg: RunConfig, log: Log):
        self.buffer = buffer
        self.train = train      # False: a buffer only the method uses (SLICE's replay gradient)
        self.stream = stream
        self.cfg = cfg
        self.log = log
        self.replaying = False
        self.replays: Iterator[ReplayBatch] | None = None

    def before_task(self, ctx: TaskContext) -> None:
        self.replaying = len(self.buffer) > 0
        if self.replaying:
            gen = torch.Generator().manual_seed(self.cfg.seed * 1000 + 500 + ctx.index)
            ctx.extras["replay"] = replace(ctx, name="replay", loss_fn=lambda b: replay_loss(self.stream, ctx.model, b),
                                           batches=self._sampler(gen), extras={})

    def start_steps(self, params: list[nn.Parameter], generator: torch.Generator) -> None:
        size = self.cfg.replay_batch_size or self.cfg.batch_size
        self.replays = self.buffer.batches(size, generator) if self.replaying and self.train else None

    def extra_loss(self, ctx: StepContext) -> torch.Tensor | None:
        if self.replays is None:
            return None
        return replay_loss(self.stream, ctx.task.model, next(self.replays))

    def after_task(self, ctx: TaskContext) -> None:
        self.buffer.add(self.stream.tasks[ctx.index - 1])
        self.log("replay_buffer_size", float(len(self.buffer)))

    def explain(self, value: float) -> str:
        return (f"the replay loss (on finished tasks' examples) is {value:.3g}; lower the learning rate "
                f"({self.cfg.lr:g}), clip gradients (--max-grad-norm) or turn replay off (--replay 0).")

    def saved(self) -> ReplayBuffer:
        return self.buffer

    def restore(self, saved, finished, same_method, model, params) -> None:
        if saved is not None and saved.capacity == self.buffer.capacity and saved.rule == self.buffer.rule:
            self.buffer = saved
        else:   # replay switched on (or resized) at a fork: the buffer it would hold after these tasks
            for task in finished:
                self.buffer.add(task)

    def _sampler(self, generator: torch.Generator) -> Callable[[int, int], Iterator[ReplayBatch]]:
        def batches(n: int, size: int):
            for _ in range(n):
                yield self.buffer.sample(size, generator)
        return batches


class EWCAid(Aid):
    """EWC: the penalty added to each step's loss, and each task consolidated at its end (its Fisher and
    anchor), before the method's after_task can merge or freeze what trained."""

    key = "ewc"
    term = "ewc_penalty"

    def __init__(self, ewc: EWC, stream: Stream, cfg: RunConfig, log: Log):
        self.ewc = ewc
        self.stream = stream
        self.cfg = cfg
        self.log = log
        self.params: list[nn.Parameter] = []

    def start_steps(self, params: list[nn.Parameter], generator: torch.Generator) -> None:
        self.params = params

    def extra_loss(self, ctx: StepContext) -> torch.Tensor | None:
        return self.ewc.penalty(self.params)

    def end_task(self, ctx: TaskContext) -> None:
        self.consolidate(ctx.model, self.stream.tasks[ctx.index - 1], self.params, ctx.index)

    def consolidate(self, model: nn.Module, task: Task, params: list[nn.Parameter], t: int) -> None:
        """EWC at a task's end: the diagonal Fisher of the parameters that trained, then the anchor."""
        gen = torch.Generator().manual_seed(self.cfg.seed * 1000 + 700 + t)
        batches = batch_source(self.stream, task, gen)(self.cfg.ewc_batches, self.cfg.batch_size)
        model.train()
        fisher = self.ewc.fisher(params, lambda b: self.stream.loss(model, b, task), batches)
        self.ewc.consolidate(params, fisher)
        self.log("ewc_fisher_top1pct_share", self.ewc.mass_top_share())

    def explain(self, value: float) -> str:
        return f"the EWC penalty is {value:.3g} with --ewc-lambda {self.cfg.ewc_lambda:g}; lower --ewc-lambda."

    def saved(self) -> EWC:
        return self.ewc

    def restore(self, saved, finished, same_method, model, params) -> None:
        if saved is not None and same_method:
            self.ewc.terms = saved.terms
        else:   # switched on at a fork: the finished tasks consolidated on the weights at the fork
            for t, task in enumerate(finished, start=1):
                self.consolidate(model, task, params, t)
