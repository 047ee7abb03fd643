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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import nn

from cldash.streams.base import Split, Task

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
