"""CoDyRA: continual learning with dynamic rank-selective LoRA (rank minimisation by a proximal step).

Lu et al., arXiv 2412.01004 ("Adaptive Rank, Reduced Forgetting: Knowledge Retention in Continual
Learning Vision-Language Models with Dynamic Rank-Selective LoRA"; Findings of EMNLP 2026 as "Take
Only What You Need: Rank Minimization as an Implicit Forgetting Regularizer in Continual
Learning"); code Artificer-AI-Lab/CoDyRA (reference note seed-methods.md, section 3).

Each adapted weight gets ``dW = B diag(w) A = sum_i w_i B[:, i] A[i, :]`` with no alpha/r factor:
``A: (r, in)`` Kaiming-uniform, ``B: (out, r)`` zero, importance weights (gates) ``w ~ N(0, 1)``.
The objective is ``L_task + lambda sum_m ||w^m||_1``, optimised as the code does: a plain AdamW
step on A, B and w, then the proximal soft-threshold on every gate::

    w <- sign(w) max(|w| - kappa_t, 0)

with ``kappa_t`` used as it is (not multiplied by the learning rate). The authors' kappa_max 0.005
at their learning rate 5e-4 (``runner_codyra.sh``) is ten times the change an Adam step makes to a
gate (about lr): that ratio says how hard the threshold prunes against the gradient, so at another
learning rate the same absolute kappa_max means a different thing. ``kappa_per_lr`` > 0 sets
``kappa_max = kappa_per_lr x lr`` instead (the authors' ratio is 10), with lr the run's learning
rate, which the method learns in ``make_optimizer`` (the peak rate: the schedule does not move
kappa, as in the code).

``kappa_t`` is 0 during the dense phase (the first ``dense_fraction`` of the task's steps), then
climbs a staircase through ``linspace(0, kappa_max, levels)``, one level per ``(T - T_dense) /
levels`` steps, reaching ``kappa_max`` at the task's end. A gate at exactly zero removes its
rank-one component: the module's active rank is ``||w||_0``.

At each task boundary the zeroed components are dropped, ``B diag(w) A`` is merged into the
weight (its factors kept, so the cumulative update stays factored) and a fresh full-rank adapter
is started (new A, B = 0, new w); the code does this at the next task's start, which is the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from cldash.core.errors import ConfigError
from cldash.core.options import option
from cldash.core.presets import Cited, PaperPreset
from cldash.core.search import Param
from cldash.measures.spectra import LowRank
from cldash.methods.base import Method, StepContext, TaskContext, register
from cldash.methods.layer import AdaptedLinear, Branch
from cldash.methods.lora import check_rank


class GatedBranch(Branch):
    """``y += B (w * (A x))`` with ``A: (r, in)``, ``B: (out, r)``, gates ``w: (r,)``."""

    def __init__(self, in_features: int, out_features: int, rank: int):
        super().__init__()
        self.rank = rank
        self.lora_A = nn.Parameter(torch.empty(rank, in_features))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank))
        self.gate = nn.Parameter(torch.empty(rank))

    def spec(self) -> dict:
        return {"in_features": self.lora_A.shape[1], "out_features": self.lora_B.shape[0], "rank": self.rank}

    def reset(self, generator: torch.Generator | None = None) -> None:
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5), generator=generator)
        nn.init.zeros_(self.lora_B)
        with torch.no_grad():
            self.gate.normal_(generator=generator)

    def forward(self, x: torch.Tensor, y: torch.Tensor, layer: AdaptedLinear) -> torch.Tensor:
        return y + (x @ self.lora_A.T * self.gate) @ self.lora_B.T

    def factors(self, layer: AdaptedLinear) -> LowRank:
        return LowRank(self.lora_B * self.gate, self.lora_A)

    def delta_weight(self, layer: AdaptedLinear) -> torch.Tensor:
        return (self.lora_B * self.gate) @ self.lora_A

    def active(self) -> torch.Tensor:
        return self.gate.detach() != 0

    @torch.no_grad()
    def proximal(self, kappa: float) -> None:
        """Soft-threshold the gates: ``w <- sign(w) max(|w| - kappa, 0)``."""
        self.gate.copy_(torch.sign(self.gate) * (self.gate.abs() - kappa).clamp_min(0.0))


@dataclass
class CoDyRAConfig:
    rank: int = option(16, "rank r of each task's adapter (components before pruning)",
                       source="runner_codyra.sh: r = 16", low=1, high=65_536)
    kappa_max: float = option(0.005, "final soft-threshold kappa_max of the staircase (absolute; see kappa_per_lr)",
                              source="runner_codyra.sh and the project page: 0.005", low=0.0, high=1000)
    kappa_per_lr: float = option(0.0, "when > 0, kappa_max is this times the run's learning rate (replacing "
                                      "kappa_max)",
                                 source="runner_codyra.sh: MAX_KAPPA 0.005 / LR 5e-4 = 10", low=0.0, high=1_000_000)
    dense_fraction: float = option(0.5, "share of each task's steps trained densely before thresholding starts",
                                   source="the code's default 0.5", low=0.0, high=1.0, low_open=False)
    levels: int = option(50, "number of kappa levels in the staircase (linspace(0, kappa_max, levels))",
                         source="the code's default 50", low=2, high=100_000)
    beta2: float = option(0.9999, "AdamW beta2", source="main.py: betas (0.9, 0.9999)", low=0.0, high=1.0)

    def check(self, prefix: str) -> None:
        if self.dense_fraction >= 1.0:
            raise ConfigError(f"{prefix}.dense_fraction must be below 1 so that the sparse phase has steps "
                              f"(got {self.dense_fraction:g}).", f"{prefix}.dense_fraction")


def threshold(task_step: int, task_steps: int, kappa_max: float, dense_fraction: float, levels: int) -> float:
    """kappa after optimizer step `task_step` (1-based) of a task of `task_steps` steps."""
    start = dense_fraction * task_steps
    if task_step <= start:
        return 0.0
    span = task_steps - start
    level = min(levels - 1, int((task_step - start) * levels / span))   # multiply first: 29 / 50 * 50 < 29
    return kappa_max * level / (levels - 1)


@register
class CoDyRA(Method):
    name = "codyra"
    display_name = "CoDyRA"
    label = "CoDyRA"
    paper = "Lu et al., arXiv 2412.01004 (Findings of EMNLP 2026); code Artificer-AI-Lab/CoDyRA"
    summary = ("LoRA with a gate per rank-one component, soft-thresholded after every step on a rising "
               "staircase, so each module keeps only the components the task needs; merged per task.")
    equation = (r"\Delta W = B\,\mathrm{diag}(w)\,A,\quad w \leftarrow \mathrm{sign}(w)\max(|w|-\kappa_t, 0)"
                r"\ \text{after each step}")
    Config = CoDyRAConfig
    default_lr = 5e-3
    # searched beside the learning rate: the sparsity strength (a decade either side of runner_codyra.sh's 0.005)
    # and how much of each task trains densely before the threshold starts
    search_space = (Param("kappa_max", "log", 1e-4, 5e-2, source="runner_codyra.sh: 0.005"),
                    Param("dense_fraction", "choice", choices=(0.25, 0.5, 0.75), source="the code's default 0.5"))

    def check_layers(self, shapes: dict[str, tuple[int, int]]) -> None:
        check_rank(self.name, self.config.rank, shapes)

    def before_task(self, ctx: TaskContext) -> None:
        self.kappa = 0.0
        for layer in self.layers.values():
            branch = GatedBranch(layer.in_features, layer.out_features, self.config.rank)
            branch.reset(ctx.generator)
            layer.add_branch(branch)

    def make_optimizer(self, params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
        self.lr = lr        # the run's (peak) learning rate, for kappa_per_lr
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=(0.9, self.config.beta2))

    def kappa_max(self) -> float:
        """The staircase's top: kappa_max, or kappa_per_lr times the learning rate when that is set."""
        c = self.config
        if c.kappa_per_lr <= 0:
            return c.kappa_max
        if getattr(self, "lr", None) is None:
            raise RuntimeError("codyra.kappa_per_lr needs the run's learning rate: build the optimizer with "
                               "make_optimizer before the first step.")
        return c.kappa_per_lr * self.lr

    def after_step(self, ctx: StepContext) -> None:
        c = self.config
        self.kappa = threshold(ctx.task_step, ctx.task.steps, self.kappa_max(), c.dense_fraction, c.levels)
        if self.kappa > 0:
            for layer in self.layers.values():
                layer.branches[-1].proximal(self.kappa)

    @torch.no_grad()
    def after_task(self, ctx: TaskContext) -> None:
        """Drop the zeroed components, merge the rest (factored) and remove the adapter."""
        for layer in self.layers.values():
            branch = layer.branches[-1]
            keep = branch.active()
            factors = LowRank((branch.lora_B * branch.gate)[:, keep].clone(), branch.lora_A[keep].clone())
            layer.add_to_weight(factors.B @ factors.A, factors)
            del layer.branches[-1]

    # -- read-outs ------------------------------------------------------------------------------
    def current(self):
        return {name: layer.branches[-1] for name, layer in self.layers.items() if len(layer.branches)}

    def scalars(self) -> dict[str, float]:
        gates = [b.gate.detach().abs() for b in self.current().values()]
        out = {"codyra_threshold": float(getattr(self, "kappa", 0.0))}
        if gates:
            g = torch.cat(gates)
            total = sum(b.rank for b in self.current().values())
            out["active_rank_share"] = float((g > 0).sum()) / total
            for q in (0.1, 0.5, 0.9):
                out[f"gate_abs_p{int(q * 100)}"] = float(torch.quantile(g, q))
        return out

    def module_scalars(self) -> dict[str, dict[str, float]]:
        cur = self.current()
        return {"active_rank": {n: float(b.active().sum()) for n, b in cur.items()},
                "gate_abs_mean": {n: float(b.gate.detach().abs().mean()) for n, b in cur.items()},
                "task_update_norm": {n: float(b.delta_weight(None).detach().norm()) for n, b in cur.items()}}

    def extra_state(self) -> dict:
        return {"kappa": float(getattr(self, "kappa", 0.0))}

    def load_extra_state(self, state: dict) -> None:
        self.kappa = float(state.get("kappa", 0.0))


# -- the authors' regime (`--preset paper`; cldash.core.presets) ------------------------------

_CODYRA = "Artificer-AI-Lab/CoDyRA/"

# The preset keeps the code's absolute kappa_max at the code's learning rate (the same ratio
# kappa_max / lr = 10 as `kappa_per_lr` 10).
PAPER_PRESET = PaperPreset(
    paper="CoDyRA (Lu et al.), arXiv 2412.01004",
    code="Artificer-AI-Lab/CoDyRA",
    values={
        "optimizer": Cited("adamw", _CODYRA + "models/codyra.py: train_model builds torch.optim.AdamW"),
        "lr": Cited(5e-4, _CODYRA + "runner_codyra.sh: LR=5e-4"),
        "lr_schedule": Cited("cosine", _CODYRA + "models/codyra.py: utils.cosine_lr over the task's iterations "
                             "(utils.py: 0.5 (1 + cos(pi e / es)) lr)"),
        "warmup_steps": Cited(0, _CODYRA + "main.py: --warmup_length default 0"),
        "weight_decay": Cited(0.0, _CODYRA + "main.py: --wd default 0.0"),
        "steps_per_task": Cited(500, _CODYRA + "runner_codyra.sh: ITERATIONS=500 (models/codyra.py trains that "
                                "many iterations on each task, cycling its loader)",
                                note="iterations per task carry over as they are (the common regime is 300)"),
        "batch_size": Cited(64, _CODYRA + "main.py: --batch_size default 64"),
        "max_grad_norm": Cited(0.0, _CODYRA + "models/codyra.py: train_model steps the optimizer without "
                               "clipping"),
        "loss_classes": Cited("current", _CODYRA + "models/codyra.py: train_model sets the logits of the "
                              "classes seen before to -inf ahead of the cross-entropy"),
        "targets": Cited(("q", "k", "v", "o", "mlp"), _CODYRA + "runner_codyra.sh: TARGET_MODULES=\"qkvoinout\" "
                         "(main.py LORA_MAPPING: q_proj, k_proj, v_proj, out_proj, ffn_in, ffn_out)"),
        "method.rank": Cited(16, _CODYRA + "runner_codyra.sh: RANK=16"),
        "method.kappa_max": Cited(0.005, _CODYRA + "runner_codyra.sh: MAX_KAPPA=0.005"),
        "method.dense_fraction": Cited(0.5, _CODYRA + "runner_codyra.sh: DENSE_ITERS=0.5"),
        "method.levels": Cited(50, _CODYRA + "main.py: --lambda_num default 50"),
        "method.beta2": Cited(0.9999, _CODYRA + "models/codyra.py: AdamW betas=(0.9, 0.9999)"),
    },
    notes=(
        "The authors adapt both of CLIP's encoders (runner_codyra.sh: TARGET_ENCODER=all) and add a text-side "
        "cross-entropy to the loss (models/codyra.py: loss_ce_t); our backbones have one encoder and a linear "
        "head, so only the image side carries over.",
        "The released loop soft-thresholds the gates by kappa itself after every step (models/codyra.py: "
        "p -= threshold), not by the learning rate times kappa; an option for a threshold relative to the "
        "learning rate exists (kappa_per_lr: 10 is the code's 0.005 / 5e-4), and this preset keeps the code's "
        "absolute kappa at the code's learning rate, which is the same.",
        "The authors train 16 shots per class (main.py: --num_shots 16) for the 500 iterations; our tasks "
        "train on their whole training sets.",
    ),
)
