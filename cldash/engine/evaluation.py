"""Evaluation: every task scored, the rows of the accuracy matrix R and the "anytime" scores between them.

R[i][j] is task j's score (the stream's primary metric) after training through task i; row 0 scores the
pre-trained model. The stream's general tasks (the backbone's pre-training task, kept held out) are scored
with every row, in columns of their own, so a run also reports how much pre-trained knowledge survived.
Between task ends a run scores every task every ``eval_interval`` steps: the anytime matrices. Every score
goes to the store (an evaluation row: step, trained through i, task position j, scores, final or not).

At scale (``eval_subset`` > 0) the anytime scores come from a fixed subset of each task's test examples: drawn
once per task, seeded by the run's seed and the task's position, the same at every anytime evaluation (so
its curve moves only with the model); the rows of R always score the full test sets. Scoring runs under
``torch.inference_mode`` (nothing is kept for a backward pass) and the run's precision's autocast.

Task positions: the stream's tasks are 1..T in order, its general tasks 0, -1, ...
"""

from __future__ import annotations

import contextlib
import dataclasses

import torch
from torch import nn

from cldash.measures import metrics as M
from cldash.streams.base import Stream, Task

# seeds of the subsets: one per (run seed, task position), apart from the batch orders' seed * 1000 + t
SUBSET_SEED = 7919


class TaskScores:
    """The scores of every task through one run: the latest of each (what a progress display shows) and the
    final ones at each task's end, which make R."""

    def __init__(self, stream: Stream, batch_size: int, writer=None, precision=None, subset: int = 0,
                 seed: int = 0):
        self.stream = stream
        self.batch_size = batch_size
        self.writer = writer
        self.precision = precision     # cldash.engine.precision.Precision; None: float32
        self.subset, self.seed = subset, seed
        self.subsets: dict[int, Task] = {}   # task position -> the task over its anytime subset
        self.positions = {id(t): i + 1 for i, t in enumerate(stream.tasks)}
        for k, t in enumerate(stream.general):
            self.positions[id(t)] = -k
        self.latest: dict[int, float] = {}
        self.final: dict[tuple[int, int], float] = {}   # (trained through i, task position) -> score

    def position(self, task: Task) -> int:
        return self.positions[id(task)]

    def evaluate(self, model: nn.Module, step: int, trained_through: int, final: bool) -> None:
        """Score every task (the stream's, then the general ones) on `model` after `step`; `final`: at the end
        of task `trained_through`, a row of R."""
        model.eval()
        primary = self.stream.primary_metric
        autocast = self.precision.autocast() if self.precision is not None else contextlib.nullcontext()
        for task in self.stream.tasks + self.stream.general:
            pos = self.positions[id(task)]
            scored = task if final or not self.subset else self.subset_of(task, pos)
            with torch.inference_mode(), autocast:
                scores = self.stream.evaluate(model, scored, self.batch_size)
            self.latest[pos] = scores.get(primary, next(iter(scores.values())))
            if final:
                self.final[(trained_through, pos)] = self.latest[pos]
            if self.writer:
                self.writer.evaluation(step, trained_through, pos, scores, final)
        model.train()

    def subset_of(self, task: Task, pos: int) -> Task:
        """`task` over its anytime subset: `subset` of its test examples (all, if it has no more), the same
        ones every time (drawn once, from the run's seed and the task's position), in their stored order."""
        if pos not in self.subsets:
            test = task.test
            n = len(test)
            if n <= self.subset:
                self.subsets[pos] = task
            else:
                g = torch.Generator().manual_seed(self.seed * SUBSET_SEED + pos + 1000)
                idx = torch.randperm(n, generator=g)[:self.subset].sort().values.to(test.y.device)
                self.subsets[pos] = dataclasses.replace(task, test=dataclasses.replace(test, x=test.x[idx],
                                                                                         y=test.y[idx]))
        return self.subsets[pos]

    def matrix(self) -> tuple[list[list[float]], dict[str, list[float]]]:
        """R ((T + 1) x T) and the general tasks' columns from the final evaluations."""
        T = len(self.stream.tasks)
        R = [[self.final[(i, j)] for j in range(1, T + 1)] for i in range(T + 1)]
        general = {t.name: [self.final[(i, self.positions[id(t)])] for i in range(T + 1)]
                   for t in self.stream.general}
        return R, general

    def summary(self) -> dict:
        """The metrics of R (cldash.measures.metrics.summarize): what the run row keeps."""
        R, general = self.matrix()
        return M.summarize(R, general)

    # -- checkpoints: the scores so far, under the names a checkpoint's state has always used ------------
    def state(self) -> dict:
        return {"latest_scores": dict(self.latest), "final_scores": dict(self.final)}

    def restore(self, state: dict) -> None:
        self.latest = dict(state["latest_scores"])
        self.final = dict(state["final_scores"])
