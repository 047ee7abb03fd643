"""The method interface and registry.

A method is a small unit with a name: its options (a dataclass of `option(...)` fields with
their paper defaults), its branch types (cldash.methods.layer), and the hooks the continual
loop calls. Adding a method is one module with one ``@register`` class; the engine never
changes. The hooks, in the order the engine calls them::

    attach(model, targets)       wrap the target modules (once per run)
    before_task(ctx)             create or initialise adapters (data-dependent inits, memory)
    extra_loss(ctx) -> Tensor    added to the task loss (regularisers); None for none
    after_step(ctx)              after optimizer.step(): proximal steps, retractions, masking
    after_task(ctx)              merge, freeze, grow memory

and the read-outs: ``updates()`` (each adapted module's cumulative update against the
pre-trained weight, factored when it is low-rank), ``scalars()`` and ``module_scalars()``
(method-specific series for the dashboard).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterator

import torch
from torch import nn

from cldash.errors import ConfigError
from cldash.methods.layer import AdaptedLinear, wrap
from cldash.spectra import Update

# Task-boundary policies (reference note baseline-methods.md, section 3.4).
POLICIES = {
    "single": "one adapter trained straight through all tasks (SeqLoRA)",
    "merge": "after each task merge the adapter into the weights and start a fresh one",
    "stack": "after each task freeze the adapter and add a new one; all are summed (IncLoRA)",
}


@dataclass
class TaskContext:
    """What a method sees at a task boundary."""

    index: int                      # 1-based position of the task in the stream
    num_tasks: int
    name: str
    steps: int                      # optimizer steps planned for this task
    model: nn.Module
    loss_fn: Callable[[Any], torch.Tensor]          # task loss of a batch
    batches: Callable[[int, int], Iterator[Any]]    # (n_batches, batch_size) -> train batches
    generator: torch.Generator
    device: torch.device
    extras: dict = field(default_factory=dict)      # replay buffer and the like


@dataclass
class StepContext:
    step: int          # global step, 1-based
    task_step: int     # step within the current task, 1-based
    task: TaskContext
    loss: float | None = None


class Method:
    name: ClassVar[str]
    label: ClassVar[str]
    paper: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    equation: ClassVar[str] = ""
    Config: ClassVar[type]
    policies: ClassVar[tuple[str, ...]] = ()     # allowed boundary policies, default first
    default_lr: ClassVar[float] = 1e-3
    trains_backbone: ClassVar[bool] = False       # True: every backbone parameter trains
    low_rank: ClassVar[bool] = True               # False: updates are dense (sparser spectra)
    reconstruction: ClassVar[str] = ""            # non-empty: how the method was reconstructed
    presets: ClassVar[dict[str, dict]] = {}       # named option sets (papers' and libraries' settings)

    def __init__(self, config, policy: str | None = None):
        self.config = config
        if self.policies:
            policy = policy or self.policies[0]
            if policy not in self.policies:
                raise ConfigError(
                    f"policy {policy!r} is not available for {self.name}; choose one of: "
                    f"{', '.join(self.policies)}.", "policy")
        elif policy:
            raise ConfigError(f"{self.name} fixes its own task-boundary behaviour; leave policy empty.",
                              "policy")
        self.policy = policy
        self.layers: dict[str, AdaptedLinear] = {}

    # -- validation against the model --------------------------------------------------------
    def check_layers(self, shapes: dict[str, tuple[int, int]]) -> None:
        """Raise ConfigError if an option does not fit a target layer's (out, in) size."""

    # -- hooks --------------------------------------------------------------------------------
    def attach(self, model: nn.Module, targets: list[str]) -> None:
        self.layers = wrap(model, targets)

    def before_task(self, ctx: TaskContext) -> None:
        pass

    def extra_loss(self, ctx: StepContext) -> torch.Tensor | None:
        return None

    def after_step(self, ctx: StepContext) -> None:
        pass

    def after_task(self, ctx: TaskContext) -> None:
        pass

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The adapter parameters to optimise in the current task."""
        return [p for layer in self.layers.values() for p in layer.branches.parameters() if p.requires_grad]

    def make_optimizer(self, params: list[nn.Parameter], lr: float, weight_decay: float) -> torch.optim.Optimizer:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)

    # -- read-outs ----------------------------------------------------------------------------
    def updates(self) -> dict[str, Update]:
        return {name: layer.update() for name, layer in self.layers.items()}

    def extra_updates(self) -> dict[tuple[str, str], Update]:
        """Further per-module updates to log spectra of, keyed by (module, kind)."""
        return {}

    def scalars(self) -> dict[str, float]:
        return {}

    def module_scalars(self) -> dict[str, dict[str, float]]:
        """Per-module series: {scalar name: {module name: value}}."""
        return {}

    @torch.no_grad()
    def merge(self) -> None:
        """Fold every adapter into the base weights; the model's function is unchanged."""
        for layer in self.layers.values():
            layer.merge_all()


REGISTRY: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    if cls.name in REGISTRY:
        raise RuntimeError(f"method {cls.name!r} registered twice")
    REGISTRY[cls.name] = cls
    return cls


def get_method(name: str) -> type[Method]:
    if name not in REGISTRY:
        raise ConfigError(f"unknown method {name!r}; choose one of: {', '.join(sorted(REGISTRY))}.",
                          "method")
    return REGISTRY[name]
