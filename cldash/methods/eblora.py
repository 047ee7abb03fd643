"""EBLoRA: energy-balanced low-rank adaptation (a flat update spectrum on a restricted Stiefel manifold).

"Spectral Imbalance Causes Forgetting in Low-Rank Continual Adaptation", arXiv 2602.00722 (ICML
2026); code haodotgu/EBLoRA (reference note seed-methods.md, section 1). Each task's update is

    dW_t = c s_t U_t V_t^T,   c = alpha / r,   U^T U = I,   V^T V = I,   F^T V = 0

with one learnable magnitude ``s`` per matrix, so all r singular values of ``dW_t`` equal
``|c s|``: the spectrum is exactly flat. ``U`` is ``lora_B`` (out x r), ``V^T`` is ``lora_A``
(r x in). ``F`` (in x p, orthonormal) is the basis of input directions that dominated earlier
tasks' gradients.

- **Init** (before each task): the mean gradient ``G`` of the task loss w.r.t. each weight over a
  part of the task's data, projected off the stored directions ``G^T <- (I - F F^T) G^T``; its top-r
  singular vectors give ``V`` (input side) and ``U`` (output side), and the singular values are
  *discarded*. ``s = -(a + b l / (L - 1))`` for layer l of L (0 with the UCIT defaults a = b = 0,
  so the adapter starts as a no-op); the base weight is not offset.
- **Riemannian AdamW** (each step): the Euclidean gradients of U and V are replaced by
  ``G - X G^T X`` (for V after removing the F component), an ordinary AdamW step is taken, the
  displacement of U and V is rescaled by ``sqrt(D / r)``, projected on the tangent space (and off
  F for V), and retracted by the polar map ``X <- Y Z^T`` (thin SVD ``Y S Z^T`` of ``X_old + D``).
  ``s`` is updated by plain AdamW.
- **Task boundary**: ``dW_t`` is merged into the weight (factored), then F grows GPM-style to the
  energy threshold: with a mean gradient of the task, ``M = G^T``, the leading left singular
  vectors of the residual ``(I - F F^T) M`` are appended one at a time until the captured share of
  ``||M||^2`` reaches 0.99. Which gradient is ``basis_gradient``: ``merged`` (default) estimates it
  again after training, at the merged weights; ``task_start`` reuses the gradient that initialised
  the task's V, as the released scripts do.

Where we differ from the released code, and why (all options):

- the step-rescale constant D is 4096 in the code, LLaVA's hidden size; ``step_scale_dim = 0``
  (default) uses the layer's input size, the same ratio on a model of another width;
- gradients are taken at the current weights; the released ``llava/train/extract_gradients.py``
  takes them at W0 (it loads ``model_base`` only; the lines that would load the earlier tasks'
  adapters are commented out). ``scripts/Train_UCIT/train_all.sh`` runs it twice per task, before
  training (``fixed_rank``: V's init) and after (``energy``: F) on the same 20 % of the task's data
  (evenly spaced, unshuffled), so F grows from the same gradient that initialised V:
  ``basis_gradient = task_start`` does that (at the task-start weights, which are W0 on the first
  task; the code's are W0 on every task). The default stays ``merged``
  (after training, at the merged weights): the post-task configs (``train_post/task*.json``) name
  the trained adapters in ``model_path``, so the scripts may not do what was meant, and the paper
  pages we could read do not say (the reference note marks it unclear);
- the top-r vectors come from an exact SVD within the complement of F (so V is orthogonal to F
  to rounding even when the projected gradient has rank below r), not a randomized one;
- F is capped at ``in - r`` columns (the code caps at ``in``), so that a V orthogonal to F exists.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from cldash.core.errors import ConfigError
from cldash.core.options import option
from cldash.core.presets import EPOCHS_RULE, HF_CLIP_DEFAULT, Cited, PaperPreset
from cldash.core.search import Param
from cldash.measures.spectra import LowRank
from cldash.methods.base import Method, TaskContext, register
from cldash.methods.layer import AdaptedLinear, Branch, layer_index
from cldash.methods.loraga import estimate_gradients

BASIS_GRADIENTS = ("merged", "task_start")


class FlatBranch(Branch):
    """``y += c s U (V^T x)`` with ``U = lora_B: (out, r)``, ``V^T = lora_A: (r, in)``, scalar ``s``."""

    def __init__(self, in_features: int, out_features: int, rank: int, scaling: float):
        super().__init__()
        self.rank = rank
        self.scaling = scaling
        self.lora_A = nn.Parameter(torch.zeros(rank, in_features))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank))
        self.magnitude = nn.Parameter(torch.zeros(1))

    def spec(self) -> dict:
        return {"in_features": self.lora_A.shape[1], "out_features": self.lora_B.shape[0], "rank": self.rank,
                "scaling": self.scaling}

    def forward(self, x: torch.Tensor, y: torch.Tensor, layer: AdaptedLinear) -> torch.Tensor:
        return y + (x @ self.lora_A.T) @ self.lora_B.T * (self.scaling * self.magnitude)

    def factors(self, layer: AdaptedLinear) -> LowRank:
        return LowRank(self.lora_B * (self.scaling * self.magnitude), self.lora_A)


def orthonormal_complement(F: torch.Tensor | None, n: int, like: torch.Tensor) -> torch.Tensor:
    """An orthonormal basis (n x (n - p)) of the complement of span(F) (F: n x p orthonormal)."""
    if F is None or F.shape[1] == 0:
        return torch.eye(n, dtype=like.dtype, device=like.device)
    U, _, _ = torch.linalg.svd(F.double(), full_matrices=True)
    return U[:, F.shape[1]:].to(like)


def polar(Y: torch.Tensor) -> torch.Tensor:
    """The closest matrix with orthonormal columns: ``U Vh`` of the thin SVD (computed in float64)."""
    U, _, Vh = torch.linalg.svd(Y.double(), full_matrices=False)
    return (U @ Vh).to(Y.dtype)


def grow_basis(F: torch.Tensor | None, M: torch.Tensor, threshold: float, cap: int) -> torch.Tensor:
    """GPM's energy rule: append the residual's leading left singular vectors of ``M`` (in x out)
    until the share of ``||M||_F^2`` captured by span(F) reaches `threshold`; at most `cap` columns."""
    M = M.double()
    total = float((M ** 2).sum())
    F64 = M.new_zeros(M.shape[0], 0) if F is None else F.double()
    if total == 0 or F64.shape[1] >= cap:
        return F64.to(torch.float32)
    R = M - F64 @ (F64.T @ M)
    captured = 1.0 - float((R ** 2).sum()) / total
    U, S, _ = torch.linalg.svd(R, full_matrices=False)
    new = []
    for i in range(len(S)):
        if captured >= threshold or F64.shape[1] + len(new) >= cap or S[i] <= 1e-12 * S[0]:
            break
        new.append(U[:, i])
        captured += float(S[i] ** 2) / total
    if new:
        F64 = torch.cat([F64, torch.stack(new, 1)], 1)
    return F64.to(torch.float32)


class RiemannianAdamW(torch.optim.AdamW):
    """AdamW with U and V kept on their (restricted) Stiefel manifolds (EBLoRA's optimizer).

    `manifold` maps each U or V^T parameter to ``(kind, F, scale)``: kind ``"U"`` (columns are the
    points, out x r) or ``"Vt"`` (rows, r x in; V = Vt^T), F the stored basis (or None) and scale
    the step rescale ``sqrt(D / r)``.
    """

    def __init__(self, params, manifold: dict, **kwargs):
        super().__init__(params, **kwargs)
        self.manifold = manifold

    @staticmethod
    def _points(p: torch.Tensor, kind: str) -> torch.Tensor:
        return p.T if kind == "Vt" else p

    @torch.no_grad()
    def step(self, closure=None):
        olds = {}
        for p, (kind, F, _) in self.manifold.items():
            if p.grad is None:
                continue
            X, G = self._points(p, kind), self._points(p.grad, kind)
            if F is not None:
                G = G - F @ (F.T @ G)
            G = G - X @ (G.T @ X)
            p.grad.copy_(G.T if kind == "Vt" else G)
            olds[p] = X.clone()
        loss = super().step(closure)
        for p, X_old in olds.items():
            kind, F, scale = self.manifold[p]
            D = (self._points(p, kind) - X_old) * scale
            if F is not None:
                D = D - F @ (F.T @ D)
            D = D - X_old @ (D.T @ X_old)
            Y = X_old + D
            if F is not None:
                Y = Y - F @ (F.T @ Y)
            X = polar(Y)
            p.copy_(X.T if kind == "Vt" else X)
        return loss


@dataclass
class EBLoRAConfig:
    rank: int = option(16, "rank r of each task's update", source="UCIT configs: r = 16", low=1, high=65_536)
    alpha: float = option(32.0, "scale numerator: dW = (alpha / r) s U V^T", source="UCIT configs: alpha = 2r = 32",
                          low=0, low_open=True, high=1_000_000)
    energy: float = option(0.99, "GPM energy threshold for growing the protected basis F; 0: F never grows (the "
                                 "flat spectrum alone, without the subspace memory: an ablation, not the authors')",
                           source="the code's 0.99", low=0.0, high=1.0)
    init_a: float = option(0.0, "magnitude init s = -(a + b l / (L - 1)): a", source="UCIT configs: a = b = 0 "
                                                                                     "(MLLM-DCL: 0.002)",
                           low=-1000, high=1000)
    init_b: float = option(0.0, "magnitude init s = -(a + b l / (L - 1)): b",
                           source="UCIT configs: 0 (MLLM-DCL: 0.006)",
                           low=-1000, high=1000)
    step_scale_dim: int = option(0, "D of the step rescale sqrt(D / r); 0: the layer's input size (the code's "
                                    "4096 is LLaVA's hidden size)",
                                 source="llava/train/llava_trainer.py: grad_scaling=4096; riemannian_adam.py "
                                        "post_step divides the step by sqrt(r / 4096)", low=0, high=10_000_000)
    basis_gradient: str = option("merged", "the gradient F grows from after a task: merged (estimated again after "
                                           "training, at the merged weights) or task_start (the one that "
                                           "initialised the task's V)",
                                 source="merged: ours; task_start: scripts/Train_UCIT/train_all.sh runs "
                                        "llava/train/extract_gradients.py at W0 on the same data before and "
                                        "after each task",
                                 choices=BASIS_GRADIENTS)
    grad_batches: int = option(8, "batches used to estimate each task's gradient (for the init and for F)",
                               source="the code uses 20 % of a task's data: 8 x 32 is 20 % of a digits task",
                               low=1, high=10_000)
    grad_batch_size: int = option(32, "examples per gradient-estimation batch", low=1, high=65_536)


@register
class EBLoRA(Method):
    name = "eblora"
    display_name = "EBLoRA"
    label = "EBLoRA"
    paper = "Spectral Imbalance Causes Forgetting in Low-Rank Continual Adaptation, arXiv 2602.00722 (ICML 2026)"
    summary = ("Each task's update is a magnitude times an orthonormal U V^T (a flat spectrum), started on the "
               "task gradient's top directions, trained by Riemannian AdamW with V kept orthogonal to earlier "
               "tasks' gradient directions F; merged per task, F grown to 99 % energy.")
    equation = (r"\Delta W_t = \tfrac{\alpha}{r} s_t U_t V_t^\top,\ U^\top U = V^\top V = I_r,\ "
                r"F_{t-1}^\top V_t = 0")
    Config = EBLoRAConfig
    default_lr = 5e-3
    # what a tuning search varies beside the learning rate (cldash.analysis.tuning): the energy that decides how
    # fast the protected basis F grows, around the UCIT configs' 0.99
    search_space = (Param("energy", "choice", choices=(0.9, 0.95, 0.99), source="UCIT configs: 0.99"),)
    own_optimizer = "a Riemannian AdamW on the Stiefel manifold"

    def __init__(self, config, policy: str | None = None):
        super().__init__(config, policy)
        self.bases: dict[str, torch.Tensor] = {}          # F per layer (in x p)
        self.basis_history: dict[str, list[int]] = {}      # rank of F after each task

    def check_layers(self, shapes: dict[str, tuple[int, int]]) -> None:
        r = self.config.rank
        for name, (out_f, in_f) in shapes.items():
            if r > min(out_f, in_f):
                raise ConfigError(f"eblora.rank {r} is larger than layer {name} ({out_f} x {in_f}); choose a rank "
                                  f"of at most {min(out_f, in_f)}.", "eblora.rank")

    def scale(self) -> float:
        return self.config.alpha / self.config.rank

    def basis(self, name: str) -> torch.Tensor | None:
        F = self.bases.get(name)
        return F if F is not None and F.shape[1] else None

    @torch.no_grad()
    def before_task(self, ctx: TaskContext) -> None:
        c = self.config
        grads = estimate_gradients(ctx.model, self.layers, ctx, c.grad_batches, c.grad_batch_size)
        # kept for the boundary when F grows from this gradient (dropped there)
        self.start_gradients = grads if c.basis_gradient == "task_start" else {}
        depth = max(layer_index(n, 0) for n in self.layers) + 1
        for name, layer in self.layers.items():
            G = grads[name].double()                                          # (out, in)
            C = orthonormal_complement(self.basis(name), layer.in_features, G)  # (in, in - p)
            # top-r singular vectors of G^T restricted to the complement of F; singular values dropped
            P, _, Qh = torch.linalg.svd(C.T @ G.T, full_matrices=False)      # (in - p, k), (k, out)
            V = (C @ P[:, :c.rank]).float()
            U = Qh[:c.rank].T.float()
            branch = FlatBranch(layer.in_features, layer.out_features, c.rank, self.scale()).to(layer.w0)
            branch.lora_A.copy_(V.T)
            branch.lora_B.copy_(U)
            ell = layer_index(name, 0)
            branch.magnitude.fill_(-(c.init_a + c.init_b * ell / max(1, depth - 1)))
            layer.add_branch(branch)

    def make_optimizer(self, params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
        manifold = {}
        for name, layer in self.layers.items():
            branch = layer.branches[-1]
            dim = self.config.step_scale_dim or layer.in_features
            scale = math.sqrt(dim / self.config.rank)
            manifold[branch.lora_B] = ("U", None, scale)
            F = self.basis(name)
            manifold[branch.lora_A] = ("Vt", None if F is None else F.to(branch.lora_A), scale)
        return RiemannianAdamW(params, manifold, lr=lr, weight_decay=weight_decay)

    @torch.no_grad()
    def after_task(self, ctx: TaskContext) -> None:
        for layer in self.layers.values():
            layer.merge_branch(-1)
        c = self.config
        if c.basis_gradient == "task_start":
            grads, self.start_gradients = self.start_gradients, {}
        else:
            grads = estimate_gradients(ctx.model, self.layers, ctx, c.grad_batches, c.grad_batch_size)
        for name, layer in self.layers.items():
            F = grow_basis(self.basis(name), grads[name].T, c.energy, layer.in_features - c.rank)
            self.bases[name] = F.to(layer.w0)
            self.basis_history.setdefault(name, []).append(F.shape[1])

    # -- read-outs ------------------------------------------------------------------------------
    def current(self) -> dict[str, FlatBranch]:
        return {n: layer.branches[-1] for n, layer in self.layers.items() if len(layer.branches)}

    @torch.no_grad()
    def module_scalars(self) -> dict[str, dict[str, float]]:
        out = {"magnitude": {}, "U_orthogonality_error": {}, "V_orthogonality_error": {}, "F_leakage": {},
               "spectrum_flatness": {}, "F_rank": {n: float(self.bases[n].shape[1]) if n in self.bases else 0.0
                                                   for n in self.layers}}
        for name, b in self.current().items():
            U, V = b.lora_B.double(), b.lora_A.double().T
            eye = torch.eye(b.rank, dtype=torch.float64)
            out["magnitude"][name] = float(b.scaling * b.magnitude)
            out["U_orthogonality_error"][name] = float((U.T @ U - eye).norm())
            out["V_orthogonality_error"][name] = float((V.T @ V - eye).norm())
            F = self.basis(name)
            out["F_leakage"][name] = float((F.double().T @ V).norm()) if F is not None else 0.0
            if float(b.magnitude.abs()) > 0:
                s = torch.linalg.svdvals(b.factors(None).dense().double())
                out["spectrum_flatness"][name] = float(s[0] / s[b.rank - 1])
        return out

    def extra_state(self) -> dict:
        return {"bases": {n: F.clone() for n, F in self.bases.items()},
                "basis_history": {n: list(h) for n, h in self.basis_history.items()}}

    def load_extra_state(self, state: dict) -> None:
        self.bases = {n: F.clone() for n, F in state.get("bases", {}).items()}
        self.basis_history = {n: list(h) for n, h in state.get("basis_history", {}).items()}


# -- the authors' regime (`--preset paper`; cldash.core.presets) ------------------------------

_EBLORA = "haodotgu/EBLoRA/"
_UCIT = _EBLORA + "configs/model_configs/LLaVA/UCIT/"

# The preset grows F from the task-start gradient (`basis_gradient` "task_start").
PAPER_PRESET = PaperPreset(
    paper="EBLoRA: Spectral Imbalance Causes Forgetting in Low-Rank Continual Adaptation, arXiv 2602.00722 "
          "(ICML 2026)",
    code="haodotgu/EBLoRA",
    values={
        "optimizer": Cited("adamw", _EBLORA + "llava/train/llava_trainer.py: create_optimizer builds "
                           "RiemannianAdamW (llava/train/riemannian_adam.py)",
                           note="the method's own Riemannian AdamW; the run's optimizer stays adamw"),
        "lr": Cited(2e-4, _UCIT + "train/task1.json ... task5.json: \"lr\": 2e-4"),
        "lr_schedule": Cited("cosine", _EBLORA + "scripts/Train_UCIT/Task1.sh ... Task6.sh: "
                             "--lr_scheduler_type \"cosine\""),
        "warmup_ratio": Cited(0.03, _EBLORA + "scripts/Train_UCIT/Task1.sh ... Task6.sh: --warmup_ratio 0.03"),
        "weight_decay": Cited(0.1, _EBLORA + "scripts/Train_UCIT/Task1.sh ... Task6.sh: --weight_decay 0.1"),
        "batch_size": Cited(64, _UCIT + "train/task*.json: gpu_num 4 x batch_size 8 x grad_acc 2 = 64",
                            note="the authors' effective batch is already our 64"),
        "max_grad_norm": Cited(1.0, _EBLORA + "scripts/Train_UCIT/Task1.sh ... Task6.sh: no --max_grad_norm, "
                               "so " + HF_CLIP_DEFAULT,
                               note="a library default the authors left in force, not a value they wrote"),
        "targets": Cited(("q", "k", "v", "o", "mlp"), _EBLORA + "llava/train/train.py: find_all_linear_names, "
                         "every nn.Linear of the language model but lm_head"),
        "method.rank": Cited(16, _UCIT + "train/task*.json: \"rank\": 16"),
        "method.alpha": Cited(32.0, _EBLORA + "scripts/Train_UCIT/Task1.sh ... Task6.sh: "
                              "--lora_alpha $((RANK * 2))"),
        "method.energy": Cited(0.99, _UCIT + "train_post/task*.json: \"energy_threshold\": 0.99"),
        "method.init_a": Cited(0.0, _UCIT + "train/task*.json: \"init_alpha\": 0.0"),
        "method.init_b": Cited(0.0, _UCIT + "train/task*.json: \"init_beta\": 0.0"),
        "method.basis_gradient": Cited("task_start", _EBLORA + "scripts/Train_UCIT/train_all.sh: "
                                       "extract_gradients.py runs before a task (fixed_rank: V) and after it "
                                       "(energy: F) on the same data, both loading only model_base"),
        "method.step_scale_dim": Cited(4096, _EBLORA + "llava/train/llava_trainer.py: RiemannianAdamW(..., "
                                       "grad_scaling=float(4096)); llava/train/riemannian_adam.py divides each "
                                       "U / V displacement by sqrt(r / 4096)",
                                       note="4096 is LLaVA-7B's hidden size, a constant in the code for every "
                                            "layer; kept, so on a 64-wide backbone the step of U and V is "
                                            "sqrt(4096 / 16) = 16 times AdamW's, where step_scale_dim 0 (the "
                                            "layer's width, the code's ratio on LLaVA) gives 2"),
    },
    notes=(
        "LoRA dropout 0.05 (llava/train/train.py: lora_dropout default) does not carry over: our EBLoRA branch "
        "has no dropout.",
        "UCIT trains 3 epochs on tasks 1, 3, 4 and 5 and 1 epoch on tasks 2 and 6 (train/task*.json), the last "
        "task at lr 2e-5; " + EPOCHS_RULE + ", and the rate is 2e-4 on every task.",
        "The multimodal projector trains too, at --mm_projector_lr 2e-5; our backbones have no projector.",
        "The gradients for the init and for growing F are taken at the pre-trained weights "
        "(llava/train/extract_gradients.py loads only model_base; the lines loading earlier tasks' LoRA are "
        "commented out) on 20 % of the task's data (scripts/Train_UCIT/train_all.sh: 0.2); ours are taken at "
        "the current merged weights in the common regime; this preset takes both from the gradient at the "
        "task's start (basis_gradient task_start), which is W0 on the first task and the merged weights of "
        "the earlier tasks after it (we keep no second copy of W0 to take gradients at).",
        "The MLLM-DCL benchmark uses rank 32, lr 2e-5 and init a 0.002, b 0.006 "
        "(configs/model_configs/LLaVA/MLLM-DCL/train/task*.json); this preset follows UCIT.",
    ),
)
