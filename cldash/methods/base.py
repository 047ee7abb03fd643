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
pre-trained weight, factored when it is low-rank), ``extra_updates()`` (further per-module
matrices to log spectra of, such as DoRA's directional part or LoRETTA's tensor-train bonds),
``scalars()`` and ``module_scalars()`` (method-specific series for the dashboard).

``state_dict()`` / ``load_state_dict()`` save and restore everything a method added to the
model (rewritten base weights, offsets, branches, method buffers), so that a run's adapters can
be reloaded into a freshly attached copy of the same pre-trained model exactly.

Most methods add one *branch* per adapted layer per task and differ only in the branch they
build: they subclass `AdapterMethod`, which implements the task-boundary policies once.

A method whose authors published a training regime ends its module with ``PAPER_PRESET``, a
`cldash.core.presets.PaperPreset` beside the method it describes; `paper_presets()` collects them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from cldash.core.errors import ConfigError
from cldash.core.presets import PaperPreset
from cldash.measures.spectra import Update
from cldash.methods.layer import BRANCH_TYPES, AdaptedLinear, Branch, wrap

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
    lr: float = 0.0                                  # the run's peak learning rate (before the schedule)
    extras: dict = field(default_factory=dict)      # "replay": a TaskContext over earlier tasks' examples


@dataclass
class StepContext:
    step: int          # global step, 1-based
    task_step: int     # step within the current task, 1-based
    task: TaskContext
    loss: float | None = None


class Method:
    name: ClassVar[str]
    label: ClassVar[str]
    display_name: ClassVar[str] = ""   # the label shortened for a legend ("full FT"); empty: the label itself
    paper: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    equation: ClassVar[str] = ""
    Config: ClassVar[type]
    policies: ClassVar[tuple[str, ...]] = ()     # allowed boundary policies, default first
    default_lr: ClassVar[float] = 1e-3
    search_space: ClassVar[tuple] = ()            # core.search.Param: at most two options a tuning search varies
    trains_backbone: ClassVar[bool] = False       # True: every backbone parameter trains
    low_rank: ClassVar[bool] = True               # False: updates are dense (sparser spectra)
    reconstruction: ClassVar[str] = ""            # non-empty: how the method was reconstructed
    own_optimizer: ClassVar[str] = ""             # non-empty: the method's own optimizer (the run's must be adamw)
    presets: ClassVar[dict[str, dict]] = {}       # named option sets (papers' and libraries' settings)
    policy_notes: ClassVar[dict[str, str]] = {}   # what a policy means for this method, where it differs
    # extra_updates() kinds that are updates of the module's own weight (out x in), so that their
    # share of energy in the pre-trained weight's top directions means something
    weight_space_kinds: ClassVar[tuple[str, ...]] = ()
    # the Config options that weigh extra_loss (named when that term makes the loss diverge)
    extra_loss_options: ClassVar[tuple[str, ...]] = ()
    # why the model cannot run under torch.compile with this method (a run's --compile then says so and goes
    # on without it); empty: it can. Every shipped method can: on torch 2.13 each one's two-task digits run
    # under torch.compile (aot_eager) gave the plain run's losses bit for bit, without a graph break; their
    # forwards are tensor code, and what changes the model (a new branch at a task boundary, a rank pruned
    # in after_step) happens outside the forward, so it costs a recompile, not correctness.
    compile_note: ClassVar[str] = ""

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

    def replay_request(self) -> tuple[int, bool]:
        """(examples of finished tasks this method needs kept in a buffer, whether to replay them
        during training). The engine then keeps a buffer even when the run's own replay is off and
        hands it to ``before_task`` as ``ctx.extras["replay"]`` (a TaskContext over the buffer)."""
        return 0, False

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
        """The adapter parameters to optimise in the current task (each once, even when shared)."""
        seen, out = set(), []
        for layer in self.layers.values():
            for p in layer.branches.parameters():
                if p.requires_grad and id(p) not in seen:
                    seen.add(id(p))
                    out.append(p)
        return out

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

    # -- saving -------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything this method added to the model, as tensors and plain values (torch.save-able
        with ``weights_only=True``). Load it with `load_state_dict` into the same method attached
        to a fresh copy of the same pre-trained model."""
        return {"method": self.name, "policy": self.policy,
                "layers": {name: layer.adapter_state() for name, layer in self.layers.items()},
                "extra": self.extra_state()}

    def load_state_dict(self, state: dict) -> None:
        if state.get("method") != self.name:
            raise ValueError(f"this adapter state was saved by {state.get('method')!r}, not {self.name!r}.")
        missing = sorted(set(self.layers) ^ set(state["layers"]))
        if missing:
            raise ValueError(f"the adapter state and the model disagree on layer {missing[0]}.")
        for name, layer in self.layers.items():
            saved = state["layers"][name]
            layer.load_weight_and_offset(saved)
            for b in saved["branches"]:
                branch = self.build_branch(layer, b["type"], b["spec"])
                branch.load_state_dict(b["state"])
                branch.requires_grad_(b["trainable"])
                layer.add_branch(branch)
        self.load_extra_state(state["extra"])

    def build_branch(self, layer: AdaptedLinear, type_name: str, spec: dict) -> Branch:
        """An empty branch to load saved tensors into (methods that share modules override this)."""
        return BRANCH_TYPES[type_name](**spec)

    def extra_state(self) -> dict:
        """Method buffers that are not in any branch (importance averages...)."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass


class AdapterMethod(Method):
    """A method that adds one branch per adapted layer and leaves the task boundary open.

    The policies (reference note baseline-methods.md, section 3.4): ``single`` trains one branch
    through all tasks, ``merge`` folds it into the weights after each task and adds a fresh one
    (data-dependent inits then run again on the merged weights and the new data), ``stack``
    freezes it and adds a new one. Subclasses build the branch in `new_branch`.
    """

    policies = ("single", "merge", "stack")

    def new_branch(self, layer: AdaptedLinear, ctx: TaskContext) -> Branch:
        raise NotImplementedError

    def add_branches(self, ctx: TaskContext) -> None:
        for layer in self.layers.values():
            layer.add_branch(self.new_branch(layer, ctx))

    def current_branch(self, layer: AdaptedLinear) -> Branch | None:
        return layer.branches[-1] if len(layer.branches) else None

    def before_task(self, ctx: TaskContext) -> None:
        if self.policy == "single" and any(len(layer.branches) for layer in self.layers.values()):
            return  # the one adapter carries on
        self.add_branches(ctx)

    def after_task(self, ctx: TaskContext) -> None:
        if self.policy == "merge":
            for layer in self.layers.values():
                layer.merge_branch(-1)
        elif self.policy == "stack":
            for layer in self.layers.values():
                self.current_branch(layer).requires_grad_(False)


REGISTRY: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    if cls.name in REGISTRY:
        raise RuntimeError(f"method {cls.name!r} registered twice")
    REGISTRY[cls.name] = cls
    return cls


def marked_label(cls: type[Method]) -> str:
    """A method's label marked as a reconstruction where it is one and its label does not say so already:
    'LoRETTA (rep) · reconstruction', 'SLICE (reconstruction)' (every surface that names methods uses it)."""
    if cls.reconstruction and "reconstruction" not in cls.label.lower():
        return f"{cls.label} · reconstruction"
    return cls.label


def get_method(name: str) -> type[Method]:
    if name not in REGISTRY:
        raise ConfigError(f"unknown method {name!r}; choose one of: {', '.join(sorted(REGISTRY))}.",
                          "method")
    return REGISTRY[name]


def paper_presets() -> dict[str, PaperPreset]:
    """Every registered method's authors' regime by method name (sorted): the ``PAPER_PRESET`` at the bottom
    of its module. A module-level name rather than a class attribute: `Method.paper` already names the paper,
    and a class attribute would be inherited by a subclass whose authors published no regime of their own
    (SLICE would run in LoRA-GA's)."""
    presets = {name: getattr(sys.modules.get(REGISTRY[name].__module__), "PAPER_PRESET", None)
               for name in sorted(REGISTRY)}
    return {name: preset for name, preset in presets.items() if preset is not None}
