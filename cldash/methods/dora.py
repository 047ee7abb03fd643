"""DoRA: weight-decomposed low-rank adaptation (a variant of LoRA's forward).

Liu et al., ICML 2024, arXiv 2402.09353, eq. (5): each output row of the weight is split into a
magnitude and a direction, and LoRA adapts the direction::

    V = W + s B A,    W' = diag(m / ||V||_row) V,    m (out,) trainable, init m = ||W||_row

(row norms over the input dimension, in (out, in) layout). As in the paper (section 4.3) and
PEFT, ``||V||_row`` is treated as a constant in the backward pass. The forward mirrors PEFT's
``DoraLinearLayer.forward`` op for op::

    y = W x + b + (m/n - 1) (W x) + (m/n) s B A x,    n = ||W + s B A||_row (detached)

so the parity test can ask for equal numbers.

Read-outs. The effective update ``W' - W0`` is full rank in general (the row rescaling), so DoRA
is a dense method here (``low_rank = False``): its main update is the dense effective one, and
the directional low-rank part ``s B A`` is logged beside it as the extra kind ``directional``.
Per module: quantiles of ``m_i / ||W0_i||`` and the paper's decomposition diagnostics
``delta_m = mean_i |m_i - ||W0_i|| |`` and ``delta_d = mean_i (1 - cos(W'_i, W0_i))`` (section 3 of
the paper; the exact normalisation is recalled, not re-read: baseline-methods.md section 2.3).

Policies: ``single`` (default) and ``merge``; after a merge the next task's magnitude starts at
the row norms of the merged weight (section 3.4 of the reference note). ``stack`` is left out:
a frozen DoRA adapter rescales whole rows, so stacking is a composition of rescalings rather
than a sum of updates, which neither the paper nor PEFT define.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cldash.core.presets import EPOCHS_RULE, HF_CLIP_DEFAULT, Cited, PaperPreset
from cldash.measures.spectra import LowRank, Update
from cldash.methods.base import TaskContext, register
from cldash.methods.layer import AdaptedLinear, Branch
from cldash.methods.lora import LoRA, LoRABranch, LoRAConfig


class DoRABranch(LoRABranch):
    """A LoRA branch plus a magnitude vector ``m: (out,)`` that rescales each output row."""

    def __init__(self, in_features: int, out_features: int, rank: int, scaling: float,
                 dropout: float = 0.0, dtype: torch.dtype = torch.float32):
        super().__init__(in_features, out_features, rank, scaling, dropout, dtype)
        self.magnitude = nn.Parameter(torch.ones(out_features, dtype=dtype))

    def lora_weight(self) -> torch.Tensor:
        """``B A`` as PEFT forms it (an identity pushed through the two maps), ``(out, in)``."""
        eye = torch.eye(self.lora_A.shape[1], device=self.lora_A.device, dtype=self.lora_A.dtype)
        return F.linear(F.linear(eye, self.lora_A), self.lora_B).T

    def weight_norm(self, weight: torch.Tensor, lora_weight: torch.Tensor) -> torch.Tensor:
        """``||W + s B A||`` per output row, ``(out,)``."""
        return torch.linalg.norm(weight + self.scaling * lora_weight, dim=1).to(weight.dtype)

    @torch.no_grad()
    def init_magnitude(self, layer: AdaptedLinear) -> None:
        self.magnitude.copy_(self.weight_norm(layer.weight, self.lora_B @ self.lora_A))

    def forward(self, x: torch.Tensor, y: torch.Tensor, layer: AdaptedLinear) -> torch.Tensor:
        weight = layer.weight.to(x.dtype)
        norm = self.weight_norm(weight, self.lora_weight().to(x.dtype).detach()).detach()
        scale = (self.magnitude / norm).view(1, -1)
        if self.dropout is not None and self.training:
            h = self.dropout(x)
            base = F.linear(h, weight)           # the base output on the dropped-out input, no bias
        else:
            h = x
            bias = layer.base.bias
            base = y if bias is None else y - bias
        lora = F.linear(F.linear(h, self.lora_A), self.lora_B)
        return y + ((scale - 1) * base + scale * lora * self.scaling)

    def factors(self, layer: AdaptedLinear) -> None:
        return None   # the row rescaling makes the effective update full rank

    def effective_weight(self, layer: AdaptedLinear) -> torch.Tensor:
        V = layer.weight + self.scaling * (self.lora_B @ self.lora_A)
        return (self.magnitude / torch.linalg.norm(V, dim=1))[:, None] * V

    def delta_weight(self, layer: AdaptedLinear) -> torch.Tensor:
        return self.effective_weight(layer) - layer.weight

    def directional(self) -> LowRank:
        return LowRank(self.lora_B * self.scaling, self.lora_A)


@register
class DoRA(LoRA):
    name = "dora"
    display_name = "DoRA"
    label = "DoRA"
    paper = "Liu et al., ICML 2024, arXiv 2402.09353"
    summary = ("Splits each weight row into a trainable magnitude and a direction adapted by LoRA; the "
               "effective update is full rank (row rescaling), its directional part rank r.")
    equation = (r"W' = \operatorname{diag}\!\left(\frac{m}{\lVert W_0 + \frac{\alpha}{r}BA\rVert_{row}}\right)"
                r"\left(W_0 + \frac{\alpha}{r}BA\right),\quad m_0 = \lVert W_0\rVert_{row}")
    Config = LoRAConfig
    policies = ("single", "merge")
    policy_notes = {"merge": "merge the effective weight, then the next magnitude starts at its row norms"}
    default_lr = 5e-3
    low_rank = False
    weight_space_kinds = ("directional",)

    def new_branch(self, layer: AdaptedLinear, ctx: TaskContext) -> Branch:
        c = self.config
        branch = DoRABranch(layer.in_features, layer.out_features, c.rank, c.scaling(), c.dropout)
        branch.reset(ctx.generator)
        branch.to(layer.w0.device)
        branch.init_magnitude(layer)
        return branch

    def extra_updates(self) -> dict[tuple[str, str], Update]:
        out = {}
        for name, layer in self.layers.items():
            branch = self.current_branch(layer)
            if isinstance(branch, DoRABranch):
                d = branch.directional()
                out[(name, "directional")] = LowRank(d.B.detach(), d.A.detach())
        return out

    @torch.no_grad()
    def module_scalars(self) -> dict[str, dict[str, float]]:
        out = super().module_scalars()
        stats: dict[str, dict[str, float]] = {k: {} for k in ("magnitude_ratio_q10", "magnitude_ratio_median",
                                                              "magnitude_ratio_q90", "delta_m", "delta_d")}
        for name, layer in self.layers.items():
            branch = self.current_branch(layer)
            if not isinstance(branch, DoRABranch):
                continue
            w0_norm = torch.linalg.norm(layer.w0, dim=1)
            ratio = branch.magnitude / w0_norm
            q10, q50, q90 = torch.quantile(ratio, torch.tensor([0.1, 0.5, 0.9], device=ratio.device)).tolist()
            stats["magnitude_ratio_q10"][name] = q10
            stats["magnitude_ratio_median"][name] = q50
            stats["magnitude_ratio_q90"][name] = q90
            stats["delta_m"][name] = float((branch.magnitude - w0_norm).abs().mean())
            cos = F.cosine_similarity(layer.effective_weight(), layer.w0, dim=1)
            stats["delta_d"][name] = float((1 - cos).mean())
        out.update(stats)
        return out


# -- the authors' regime (`--preset paper`; cldash.core.presets) ------------------------------

_DORA = "NVlabs/DoRA/commonsense_reasoning/"

PAPER_PRESET = PaperPreset(
    paper="DoRA (Liu et al.), ICML 2024, arXiv 2402.09353",
    code="NVlabs/DoRA",
    values={
        "optimizer": Cited("adamw", _DORA + "finetune.py: TrainingArguments(optim=\"adamw_torch\")"),
        "lr": Cited(2e-4, _DORA + "llama2_7B_DoRA.sh: --learning_rate 2e-4"),
        "weight_decay": Cited(0.0, _DORA + "finetune.py: weight_decay default 0.0"),
        "max_grad_norm": Cited(1.0, _DORA + "finetune.py: TrainingArguments without max_grad_norm, so "
                               + HF_CLIP_DEFAULT,
                               note="a library default the authors left in force, not a value they wrote"),
        "targets": Cited(("q", "k", "v", "mlp"), _DORA + "llama2_7B_DoRA.sh: --target_modules "
                         "[\"q_proj\", \"k_proj\", \"v_proj\", \"up_proj\", \"down_proj\"]",
                         note="up_proj and down_proj are both MLP layers: mlp adapts both of ours"),
        "method.rank": Cited(32, _DORA + "README.md: the example run \"sh llama2_7B_DoRA_r.sh 32 64 "
                             "./finetuned_result/r32_lr2e-4 0\" (rank 32)"),
        "method.alpha": Cited(64.0, _DORA + "README.md: the same example, alpha 64"),
        "method.dropout": Cited(0.05, _DORA + "finetune.py: lora_dropout default 0.05"),
    },
    notes=(
        "The schedule is transformers' default linear decay after warmup_steps=100 (finetune.py) of about "
        "32,000 steps (3 epochs of commonsense_170k at batch 16); linear decay has no equivalent here, so the "
        "common constant rate is kept, and 100 steps (0.3 % of their run) are under one of our steps, so "
        "there is no warm-up.",
        "The batch of 16 (llama2_7B_DoRA.sh: --batch_size 16) is a 7B model's; ours stays 64.",
        "Three epochs (--num_epochs 3); " + EPOCHS_RULE + ".",
        "The code detaches the row norm from the gradient (finetune.py: dora_simple=True), as ours does.",
    ),
)
