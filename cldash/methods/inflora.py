"""InfLoRA: interference-free low-rank adaptation.

Liang & Li, CVPR 2024, arXiv 2404.00228; code liangyanshuo/InfLoRA (``methods/inflora.py``:
``_train``, ``update_DualGPM``; ``models/vit_inflora.py``). Each adapted weight is::

    W = W0 + sum_{i<=t} B_i A_i        (no alpha / r factor)

where ``A_t: (r, in)`` is *designed* before task t and frozen, and only ``B_t: (out, r)`` (zero at
init) is trained (the paper's eq. (3)-(5); the paper calls the designed matrix B and the trained
one A, the code and we call them A = down, B = up). Because every row of ``A_t`` is orthogonal to
the input subspace that earlier tasks used (the memory M), the new update leaves the outputs on
old inputs (as far as they lie in M) unchanged, and training ``B_t`` is fine-tuning W inside that
subspace.

Design of ``A_t`` (before task t): pass ``cov_batches`` batches of the task's training data through
the current model and accumulate, per adapted layer, ``C_t = mean x x^T`` over every token's input
(``in x in``); project it with the memory, ``C_hat = (I - M M^T) C_t`` ("remove" mode, M = the old
input subspace) or ``C_hat = M M^T C_t`` ("retain" mode, M = the still-free complement); then
``A_t = U[:, :r]^T / sqrt(3)`` with U the left singular vectors of ``C_hat`` (eq. (8) and the code's
1/sqrt(3)). One deviation, for degenerate cases only: directions whose singular value is at
rounding level (the free subspace has fewer than r directions the data reaches) are left as zero
rows rather than the SVD's arbitrary completion, which could point into M.

DualGPM memory (after task t, the code's ``update_DualGPM``): recompute ``C_t`` with the trained
model and take the threshold ``eps = lamb + (lame - lamb) (t - 1) / T`` -- the code's 0-based task
index; the reference note writes t / T, which would make the last task's threshold lame = 1. The
energy of a direction is the squared singular value of C_t (the code's criterion; on this small model
it leaves only a few directions in the memory, so ``energy="linear"`` -- the covariance eigenvalue,
GPM's original criterion on the representation matrix -- is offered as an option). After the first
task M holds the top-k directions with cumulative energy share below eps. In remove mode the
leading directions of ``(I - M M^T) C_t`` are appended until M explains eps of C_t's energy; in
retain mode the leading directions of ``M M^T C_t`` are removed from M while the free energy stays
at least ``1 - eps``. A remove memory with more than in/2 columns is replaced by its complement
and the layer switches to retain mode (the code's summary step).

Old pairs stay as frozen branches (merging them would be exact, since they never train again);
the boundary behaviour is the method's own, so there is no policy. Read-outs per module: the
dimension of the old-task input subspace ``memory_dim`` (k in remove mode, in - k in retain mode)
and its share ``memory_fraction`` of the input size -- the rank history, changing at each boundary
-- and the interference ratio ``||dW_t P_old||_F / ||dW_t||_F`` of the current task's update against
the old input subspace (P_old = M M^T in remove mode, I - M M^T in retain mode), which stays ~0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cldash.core.errors import ConfigError
from cldash.core.options import option
from cldash.core.presets import EPOCHS_RULE, Cited, PaperPreset
from cldash.measures.spectra import LowRank
from cldash.methods.base import Method, TaskContext, register
from cldash.methods.layer import AdaptedLinear, Branch
from cldash.methods.lora import check_rank

ENERGIES = ("squared", "linear")


class InfLoRABranch(Branch):
    """``y += B (A x)`` with the designed ``A: (r, in)`` a frozen buffer and ``B: (out, r)`` trainable."""

    def __init__(self, in_features: int, out_features: int, rank: int):
        super().__init__()
        self.rank = rank
        self.register_buffer("lora_A", torch.zeros(rank, in_features))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank))

    def spec(self) -> dict:
        return {"in_features": self.lora_A.shape[1], "out_features": self.lora_B.shape[0], "rank": self.rank}

    def forward(self, x: torch.Tensor, y: torch.Tensor, layer: AdaptedLinear) -> torch.Tensor:
        return y + F.linear(F.linear(x.to(self.lora_B.dtype), self.lora_A), self.lora_B).to(y.dtype)

    def factors(self, layer: AdaptedLinear) -> LowRank:
        return LowRank(self.lora_B, self.lora_A)


@dataclass
class InfLoRAConfig:
    rank: int = option(10, "rank r of each task's pair B_t A_t",
                       source="InfLoRA configs/cifar100_inflora.json (rank 10)",
                       low=1, high=65_536)
    lamb: float = option(0.95, "energy threshold lambda_b of the memory after the first task",
                         source="InfLoRA configs/cifar100_inflora.json (lamb 0.95; 0.98 for ImageNet-R)",
                         low=0.0, low_open=True, high=1.0)
    lame: float = option(1.0, "energy threshold lambda_e the memory's threshold grows to over the tasks",
                         source="InfLoRA configs (lame 1.0)", low=0.0, low_open=True, high=1.0)
    energy: str = option("squared", "energy of a covariance direction in the memory's threshold: its squared singular "
                         "value (the code, applied to the covariance) or the singular value itself (= the squared "
                         "singular value of the representation matrix, GPM's original criterion)",
                         source="code methods/inflora.py update_DualGPM; GPM: Saha et al., arXiv 2103.09762",
                         choices=ENERGIES)
    cov_batches: int = option(8, "batches used to estimate each layer's input covariance (before and after a task)",
                              source="our choice; the code uses one pass over the task's training set", low=1,
                              high=10_000)
    cov_batch_size: int = option(64, "examples per covariance batch", low=1, high=65_536)

    def check(self, prefix: str) -> None:
        if self.lame < self.lamb:
            raise ConfigError(f"{prefix}.lame {self.lame:g} is below {prefix}.lamb {self.lamb:g}; the memory's "
                              f"threshold grows from lamb to lame, so choose a lame of at least {self.lamb:g}.",
                              f"{prefix}.lame")


@torch.no_grad()
def input_covariances(model: nn.Module, layers: dict[str, AdaptedLinear], ctx: TaskContext, n_batches: int,
                      batch_size: int) -> dict[str, torch.Tensor]:
    """``mean x x^T`` of each layer's inputs over every token of `n_batches` task batches, ``(in, in)`` float64."""
    sums = {name: torch.zeros(layer.in_features, layer.in_features, dtype=torch.float64, device=layer.w0.device)
            for name, layer in layers.items()}
    counts = dict.fromkeys(layers, 0)

    def hook(name):
        def record(module, inputs, output):
            x = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).double()
            sums[name].add_(x.T @ x)
            counts[name] += x.shape[0]
        return record

    handles = [layer.register_forward_hook(hook(name)) for name, layer in layers.items()]
    was_training = model.training
    model.eval()
    try:
        for batch in ctx.batches(n_batches, batch_size):
            ctx.loss_fn(batch)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return {name: sums[name] / max(counts[name], 1) for name in layers}


def designed_down_projection(C: torch.Tensor, memory: torch.Tensor | None, mode: str, rank: int) -> torch.Tensor:
    """``A_t = U[:, :r]^T / sqrt(3)`` from the projected covariance (float64 in, float64 out)."""
    if memory is not None:
        MMt_C = memory @ (memory.T @ C)
        C = C - MMt_C if mode == "remove" else MMt_C
    U, S, _ = torch.linalg.svd(C)
    A = U[:, :rank].T / math.sqrt(3)
    # directions the projected data does not reach are SVD filler that may point into M: zero them
    tol = S.shape[0] * torch.finfo(torch.float64).eps * max(float(S[0]), 1e-300) * 1e3
    A[S[:rank] <= tol] = 0.0
    return A


def dual_gpm_update(C: torch.Tensor, memory: torch.Tensor | None, mode: str, eps: float,
                    energy: str = "squared") -> tuple[torch.Tensor, str]:
    """One DualGPM step (the code's ``update_DualGPM`` for one layer); returns the new (memory, mode).

    A direction's energy is its singular value of C squared (``energy="squared"``, the code) or not
    (``"linear"``: the eigenvalue of the covariance, GPM's criterion on the representation matrix)."""
    n = C.shape[0]
    power = 2 if energy == "squared" else 1
    U1, S1, _ = torch.linalg.svd(C)
    total = float((S1 ** power).sum())
    if total == 0:
        return (memory if memory is not None else C.new_zeros(n, 0)), mode
    if memory is None:                                  # after the first task
        share = torch.cumsum(S1 ** power, 0) / total
        k = max(int((share < eps).sum()), 1)
        memory, mode = U1[:, :k], "remove"
    elif mode == "remove":
        residual = C - memory @ (memory.T @ C)
        if power == 1:   # the residual representation's energies: eigenvalues of (I - P) C (I - P)
            residual = residual - (residual @ memory) @ memory.T
        U, S, _ = torch.linalg.svd(residual)
        explained = (total - float((S ** power).sum())) / total
        r = 0
        for value in (S ** power / total).tolist():
            if explained >= eps:
                break
            explained += value
            r += 1
        if r:
            memory = torch.cat([memory, U[:, :r]], dim=1)[:, :n]
    else:                                               # retain: memory spans the free directions
        projected = memory @ (memory.T @ C)
        if power == 1:   # P C P, as above
            projected = (projected @ memory) @ memory.T
        U, S, _ = torch.linalg.svd(projected)
        free = float((S ** power).sum()) / total
        r = 0
        for value in (S ** power / total).tolist():
            if free < 1 - eps or r >= memory.shape[1]:
                break
            free -= value
            r += 1
        if r:
            rest = memory - U[:, :r] @ (U[:, :r].T @ memory)
            Ur, _, _ = torch.linalg.svd(rest)
            memory = Ur[:, :memory.shape[1] - r]
    if mode == "remove" and memory.shape[1] > n / 2:     # keep the smaller basis: switch to its complement
        Uf, _, _ = torch.linalg.svd(memory)
        memory, mode = Uf[:, memory.shape[1]:], "retain"
    return memory, mode


def old_dimension(memory: torch.Tensor | None, mode: str, n: int) -> int:
    """Dimension of the input subspace reserved for old tasks."""
    if memory is None:
        return 0
    return memory.shape[1] if mode == "remove" else n - memory.shape[1]


@register
class InfLoRA(Method):
    name = "inflora"
    display_name = "InfLoRA"
    label = "InfLoRA"
    paper = "Liang & Li, CVPR 2024, arXiv 2404.00228"
    summary = ("Each task's down-projection is designed from the task's input covariance, projected away from the "
               "input subspace of earlier tasks (a DualGPM memory), and frozen; only the up-projection trains, so "
               "the new update does not touch old tasks' inputs.")
    equation = (r"W = W_0 + \sum_{i\le t} B_i A_i,\quad A_t = \tfrac{1}{\sqrt 3}\,\mathrm{top}_r\,"
                r"\mathrm{svd}\big((I - M M^\top)\, \mathbb{E}[x x^\top]\big)^\top,\ B_t^{(0)} = 0")
    Config = InfLoRAConfig
    policies = ()
    # only B trains, against rows of norm 1/sqrt(3) and without an alpha / r factor, so its steps are smaller
    # than LoRA's at one lr; on the default 5-task stream 1e-2 learned every task best (bench/ in the report)
    default_lr = 1e-2
    presets = {
        "CIFAR-100 config (r=10, lamb 0.95, lame 1.0)": {},
        "ImageNet-R config (r=10, lamb 0.98)": {"lamb": 0.98},
        "DomainNet config (r=30)": {"rank": 30},
    }

    def __init__(self, config, policy: str | None = None):
        super().__init__(config, policy)
        self.memory: dict[str, torch.Tensor] = {}      # (in, k) orthonormal basis per layer, float64
        self.mode: dict[str, str] = {}                 # "remove" (M = old subspace) or "retain" (M = free)
        self.history: dict[str, list[int]] = {}        # old-subspace dimension after each task

    def check_layers(self, shapes: dict[str, tuple[int, int]]) -> None:
        check_rank(self.name, self.config.rank, shapes)

    def current_branch(self, layer: AdaptedLinear) -> InfLoRABranch | None:
        branch = layer.branches[-1] if len(layer.branches) else None
        return branch if branch is not None and branch.lora_B.requires_grad else None

    def before_task(self, ctx: TaskContext) -> None:
        c = self.config
        covariances = input_covariances(ctx.model, self.layers, ctx, c.cov_batches, c.cov_batch_size)
        for name, layer in self.layers.items():
            A = designed_down_projection(covariances[name], self.memory.get(name), self.mode.get(name, "remove"),
                                         c.rank)
            branch = InfLoRABranch(layer.in_features, layer.out_features, c.rank)
            branch.lora_A.copy_(A.to(branch.lora_A.dtype))
            layer.add_branch(branch)

    def after_task(self, ctx: TaskContext) -> None:
        c = self.config
        for layer in self.layers.values():
            branch = self.current_branch(layer)
            if branch is not None:
                branch.requires_grad_(False)
        covariances = input_covariances(ctx.model, self.layers, ctx, c.cov_batches, c.cov_batch_size)
        eps = c.lamb + (c.lame - c.lamb) * (ctx.index - 1) / ctx.num_tasks
        for name, layer in self.layers.items():
            self.memory[name], self.mode[name] = dual_gpm_update(covariances[name], self.memory.get(name),
                                                                 self.mode.get(name, "remove"), eps, c.energy)
            self.history.setdefault(name, []).append(
                old_dimension(self.memory[name], self.mode[name], layer.in_features))

    def old_projector(self, name: str) -> torch.Tensor | None:
        """The orthogonal projector onto the old tasks' input subspace, ``(in, in)`` float64."""
        M = self.memory.get(name)
        if M is None:
            return None
        P = M @ M.T
        return P if self.mode[name] == "remove" else torch.eye(P.shape[0], dtype=P.dtype, device=P.device) - P

    # -- read-outs ------------------------------------------------------------------------------
    @torch.no_grad()
    def module_scalars(self) -> dict[str, dict[str, float]]:
        dim, fraction, interference, b_norm = {}, {}, {}, {}
        for name, layer in self.layers.items():
            n = layer.in_features
            k = old_dimension(self.memory.get(name), self.mode.get(name, "remove"), n)
            dim[name], fraction[name] = float(k), k / n
            branch = self.current_branch(layer)
            if branch is None:
                continue
            B = branch.lora_B.detach().double()
            b_norm[name] = float(B.norm())
            P = self.old_projector(name)
            if P is None or b_norm[name] == 0:
                continue
            A = branch.lora_A.double()
            delta = B @ A
            interference[name] = float((delta @ P).norm() / delta.norm())
        return {"memory_dim": dim, "memory_fraction": fraction, "interference": interference, "lora_B_norm": b_norm}

    # -- saving ---------------------------------------------------------------------------------
    def extra_state(self) -> dict:
        return {"memory": {n: M.clone() for n, M in self.memory.items()}, "mode": dict(self.mode),
                "history": {n: list(h) for n, h in self.history.items()}}

    def load_extra_state(self, state: dict) -> None:
        self.memory = {n: M.to(device=self.layers[n].w0.device, dtype=torch.float64)
                       for n, M in state.get("memory", {}).items()}
        self.mode = dict(state.get("mode", {}))
        self.history = {n: list(h) for n, h in state.get("history", {}).items()}


# -- the authors' regime (`--preset paper`; cldash.core.presets) ------------------------------

_INFLORA = "liangyanshuo/InfLoRA/"

PAPER_PRESET = PaperPreset(
    paper="InfLoRA (Liang & Li), CVPR 2024, arXiv 2404.00228",
    code="liangyanshuo/InfLoRA",
    values={
        "optimizer": Cited("adam", _INFLORA + "configs/cifar100_inflora.json: \"optim\": \"adam\" "
                           "(methods/inflora.py: optim.Adam, betas (0.9, 0.999))"),
        "lr": Cited(5e-4, _INFLORA + "configs/cifar100_inflora.json: \"init_lr\" and \"lrate\": 0.0005"),
        "lr_schedule": Cited("cosine", _INFLORA + "methods/inflora.py: CosineSchedule(optimizer, K=epochs) "
                             "(utils/schedulers.py: lr cos(99 pi e / (200 (K - 1))) at epoch e)",
                             note="the code's is a quarter cosine stepped per epoch, from lr down to 1.6 % of "
                                  "it at the last epoch; ours decays to 0 over the task's steps"),
        "weight_decay": Cited(0.0, _INFLORA + "configs/cifar100_inflora.json: \"weight_decay\": 0.0"),
        "batch_size": Cited(128, _INFLORA + "configs/cifar100_inflora.json: \"batch_size\": 128"),
        "max_grad_norm": Cited(0.0, _INFLORA + "methods/inflora.py: train_function steps the optimizer "
                               "without clipping"),
        "loss_classes": Cited("current", _INFLORA + "methods/inflora.py: train_function scores targets - "
                              "_known_classes against the current task's classifier only "
                              "(models/sinet_inflora.py: classifier_pool[numtask - 1])"),
        "targets": Cited(("k", "v"), _INFLORA + "models/vit_inflora.py: Attention_LoRA holds lora_A_k, lora_B_k "
                         "and lora_A_v, lora_B_v only"),
        "method.rank": Cited(10, _INFLORA + "configs/cifar100_inflora.json: \"rank\": 10"),
        "method.lamb": Cited(0.95, _INFLORA + "configs/cifar100_inflora.json: \"lamb\": 0.95"),
        "method.lame": Cited(1.0, _INFLORA + "configs/cifar100_inflora.json: \"lame\": 1.0"),
    },
    notes=(
        "20 epochs per task (configs/cifar100_inflora.json: init_epoch, epochs); " + EPOCHS_RULE + " on the "
        "small streams. On the named benchmarks the preset takes that data set's configuration (below), its epochs "
        "as steps per task.",
        "DomainNet: the code trains the classifier at fc_lrate 0.01 (configs/domainnet_inflora.json) beside the "
        "adapters' 0.005; ours trains both at the one learning rate.",
    ),
    benchmarks={
        "cifar100-10": {"epochs": Cited(20, _INFLORA + "configs/cifar100_inflora.json: \"epochs\": 20")},
        "imagenet-r-10": {
            "epochs": Cited(50, _INFLORA + "configs/mimg10_inflora.json: \"init_epoch\" and \"epochs\": 50"),
            "method.lamb": Cited(0.98, _INFLORA + "configs/mimg10_inflora.json: \"lamb\": 0.98"),
        },
        "domainnet": {
            "epochs": Cited(5, _INFLORA + "configs/domainnet_inflora.json: \"init_epoch\" and \"epochs\": 5",
                            note="InfLoRA's DomainNet is 5 tasks of 69 classes over every domain "
                                 "(--stream-scenario class-il); the default here is one task per domain"),
            "optimizer": Cited("sgd", _INFLORA + "configs/domainnet_inflora.json: \"optim\": \"sgd\""),
            "lr": Cited(5e-3, _INFLORA + "configs/domainnet_inflora.json: \"lrate\": 0.005"),
            "method.rank": Cited(30, _INFLORA + "configs/domainnet_inflora.json: \"rank\": 30"),
        },
    },
)
