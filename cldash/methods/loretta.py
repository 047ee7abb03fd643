"""LoRETTA_rep: LoRA whose two factors are stored as tensor trains.

Yang, Zhou, Wong, Zhang, NAACL 2024, arXiv 2402.11417; code yifanycc/loretta
(``loretta/tuners/loretta_rep.py``, ``tensor_layers/layers.py``, ``low_rank_tensors.py``). The
update is ``s B A`` as in LoRA (``s = alpha / r``), but the down map ``A`` (held as an ``in x r``
matrix, as the authors' ``input @ A``) and the up map ``B`` (``r x out``) are each the reshaped
contraction of a tensor train::

    A = reshape(G_1 x G_2 x ... x G_d, (in, r)),   G_k: (R_{k-1}, n_k, R_k),  R_0 = R_d = 1

with inner TT ranks ``R_k = tensor_rank`` and mode sizes ``n_1 ... n_d`` whose product is
``in * r``. A factor then has ``sum_k R_{k-1} n_k R_k`` parameters instead of ``in * r``.

Mode sizes. The authors look them up in a table keyed by (r, hidden size) that holds only large
models' sizes (768 ... 8192); `tt_modes` replaces it with a rule that factors any size, so the
tiny backbones (64, 128) work: split the prime factors of ``in * r`` over
``round(log_8(in * r))`` modes, largest prime first, each into the currently smallest mode. It
reproduces the authors' shape up to order where we could check it (768 x 8 -> [12, 8, 8, 8]
against their [8, 8, 12, 8]).

Init. The authors draw every core from ``N(0, 1) / sqrt(R_k) * sigma^(1/d)`` with ``sigma =
sqrt(1 / (fan_in + fan_out))`` of the factor, so the reconstructed factor's entries have standard
deviation about sigma; their zero-init of B is commented out, so ``dW != 0`` at step 0
(``init = "gaussian"``). On the tiny ViT that random start costs the pre-trained model a lot of
accuracy before any training (measured: upright-digit accuracy 0.954 falls to 0.70, 0.71 and
0.91 for seeds 0-2 at step 0), so our default is ``init = "zero"``: B's
first core starts at zero, which makes B = 0 and the adapter a no-op at step 0 as in LoRA, while
B still receives gradients through that core. This default is our choice (reconstruction).

Read-outs: the TT bond spectra, the singular values of each factor's k-th unfolding
``(n_1..n_k) x (n_{k+1}..n_d)`` (at most R_k of them; they show whether the TT rank saturates),
as extra kinds ``tt-A-bond-k`` and ``tt-B-bond-k``. The adapter variant (LoRETTA_adp, a
tensorised non-linear bottleneck adapter) is not implemented: its update is not a weight update,
so it can neither be merged nor given a spectrum, which the interface here relies on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from cldash.core.options import option
from cldash.core.presets import EPOCHS_RULE, HF_CLIP_DEFAULT, Cited, PaperPreset
from cldash.measures.spectra import LowRank, Update
from cldash.methods.base import AdapterMethod, TaskContext, register
from cldash.methods.layer import AdaptedLinear, Branch
from cldash.methods.lora import check_rank

TARGET_MODE = 8   # the authors' tables use modes of 4 to 16, mostly 8


def prime_factors(n: int) -> list[int]:
    out, p = [], 2
    while p * p <= n:
        while n % p == 0:
            out.append(p)
            n //= p
        p += 1
    if n > 1:
        out.append(n)
    return out


def tt_modes(numel: int) -> list[int]:
    """Mode sizes (product = numel) for a tensor train: about TARGET_MODE each, deterministic."""
    primes = sorted(prime_factors(numel), reverse=True)
    d = max(1, min(len(primes), round(math.log(numel) / math.log(TARGET_MODE))))
    modes = [1] * d
    for p in primes:
        i = min(range(d), key=lambda j: modes[j])
        modes[i] *= p
    return modes


def tt_ranks(modes: list[int], tensor_rank: int) -> list[int]:
    """``[1, R, ..., R, 1]``: the authors' fixed inner rank."""
    return [1] + [tensor_rank] * (len(modes) - 1) + [1]


def tt_parameter_count(modes: list[int], tensor_rank: int) -> int:
    """``sum_k R_{k-1} n_k R_k``."""
    R = tt_ranks(modes, tensor_rank)
    return sum(R[k] * n * R[k + 1] for k, n in enumerate(modes))


class TensorTrain(nn.Module):
    """A tensor of shape `modes` as a train of cores ``G_k: (R_{k-1}, n_k, R_k)``."""

    def __init__(self, modes: list[int], tensor_rank: int):
        super().__init__()
        self.modes = list(modes)
        self.tensor_rank = tensor_rank
        R = tt_ranks(modes, tensor_rank)
        self.cores = nn.ParameterList([nn.Parameter(torch.empty(R[k], n, R[k + 1])) for k, n in enumerate(modes)])

    @torch.no_grad()
    def reset(self, target_std: float, generator: torch.Generator | None = None) -> None:
        """The authors' Gaussian cores: entries of the full tensor then have std about `target_std`."""
        d = len(self.cores)
        for core in self.cores:
            core.copy_(torch.randn(core.shape, generator=generator) / math.sqrt(core.shape[2])
                       * target_std ** (1 / d))

    def contract(self, start: int, stop: int) -> torch.Tensor:
        """Cores start..stop-1 contracted: ``(R_start, n_start * ... * n_{stop-1}, R_stop)``."""
        out = self.cores[start]
        for k in range(start + 1, stop):   # (indexing, not slicing: a ParameterList slice is a new module)
            core = self.cores[k]
            r0, n, _ = out.shape
            out = (out.reshape(r0 * n, -1) @ core.reshape(core.shape[0], -1)).reshape(r0, n * core.shape[1], -1)
        return out

    def full(self) -> torch.Tensor:
        """The whole tensor, flattened in row-major order."""
        return self.contract(0, len(self.cores)).reshape(-1)

    def bond(self, k: int) -> LowRank:
        """The k-th unfolding ``(n_1..n_k) x (n_{k+1}..n_d)`` as ``left @ right`` (inner size R_k)."""
        left = self.contract(0, k)[0]                        # (n_1..n_k, R_k)
        right = self.contract(k, len(self.cores))[..., 0]    # (R_k, n_{k+1}..n_d)
        return LowRank(left, right)


class LoRETTABranch(Branch):
    """``y += s ((dropout(x) A) B)`` with ``A: (in, r)``, ``B: (r, out)`` reconstructed from tensor trains."""

    def __init__(self, in_features: int, out_features: int, rank: int, scaling: float, tensor_rank: int,
                 dropout: float = 0.0):
        super().__init__()
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.scaling = scaling
        self.tt_A = TensorTrain(tt_modes(in_features * rank), tensor_rank)
        self.tt_B = TensorTrain(tt_modes(rank * out_features), tensor_rank)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None

    def spec(self) -> dict:
        return {"in_features": self.in_features, "out_features": self.out_features, "rank": self.rank,
                "scaling": self.scaling, "tensor_rank": self.tt_A.tensor_rank,
                "dropout": self.dropout.p if self.dropout is not None else 0.0}

    def reset(self, zero_up: bool, generator: torch.Generator | None = None) -> None:
        self.tt_A.reset(math.sqrt(1 / (self.in_features + self.rank)), generator)
        self.tt_B.reset(math.sqrt(1 / (self.rank + self.out_features)), generator)
        if zero_up:
            nn.init.zeros_(self.tt_B.cores[0])

    def A(self) -> torch.Tensor:
        return self.tt_A.full().reshape(self.in_features, self.rank)

    def B(self) -> torch.Tensor:
        return self.tt_B.full().reshape(self.rank, self.out_features)

    def forward(self, x: torch.Tensor, y: torch.Tensor, layer: AdaptedLinear) -> torch.Tensor:
        h = x if self.dropout is None else self.dropout(x)
        return y + (h @ self.A()) @ self.B() * self.scaling

    def factors(self, layer: AdaptedLinear) -> LowRank:
        return LowRank(self.scaling * self.B().T, self.A().T)


@dataclass
class LoRETTAConfig:
    rank: int = option(8, "rank r of the update B A", source="LoRETTA_rep README example r=8 (arXiv 2402.11417)",
                       low=1, high=65_536)
    alpha: float = option(16.0, "scale numerator: the update is (alpha / r) B A",
                          source="LoRETTA_rep README example alpha=16", low=0, low_open=True, high=1_000_000)
    tensor_rank: int = option(5, "inner rank R of each tensor train", source="LorettaRepConfig default 5",
                              low=1, high=256)
    dropout: float = option(0.05, "dropout on the adapter's input", source="LoRETTA_rep README example 0.05",
                            low=0.0, high=0.9)
    init: str = option("zero", "zero: B's first core starts at zero (a no-op at step 0); gaussian: every core "
                               "Gaussian as in the released code (the update is not zero at step 0)",
                       source="reconstruction (the released code: gaussian)", choices=("zero", "gaussian"))

    def scaling(self) -> float:
        return self.alpha / self.rank


@register
class LoRETTA(AdapterMethod):
    name = "loretta"
    display_name = "LoRETTA"
    label = "LoRETTA (rep)"
    paper = "Yang, Zhou, Wong, Zhang, NAACL 2024, arXiv 2402.11417"
    summary = ("LoRA whose factors A and B are tensor trains of small cores: far fewer parameters for the "
               "same rank r; TT bond spectra show whether the tensor rank saturates.")
    equation = (r"\Delta W = \frac{\alpha}{r} B A,\quad A = \operatorname{reshape}(G_1 \times_1 \cdots \times_1 G_d),"
                r"\ G_k \in \mathbb{R}^{R_{k-1}\times n_k\times R_k}")
    Config = LoRETTAConfig
    policies = ("single", "merge", "stack")
    default_lr = 5e-3
    reconstruction = ("mode sizes by a factoring rule instead of the authors' table (which lacks small sizes); "
                      "B's first core starts at zero by default (the released code starts every core Gaussian).")

    def check_layers(self, shapes: dict[str, tuple[int, int]]) -> None:
        check_rank(self.name, self.config.rank, shapes)

    def new_branch(self, layer: AdaptedLinear, ctx: TaskContext) -> Branch:
        c = self.config
        branch = LoRETTABranch(layer.in_features, layer.out_features, c.rank, c.scaling(), c.tensor_rank, c.dropout)
        branch.reset(zero_up=c.init == "zero", generator=ctx.generator)
        return branch

    def extra_updates(self) -> dict[tuple[str, str], Update]:
        out = {}
        for name, layer in self.layers.items():
            branch = self.current_branch(layer)
            if not isinstance(branch, LoRETTABranch):
                continue
            for label, tt in (("A", branch.tt_A), ("B", branch.tt_B)):
                for k in range(1, len(tt.cores)):
                    bond = tt.bond(k)
                    out[(name, f"tt-{label}-bond-{k}")] = LowRank(bond.B.detach(), bond.A.detach())
        return out


# -- the authors' regime (`--preset paper`; cldash.core.presets) ------------------------------

_LORETTA = "yifanycc/loretta/"

PAPER_PRESET = PaperPreset(
    paper="LoRETTA (Yang, Zhou, Wong, Zhang), NAACL 2024, arXiv 2402.11417",
    code="yifanycc/loretta",
    values={
        "optimizer": Cited("adamw", _LORETTA + "bert_model/run_glue_v5.py: OurArguments(TrainingArguments), "
                           "transformers' AdamW"),
        "lr": Cited(1e-4, _LORETTA + "bert_model/run_all_bert_exp.sh: MODE=loretta_rep ... LR=1e-4 "
                    "(DeBERTa-base and RoBERTa-large on SST-2)"),
        "lr_schedule": Cited("constant", _LORETTA + "bert_model/run_glue_v5.py: OurArguments lr_scheduler_type "
                             "'constant'"),
        "warmup_steps": Cited(0, _LORETTA + "bert_model/run_glue_v5.py: lr_scheduler_type 'constant'",
                              note="bert_model/finetune.sh passes --warmup_step=500, which transformers' "
                                   "'constant' schedule ignores"),
        "weight_decay": Cited(0.0, _LORETTA + "bert_model/finetune.sh: no --weight_decay, so transformers' "
                              "default 0.0"),
        "max_grad_norm": Cited(1.0, _LORETTA + "bert_model/finetune.sh: no --max_grad_norm, so " + HF_CLIP_DEFAULT,
                               note="a library default the authors left in force, not a value they wrote"),
        "batch_size": Cited(8, _LORETTA + "bert_model/run_all_bert_exp.sh: BS=8"),
        "targets": Cited(("q", "v"), _LORETTA + "loretta/loretta/mapping.py: TRANSFORMERS_MODELS_TO_LORA_"
                         "TARGET_MODULES_MAPPING (roberta: query, value; llama: q_proj, v_proj), used as "
                         "bert_model/run_glue_v5.py passes target_modules None"),
        "method.rank": Cited(8, _LORETTA + "bert_model/run_glue_v5.py: rep_bottleneck 8"),
        "method.alpha": Cited(16.0, _LORETTA + "bert_model/run_glue_v5.py: rep_alpha 16"),
        "method.dropout": Cited(0.05, _LORETTA + "bert_model/run_glue_v5.py: LorettaRepConfig(lora_dropout=0.05)"),
        "method.tensor_rank": Cited(8, _LORETTA + "bert_model/finetune.sh: RANK=${RANK:-8}, passed as "
                                    "--tensor_rank=$RANK"),
        "method.init": Cited("gaussian", _LORETTA + "loretta/loretta/tuners/loretta_rep.py: reset_parameters "
                             "leaves the zero init of B commented out, so every tensor-train core keeps its "
                             "random init",
                             note="the update is not zero at step 0, which costs the tiny ViT much of its "
                                  "pre-trained accuracy before training (our default is zero)"),
    },
    notes=(
        "10 epochs (bert_model/run_all_bert_exp.sh: EPOCH=10); " + EPOCHS_RULE + ".",
        "DeBERTa-base's mapping is its fused in_proj (q, k and v); the preset takes the query / value mapping "
        "that RoBERTa, BERT, OPT and LLaMA share.",
        "LLaMA-2-7B (large_models/run_all_large_exp.sh) trains 3 epochs at lr 1e-4 and batch 8.",
    ),
)
