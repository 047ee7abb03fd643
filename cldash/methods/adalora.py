"""AdaLoRA: an SVD-form adapter whose rank budget is reallocated by importance during training.

Zhang et al., ICLR 2023, arXiv 2303.10512. Each adapted weight gets ``dW = c P diag(lambda) Q``
(eq. 1) with ``P: (out, r0)``, ``lambda: (r0,)``, ``Q: (r0, in)`` (PEFT's ``lora_B``, ``lora_E``,
``lora_A``) and ``c = alpha / (r0 + 1e-5)``: PEFT keeps the divisor at the *initial* rank even
after triplets are pruned, and so do we. Init: ``lambda = 0``, ``P, Q ~ N(0, 0.02^2)``, so the
adapter is a no-op at step 0. Training adds:

- an orthogonality regulariser ``gamma * mean_{P,Q} ||Q Q^T - I||_F`` and ``||P^T P - I||_F`` over
  all adapters (eq. 4; PEFT's non-squared Frobenius norms, which we follow);
- importance per entry ``I = |w * dL/dw|``, smoothed ``I_bar <- b1 I_bar + (1 - b1) I`` and its
  uncertainty ``U_bar <- b2 U_bar + (1 - b2) |I - I_bar|``, score ``s = I_bar * U_bar`` (eqs. 8-10);
  a triplet's score is ``s(lambda_i) + mean_j s(Q_ij) + mean_j s(P_ji)`` (eq. 11);
- a cubic budget of kept triplets over all layers (Appendix A; PEFT's ``budget_schedule``):
  ``b0 = sum r0`` during the first ``t_init`` steps, then
  ``b(t) = int((b0 - bT) (1 - (t - t_init) / (T - t_final - t_init))^3 + bT)``, and ``bT = target_r x
  #layers`` from ``T - t_final`` on. Every ``delta_t`` steps of the middle phase the lambdas whose
  score is at most the ``(b0 - b)``-th smallest are set to zero (``mask_to_budget``); at
  ``T - t_final`` the final pattern is fixed and re-applied every later step.

The mask only zeroes lambda; the optimiser may move it off zero before the next masking, as in
PEFT. Everything here is checked against PEFT's ``SVDLinear`` and ``RankAllocator`` on the same
weights and gradients (tests/methods/test_lora_family_parity.py).

Continual use (reference note section 2.4 (d)): the allocator and its budget schedule restart
at every task with ``T`` = that task's steps; ``t_init`` and ``t_final`` are given as fractions
of T because the run's step count is a run option (PEFT takes them in steps; the paper uses a
non-zero warm-up and final phase, whose values for this scale are our choice). Policies as
LoRA's: ``merge`` (default: each task its own adapter and budget), ``stack``, ``single``.
The rank history is the per-module ``active_rank`` (#{lambda_i != 0}) with the run's ``budget``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from cldash.core.errors import ConfigError
from cldash.core.options import option
from cldash.core.presets import EPOCHS_RULE, Cited, PaperPreset
from cldash.core.search import Param
from cldash.measures.spectra import LowRank
from cldash.methods.base import AdapterMethod, StepContext, TaskContext, register
from cldash.methods.layer import AdaptedLinear, Branch
from cldash.methods.lora import check_rank


class SVDBranch(Branch):
    """``y += (dropout(x) (Q * lambda)^T P^T) * alpha / (r0 + 1e-5)``, op for op as PEFT's SVDLinear."""

    def __init__(self, in_features: int, out_features: int, rank: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        self.rank = rank
        self.scaling = alpha if alpha > 0 else float(rank)
        self.lora_A = nn.Parameter(torch.empty(rank, in_features))     # Q, right singular vectors
        self.lora_E = nn.Parameter(torch.zeros(rank, 1))                # lambda, singular values
        self.lora_B = nn.Parameter(torch.empty(out_features, rank))    # P, left singular vectors
        # The divisor stays at the initial rank when triplets are pruned (PEFT's ranknum).
        self.register_buffer("ranknum", torch.tensor([float(rank)]))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None

    def spec(self) -> dict:
        return {"in_features": self.lora_A.shape[1], "out_features": self.lora_B.shape[0], "rank": self.rank,
                "alpha": self.scaling, "dropout": self.dropout.p if self.dropout is not None else 0.0}

    def reset(self, generator: torch.Generator | None = None) -> None:
        nn.init.zeros_(self.lora_E)
        nn.init.normal_(self.lora_A, mean=0.0, std=0.02, generator=generator)
        nn.init.normal_(self.lora_B, mean=0.0, std=0.02, generator=generator)

    def forward(self, x: torch.Tensor, y: torch.Tensor, layer: AdaptedLinear) -> torch.Tensor:
        h = x if self.dropout is None else self.dropout(x)
        return y + (h @ (self.lora_A * self.lora_E).T @ self.lora_B.T) * self.scaling / (self.ranknum + 1e-5)

    def multiplier(self) -> torch.Tensor:
        return self.scaling / (self.ranknum + 1e-5)

    def factors(self, layer: AdaptedLinear) -> LowRank:
        return LowRank(self.lora_B * self.multiplier(), self.lora_A * self.lora_E)

    def delta_weight(self, layer: AdaptedLinear) -> torch.Tensor:
        return self.lora_B @ (self.lora_A * self.lora_E) * self.scaling / (self.ranknum + 1e-5)

    def active_rank(self) -> int:
        return int((self.lora_E.detach() != 0).sum())


@dataclass
class AdaLoRAConfig:
    init_r: int = option(12, "initial rank r0 of every adapter", source="PEFT AdaLoraConfig default", low=1,
                         high=65_536)
    target_r: int = option(8, "average rank per adapter at the end of the budget schedule",
                           source="PEFT AdaLoraConfig default", low=1, high=65_536)
    alpha: float = option(8.0, "scale numerator: the update is alpha / r0 * P diag(lambda) Q",
                          source="PEFT default lora_alpha 8", low=0, low_open=True, high=1_000_000)
    dropout: float = option(0.0, "dropout on the adapter's input", source="PEFT default 0.0", low=0.0, high=0.9)
    tinit: float = option(0.1, "share of each task's steps before pruning starts (t_init / T)",
                          source="reconstruction: the paper uses a warm-up (arXiv 2303.10512, App. A); PEFT's "
                                 "default is 0 steps", low=0.0, high=0.9)
    tfinal: float = option(0.2, "share of each task's steps at the end with the rank pattern fixed (t_final / T)",
                           source="reconstruction: the paper fixes the pattern for a final phase; PEFT's default "
                                  "is 0 steps", low=0.0, high=0.9)
    delta_t: int = option(1, "steps between two masking events", source="PEFT AdaLoraConfig default deltaT=1",
                          low=1, high=10_000_000)
    beta1: float = option(0.85, "smoothing of the sensitivity", source="PEFT default; arXiv 2303.10512",
                          low=0.0, low_open=True, high=0.999)
    beta2: float = option(0.85, "smoothing of the uncertainty", source="PEFT default; arXiv 2303.10512",
                          low=0.0, low_open=True, high=0.999)
    orth_reg_weight: float = option(0.5, "weight gamma of the orthogonality regulariser",
                                    source="PEFT AdaLoraConfig default", low=0.0, high=1_000_000)

    def check(self, prefix: str) -> None:
        if self.target_r > self.init_r:
            raise ConfigError(f"{prefix}.target_r {self.target_r} is larger than {prefix}.init_r {self.init_r}; "
                              f"the budget can only shrink, so choose a target_r of at most {self.init_r}.",
                              f"{prefix}.target_r")
        if self.tinit + self.tfinal >= 1.0:
            raise ConfigError(f"{prefix}.tinit + {prefix}.tfinal must be below 1 (got {self.tinit:g} + "
                              f"{self.tfinal:g}), or no step is left for pruning.", f"{prefix}.tfinal")


class RankAllocator:
    """Importance averages and the cubic budget of one task (PEFT's RankAllocator, on our branches)."""

    def __init__(self, branches: dict[str, SVDBranch], total_step: int, target_r: int, tinit: int, tfinal: int,
                 delta_t: int, beta1: float, beta2: float):
        self.branches = branches
        self.total_step, self.tinit, self.tfinal, self.delta_t = total_step, tinit, tfinal, delta_t
        self.beta1, self.beta2 = beta1, beta2
        self.init_bgt = sum(b.rank for b in branches.values())
        self.target_bgt = target_r * len(branches)
        self.rank_pattern: dict[str, list[bool]] | None = None
        self.budget = self.init_bgt
        self.reset_ipt()

    def reset_ipt(self) -> None:
        self.ipt: dict[tuple[str, str], torch.Tensor] = {}
        self.exp_avg_ipt: dict[tuple[str, str], torch.Tensor] = {}
        self.exp_avg_unc: dict[tuple[str, str], torch.Tensor] = {}

    def budget_schedule(self, step: int) -> tuple[int, bool]:
        """(budget, whether to mask at this step)."""
        if step <= self.tinit:
            return self.init_bgt, False
        if step > self.total_step - self.tfinal:
            return self.target_bgt, True
        mul = 1 - (step - self.tinit) / (self.total_step - self.tfinal - self.tinit)
        budget = int((self.init_bgt - self.target_bgt) * (mul ** 3) + self.target_bgt)
        return budget, step % self.delta_t == 0

    @torch.no_grad()
    def update_ipt(self) -> None:
        for name, branch in self.branches.items():
            for pname in ("lora_A", "lora_B", "lora_E"):
                p = getattr(branch, pname)
                key = (name, pname)
                if key not in self.ipt:
                    self.ipt[key] = torch.zeros_like(p)
                    self.exp_avg_ipt[key] = torch.zeros_like(p)
                    self.exp_avg_unc[key] = torch.zeros_like(p)
                grad = p.grad if p.grad is not None else torch.zeros_like(p)
                self.ipt[key] = (p * grad).abs().detach()
                self.exp_avg_ipt[key] = self.beta1 * self.exp_avg_ipt[key] + (1 - self.beta1) * self.ipt[key]
                self.exp_avg_unc[key] = (self.beta2 * self.exp_avg_unc[key]
                                         + (1 - self.beta2) * (self.ipt[key] - self.exp_avg_ipt[key]).abs())

    def triplet_scores(self) -> dict[str, torch.Tensor]:
        """Score of each triplet ``(r0,)`` per module: s(lambda_i) + mean_j s(Q_ij) + mean_j s(P_ji)."""
        def score(key):
            return self.exp_avg_ipt[key] * self.exp_avg_unc[key]
        out = {}
        for name in self.branches:
            s_A = score((name, "lora_A")).mean(dim=1, keepdim=True)               # (r0, 1)
            s_B = score((name, "lora_B")).mean(dim=0, keepdim=False).view(-1, 1)  # (r0, 1)
            s_E = score((name, "lora_E"))                                          # (r0, 1)
            out[name] = s_E.view(-1) + torch.cat([s_A, s_B], dim=1).sum(dim=1).view(-1)
        return out

    @torch.no_grad()
    def mask_to_budget(self, budget: int) -> dict[str, list[bool]]:
        scores = self.triplet_scores()
        k = self.init_bgt - budget
        if k <= 0:   # nothing to prune yet (PEFT's kthvalue would refuse k = 0)
            return {name: [True] * b.rank for name, b in self.branches.items()}
        threshold = torch.kthvalue(torch.cat(list(scores.values())), k=k)[0].item()
        pattern = {}
        for name, branch in self.branches.items():
            drop = scores[name].view(-1, 1) <= threshold
            branch.lora_E.masked_fill_(drop, 0.0)
            pattern[name] = (~drop).view(-1).tolist()
        return pattern

    @torch.no_grad()
    def mask_using_rank_pattern(self) -> None:
        for name, branch in self.branches.items():
            keep = torch.tensor(self.rank_pattern[name], device=branch.lora_E.device).unsqueeze(-1)
            branch.lora_E.masked_fill_(~keep, 0.0)

    def step(self, step: int) -> None:
        """PEFT's ``update_and_allocate(step)``: after optimizer.step(), before the gradients are cleared."""
        final = self.total_step - self.tfinal
        if step < final:
            self.update_ipt()
            self.budget, mask = self.budget_schedule(step)
            if mask:
                self.rank_pattern = self.mask_to_budget(self.budget)
        elif step == final:
            # the final mask uses the averages as they stand (PEFT does not update them at this step)
            self.budget, _ = self.budget_schedule(step)
            self.rank_pattern = self.mask_to_budget(self.budget)
            self.reset_ipt()
        else:
            self.budget = self.target_bgt
            self.mask_using_rank_pattern()

    def state(self) -> dict:
        def flat(d):
            return {f"{n}/{p}": v.clone() for (n, p), v in d.items()}
        return {"total_step": self.total_step, "tinit": self.tinit, "tfinal": self.tfinal, "budget": self.budget,
                "rank_pattern": self.rank_pattern, "ipt": flat(self.ipt), "exp_avg_ipt": flat(self.exp_avg_ipt),
                "exp_avg_unc": flat(self.exp_avg_unc)}

    def load(self, state: dict) -> None:
        def unflat(d):
            return {tuple(k.split("/", 1)): v for k, v in d.items()}
        self.budget, self.rank_pattern = state["budget"], state["rank_pattern"]
        self.ipt, self.exp_avg_ipt = unflat(state["ipt"]), unflat(state["exp_avg_ipt"])
        self.exp_avg_unc = unflat(state["exp_avg_unc"])


@register
class AdaLoRA(AdapterMethod):
    name = "adalora"
    display_name = "AdaLoRA"
    label = "AdaLoRA"
    paper = "Zhang et al., ICLR 2023, arXiv 2303.10512"
    summary = ("An SVD-form adapter P diag(lambda) Q per layer; a cubic budget prunes the least important "
               "singular values across the whole model, so ranks shrink where they matter least.")
    equation = (r"\Delta W = \frac{\alpha}{r_0} P \operatorname{diag}(\lambda) Q,\quad "
                r"S_i = s(\lambda_i) + \overline{s(Q_{i\cdot})} + \overline{s(P_{\cdot i})},\quad "
                r"s = \bar I \cdot \bar U")
    Config = AdaLoRAConfig
    policies = ("merge", "stack", "single")
    policy_notes = {"single": "one adapter; the budget schedule restarts at every task"}
    default_lr = 5e-3
    # searched beside the learning rate: the budget (average final rank per adapter) of PEFT's schedule
    search_space = (Param("target_r", "choice", choices=(2, 4, 8), source="PEFT AdaLoraConfig default 8"),)
    extra_loss_options = ("orth_reg_weight",)
    reconstruction = ("t_init and t_final are shares of each task's steps (our choice: 10 % and 20 %); "
                      "the budget restarts at every task (continual extension).")

    def __init__(self, config, policy: str | None = None):
        super().__init__(config, policy)
        self.allocator: RankAllocator | None = None

    def check_layers(self, shapes: dict[str, tuple[int, int]]) -> None:
        check_rank(self.name, self.config.init_r, shapes, "init_r")

    def new_branch(self, layer: AdaptedLinear, ctx: TaskContext) -> Branch:
        c = self.config
        branch = SVDBranch(layer.in_features, layer.out_features, c.init_r, c.alpha, c.dropout)
        branch.reset(ctx.generator)
        return branch

    def current_branches(self) -> dict[str, SVDBranch]:
        return {name: layer.branches[-1] for name, layer in self.layers.items() if len(layer.branches)}

    def before_task(self, ctx: TaskContext) -> None:
        super().before_task(ctx)
        c = self.config
        self.allocator = RankAllocator(self.current_branches(), total_step=ctx.steps, target_r=c.target_r,
                                       tinit=int(round(c.tinit * ctx.steps)), tfinal=int(round(c.tfinal * ctx.steps)),
                                       delta_t=c.delta_t, beta1=c.beta1, beta2=c.beta2)

    def extra_loss(self, ctx: StepContext) -> torch.Tensor | None:
        """gamma * mean over every trainable P and Q of ||P^T P - I||_F, ||Q Q^T - I||_F (PEFT's form)."""
        if self.config.orth_reg_weight == 0:
            return None
        terms = []
        for branch in self.current_branches().values():
            if not branch.lora_A.requires_grad:
                continue
            for cov in (branch.lora_A @ branch.lora_A.T, branch.lora_B.T @ branch.lora_B):
                eye = torch.eye(*cov.shape, device=cov.device, dtype=cov.dtype)
                terms.append(torch.norm(cov - eye, p="fro"))
        if not terms:
            return None
        return self.config.orth_reg_weight * (torch.stack(terms).sum() / len(terms))

    def after_step(self, ctx: StepContext) -> None:
        if self.allocator is not None:
            self.allocator.step(ctx.task_step)

    def scalars(self) -> dict[str, float]:
        if self.allocator is None:
            return {}
        return {"budget": float(self.allocator.budget),
                "active_rank_total": float(sum(b.active_rank() for b in self.current_branches().values()))}

    def module_scalars(self) -> dict[str, dict[str, float]]:
        branches = self.current_branches()
        return {"active_rank": {n: float(b.active_rank()) for n, b in branches.items()},
                "lambda_abs_max": {n: float(b.lora_E.detach().abs().max()) for n, b in branches.items()}}

    def extra_state(self) -> dict:
        return {"allocator": None if self.allocator is None else self.allocator.state()}

    def load_extra_state(self, state: dict) -> None:
        saved = state.get("allocator")
        if saved is None:
            self.allocator = None
            return
        c = self.config
        self.allocator = RankAllocator(self.current_branches(), total_step=saved["total_step"], target_r=c.target_r,
                                       tinit=saved["tinit"], tfinal=saved["tfinal"], delta_t=c.delta_t,
                                       beta1=c.beta1, beta2=c.beta2)
        self.allocator.load(saved)


# -- the authors' regime (`--preset paper`; cldash.core.presets) ------------------------------

_ADALORA = "QingruZhang/AdaLoRA/"

PAPER_PRESET = PaperPreset(
    paper="AdaLoRA (Zhang et al.), ICLR 2023, arXiv 2303.10512",
    code="QingruZhang/AdaLoRA",
    values={
        "optimizer": Cited("adamw", _ADALORA + "NLU/src/transformers/trainer.py: create_optimizer uses AdamW"),
        "lr": Cited(8e-4, _ADALORA + "NLU/scripts/run_debertav3_sst2.sh: --learning_rate 8e-4 "
                    "(DeBERTaV3-base on SST-2)"),
        "warmup_ratio": Cited(0.02, _ADALORA + "NLU/scripts/run_debertav3_sst2.sh: --warmup_steps 1000",
                              note="1,000 of the run's 50,520 steps (24 epochs x 2,105 batches of 32 of SST-2's "
                                   "67,349 sentences)"),
        "weight_decay": Cited(0.01, _ADALORA + "NLU/scripts/run_debertav3_sst2.sh: --weight_decay 0.01"),
        "max_grad_norm": Cited(1.0, _ADALORA + "NLU/src/transformers/training_args.py: max_grad_norm default "
                               "1.0 (the script does not change it)",
                               note="a library default the authors left in force, not a value they wrote"),
        "batch_size": Cited(32, _ADALORA + "NLU/scripts/run_debertav3_sst2.sh: --per_device_train_batch_size 32 "
                            "(--nproc_per_node=1)"),
        "targets": Cited(("q", "k", "v", "o", "mlp"), _ADALORA + "NLU/scripts/run_debertav3_sst2.sh: "
                         "--lora_module query,key,value,intermediate,layer.output,attention.output"),
        "method.init_r": Cited(2, _ADALORA + "NLU/scripts/run_debertav3_sst2.sh: --lora_r 2"),
        "method.target_r": Cited(1, _ADALORA + "NLU/scripts/run_debertav3_sst2.sh: --target_rank 1"),
        "method.alpha": Cited(16.0, _ADALORA + "NLU/scripts/run_debertav3_sst2.sh: --lora_alpha 16 "
                              "(loralib/loralib/adalora.py: scaled by alpha / ranknum)"),
        "method.orth_reg_weight": Cited(0.1, _ADALORA + "NLU/scripts/run_debertav3_sst2.sh: --reg_orth_coef 0.1"),
        "method.beta1": Cited(0.85, _ADALORA + "NLU/scripts/run_debertav3_sst2.sh: --beta1 0.85"),
        "method.beta2": Cited(0.85, _ADALORA + "NLU/scripts/run_debertav3_sst2.sh: --beta2 0.85"),
        "method.tinit": Cited(0.12, _ADALORA + "NLU/scripts/run_debertav3_sst2.sh: --init_warmup 6000",
                              note="6,000 of the run's 50,520 steps (0.119)"),
        "method.tfinal": Cited(0.44, _ADALORA + "NLU/scripts/run_debertav3_sst2.sh: --final_warmup 22000",
                               note="22,000 of the run's 50,520 steps (0.435)"),
    },
    notes=(
        "The schedule is transformers' default linear decay (NLU/src/transformers/training_args.py: "
        "lr_scheduler_type default \"linear\"); linear decay has no equivalent here, so the common constant "
        "rate is kept after the warm-up.",
        "The rank pattern is re-masked every 100 steps (--mask_interval 100), 0.2 % of the run and under one "
        "of our steps: delta_t stays 1.",
        "24 epochs (--num_train_epochs 24); " + EPOCHS_RULE + ", and the budget phases are shares of it.",
        "MNLI (NLU/scripts/run_debertav3_mnli.sh) trains at lr 5e-4 with init rank 3; this preset follows "
        "SST-2, a single-sentence classification like ours.",
    ),
)
