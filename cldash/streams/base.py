"""What a task stream provides: its tasks (data, head, classes), the loss and the scores.

A stream owns how a batch becomes a loss and how a task is scored, so the engine's loop stays
the same for images and for language. Streams are registered by name like methods; a family of
streams named by a prefix and a spec (``hf:SOURCE[,SOURCE...]``) registers the prefix and a factory
that makes the stream class of a spec, so this module needs to know none of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from cldash.core.errors import ConfigError

# the draw of every task's validation examples (Stream.hold_out): one fixed split for all runs and seeds
VALIDATION_SEED = 20_250_725


@dataclass
class Split:
    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device) -> Split:
        return Split(self.x.to(device), self.y.to(device))


@dataclass
class Task:
    name: str
    test: Split
    train: Split | None = None
    kind: str = "stream"            # "stream" (trained in order) or "general" (pre-training task)
    head: str = "pretrained"        # which classifier head scores it
    classes: tuple[int, ...] | None = None   # the task's labels (task-incremental scoring)


class Stream:
    name: ClassVar[str]
    label: ClassVar[str]
    summary: ClassVar[str] = ""
    Options: ClassVar[type]
    backbone_kinds: ClassVar[tuple[str, ...]] = ("image-classification",)
    default_backbone: ClassVar[str] = "vit-tiny"
    metrics: ClassVar[tuple[str, ...]] = ("accuracy",)

    def __init__(self, options, backbone):
        self.options = options
        self.backbone = backbone
        self.tasks: list[Task] = []
        self.general: list[Task] = []
        self.heads: dict[str, int] = {}        # new heads this stream needs: name -> outputs
        # a head's initial weight (outputs, hidden) and whether it trains, e.g. a CLIP zero-shot head from prompts;
        # a head without an entry starts as nn.Linear does (backbones.ClassifierModel reads this)
        self.head_init: dict[str, tuple[torch.Tensor, bool]] = {}
        self.info: dict = {}                   # the data's provenance (source, revision, split file), stored per run
        self.primary_metric = "accuracy"

    @classmethod
    def check_data(cls, options, backbone_kind: str) -> None:
        """Refuse (ConfigError, one sentence) data that cannot fit a backbone of `backbone_kind` with these
        options, from what can be read of it cheaply (column names, not the data), so that cldash.config.resolve
        says it before a run is stored rather than the run failing once it has started. A stream whose data is
        its own (digits, skills) has nothing to check."""

    def to(self, device) -> Stream:
        for task in self.tasks + self.general:
            task.test = task.test.to(device)
            if task.train is not None:
                task.train = task.train.to(device)
        return self

    def hold_out(self, fraction: float) -> None:
        """Validation in place of the test sets: a fixed `fraction` of each task's training data is scored and no
        longer trained on, and the test sets are dropped, so a tuning trial never reads them (cldash.analysis.tuning).
        The split is drawn with VALIDATION_SEED, not the run's seed, so every trial and seed holds out the same
        examples; tasks of equal size (the rotations of one set of digits) hold out the same positions, so no
        task's validation image is another task's training image at another angle. A general task has no
        training data of its own to hold out from but the backbone's pre-training set: it holds that out too
        (the backbone has seen it, so its retention on validation reads high: a tuning trial's objective is
        the stream's own accuracy)."""
        for task in self.tasks + self.general:
            if task.train is None:
                raise ConfigError(f"the task {task.name!r} of stream {self.name} has no training data to hold "
                                  "validation data out of; tune on a stream whose tasks do.", "validation")
            n = len(task.train)
            held = max(1, round(fraction * n))
            if n - held < 1:
                raise ConfigError(f"validation {fraction:g} leaves no training data in task {task.name!r} "
                                  f"({n} examples); choose a smaller share.", "validation")
            order = torch.randperm(n, generator=torch.Generator().manual_seed(VALIDATION_SEED))
            val, keep = order[:held].to(task.train.y.device), order[held:].to(task.train.y.device)
            train = task.train
            task.test = Split(train.x[val], train.y[val])
            task.train = Split(train.x[keep], train.y[keep])

    # -- training -----------------------------------------------------------------------------
    def batches(self, task: Task, batch_size: int, generator: torch.Generator) -> Iterator[Split]:
        """Endless shuffled epochs over the task's training split."""
        n = len(task.train)
        device = task.train.y.device
        while True:
            order = torch.randperm(n, generator=generator).to(device)
            for i in range(0, n - batch_size + 1 if n >= batch_size else 1, batch_size):
                idx = order[i:i + batch_size]
                yield Split(task.train.x[idx], task.train.y[idx])

    loss_classes = "all"   # the run's loss_classes: "current" masks other classes out of a class-incremental task

    def loss(self, model, batch: Split, task: Task) -> torch.Tensor:
        logits = model(batch.x, task.head)
        if self.loss_classes == "current" and task.classes is not None:
            # the CoDyRA / InfLoRA / SD-LoRA training loss: only the task's own classes compete, so the
            # step never pushes down the logits of earlier tasks' classes (which the class-IL score still uses)
            keep = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
            keep[list(task.classes)] = True
            logits = logits.masked_fill(~keep, float("-inf"))
        return F.cross_entropy(logits, batch.y)

    # -- scoring ------------------------------------------------------------------------------
    @torch.no_grad()
    def logits(self, model, task: Task, batch_size: int) -> torch.Tensor:
        x = task.test.x
        return torch.cat([model(x[i:i + batch_size], task.head) for i in range(0, len(x), batch_size)])

    @torch.no_grad()
    def evaluate(self, model, task: Task, batch_size: int = 1024) -> dict[str, float]:
        logits = self.logits(model, task, batch_size)
        return {"accuracy": float((logits.argmax(-1) == task.test.y).float().mean())}


STREAMS: dict[str, type[Stream]] = {}
# prefix -> (the factory of a spec's stream class, how to name such a stream, for the unknown-stream sentence)
STREAM_PREFIXES: dict[str, tuple[Callable[[str], type[Stream]], str]] = {}


def register_stream(cls: type[Stream]) -> type[Stream]:
    STREAMS[cls.name] = cls
    return cls


def register_stream_prefix(prefix: str, factory: Callable[[str], type[Stream]], usage: str) -> None:
    """Streams named ``PREFIX...``: `factory` makes the stream class of such a name (or raises ConfigError);
    `usage` says how to write one ('hf:SOURCE[,SOURCE...] for data sets')."""
    STREAM_PREFIXES[prefix] = (factory, usage)


def get_stream(name: str) -> type[Stream]:
    """A registered stream, or one of a registered prefix (``hf:SOURCE[,SOURCE...]``, cldash.streams.hf)."""
    for prefix, (factory, _) in STREAM_PREFIXES.items():
        if name.startswith(prefix):
            return factory(name)
    if name not in STREAMS:
        usages = "".join(f", or {usage}" for _, usage in STREAM_PREFIXES.values())
        raise ConfigError(f"unknown stream {name!r}; choose one of: {', '.join(sorted(STREAMS))}{usages}.",
                          "stream")
    return STREAMS[name]


__all__ = ["Split", "Task", "Stream", "STREAMS", "STREAM_PREFIXES", "register_stream", "register_stream_prefix",
           "get_stream"]
