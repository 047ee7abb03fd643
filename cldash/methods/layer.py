"""The adapter layer: a thin wrapper around ``nn.Linear`` and transformers' ``Conv1D``.

``AdaptedLinear`` keeps the wrapped module (so the backbone's own forward and state-dict keys
stay valid) and adds a list of *branches*. A branch is one adapter (a LoRA pair, a DoRA
magnitude, a frozen earlier-task adapter...). The forward is::

    y = base(x);  for branch in branches: y = branch(x, y, layer)

so a branch can add to the output (LoRA) or rescale it (DoRA).

Updates are always measured against the *original* pre-trained weight ``w0`` (a copy taken
when the layer is wrapped), because several methods rewrite the base weight (PiSSA, LoRA-GA)
and merges fold adapters into it. The layer keeps, in factored form, what has been written
into the base weight since (``offset``), so the cumulative update
``W_eff - w0 = sum(offset) + sum(branch updates)`` stays exactly low-rank whenever it is.
A method that trains the base weight densely (full fine-tuning) marks the offset as dense.

Layout: all weights handed out by this module are ``(out, in)``; ``Conv1D`` stores
``(in, out)`` and is transposed at the boundary.
"""

from __future__ import annotations

import torch
from torch import nn

from cldash.core.text import with_article
from cldash.measures.spectra import Dense, LowRank, Update, concat

try:  # transformers' GPT-2 style linear (weight stored as (in, out))
    from transformers.pytorch_utils import Conv1D
except ImportError:  # pragma: no cover - transformers is a dependency
    Conv1D = ()


def is_linear(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or (Conv1D != () and isinstance(module, Conv1D))


def linear_shape(module: nn.Module) -> tuple[int, int]:
    """(out_features, in_features) of an nn.Linear or Conv1D."""
    w = module.weight
    return (w.shape[1], w.shape[0]) if isinstance(module, Conv1D) else (w.shape[0], w.shape[1])


# Every Branch subclass by class name, so that a saved adapter state can rebuild its branches.
BRANCH_TYPES: dict[str, type[Branch]] = {}


class Branch(nn.Module):
    """One adapter inside an AdaptedLinear. Subclasses define the forward and the read-outs.

    ``spec()`` returns the constructor keywords that rebuild an (uninitialised) branch of the
    same shape; with ``state_dict()`` it is what a saved adapter state holds for the branch.
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        BRANCH_TYPES[cls.__name__] = cls

    def spec(self) -> dict:
        raise NotImplementedError(f"{type(self).__name__} must define spec() to be saved")

    def forward(self, x: torch.Tensor, y: torch.Tensor, layer: AdaptedLinear) -> torch.Tensor:
        raise NotImplementedError

    def factors(self, layer: AdaptedLinear) -> LowRank | None:
        """This branch's weight update as ``B @ A`` (scaling folded in), or None if not low-rank."""
        return None

    def delta_weight(self, layer: AdaptedLinear) -> torch.Tensor:
        """This branch's weight update as a dense ``(out, in)`` matrix (for merging)."""
        f = self.factors(layer)
        if f is None:
            raise NotImplementedError(f"{type(self).__name__} must define delta_weight")
        return f.B @ f.A


class AdaptedLinear(nn.Module):
    def __init__(self, base: nn.Module, name: str):
        super().__init__()
        if not is_linear(base):
            raise TypeError(f"{name} is {with_article(type(base).__name__)}, not a linear layer")
        self.base = base
        self.name = name
        self.transposed = Conv1D != () and isinstance(base, Conv1D)
        self.out_features, self.in_features = linear_shape(base)
        self.branches = nn.ModuleList()
        # The pre-trained weight, to measure every update against (not saved with adapters).
        self.register_buffer("w0", self.weight.detach().clone(), persistent=False)
        self.offset: list[LowRank] = []   # factors written into the base weight since w0
        self.dense_offset = False         # True once the base weight is trained densely

    # -- the base weight in (out, in) layout -------------------------------------------------
    @property
    def weight(self) -> torch.Tensor:
        w = self.base.weight
        return w.T if self.transposed else w

    @torch.no_grad()
    def add_to_weight(self, delta: torch.Tensor, factors: LowRank | None = None) -> None:
        """``W <- W + delta`` (delta in (out, in) layout); `factors` keeps the offset exact."""
        w = self.base.weight
        w.add_((delta.T if self.transposed else delta).to(w.dtype))
        if factors is None:
            self.dense_offset = True
        else:
            self.offset.append(factors.detach_clone())

    # -- forward ----------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        for branch in self.branches:
            y = branch(x, y, self)
        return y

    # -- branches ---------------------------------------------------------------------------
    def add_branch(self, branch: Branch) -> Branch:
        self.branches.append(branch.to(device=self.w0.device))
        return branch

    @torch.no_grad()
    def merge_branch(self, index: int = -1) -> None:
        """Fold a branch into the base weight and remove it (exactly; the offset stays factored)."""
        branch = self.branches[index]
        factors = branch.factors(self)
        self.add_to_weight(branch.delta_weight(self), factors)
        del self.branches[index if index >= 0 else len(self.branches) + index]

    @torch.no_grad()
    def merge_all(self) -> None:
        """Fold every branch in at once: all deltas are taken before the weight changes, because a
        branch's update may depend on the base weight (WeGeFT generates it from W)."""
        parts = [(branch.delta_weight(self), branch.factors(self)) for branch in self.branches]
        for delta, factors in parts:
            self.add_to_weight(delta, factors)
        del self.branches[:]

    # -- read-outs --------------------------------------------------------------------------
    def effective_weight(self) -> torch.Tensor:
        """The weight the layer applies, ``(out, in)`` (base plus every branch)."""
        w = self.weight
        for branch in self.branches:
            w = w + branch.delta_weight(self)
        return w

    def update(self) -> Update:
        """The cumulative update against the pre-trained weight: factored when possible."""
        parts: list[LowRank] = []
        if not self.dense_offset:
            parts.extend(self.offset)
            for branch in self.branches:
                f = branch.factors(self)
                if f is None:
                    parts = None
                    break
                parts.append(f)
        else:
            parts = None
        if parts is None:
            return Dense((self.effective_weight() - self.w0).detach())
        if not parts:
            w = self.w0
            return LowRank(w.new_zeros(self.out_features, 0), w.new_zeros(0, self.in_features))
        if len(parts) == 1:
            return LowRank(parts[0].B.detach(), parts[0].A.detach())
        return concat([LowRank(p.B.detach(), p.A.detach()) for p in parts])

    # -- saving -----------------------------------------------------------------------------
    def adapter_state(self) -> dict:
        """What this layer adds to the pre-trained model: the base weight if it was rewritten, the
        factored offset, and each branch as (type, spec, tensors, trainable)."""
        w = self.weight.detach()
        return {
            "weight": None if torch.equal(w, self.w0) else w.clone(),
            "offset": [[f.B.clone(), f.A.clone()] for f in self.offset],
            "dense_offset": self.dense_offset,
            "branches": [{"type": type(b).__name__, "spec": b.spec(),
                          "state": {k: v.detach().clone() for k, v in b.state_dict().items()},
                          "trainable": any(p.requires_grad for p in b.parameters())}
                         for b in self.branches],
        }

    @torch.no_grad()
    def load_weight_and_offset(self, state: dict) -> None:
        """Restore the base weight and the offset of `adapter_state()` (branches are the method's job)."""
        weight = self.w0 if state["weight"] is None else state["weight"].to(self.w0)
        self.base.weight.copy_(weight.T if self.transposed else weight)
        self.offset = [LowRank(B.to(self.w0), A.to(self.w0)) for B, A in state["offset"]]
        self.dense_offset = bool(state["dense_offset"])
        del self.branches[:]

    def extra_repr(self) -> str:
        return f"{self.name}: {self.out_features} x {self.in_features}, {len(self.branches)} branch(es)"


def layer_index(name: str, default: int = -1) -> int:
    """The block number in a module name ('vit.layers.1.attention.q_proj' -> 1), or `default`."""
    for part in name.split("."):
        if part.isdigit():
            return int(part)
    return default


def adapted_layers(model: nn.Module) -> dict[str, AdaptedLinear]:
    return {m.name: m for m in model.modules() if isinstance(m, AdaptedLinear)}


def wrap(model: nn.Module, names: list[str]) -> dict[str, AdaptedLinear]:
    """Replace each named linear module of `model` by an AdaptedLinear around it."""
    layers = {}
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        module = getattr(parent, child)
        if isinstance(module, AdaptedLinear):
            layers[name] = module
            continue
        layer = AdaptedLinear(module, name)
        setattr(parent, child, layer)
        layers[name] = layer
    return layers
