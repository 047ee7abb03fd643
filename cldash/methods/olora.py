"""O-LoRA: orthogonal subspace learning for continual learning.

Wang et al., Findings of EMNLP 2023, arXiv 2310.14152; code cmnfriend/O-LoRA
(``src/uie_trainer_lora.py``, the regularisation block of ``training_step``). While task t is
learned, each adapted weight is::

    W = W0 + s B_old A_old + s B_t A_t,    A_old = [A_1; ...; A_{t-1}]  (frozen),  s = alpha / r

and the loss adds the overlap of the new down-projection with every old one (the paper's eq. (5)
and (7), in the released code's form)::

    L = L_task + lambda_1 sum_layers sum_jk |(A_old A_t^T)_jk| + lambda_2 sum_{theta in (A_t, B_t)} ||theta||_F

The code sums absolute values (L1, ``overlap="l1"``, the default); the paper writes the squared
entries (``overlap="squared"``; from the reference note, unverified). The row spaces of the
down-projections are the input subspaces each task writes through, so a zero overlap means the
new task's update ignores exactly the input directions that earlier tasks used. lambda_2 is the
code's non-squared L2 norm of each new parameter (default 0, as in the released scripts).

Task boundary: the new pair is frozen and stays a branch of its own (the code keeps ``lora_A``,
``lora_B`` unmerged and concatenates the new pair into them), then a fresh LoRA pair is added.
Our choice: old pairs stay as frozen branches by default, so each task's update keeps its own
spectrum; ``merge_old`` folds them into the weights instead (exact, the offset stays factored)
and keeps only ``A_old`` for the penalty (reference note section 2.8 (d)). ``A_old`` is held by the
method either way, so the penalty does not depend on that choice. The policy is fixed by the
method. Known failure mode (issue #39 of the code): the penalty can also be lowered by shrinking
``A_t``, so ``new_A_norm`` is logged beside the normalised overlap and the principal angles.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cldash.core.options import option
from cldash.core.presets import EPOCHS_RULE, HF_CLIP_DEFAULT, Cited, PaperPreset
from cldash.methods.base import StepContext, TaskContext, register
from cldash.methods.layer import AdaptedLinear
from cldash.methods.lora import LoRA, LoRABranch, check_rank

OVERLAPS = ("l1", "squared")


@dataclass
class OLoRAConfig:
    rank: int = option(8, "rank r of each task's pair B_t A_t", source="O-LoRA scripts/order_1.sh (r=8)", low=1,
                       high=65_536)
    alpha: float = option(32.0, "scale numerator: every pair's update is (alpha / r) B A",
                          source="O-LoRA scripts (lora_alpha=32)", low=0, low_open=True, high=1_000_000)
    dropout: float = option(0.1, "dropout on the adapter's input", source="O-LoRA scripts (lora_dropout=0.1)",
                            low=0.0, high=0.9)
    lambda_1: float = option(0.5, "weight of the overlap penalty between the old and the new down-projections",
                             source="O-LoRA scripts (lamda_1=0.5), arXiv 2310.14152 eq. (7)", low=0.0, high=1_000_000)
    lambda_2: float = option(0.0, "weight of the L2 norm of the new pair's parameters",
                             source="O-LoRA scripts (lamda_2=0)", low=0.0, high=1_000_000)
    overlap: str = option("l1", "penalty on the entries of A_old A_t^T: their absolute values (the code) or squares "
                          "(the paper)", source="code: src/uie_trainer_lora.py; paper: arXiv 2310.14152",
                          choices=OVERLAPS)
    merge_old: bool = option(False, "fold finished pairs into the weights (only A_old is kept, for the penalty) "
                             "instead of keeping them as frozen branches",
                             source="our option; the code keeps them unmerged")

    def scaling(self) -> float:
        return self.alpha / self.rank


def overlap_penalty(A_old: torch.Tensor, A_new: torch.Tensor, kind: str) -> torch.Tensor:
    """``sum_jk |(A_old A_new^T)_jk|`` (l1) or ``sum_jk (A_old A_new^T)_jk^2`` (squared); ``A: (r, in)``."""
    overlap = A_old @ A_new.T               # (r_old, r)
    return overlap.abs().sum() if kind == "l1" else overlap.square().sum()


def row_space_cosines(A1: torch.Tensor, A2: torch.Tensor) -> torch.Tensor:
    """Cosines of the principal angles between the row spaces of ``A1`` and ``A2`` (descending)."""
    Q1, _ = torch.linalg.qr(A1.detach().double().T)
    Q2, _ = torch.linalg.qr(A2.detach().double().T)
    return torch.linalg.svdvals(Q1.T @ Q2).clamp(max=1.0)


@register
class OLoRA(LoRA):
    name = "olora"
    display_name = "O-LoRA"
    label = "O-LoRA"
    paper = "Wang et al., Findings of EMNLP 2023, arXiv 2310.14152"
    summary = ("Each task adds a fresh LoRA pair; earlier pairs are frozen, and a penalty pushes the new "
               "down-projection's rows orthogonal to every old one, so tasks write through different input subspaces.")
    equation = (r"W = W_0 + \frac{\alpha}{r}\sum_{i<t} B_i A_i + \frac{\alpha}{r} B_t A_t,\quad "
                r"\mathcal{L} = \mathcal{L}_t + \lambda_1 \sum_{\ell} \sum_{j,k} \left|(A_{old} A_t^\top)_{jk}\right|"
                r" + \lambda_2 \lVert \theta_t \rVert_2")
    Config = OLoRAConfig
    policies = ()
    default_lr = 5e-3
    extra_loss_options = ("lambda_1", "lambda_2")
    presets = {
        "paper / code defaults (r=8, alpha=32, dropout 0.1, lambda_1=0.5)": {},
        "paper's squared penalty": {"overlap": "squared"},
        "no penalty (keep-stacking LoRA)": {"lambda_1": 0.0},
        "merged old pairs": {"merge_old": True},
    }

    def __init__(self, config, policy: str | None = None):
        super().__init__(config, policy)
        self.A_old: dict[str, torch.Tensor] = {}   # (r_sum, in) per layer: every finished task's A, stacked

    def check_layers(self, shapes: dict[str, tuple[int, int]]) -> None:
        check_rank(self.name, self.config.rank, shapes)

    def before_task(self, ctx: TaskContext) -> None:
        self.add_branches(ctx)

    def current_branch(self, layer: AdaptedLinear) -> LoRABranch | None:
        branch = layer.branches[-1] if len(layer.branches) else None
        return branch if branch is not None and branch.lora_A.requires_grad else None

    @torch.no_grad()
    def after_task(self, ctx: TaskContext) -> None:
        for name, layer in self.layers.items():
            branch = self.current_branch(layer)
            if branch is None:
                continue
            A = branch.lora_A.detach().clone()
            self.A_old[name] = A if name not in self.A_old else torch.cat([self.A_old[name], A])
            if self.config.merge_old:
                layer.merge_branch(-1)
            else:
                branch.requires_grad_(False)

    def extra_loss(self, ctx: StepContext) -> torch.Tensor | None:
        c = self.config
        terms = []
        for name, layer in self.layers.items():
            branch = self.current_branch(layer)
            if branch is None:
                continue
            if c.lambda_1 > 0 and name in self.A_old:
                terms.append(c.lambda_1 * overlap_penalty(self.A_old[name], branch.lora_A, c.overlap))
            if c.lambda_2 > 0:
                terms.append(c.lambda_2 * (branch.lora_A.norm() + branch.lora_B.norm()))
        return torch.stack(terms).sum() if terms else None

    # -- read-outs ------------------------------------------------------------------------------
    @torch.no_grad()
    def module_scalars(self) -> dict[str, dict[str, float]]:
        """Per module: the normalised overlap ||A_old A_t^T||_F / (||A_old||_F ||A_t||_F) (0: orthogonal row
        spaces), ||A_t||_F (it can collapse towards 0 under the penalty) and the principal angles between the row
        spaces of A_old and A_t (largest cosine and mean cos^2)."""
        overlap, a_norm, b_norm, max_cos, mean_cos2 = {}, {}, {}, {}, {}
        for name, layer in self.layers.items():
            branch = self.current_branch(layer)
            if branch is None:
                continue
            A = branch.lora_A.detach()
            a_norm[name] = float(A.norm())
            b_norm[name] = float(branch.lora_B.detach().norm())
            A_old = self.A_old.get(name)
            if A_old is None or a_norm[name] == 0 or float(A_old.norm()) == 0:
                continue
            overlap[name] = float((A_old @ A.T).norm() / (A_old.norm() * A.norm()))
            cos = row_space_cosines(A_old, A)
            max_cos[name] = float(cos.max())
            mean_cos2[name] = float((cos ** 2).mean())
        return {"overlap": overlap, "new_A_norm": a_norm, "new_B_norm": b_norm,
                "principal_cos_max": max_cos, "principal_cos2_mean": mean_cos2}

    def scalars(self) -> dict[str, float]:
        """The total rank of the frozen down-projections per layer (r x finished tasks)."""
        if not self.A_old:
            return {}
        return {"old_rank": float(max(A.shape[0] for A in self.A_old.values()))}

    # -- saving ---------------------------------------------------------------------------------
    def extra_state(self) -> dict:
        return {"A_old": {name: A.clone() for name, A in self.A_old.items()}}

    def load_extra_state(self, state: dict) -> None:
        self.A_old = {name: A.to(self.layers[name].w0) for name, A in state.get("A_old", {}).items()}


# -- the authors' regime (`--preset paper`; cldash.core.presets) ------------------------------

_OLORA = "cmnfriend/O-LoRA/"

PAPER_PRESET = PaperPreset(
    paper="O-LoRA (Wang et al.), Findings of EMNLP 2023, arXiv 2310.14152",
    code="cmnfriend/O-LoRA",
    values={
        "optimizer": Cited("adamw", _OLORA + "configs/ds_configs/stage2.config: \"optimizer\": AdamW"),
        "lr": Cited(1e-3, _OLORA + "scripts/order_1.sh: --learning_rate 1e-03 (T5-large, every task)"),
        "lr_schedule": Cited("constant", _OLORA + "scripts/order_1.sh: --lr_scheduler_type constant"),
        "warmup_steps": Cited(0, _OLORA + "scripts/order_1.sh: --warmup_steps 0"),
        "weight_decay": Cited(0.0, _OLORA + "scripts/order_1.sh: no --weight_decay, so transformers' default "
                              "0.0 (configs/ds_configs/stage2.config: weight_decay auto)"),
        "batch_size": Cited(64, _OLORA + "scripts/order_1.sh: 8 GPUs x --per_device_train_batch_size 8 x "
                            "--gradient_accumulation_steps 1 = 64"),
        "max_grad_norm": Cited(1.0, _OLORA + "configs/ds_configs/stage2.config: \"gradient_clipping\": auto, "
                               "so " + HF_CLIP_DEFAULT,
                               note="a library default the authors left in force, not a value they wrote"),
        "targets": Cited(("q", "v"), _OLORA + "src/peft/utils/other.py: TRANSFORMERS_MODELS_TO_LORA_TARGET_"
                         "MODULES_MAPPING[\"t5\"] = [\"q\", \"v\"] (src/run_uie_lora.py's LoraConfig names no "
                         "target modules)"),
        "method.rank": Cited(8, _OLORA + "src/run_uie_lora.py: lora_dim default 8"),
        "method.alpha": Cited(32.0, _OLORA + "src/run_uie_lora.py: LoraConfig(lora_alpha=32)"),
        "method.dropout": Cited(0.1, _OLORA + "src/run_uie_lora.py: LoraConfig(lora_dropout=0.1)"),
        "method.lambda_1": Cited(0.5, _OLORA + "scripts/order_1.sh: --lamda_1 0.5"),
        "method.lambda_2": Cited(0.0, _OLORA + "scripts/order_1.sh: --lamda_2 0"),
        "method.overlap": Cited("l1", _OLORA + "src/uie_trainer_lora.py: orthogonal_loss += "
                                "torch.abs(torch.mm(param, param_.T)).sum()"),
    },
    notes=(
        "One epoch per task (scripts/order_1.sh: --num_train_epochs 1); " + EPOCHS_RULE + ".",
        "The LLaMA-2 scripts (scripts_llama/order_1.sh) train the first task at 1e-3 and the later ones at "
        "1e-4, with the same effective batch of 64 (1 x 8 accumulation x 8 GPUs).",
    ),
)
