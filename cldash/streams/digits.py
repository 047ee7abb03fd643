"""Task streams on scikit-learn's bundled handwritten digits (1,797 real 8x8 images, offline).

The train/test split is fixed once for the whole project (seed DATA_SPLIT_SEED, 30 % test), so
the backbone's pre-training never sees a test image of any stream, and runs with different
seeds differ only in their training randomness. The pre-training task (upright digits, the
backbone's own head) is evaluated with every stream as the "general" task.

- ``digits-rotate``: domain-incremental; each task is the ten digits rotated by one angle.
- ``digits-permute``: domain-incremental; each task applies one fixed pixel permutation.
- ``digits-split``: class-incremental; five tasks of two digits each, scored by a new ten-way
  head (class-IL: argmax over all ten classes; task-IL: argmax over the task's two classes).
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cldash.core.errors import ConfigError
from cldash.core.options import option
from cldash.streams.base import Split, Stream, Task, register_stream

DATA_SPLIT_SEED = 0
TEST_FRACTION = 0.3


@functools.lru_cache(maxsize=1)
def _raw_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's bundled digits, read from its file as `load_digits` reads it, without importing
    scikit-learn (and SciPy with it): that import was a second of every run's start."""
    spec = importlib.util.find_spec("sklearn")   # finds the package without running it
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz" if spec else None
    if path is not None and path.is_file():
        with gzip.open(path, mode="rt", encoding="utf-8") as fh:
            data = np.loadtxt(fh, delimiter=",")   # 64 pixels (0..16) and the digit, a row per image
        images, target = data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)
    else:   # pragma: no cover - an unusual scikit-learn layout
        from sklearn.datasets import load_digits  # deferred: loads SciPy and pandas, as said above

        d = load_digits()
        images, target = d.images, d.target
    x = torch.tensor(images, dtype=torch.float32) / 16.0   # (N, 8, 8) in [0, 1]
    return x, torch.tensor(target, dtype=torch.long)


def normalize(x01: torch.Tensor) -> torch.Tensor:
    """Pixels in [0, 1], shape (N, 8, 8) -> the backbone's input (N, 1, 8, 8) in [-1, 1]."""
    return (x01 * 2.0 - 1.0).unsqueeze(1)


@functools.lru_cache(maxsize=1)
def digits_splits() -> tuple[Split, Split]:
    """The fixed (train, test) split of the raw digits, pixels in [0, 1], shape (N, 8, 8)."""
    x, y = _raw_digits()
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(DATA_SPLIT_SEED))
    n_test = int(round(TEST_FRACTION * len(y)))
    test, train = order[:n_test], order[n_test:]
    return Split(x[train], y[train]), Split(x[test], y[test])


def rotate(x01: torch.Tensor, degrees: float) -> torch.Tensor:
    """Rotate (N, 8, 8) images counter-clockwise by `degrees` (bilinear, zero background)."""
    if degrees % 360 == 0:
        return x01.clone()
    t = math.radians(degrees)
    # affine_grid maps output coordinates to input ones, so use the inverse rotation
    theta = torch.tensor([[math.cos(t), -math.sin(t), 0.0], [math.sin(t), math.cos(t), 0.0]],
                         dtype=x01.dtype).expand(len(x01), 2, 3)
    grid = F.affine_grid(theta, (len(x01), 1, 8, 8), align_corners=False)
    return F.grid_sample(x01.unsqueeze(1), grid, mode="bilinear", padding_mode="zeros",
                         align_corners=False).squeeze(1)


class DigitsStream(Stream):
    default_backbone = "vit-tiny"

    def __init__(self, options, backbone):
        super().__init__(options, backbone)
        train, test = digits_splits()
        self.general = [Task("general: upright digits", test=Split(normalize(test.x), test.y),
                             train=Split(normalize(train.x), train.y), kind="general")]


@dataclass
class RotateOptions:
    angles: list[float] = option([36.0, 72.0, 108.0, 144.0, 180.0],
                                 "rotation of each task in degrees, in training order",
                                 low=-360.0, high=360.0)

    def check(self, prefix: str) -> None:
        if not self.angles:
            raise ConfigError(f"{prefix}.angles needs at least one angle.", f"{prefix}.angles")


@register_stream
class DigitsRotate(DigitsStream):
    name = "digits-rotate"
    label = "Rotated digits"
    summary = ("Domain-incremental: the backbone learned upright digits; each task shows the same ten "
               "digits rotated by a larger angle.")
    Options = RotateOptions

    def __init__(self, options, backbone):
        super().__init__(options, backbone)
        train, test = digits_splits()
        for angle in options.angles:
            self.tasks.append(Task(f"rotate {angle:g}°",
                                   train=Split(normalize(rotate(train.x, angle)), train.y),
                                   test=Split(normalize(rotate(test.x, angle)), test.y)))

    def reordered(self, order: list[int]) -> dict:
        """The stream options that train the same tasks in `order` (positions in the current order)."""
        return {"angles": [self.options.angles[i] for i in order]}


@dataclass
class PermuteOptions:
    tasks: int = option(5, "number of tasks (one fixed pixel permutation each)", low=1, high=50)
    permutation_seed: int = option(0, "seed of the pixel permutations", low=0, high=2**31 - 1)


@register_stream
class DigitsPermute(DigitsStream):
    name = "digits-permute"
    label = "Permuted digits"
    summary = "Domain-incremental: each task applies its own fixed shuffle of the 64 pixels."
    Options = PermuteOptions

    def __init__(self, options, backbone):
        super().__init__(options, backbone)
        train, test = digits_splits()
        g = torch.Generator().manual_seed(options.permutation_seed)
        for t in range(options.tasks):
            perm = torch.randperm(64, generator=g)
            shuffle = lambda x, perm=perm: x.reshape(len(x), 64)[:, perm].reshape(len(x), 8, 8)  # noqa: E731
            self.tasks.append(Task(f"permutation {t + 1}",
                                   train=Split(normalize(shuffle(train.x)), train.y),
                                   test=Split(normalize(shuffle(test.x)), test.y)))


@dataclass
class SplitOptions:
    evaluation: str = option("class-il", "class-il: pick among all ten digits; task-il: among the task's two",
                             choices=("class-il", "task-il"))


@register_stream
class DigitsSplit(DigitsStream):
    name = "digits-split"
    label = "Split digits"
    summary = ("Class-incremental: five tasks of two digits each (0/1, 2/3, ...), learned by a new ten-way "
               "head; the upright pre-training task stays as the general task.")
    Options = SplitOptions
    metrics = ("accuracy", "task_il_accuracy")

    def __init__(self, options, backbone):
        super().__init__(options, backbone)
        train, test = digits_splits()
        self.heads = {"stream": 10}
        self.primary_metric = "accuracy" if options.evaluation == "class-il" else "task_il_accuracy"
        for pair in [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]:
            tr = (train.y == pair[0]) | (train.y == pair[1])
            te = (test.y == pair[0]) | (test.y == pair[1])
            self.tasks.append(Task(f"digits {pair[0]}/{pair[1]}", head="stream", classes=pair,
                                   train=Split(normalize(train.x[tr]), train.y[tr]),
                                   test=Split(normalize(test.x[te]), test.y[te])))

    @torch.no_grad()
    def evaluate(self, model, task: Task, batch_size: int = 1024) -> dict[str, float]:
        logits = self.logits(model, task, batch_size)
        scores = {"accuracy": float((logits.argmax(-1) == task.test.y).float().mean())}
        if task.classes is not None:
            cls = torch.tensor(task.classes, device=logits.device)
            pick = cls[logits[:, cls].argmax(-1)]
            scores["task_il_accuracy"] = float((pick == task.test.y).float().mean())
        else:  # the general task spans all its classes: task-IL and class-IL coincide
            scores["task_il_accuracy"] = scores["accuracy"]
        return scores
