"""PiSSA: LoRA initialised on the principal singular directions of the weight.

Meng, Wang, Zhang, NeurIPS 2024, arXiv 2404.02948. With ``W = U S V^T`` (the current base
weight), the adapter starts on the top-r triplets and the base keeps the residual::

    B0 = U_r sqrt(S_r / s),  A0 = sqrt(S_r / s) V_r^T,  W_base = W - s B0 A0

so ``s B0 A0 = U_r S_r V_r^T`` and the model's output is unchanged at step 0 (PEFT's
``pissa_init``; the singular values are divided by ``s`` before the square root). The layer's
update against the pre-trained weight is then ``s (B A - B0 A0)``, rank <= 2r, kept factored.

PiSSA has no continual-learning rule; its two natural extensions are the task-boundary policies
(reference note baseline-methods.md, section 2.2 (d); our design choice, recorded per run as
the run's ``policy``):

- ``merge`` (default): fold the adapter into the weight and re-run the SVD on the merged
  weight, so every task trains the *current* top-r principal subspace;
- ``stack``: freeze the adapter and start the next one on the top-r directions of the residual
  base weight, i.e. the *next* r principal directions (the frozen adapter holds the previous ones);
- ``single``: one PiSSA adapter trained through all tasks.

``svd_iterations`` 0 is PEFT's exact ``"pissa"``; K > 0 is ``"pissa_niter_K"`` (randomized SVD
with K subspace iterations, seeded from the run's generator).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cldash.core.options import option
from cldash.core.presets import EPOCHS_RULE, HF_CLIP_DEFAULT, Cited, PaperPreset
from cldash.methods.base import TaskContext, register
from cldash.methods.layer import AdaptedLinear, Branch
from cldash.methods.lora import LoRA, LoRABranch, LoRAConfig


@dataclass
class PiSSAConfig(LoRAConfig):
    alpha: float = option(8.0, "scale numerator: the update is (alpha / r) B A",
                          source="PEFT's PiSSA examples use alpha = r (s = 1), arXiv 2404.02948",
                          low=0, low_open=True, high=1_000_000)
    svd_iterations: int = option(0, "0: exact SVD (PEFT 'pissa'); K > 0: randomized SVD with K subspace "
                                    "iterations (PEFT 'pissa_niter_K')", source="PEFT init_lora_weights", low=0,
                                 high=64)


def pissa_factors(weight: torch.Tensor, rank: int, scaling: float, svd_iterations: int = 0
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B0, A0)`` from the top-r SVD of `weight` ``(out, in)``, op for op as PEFT's pissa_init."""
    w = weight.to(torch.float32)
    if svd_iterations == 0:
        U, S, Vh = torch.linalg.svd(w, full_matrices=False)
        Ur, Sr, Vhr = U[:, :rank], S[:rank], Vh[:rank]
    else:
        Ur, Sr, V = torch.svd_lowrank(w, rank, niter=svd_iterations)
        Vhr = V.t()
    Sr = Sr / scaling
    A0 = torch.diag(torch.sqrt(Sr)) @ Vhr
    B0 = Ur @ torch.diag(torch.sqrt(Sr))
    return B0, A0


@register
class PiSSA(LoRA):
    name = "pissa"
    display_name = "PiSSA"
    label = "PiSSA"
    paper = "Meng, Wang, Zhang, NeurIPS 2024, arXiv 2404.02948"
    summary = ("LoRA started on the weight's top-r singular directions (the residual stays frozen), so "
               "training moves the principal subspace first. Output unchanged at step 0.")
    equation = (r"W = W_{res} + \frac{\alpha}{r} B A,\quad \frac{\alpha}{r}B_0A_0 = U_r S_r V_r^\top,\quad "
                r"\Delta W = \frac{\alpha}{r}(BA - B_0A_0)")
    Config = PiSSAConfig
    policies = ("merge", "stack", "single")
    policy_notes = {"merge": "merge, then re-run the SVD on the merged weight (the current top-r directions)",
                    "stack": "freeze, then start on the residual's top-r directions (the next r principal "
                             "directions)"}
    rewrites_base = True
    default_lr = 5e-3   # LoRA's, as the paper keeps LoRA's hyper-parameters (bench/method_default_lr.py)

    def new_branch(self, layer: AdaptedLinear, ctx: TaskContext) -> Branch:
        c = self.config
        branch = LoRABranch(layer.in_features, layer.out_features, c.rank, c.scaling(), c.dropout)
        with torch.random.fork_rng(devices=[ctx.device] if ctx.device.type == "cuda" else []):
            # svd_lowrank draws from the global generator: seed it from the run's
            torch.manual_seed(int(torch.randint(2**62, (1,), generator=ctx.generator)))
            B0, A0 = pissa_factors(layer.weight.detach(), c.rank, branch.scaling, c.svd_iterations)
        branch.to(B0.device)
        self.start_from(layer, branch, B0, A0)
        return branch


# -- the authors' regime (`--preset paper`; cldash.core.presets) ------------------------------

_PISSA = "GraphPKU/PiSSA/"

PAPER_PRESET = PaperPreset(
    paper="PiSSA (Meng, Wang, Zhang), NeurIPS 2024, arXiv 2404.02948",
    code="GraphPKU/PiSSA",
    values={
        "optimizer": Cited("adamw", _PISSA + "train.py: TrainingArguments optim default \"adamw_torch\""),
        "lr": Cited(2e-5, _PISSA + "scripts/metamath_llama2_7b/run_pissa.sh: --learning_rate 2e-5"),
        "lr_schedule": Cited("cosine", _PISSA + "scripts/metamath_llama2_7b/run_pissa.sh: "
                             "--lr_scheduler_type \"cosine\""),
        "warmup_ratio": Cited(0.03, _PISSA + "scripts/metamath_llama2_7b/run_pissa.sh: --warmup_ratio 0.03"),
        "weight_decay": Cited(0.0, _PISSA + "scripts/metamath_llama2_7b/run_pissa.sh: --weight_decay 0."),
        "max_grad_norm": Cited(1.0, _PISSA + "scripts/metamath_llama2_7b/run_pissa.sh: no --max_grad_norm, so "
                               + HF_CLIP_DEFAULT + " (configs/ds_config_zero2_no_offload.json: gradient_clipping auto)",
                               note="a library default the authors left in force, not a value they wrote"),
        "targets": Cited(("q", "k", "v", "o", "mlp"), _PISSA + "scripts/metamath_llama2_7b/run_pissa.sh: "
                         "utils/init_pissa.py --target_modules q_proj k_proj v_proj o_proj gate_proj up_proj "
                         "down_proj"),
        "method.dropout": Cited(0.0, _PISSA + "scripts/metamath_llama2_7b/run_pissa.sh: --lora_dropout 0 "
                                "(train.py: \"Must be set to 0 when using PiSSA\")"),
        "method.svd_iterations": Cited(16, _PISSA + "scripts/metamath_llama2_7b/run_pissa.sh: --init_weights "
                                       "pissa_niter_16"),
    },
    notes=(
        "Rank 128 with alpha 128 (scripts/metamath_llama2_7b/run_pissa.sh) is wider than our 64-wide layers; "
        "the scale alpha / r = 1 it gives is what our default rank 8, alpha 8 keeps (set alpha equal to any "
        "other rank).",
        "The effective batch of 128 (4 per device x 4 accumulation x 8 GPUs) is a 7B model's; ours stays 64.",
        "One epoch over 100,000 MetaMathQA examples (--sub_task metamath:100000); " + EPOCHS_RULE + ".",
    ),
)
