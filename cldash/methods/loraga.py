"""LoRA-GA: LoRA initialised from the singular vectors of an estimated full-weight gradient.

Wang, Yu, Li, NeurIPS 2024, arXiv 2407.05000. Before training, estimate each target weight's
gradient ``G = E[dL/dW]`` on a few batches; take a randomized SVD ``G ~ U S V^T`` (``q = min(4r,
min(m, n))``, 4 power iterations) and split its first 2r triplets between the factors
(``direction``, default ``ArB2r``: ``A0 = V^T[:r]``, ``B0 = U[:, r:2r]``), then compensate the base,
``W_base = W - s B0 A0``, so the output is unchanged and the first step of LoRA approximates a
step of full fine-tuning (the paper's eq. (9)-(11)).

Which form we follow: **PEFT 0.21.2's** (``LoraLayer.lora_ga_init``) by default, the authors'
on request (``init_form``). The two differ (reference note baseline-methods.md, section 2.5 step
4): PEFT multiplies B0 by ``diag(S[r:2r])`` (the singular values of the B half) and then, for
``scale="stable"``, multiplies only B0 by ``d_out^(1/4) / sqrt(gamma)``; the authors' code
(Outsider565/LoRA-GA, ``peft/src/peft/tuners/lora/layer.py::lora_ga_init``) keeps the unit
singular vectors and multiplies both A0 and B0 by that factor (``gd``: both divided by s,
``weightS``: both times the mean of ``sqrt(S_W[:r] / s)``; ``random`` draws disjoint indices for A0
and B0). Both then offset the base by ``s B0 A0`` (s = alpha / r, multiplied, not divided). So the
authors' stable B0 has norm ``sqrt(r) d_out^(1/4) / sqrt(gamma)`` whatever the data (2.0 on a
64-wide layer at r = 8), PEFT's the size of the gradient's singular values (0.003 on average on the
tests' random-weight tiny ViT). The parity test checks the PEFT form against PEFT on the same
gradient and the same random draw. One deliberate difference: for the stable factor PEFT (and the
authors' code) read ``d_out`` as the raw weight's first dimension, which for a transformers
``Conv1D`` (stored ``(in, out)``) is ``d_in``; we use the layer's real ``d_out`` (the paper's), so
on Conv1D layers our B0 is PEFT's times ``(d_out / d_in)^(1/4)`` (tested).

Continual extension (ours, not the paper's): the gradient is re-estimated on each new task's
data and a fresh adapter initialised from it; ``merge`` (default) folds the previous adapter
into the weight first, ``stack`` freezes it. The estimation batches come from the task's own
training stream (``grad_batches`` x ``grad_batch_size`` examples, 128 by default as in the
authors' example of 2 x 64). The layer's update is ``s (B A - B0 A0)`` against W0, factored.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cldash.core.errors import ConfigError
from cldash.core.options import option
from cldash.core.presets import EPOCHS_RULE, Cited, PaperPreset
from cldash.core.search import Param
from cldash.methods.base import TaskContext, register
from cldash.methods.layer import AdaptedLinear, Branch
from cldash.methods.lora import LoRA, LoRABranch, LoRAConfig

DIRECTIONS = ("ArB2r", "ArBr", "A2rBr", "random")
SCALES = ("stable", "weight_svd", "gd_scale", "unit")
FORMS = ("peft", "authors")


@dataclass
class LoRAGAConfig(LoRAConfig):
    direction: str = option("ArB2r", "how the gradient's first 2r singular vectors are split between A0 and B0",
                            source="PEFT LoraGAConfig default; arXiv 2407.05000", choices=DIRECTIONS)
    scale: str = option("stable", "scaling of the initial factors", source="PEFT LoraGAConfig default",
                        choices=SCALES)
    init_form: str = option("peft", "whose lora_ga_init the factors follow: peft (B0 = U S, only B0 scaled) or authors "
                                    "(unit singular vectors, A0 and B0 scaled alike)",
                            source="PEFT 0.21.2 LoraLayer.lora_ga_init; Outsider565/LoRA-GA "
                                   "peft/src/peft/tuners/lora/layer.py lora_ga_init", choices=FORMS)
    stable_gamma: float = option(16.0, "gamma of the 'stable' scale: B0 (and A0 in the authors' form) is multiplied "
                                       "by d_out^(1/4) / sqrt(gamma)",
                                 source="PEFT LoraGAConfig default; arXiv 2407.05000", low=0, low_open=True,
                                 high=1_000_000)
    grad_batches: int = option(4, "batches used to estimate each task's gradient",
                               source="128 examples in all, as the authors' example (2 x 64)", low=1, high=10_000)
    grad_batch_size: int = option(32, "examples per gradient-estimation batch", low=1, high=65_536)


def loraga_factors(grad: torch.Tensor, weight: torch.Tensor, rank: int, scaling: float, direction: str,
                   scale: str, stable_gamma: float, form: str = "peft") -> tuple[torch.Tensor, torch.Tensor]:
    """``(B0, A0)`` from an estimated gradient ``(out, in)``, op for op as PEFT 0.21.2's lora_ga_init
    (``form="peft"``) or as the authors' (``form="authors"``).

    Draws from the global random generator (``torch.svd_lowrank``, and ``randperm`` for the
    ``random`` direction); callers seed it.
    """
    grad = grad.to(torch.float32)
    U, S, V = torch.svd_lowrank(grad, q=min(4 * rank, min(grad.shape)), niter=4)
    Vh = V.t()
    U, S, Vh = U[:, :2 * rank], S[:2 * rank], Vh[:2 * rank, :]
    if direction == "ArBr":
        A0, B0, S_B = Vh[1:2 * rank:2, :], U[:, 0:2 * rank:2], S[0:2 * rank:2]
    elif direction == "A2rBr":
        A0, B0, S_B = Vh[rank:2 * rank, :], U[:, :rank], S[:rank]
    elif direction == "ArB2r":
        A0, B0, S_B = Vh[:rank, :], U[:, rank:2 * rank], S[rank:2 * rank]
    elif form == "authors":  # random: the authors draw disjoint halves of a permutation for A0 and B0
        perm = torch.randperm(2 * rank)
        A0, B0 = Vh[perm[:rank], :], U[:, perm[rank:]]
    else:  # random
        idx = torch.randperm(2 * rank)[:rank]
        A0, B0, S_B = Vh[idx, :], U[:, idx], S[idx]
    if form == "authors":
        return authors_scaled(B0, A0, weight, rank, scaling, scale, stable_gamma)
    B0 = B0 @ torch.diag(S_B)
    if scale == "stable":
        B0 = B0 * (weight.shape[0] ** 0.25 / stable_gamma ** 0.5)
    elif scale == "weight_svd":
        _, weight_S, _ = torch.svd_lowrank(weight.to(torch.float32), q=rank, niter=4)
        if S_B[0] > 0:
            B0 = B0 * (weight_S[0] / S_B[0])
    elif scale == "gd_scale":
        A0, B0 = A0 / scaling, B0 / scaling
    return B0.contiguous(), A0.contiguous()


def authors_scaled(B0: torch.Tensor, A0: torch.Tensor, weight: torch.Tensor, rank: int, scaling: float, scale: str,
                   stable_gamma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The authors' scaling of the unit singular vectors: one factor for both A0 and B0
    (Outsider565/LoRA-GA ``lora_ga_init``: ``stable``, ``gd``, ``weightS``, ``unit``)."""
    if scale == "stable":   # the output's scale depends on d_out only (their comment)
        factor = weight.shape[0] ** 0.25 / stable_gamma ** 0.5
    elif scale == "gd_scale":
        factor = 1.0 / scaling
    elif scale == "weight_svd":
        _, weight_S, _ = torch.svd_lowrank(weight.to(torch.float32), q=min(4 * rank, min(weight.shape)), niter=4)
        factor = float((weight_S[:rank] / scaling).sqrt().mean())
    else:   # unit
        factor = 1.0
    return (B0 * factor).contiguous(), (A0 * factor).contiguous()


def estimate_gradients(model: torch.nn.Module, layers: dict[str, AdaptedLinear], ctx: TaskContext,
                       n_batches: int, batch_size: int) -> dict[str, torch.Tensor]:
    """Mean gradient of the task loss w.r.t. each layer's base weight, ``(out, in)``.

    Only the target weights require grad during the estimation (as PEFT's ``estimate_gradients``);
    every parameter's requires_grad and the model's train/eval mode are restored afterwards.
    """
    was_training = model.training
    saved = {p: p.requires_grad for p in model.parameters()}
    saved_grads = {p: p.grad for p in model.parameters()}
    for p in model.parameters():
        p.requires_grad_(False)
        p.grad = None
    for layer in layers.values():
        layer.base.weight.requires_grad_(True)
    model.train()
    try:
        with torch.enable_grad():
            for batch in ctx.batches(n_batches, batch_size):
                ctx.loss_fn(batch).backward()
        grads = {}
        for name, layer in layers.items():
            g = layer.base.weight.grad.detach() / n_batches
            grads[name] = g.T if layer.transposed else g
    finally:
        for p, flag in saved.items():
            p.requires_grad_(flag)
            p.grad = saved_grads[p]
        model.train(was_training)
    return grads


@register
class LoRAGA(LoRA):
    name = "loraga"
    display_name = "LoRA-GA"
    label = "LoRA-GA"
    paper = "Wang, Yu, Li, NeurIPS 2024, arXiv 2407.05000 (scaling as PEFT 0.21.2, or the authors' code)"
    summary = ("LoRA started on the top singular vectors of the task's estimated full gradient, with the "
               "base compensated, so its first step approximates a full fine-tuning step. Re-estimated per task.")
    equation = (r"G \approx U S V^\top,\ A_0 = V_{[:r]}^\top,\ B_0 = \gamma_s U_{[:,r:2r]} S_{[r:2r]},\quad "
                r"W = (W_0 - \frac{\alpha}{r}B_0A_0) + \frac{\alpha}{r} B A")
    Config = LoRAGAConfig
    policies = ("merge", "stack", "single")
    policy_notes = {"merge": "merge, then re-estimate the gradient on the new task and start a fresh adapter",
                    "stack": "freeze, then re-estimate the gradient on the new task and add a fresh adapter",
                    "single": "estimate the gradient on the first task only"}
    default_lr = 5e-3
    # searched beside the learning rate: whose init form, and the stable scale's gamma (PEFT default 16)
    search_space = (Param("init_form", "choice", choices=FORMS, source="PEFT and Outsider565/LoRA-GA"),
                    Param("stable_gamma", "log", 1.0, 256.0, source="PEFT LoraGAConfig default 16"))
    rewrites_base = True

    def check_layers(self, shapes: dict[str, tuple[int, int]]) -> None:
        for name, (out_f, in_f) in shapes.items():
            if 2 * self.config.rank > min(out_f, in_f):
                raise ConfigError(
                    f"loraga.rank {self.config.rank} needs 2 x {self.config.rank} gradient singular vectors but "
                    f"layer {name} ({out_f} x {in_f}) has {min(out_f, in_f)}; choose a rank of at most "
                    f"{min(out_f, in_f) // 2}.", "loraga.rank")

    def add_branches(self, ctx: TaskContext) -> None:
        c = self.config
        self.gradients = self.task_gradients(ctx)
        with torch.random.fork_rng(devices=[ctx.device] if ctx.device.type == "cuda" else []):
            # the randomized SVD draws from the global generator: seed it from the run's
            torch.manual_seed(int(torch.randint(2**62, (1,), generator=ctx.generator)))
            super().add_branches(ctx)
        self.gradient_energy = {name: top_energy(g, 2 * c.rank) for name, g in self.gradients.items()}
        del self.gradients

    def task_gradients(self, ctx: TaskContext) -> dict[str, torch.Tensor]:
        """The gradient each layer's init comes from: the task loss's, estimated (SLICE reconciles it)."""
        c = self.config
        return estimate_gradients(ctx.model, self.layers, ctx, c.grad_batches, c.grad_batch_size)

    def new_branch(self, layer: AdaptedLinear, ctx: TaskContext) -> Branch:
        c = self.config
        branch = LoRABranch(layer.in_features, layer.out_features, c.rank, c.scaling(), c.dropout)
        grad = self.gradients[layer.name]
        B0, A0 = loraga_factors(grad, layer.weight.detach(), c.rank, branch.scaling, c.direction, c.scale,
                                c.stable_gamma, c.init_form)
        branch.to(grad.device)
        # PEFT rounds the offset as s * (B0 @ A0); do the same so the base weight matches bit for bit
        self.start_from(layer, branch, B0, A0, offset=branch.scaling * (B0 @ A0))
        return branch

    def module_scalars(self) -> dict[str, dict[str, float]]:
        out = super().module_scalars()
        # share of the estimated gradient's energy in its top 2r directions (how well rank 2r can follow it)
        out["gradient_top2r_energy"] = dict(getattr(self, "gradient_energy", {}))
        return out

    def extra_state(self) -> dict:
        return {"gradient_energy": dict(getattr(self, "gradient_energy", {}))}

    def load_extra_state(self, state: dict) -> None:
        self.gradient_energy = dict(state.get("gradient_energy", {}))


def top_energy(M: torch.Tensor, k: int) -> float:
    """Share of ``||M||_F^2`` in the top-k singular values."""
    s = torch.linalg.svdvals(M.double())
    total = float((s ** 2).sum())
    return float((s[:k] ** 2).sum()) / total if total > 0 else float("nan")


# -- the authors' regime (`--preset paper`; cldash.core.presets) ------------------------------

_LORAGA = "Outsider565/LoRA-GA/"

# The preset uses the authors' form of the init (`init_form` "authors").
PAPER_PRESET = PaperPreset(
    paper="LoRA-GA (Wang, Yu, Li), NeurIPS 2024, arXiv 2407.05000",
    code="Outsider565/LoRA-GA",
    values={
        "optimizer": Cited("adamw", _LORAGA + "examples/utils.py: train_text_to_text_model, optim "
                           "\"adamw_torch\""),
        "lr": Cited(1e-4, _LORAGA + "examples/float_t5_sst2.py: learning_rate=1e-4 (T5-base on SST-2)"),
        "lr_schedule": Cited("cosine", _LORAGA + "examples/float_t5_sst2.py: lr_scheduler_type=\"cosine\""),
        "warmup_ratio": Cited(0.03, _LORAGA + "examples/float_t5_sst2.py: warmup_ratio=0.03"),
        "weight_decay": Cited(0.0, _LORAGA + "examples/float_t5_sst2.py: weight_decay=0.0"),
        "max_grad_norm": Cited(1.0, _LORAGA + "examples/float_t5_sst2.py: max_grad_norm=1.0"),
        "batch_size": Cited(32, _LORAGA + "examples/float_t5_sst2.py: per_device_batch_size=32, one process"),
        "targets": Cited(("q", "k", "v", "o", "mlp"), _LORAGA + "examples/utils.py: find_all_linear_modules, "
                         "every nn.Linear but lm_head and embed_tokens"),
        "method.rank": Cited(32, _LORAGA + "examples/float_t5_sst2.py: main(lora_rank=32)",
                             note="its 2 x 32 gradient singular vectors fill our 64-wide layers exactly"),
        "method.alpha": Cited(8.0, _LORAGA + "examples/float_t5_sst2.py: main(lora_alpha=8)"),
        "method.direction": Cited("ArB2r", _LORAGA + "peft/src/peft/tuners/lora/config.py: LoraGAConfig "
                                  "direction default \"ArB2r\""),
        "method.scale": Cited("stable", _LORAGA + "peft/src/peft/tuners/lora/config.py: LoraGAConfig scale "
                              "default \"stable\""),
        "method.stable_gamma": Cited(16.0, _LORAGA + "peft/src/peft/tuners/lora/config.py: LoraGAConfig "
                                     "stable_gamma default 16"),
        "method.init_form": Cited("authors", _LORAGA + "peft/src/peft/tuners/lora/layer.py: lora_ga_init keeps "
                                  "the unit singular vectors (A = V[:r], B = U[:, r:2r]) and scales both by "
                                  "d_out^(1/4) / sqrt(gamma), then W -= scaling * B @ A"),
    },
    notes=(
        "The authors' \"stable\" scale (peft/src/peft/tuners/lora/layer.py) multiplies both A0 and B0 by "
        "d_out^(1/4) / sqrt(gamma) and drops the gradient's singular values; ours follows PEFT 0.21.2 (B0 "
        "carries diag(S) and only B0 is rescaled) unless init_form is \"authors\", which this preset sets.",
        "The gradient is estimated on 128 examples (examples/float_t5_sst2.py: sample_size=128, iters 64 x "
        "bsz 2); our default of 4 batches of 32 is the same 128 examples.",
        "One epoch (num_train_epochs=1); " + EPOCHS_RULE + ".",
        "LLaMA-2-7B on MetaMathQA (examples/float_llama2-7b_metamath.py) trains at lr 2e-5 and batch 128 with "
        "the same rank, alpha, schedule and clipping; this preset follows T5-base, the smaller model.",
    ),
)
