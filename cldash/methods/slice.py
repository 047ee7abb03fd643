"""SLICE (reconstruction): LoRA initialised from the current task's gradient reconciled with a replay gradient.

"Low-Rank Adapters Initialization via Gradient Surgery for Continual Learning", Pasquali, Barros
et al., arXiv 2605.12752 (no code released). The abstract fixes four steps per task: accumulate
gradients on the current task, accumulate gradients on a replay buffer of earlier tasks,
reconcile the two with a projection ("gradient surgery"), and initialise the LoRA factors from a
truncated SVD of the result. Everything else is reconstructed as the reference note (seed-methods.md,
section 2, "Reference design") proposes, on top of LoRA-GA, which SLICE compares against:

1. ``G_cur``, ``G_rep``: mean gradients of each target weight over ``grad_batches`` batches of the
   task and of the replay buffer (the run's replay buffer, or one the method asks for);
2. surgery per matrix with the Frobenius inner product (PCGrad, Yu et al., arXiv 2001.06782): if
   ``<G_cur, G_rep> < 0``, ``G_cur' = G_cur - <G_cur, G_rep> / ||G_rep||^2 G_rep``; the symmetric
   variant also projects ``G_rep`` off ``G_cur``;
3. ``G* = G_cur' + G_rep'`` (``combine = sum``) or ``G* = G_cur'`` (``combine = current``);
4. LoRA-GA's init from ``G*`` (``ArB2r``, ``stable`` scaling, base offset so the function is
   unchanged) in the form of LoRA-GA's authors' code, as the reference design cites it (section 2
   (b) 4): unit singular vectors, A0 and B0 both times ``d_out^(1/4) / sqrt(gamma)``
   (``init_form = authors``; PEFT's form, ``peft``, gives B0 the gradient's singular values);
   task 1 has no buffer, so SLICE is LoRA-GA of the same form there;
5. merge at the boundary, re-initialise from the next task's reconciled gradient.

The open choices are options: which gradient is projected (``surgery``: ``current``, ``symmetric``
or ``none``), how the two are combined (``combine``), whether the buffer is also replayed during
training (``train_replay``), and the buffer size the method asks for (``memory``). The read-out is
the gradient-conflict cosine ``cos(G_cur, G_rep)`` per module at each task start, SLICE's key
diagnostic, with the share of ``G*``'s energy in its top 2r directions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cldash.core.options import option
from cldash.methods.base import TaskContext, register
from cldash.methods.loraga import FORMS, LoRAGA, LoRAGAConfig, estimate_gradients

SURGERY = ("current", "symmetric", "none")
COMBINE = ("sum", "current")


@dataclass
class SLICEConfig(LoRAGAConfig):
    init_form: str = option("authors", "whose lora_ga_init the factors follow: authors (unit singular vectors, A0 "
                                       "and B0 scaled alike) or peft (B0 = U S, only B0 scaled)",
                            source="reference design (seed-methods.md section 2 (b) 4), after Outsider565/LoRA-GA "
                                   "peft/src/peft/tuners/lora/layer.py lora_ga_init", choices=FORMS)
    surgery: str = option("current", "which gradient is projected off the other when they conflict: current "
                                     "(G_cur off G_rep, PCGrad one-sided), symmetric (both), none",
                          source="reconstruction: the abstract names a projection operator only", choices=SURGERY)
    combine: str = option("sum", "the gradient the factors come from: sum (G_cur' + G_rep) or current (G_cur')",
                          source="reconstruction: open in the paper", choices=COMBINE)
    train_replay: bool = option(False, "also replay the buffer during training (the run's replay options set "
                                       "its size and rule when they are on)",
                                source="reconstruction: the abstract says SLICE is compatible with replay")
    memory: int = option(250, "examples of finished tasks kept for the replay gradient when the run has no "
                              "replay of its own", low=1, high=10_000_000)


def reconcile(g_cur: torch.Tensor, g_rep: torch.Tensor, surgery: str, combine: str) -> torch.Tensor:
    """The reconciled gradient G* of two gradients of one matrix (Frobenius inner product)."""
    dot = float((g_cur * g_rep).sum())
    cur, rep = g_cur, g_rep
    if dot < 0 and surgery != "none":
        rep_sq, cur_sq = float((g_rep ** 2).sum()), float((g_cur ** 2).sum())
        if rep_sq > 0:
            cur = g_cur - dot / rep_sq * g_rep
        if surgery == "symmetric" and cur_sq > 0:
            rep = g_rep - dot / cur_sq * g_cur
    return cur + rep if combine == "sum" else cur


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    na, nb = float(a.norm()), float(b.norm())
    return float((a * b).sum()) / (na * nb) if na > 0 and nb > 0 else float("nan")


@register
class SLICE(LoRAGA):
    name = "slice"
    display_name = "SLICE"
    label = "SLICE (reconstruction)"
    paper = "Pasquali, Barros et al., arXiv 2605.12752 (no code; reconstructed on LoRA-GA)"
    summary = ("LoRA-GA's gradient initialisation, but from the current task's gradient reconciled with a replay "
               "gradient of earlier tasks by gradient surgery, so the adapter does not start against old tasks.")
    equation = (r"G^* = G_{cur} - \frac{\min(0,\langle G_{cur}, G_{rep}\rangle)}{\|G_{rep}\|^2} G_{rep} + G_{rep}"
                r"\approx U S V^\top,\ A_0 = \gamma_s V^\top_{[:r]},\ B_0 = \gamma_s U_{[:,r:2r]}")
    reconstruction = ("the paper's abstract fixes only the four steps; the projection (PCGrad), the combination, "
                      "the factor split and scaling (LoRA-GA's) and the base offset are reconstructions, "
                      "exposed as options (reference note seed-methods.md, section 2).")
    Config = SLICEConfig
    policies = ("merge", "stack", "single")
    policy_notes = {"merge": "merge, then re-initialise from the next task's reconciled gradient",
                    "stack": "freeze, then add an adapter initialised from the next task's reconciled gradient",
                    "single": "initialise once, on the first task (where it is LoRA-GA)"}

    def replay_request(self) -> tuple[int, bool]:
        return self.config.memory, self.config.train_replay

    def task_gradients(self, ctx: TaskContext) -> dict[str, torch.Tensor]:
        """G* per layer: the task gradient reconciled with the replay gradient (the task gradient as it
        is on the first task, or without a buffer: LoRA-GA)."""
        c = self.config
        current = super().task_gradients(ctx)
        replay = ctx.extras.get("replay")
        self.conflict: dict[str, float] = {}
        self.grad_norm_ratio: dict[str, float] = {}
        if replay is None:
            return current
        replayed = estimate_gradients(ctx.model, self.layers, replay, c.grad_batches, c.grad_batch_size)
        gradients = {}
        for name in self.layers:
            g_cur, g_rep = current[name], replayed[name]
            self.conflict[name] = cosine(g_cur, g_rep)
            gradients[name] = reconcile(g_cur, g_rep, c.surgery, c.combine)
            n_cur = float(g_cur.norm())
            self.grad_norm_ratio[name] = float(gradients[name].norm()) / n_cur if n_cur > 0 else float("nan")
        return gradients

    def module_scalars(self) -> dict[str, dict[str, float]]:
        out = super().module_scalars()
        out["gradient_conflict_cos"] = dict(getattr(self, "conflict", {}))
        out["reconciled_grad_norm_ratio"] = dict(getattr(self, "grad_norm_ratio", {}))
        return out

    def extra_state(self) -> dict:
        return {**super().extra_state(), "conflict": dict(getattr(self, "conflict", {})),
                "grad_norm_ratio": dict(getattr(self, "grad_norm_ratio", {}))}

    def load_extra_state(self, state: dict) -> None:
        super().load_extra_state(state)
        self.conflict = dict(state.get("conflict", {}))
        self.grad_norm_ratio = dict(state.get("grad_norm_ratio", {}))
