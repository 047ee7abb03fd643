"""LoRA and rsLoRA.

LoRA (Hu et al., arXiv 2106.09685): ``W = W0 + s * B A`` with ``A: (r, in)`` Kaiming-uniform
(a = sqrt(5), as PEFT and the Microsoft code), ``B: (out, r)`` zero, so the adapter is a no-op
at step 0, and ``s = alpha / r``. rsLoRA (Kalajdzievski, arXiv 2312.03732) only changes the
scaling to ``s = alpha / sqrt(r)``, which keeps the update's size stable across a rank sweep;
it is the ``rslora`` option here (as ``use_rslora`` is in PEFT), not a method of its own.

LoRA has no continual-learning rule of its own, so the task-boundary policy is a run option
(reference note baseline-methods.md, section 3.4): ``single`` trains one adapter through all
tasks (SeqLoRA, TRACE's baseline), ``merge`` folds it into the weights after each task and
starts a fresh one, ``stack`` freezes it and adds a new one (IncLoRA).

The forward mirrors PEFT's op for op, ``y = base(x) + B(A(dropout(x))) * s``, so that parity
tests can ask for equal numbers, not just close ones. LoRA-family methods (PiSSA, LoRA-GA,
DoRA...) subclass `LoRA` and override `new_branch` (an initialisation) or the branch class
(a forward variant).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cldash.core.errors import ConfigError
from cldash.core.options import option
from cldash.measures.spectra import LowRank
from cldash.methods.base import AdapterMethod, TaskContext, register
from cldash.methods.layer import AdaptedLinear, Branch


class LoRABranch(Branch):
    """``y += s * B (A (dropout(x)))`` with ``A: (r, in)``, ``B: (out, r)`` (PEFT's layout)."""

    def __init__(self, in_features: int, out_features: int, rank: int, scaling: float,
                 dropout: float = 0.0, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.rank = rank
        self.scaling = scaling
        self.lora_A = nn.Parameter(torch.empty(rank, in_features, dtype=dtype))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank, dtype=dtype))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None

    def spec(self) -> dict:
        return {"in_features": self.lora_A.shape[1], "out_features": self.lora_B.shape[0], "rank": self.rank,
                "scaling": self.scaling, "dropout": self.dropout.p if self.dropout is not None else 0.0}

    def reset(self, generator: torch.Generator | None = None) -> None:
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5), generator=generator)
        nn.init.zeros_(self.lora_B)

    def forward(self, x: torch.Tensor, y: torch.Tensor, layer: AdaptedLinear) -> torch.Tensor:
        h = x if self.dropout is None else self.dropout(x)
        if h.dtype != self.lora_A.dtype:
            h = h.to(self.lora_A.dtype)
        return y + (F.linear(F.linear(h, self.lora_A), self.lora_B) * self.scaling).to(y.dtype)

    def factors(self, layer: AdaptedLinear) -> LowRank:
        return LowRank(self.lora_B * self.scaling, self.lora_A)

    def delta_weight(self, layer: AdaptedLinear) -> torch.Tensor:
        return (self.lora_B @ self.lora_A) * self.scaling


@dataclass
class LoRAConfig:
    rank: int = option(8, "rank r of the update B A", source="PEFT default r=8", low=1, high=65_536)
    alpha: float = option(16.0, "scale numerator: the update is (alpha / r) B A",
                          source="common practice alpha = 2r (PEFT default is 8)", low=0, low_open=True, high=1_000_000)
    dropout: float = option(0.0, "dropout on the adapter's input", source="PEFT default 0.0", low=0.0, high=0.9)
    rslora: bool = option(False, "scale by alpha / sqrt(r) instead of alpha / r (rsLoRA)",
                          source="arXiv 2312.03732")

    def scaling(self) -> float:
        return self.alpha / (math.sqrt(self.rank) if self.rslora else self.rank)


def check_rank(method: str, rank: int, shapes: dict[str, tuple[int, int]], option_name: str = "rank") -> None:
    """A rank above a target layer's smaller side is rejected with the layer named."""
    for name, (out_f, in_f) in shapes.items():
        if rank > min(out_f, in_f):
            raise ConfigError(
                f"{method}.{option_name} {rank} is larger than layer {name} ({out_f} x {in_f}); "
                f"choose a rank of at most {min(out_f, in_f)}.", f"{method}.{option_name}")


@register
class LoRA(AdapterMethod):
    name = "lora"
    display_name = "LoRA"
    label = "LoRA"
    paper = "Hu et al., ICLR 2022, arXiv 2106.09685; rsLoRA: Kalajdzievski, arXiv 2312.03732"
    summary = ("Adds a trainable rank-r product B A next to each frozen weight. B starts at zero, "
               "so training starts from the pre-trained model.")
    equation = (r"W = W_0 + \frac{\alpha}{r} B A,\quad A \in \mathbb{R}^{r\times n},\ "
                r"B \in \mathbb{R}^{m\times r},\ B_0 = 0")
    Config = LoRAConfig
    policies = ("single", "merge", "stack")
    default_lr = 5e-3
    presets = {
        "cldash default (r=8, alpha=16)": {},
        "PEFT defaults (r=8, alpha=8)": {"rank": 8, "alpha": 8.0},
        "TRACE SeqLoRA baseline (r=8, alpha=32, dropout 0.1)": {"rank": 8, "alpha": 32.0, "dropout": 0.1},
        "rsLoRA (r=16, alpha=16, alpha/sqrt(r))": {"rank": 16, "alpha": 16.0, "rslora": True},
        "rank 1 (alpha=2)": {"rank": 1, "alpha": 2.0},
        "rank 4 (alpha=8)": {"rank": 4, "alpha": 8.0},
        "rank 16 (alpha=32)": {"rank": 16, "alpha": 32.0},
    }
    rewrites_base = False   # True: the init is taken out of the base weight (PiSSA, LoRA-GA)

    def check_layers(self, shapes: dict[str, tuple[int, int]]) -> None:
        check_rank(self.name, self.config.rank, shapes)

    # -- the initialisation LoRA-family methods override ----------------------------------------
    def new_branch(self, layer: AdaptedLinear, ctx: TaskContext) -> Branch:
        c = self.config
        branch = LoRABranch(layer.in_features, layer.out_features, c.rank, c.scaling(), c.dropout)
        branch.reset(ctx.generator)
        return branch

    @staticmethod
    @torch.no_grad()
    def start_from(layer: AdaptedLinear, branch: LoRABranch, B0: torch.Tensor, A0: torch.Tensor,
                   offset: torch.Tensor | None = None) -> None:
        """Initialise `branch` to ``B0, A0`` and take ``s B0 A0`` out of the base weight, so the
        layer's function is unchanged (PiSSA, LoRA-GA). The offset goes in with its exact factors
        ``(-s B0, A0)``, so the layer's update stays ``s (B A - B0 A0)``, factored, against W0.
        `offset` is the dense ``s B0 A0`` when the caller must round it as a reference does."""
        s = branch.scaling
        branch.lora_A.copy_(A0)
        branch.lora_B.copy_(B0)
        dense = offset if offset is not None else (s * branch.lora_B) @ branch.lora_A
        layer.add_to_weight(-dense, LowRank(-s * branch.lora_B.detach(), branch.lora_A.detach()))

    # -- read-outs ------------------------------------------------------------------------------
    def module_scalars(self) -> dict[str, dict[str, float]]:
        """Factor norms of the current adapter: B starts at zero and its growth shapes early spectra."""
        a_norm, b_norm = {}, {}
        for name, layer in self.layers.items():
            branch = self.current_branch(layer)
            if isinstance(branch, LoRABranch):
                a_norm[name] = float(branch.lora_A.detach().norm())
                b_norm[name] = float(branch.lora_B.detach().norm())
        out = {"lora_A_norm": a_norm, "lora_B_norm": b_norm}
        if self.rewrites_base:
            out["init_subspace_drift"] = {name: init_subspace_drift(layer, self.current_branch(layer))
                                          for name, layer in self.layers.items()
                                          if len(layer.branches) and layer.offset}
        return out


def init_subspace_drift(layer: AdaptedLinear, branch: LoRABranch) -> float:
    """``1 - mean cos^2`` of the principal angles between span(B) now and span(B0) at init.

    For inits that rewrite the base weight (PiSSA, LoRA-GA) the current branch's init is the last
    offset, ``(-s B0, A0)``: 0 while B still spans its initial subspace (PiSSA: W0's top-r left
    singular directions), 1 when it has left it entirely.
    """
    B0 = layer.offset[-1].B.double()
    B = branch.lora_B.detach().double()
    Q0, _ = torch.linalg.qr(B0)
    Q, _ = torch.linalg.qr(B)
    cos = torch.linalg.svdvals(Q0.T @ Q).clamp(max=1.0)
    return float(1.0 - (cos ** 2).mean())
