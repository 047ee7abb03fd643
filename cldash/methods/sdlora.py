"""SD-LoRA: scalable decoupled low-rank adaptation.

Wu et al., ICLR 2025 (oral), arXiv 2501.13198; code WuYichen-97/SD-Lora-CL (``backbone/lora.py``,
``models/sdlora.py``) and the reimplementation RL-VIG/LibContinual (``core/model/sd_lora.py``).
While task t is learned, each adapted weight is (the paper's eq. (4))::

    W = W0 + sum_{k<t} alpha_k D_k + alpha_t B_t A_t,    D_k = B_k A_k / N_k  (frozen)

the *directions* D_k of earlier tasks are frozen and normalised, their *magnitudes* alpha_k stay
trainable, and the current pair (A Kaiming-uniform, B = 0, as LoRA, no alpha / r factor) is
trained unnormalised beside its own magnitude. Normaliser: the paper's ``N_k = ||B_k A_k||_F``
(``normalizer="frobenius"``, unit-norm directions) or the code's ``N_k = ||B_k||_F ||A_k||_F``
(``"product"``, the default: an upper bound, so ``||D_k||_F <= 1``).

Magnitudes: one scalar per task shared by every layer, as in both public implementations
(``magnitudes="per_layer"`` gives each layer its own, our option). Both implementations re-create
every magnitude at its init value (0.8) when a task starts and learn them on that task's data
only, so the alpha trajectories restart at each boundary, and the layer's function jumps there
(the finished pair enters as ``0.8 D_t`` rather than ``alpha_t B_t A_t``): that is the published
method, not a bug of ours.

Variants (the paper's section 3.3):
- ``rank_reduction`` (SD-LoRA-RR): later tasks get smaller ranks; the code's commented schedule is
  rank 10 for tasks 1-4, 8 for 5-8 and 6 afterwards (``rr_tasks`` = [5, 9], ``rr_ranks`` = [8, 6]).
- ``kd`` (SD-LoRA-KD): after each task t > 1, per layer, solve ``min_c ||D_t - sum_k c_k D_k||_F``
  over the flattened directions; if the relative residual ``||D_t - sum c_k D_k||_F / ||D_t||_F`` is
  below ``kd_threshold``, add ``c_k`` to fixed per-layer offsets of the old magnitudes (the forward
  uses ``alpha_k + c_k``) and drop the new direction from that layer (no growth). LibContinual
  compares the absolute squared residual with a config value; we use the relative one so that the
  threshold means the same under both normalisers (no default was found: ours is 0.5).

Boundary behaviour is the method's own (no policy). Read-outs: each direction's spectrum (extra kinds
``direction-k``, the current pair normalised as it will be stored), the magnitudes per task
(``magnitude_task{k}``; per module when per-layer), the number of directions per module, and the
Gram matrix of the normalised directions (current pair included): its mean off-diagonal
``|cos|`` per module and the current pair's largest ``|cos|`` with a stored direction
(``direction_gram()`` gives the full matrix).
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

NORMALIZERS = ("product", "frobenius")
MAGNITUDES = ("shared", "per_layer")


class Magnitudes(nn.Module):
    """One trainable scalar per task so far; shared by the branches of every layer (or of one layer)."""

    def __init__(self, count: int = 0, init: float = 0.8):
        super().__init__()
        self.values = nn.ParameterList([nn.Parameter(torch.tensor(float(init))) for _ in range(count)])

    def recreate(self, count: int, init: float, device: torch.device | None = None) -> None:
        """Fresh parameters at the init value (both public codes rebuild them at every task)."""
        self.values = nn.ParameterList([nn.Parameter(torch.tensor(float(init), device=device)) for _ in range(count)])


class SDDirectionBranch(Branch):
    """A finished task's frozen direction: ``y += (alpha_k + c_k) / N_k * B_k (A_k x)``.

    ``A_k, B_k`` and ``1 / N_k`` are buffers (never trained); ``c_k`` is the KD offset (0 unless a later
    direction was absorbed into this one); ``alpha_k`` lives in the shared `Magnitudes`.
    """

    def __init__(self, in_features: int, out_features: int, rank: int, task: int, count: int,
                 magnitudes: Magnitudes | None = None):
        super().__init__()
        self.rank, self.task = rank, task
        self.magnitudes = magnitudes if magnitudes is not None else Magnitudes(count)
        self.register_buffer("lora_A", torch.zeros(rank, in_features))
        self.register_buffer("lora_B", torch.zeros(out_features, rank))
        self.register_buffer("inv_norm", torch.zeros(()))
        self.register_buffer("offset", torch.zeros(()))

    def spec(self) -> dict:
        return {"in_features": self.lora_A.shape[1], "out_features": self.lora_B.shape[0], "rank": self.rank,
                "task": self.task, "count": len(self.magnitudes.values)}

    def weight(self) -> torch.Tensor:
        return (self.magnitudes.values[self.task - 1] + self.offset) * self.inv_norm

    def forward(self, x: torch.Tensor, y: torch.Tensor, layer: AdaptedLinear) -> torch.Tensor:
        return y + (F.linear(F.linear(x, self.lora_A), self.lora_B) * self.weight()).to(y.dtype)

    def factors(self, layer: AdaptedLinear) -> LowRank:
        return LowRank(self.lora_B * self.weight(), self.lora_A)

    def direction(self) -> LowRank:
        """``D_k`` itself, factored: ``(B_k / N_k) A_k``."""
        return LowRank(self.lora_B * self.inv_norm, self.lora_A)


class SDCurrentBranch(Branch):
    """The pair being trained: ``y += alpha_t * B (A x)``, A Kaiming-uniform, B = 0 (as LoRA)."""

    def __init__(self, in_features: int, out_features: int, rank: int, task: int, count: int,
                 magnitudes: Magnitudes | None = None):
        super().__init__()
        self.rank, self.task = rank, task
        self.magnitudes = magnitudes if magnitudes is not None else Magnitudes(count)
        self.lora_A = nn.Parameter(torch.empty(rank, in_features))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank))

    def spec(self) -> dict:
        return {"in_features": self.lora_A.shape[1], "out_features": self.lora_B.shape[0], "rank": self.rank,
                "task": self.task, "count": len(self.magnitudes.values)}

    def reset(self, generator: torch.Generator | None = None) -> None:
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5), generator=generator)
        nn.init.zeros_(self.lora_B)

    def magnitude(self) -> torch.Tensor:
        return self.magnitudes.values[self.task - 1]

    def forward(self, x: torch.Tensor, y: torch.Tensor, layer: AdaptedLinear) -> torch.Tensor:
        return y + (F.linear(F.linear(x, self.lora_A), self.lora_B) * self.magnitude()).to(y.dtype)

    def factors(self, layer: AdaptedLinear) -> LowRank:
        return LowRank(self.lora_B * self.magnitude(), self.lora_A)


@dataclass
class SDLoRAConfig:
    rank: int = option(10, "rank r of each task's pair B_t A_t", source="SD-LoRA exps/sdlora_c100.json (rank 10)",
                       low=1, high=65_536)
    init_magnitude: float = option(0.8, "value every magnitude alpha_k is re-created at when a task starts",
                                   source="SD-LoRA code and LibContinual (init_mag 0.8)", low=-1000, high=1000)
    normalizer: str = option("product", "N_k of the stored directions: ||B||_F ||A||_F (the code) or ||B A||_F "
                             "(the paper)", source="code backbone/lora.py; paper arXiv 2501.13198 eq. (4)",
                             choices=NORMALIZERS)
    magnitudes: str = option("shared", "one magnitude per task for the whole network (both public codes) or one per "
                             "task and layer", source="SD-LoRA code, LibContinual; per_layer is our option",
                             choices=MAGNITUDES)
    rank_reduction: bool = option(False, "SD-LoRA-RR: later tasks get the smaller ranks rr_ranks",
                                  source="arXiv 2501.13198 section 3.3; the code's commented schedule")
    rr_tasks: list[int] = option([5, 9], "tasks (1-based) from which the ranks in rr_ranks apply",
                                 source="the code's commented schedule (10 / 8 / 6 from tasks 1 / 5 / 9)", low=2,
                                 high=1_000_000)
    rr_ranks: list[int] = option([8, 6], "ranks used from the tasks in rr_tasks on",
                                 source="the code's commented schedule", low=1, high=65_536)
    kd: bool = option(False, "SD-LoRA-KD: absorb a new direction that the old ones explain (least squares) into "
                      "their magnitudes", source="arXiv 2501.13198 section 3.3; LibContinual after_task")
    kd_threshold: float = option(0.5, "SD-LoRA-KD: absorb when ||D_t - sum_k c_k D_k|| / ||D_t|| is below this",
                                 source="our choice (relative residual); no default was published",
                                 low=0.0, high=1.0)

    def check(self, prefix: str) -> None:
        if len(self.rr_tasks) != len(self.rr_ranks):
            raise ConfigError(f"{prefix}.rr_tasks and {prefix}.rr_ranks must have the same length (got "
                              f"{len(self.rr_tasks)} and {len(self.rr_ranks)}).", f"{prefix}.rr_ranks")
        if any(r < 1 for r in self.rr_ranks):
            raise ConfigError(f"{prefix}.rr_ranks must be integers >= 1 (got {self.rr_ranks}).", f"{prefix}.rr_ranks")
        if any(t < 2 for t in self.rr_tasks) or any(a >= b for a, b in zip(self.rr_tasks, self.rr_tasks[1:])):
            raise ConfigError(f"{prefix}.rr_tasks must be increasing task numbers from 2 on (got {self.rr_tasks}).",
                              f"{prefix}.rr_tasks")

    def rank_of(self, task: int) -> int:
        rank = self.rank
        if self.rank_reduction:
            for start, r in zip(self.rr_tasks, self.rr_ranks):
                if task >= start:
                    rank = r
        return rank

    def ranks(self) -> list[int]:
        return [self.rank] + (list(self.rr_ranks) if self.rank_reduction else [])


def frobenius_inner(X: LowRank, Y: LowRank) -> torch.Tensor:
    """``<B_x A_x, B_y A_y>_F = sum((B_x^T B_y) * (A_x A_y^T))`` without forming either matrix."""
    return ((X.B.T @ Y.B) * (X.A @ Y.A.T)).sum()


@register
class SDLoRA(Method):
    name = "sdlora"
    display_name = "SD-LoRA"
    label = "SD-LoRA"
    paper = "Wu et al., ICLR 2025, arXiv 2501.13198"
    summary = ("Earlier tasks' updates are frozen as normalised directions with trainable magnitudes (one per task, "
               "shared by all layers); each task adds a fresh pair. Variants shrink later ranks (RR) or absorb "
               "redundant directions (KD).")
    equation = (r"W = W_0 + \sum_{k<t} \alpha_k \frac{B_k A_k}{\lVert B_k\rVert_F \lVert A_k\rVert_F} "
                r"+ \alpha_t B_t A_t,\quad \alpha_k^{(0)} = 0.8")
    Config = SDLoRAConfig
    policies = ()
    default_lr = 5e-3
    presets = {
        "code defaults (r=10, product normaliser, shared magnitudes)": {},
        "paper's normaliser ||BA||_F": {"normalizer": "frobenius"},
        "SD-LoRA-RR (ranks 10 / 8 / 6)": {"rank_reduction": True},
        "SD-LoRA-KD": {"kd": True},
        "per-layer magnitudes": {"magnitudes": "per_layer"},
    }

    def __init__(self, config, policy: str | None = None):
        super().__init__(config, policy)
        self.shared = Magnitudes()                      # magnitudes="shared"
        self.per_layer: dict[str, Magnitudes] = {}      # magnitudes="per_layer"
        self.tasks_seen = 0
        self.absorbed: dict[str, list[int]] = {}        # KD: tasks whose direction a layer absorbed

    def check_layers(self, shapes: dict[str, tuple[int, int]]) -> None:
        check_rank(self.name, self.config.rank, shapes)
        for r in self.config.ranks()[1:]:
            check_rank(self.name, r, shapes, "rr_ranks")

    def magnitudes_of(self, name: str) -> Magnitudes:
        if self.config.magnitudes == "shared":
            return self.shared
        return self.per_layer.setdefault(name, Magnitudes())

    def all_magnitudes(self) -> dict[str, Magnitudes]:
        return {"": self.shared} if self.config.magnitudes == "shared" else dict(self.per_layer)

    @staticmethod
    def is_current(branch: Branch) -> bool:
        return isinstance(branch, SDCurrentBranch)

    # -- hooks ----------------------------------------------------------------------------------
    def before_task(self, ctx: TaskContext) -> None:
        c = self.config
        self.tasks_seen += 1
        t = self.tasks_seen
        rank = c.rank_of(t)
        device = next(iter(self.layers.values())).w0.device if self.layers else None
        for name in self.layers:
            self.magnitudes_of(name)
        for mags in self.all_magnitudes().values():
            mags.recreate(t, c.init_magnitude, device)
        for name, layer in self.layers.items():
            branch = SDCurrentBranch(layer.in_features, layer.out_features, rank, t, t, self.magnitudes_of(name))
            branch.reset(ctx.generator)
            layer.add_branch(branch)

    @torch.no_grad()
    def after_task(self, ctx: TaskContext) -> None:
        for name, layer in self.layers.items():
            if not len(layer.branches) or not self.is_current(layer.branches[-1]):
                continue
            current = layer.branches[-1]
            direction = SDDirectionBranch(layer.in_features, layer.out_features, current.rank, current.task,
                                          len(current.magnitudes.values), current.magnitudes)
            direction.lora_A.copy_(current.lora_A)
            direction.lora_B.copy_(current.lora_B)
            norm = self.norm(current.lora_B.detach(), current.lora_A.detach())
            direction.inv_norm.fill_(1.0 / norm if norm > 0 else 0.0)
            layer.branches[-1] = direction.to(layer.w0.device)
            if self.config.kd and len(layer.branches) > 1:
                self.distil(name, layer)

    def norm(self, B: torch.Tensor, A: torch.Tensor) -> float:
        if self.config.normalizer == "product":
            return float(B.double().norm() * A.double().norm())
        return float((B.double() @ A.double()).norm())

    @torch.no_grad()
    def distil(self, name: str, layer: AdaptedLinear) -> bool:
        """SD-LoRA-KD for one layer: absorb the newest direction if the older ones explain it."""
        new = layer.branches[-1]
        old = [b for b in layer.branches[:-1] if isinstance(b, SDDirectionBranch)]
        if not old:
            return False
        target = new.direction().dense().double().reshape(-1, 1)
        if float(target.norm()) == 0:
            return False
        basis = torch.stack([b.direction().dense().double().reshape(-1) for b in old], dim=1)   # (m n, k)
        coef = torch.linalg.lstsq(basis, target).solution                                          # (k, 1)
        residual = float((target - basis @ coef).norm() / target.norm())
        if residual >= self.config.kd_threshold:
            return False
        for b, c in zip(old, coef.view(-1).tolist()):
            b.offset.add_(c)
        self.absorbed.setdefault(name, []).append(new.task)
        del layer.branches[len(layer.branches) - 1]
        return True

    # -- read-outs ------------------------------------------------------------------------------
    @torch.no_grad()
    def direction_gram(self, name: str) -> torch.Tensor:
        """Cosines ``<D_i, D_j>_F / (||D_i|| ||D_j||)`` between this layer's directions, the current pair last."""
        dirs = []
        for b in self.layers[name].branches:
            if isinstance(b, SDDirectionBranch):
                dirs.append(b.direction())
            elif self.is_current(b):
                dirs.append(LowRank(b.lora_B.detach(), b.lora_A.detach()))
        dirs = [LowRank(d.B.double(), d.A.double()) for d in dirs]
        norms = [float(frobenius_inner(d, d)) ** 0.5 for d in dirs]
        dirs = [d for d, n in zip(dirs, norms) if n > 0]
        norms = [n for n in norms if n > 0]
        k = len(dirs)
        gram = torch.eye(k, dtype=torch.float64)
        for i in range(k):
            for j in range(i + 1, k):
                gram[i, j] = gram[j, i] = frobenius_inner(dirs[i], dirs[j]) / (norms[i] * norms[j])
        return gram

    def extra_updates(self) -> dict[tuple[str, str], LowRank]:
        """Each direction ``D_k`` (kind ``direction-k``), for its own spectrum; the current pair is shown
        normalised as it will be stored (zero while B is)."""
        out = {}
        for name, layer in self.layers.items():
            for b in layer.branches:
                if isinstance(b, SDDirectionBranch):
                    d = b.direction()
                elif self.is_current(b):
                    B, A = b.lora_B.detach(), b.lora_A.detach()
                    norm = self.norm(B, A)
                    d = LowRank(B / norm if norm > 0 else B, A)
                else:
                    continue
                out[(name, f"direction-{b.task}")] = LowRank(d.B.detach(), d.A.detach())
        return out

    @torch.no_grad()
    def module_scalars(self) -> dict[str, dict[str, float]]:
        """Per module: the number of stored directions, the Gram matrix's mean off-diagonal |cos| and the
        current pair's largest |cos| with a stored direction (how the new direction relates to the old)."""
        out: dict[str, dict[str, float]] = {"directions": {}, "gram_offdiag_abs_cos": {}, "current_max_abs_cos": {}}
        for name, layer in self.layers.items():
            out["directions"][name] = float(sum(isinstance(b, SDDirectionBranch) for b in layer.branches))
            gram = self.direction_gram(name)
            k = gram.shape[0]
            if k > 1:
                out["gram_offdiag_abs_cos"][name] = float((gram.abs().sum() - k) / (k * (k - 1)))
                current = layer.branches[-1] if len(layer.branches) else None
                if self.is_current(current) and float(current.lora_B.detach().norm()) > 0:
                    out["current_max_abs_cos"][name] = float(gram[-1, :-1].abs().max())
        if self.config.magnitudes == "per_layer":
            for name, mags in self.per_layer.items():
                for k, p in enumerate(mags.values, start=1):
                    out.setdefault(f"magnitude_task{k}", {})[name] = float(p.detach())
        return out

    def scalars(self) -> dict[str, float]:
        if self.config.magnitudes != "shared":
            return {}
        return {f"magnitude_task{k}": float(p.detach()) for k, p in enumerate(self.shared.values, start=1)}

    # -- saving ---------------------------------------------------------------------------------
    def build_branch(self, layer: AdaptedLinear, type_name: str, spec: dict) -> Branch:
        mags = self.magnitudes_of(layer.name)
        if len(mags.values) != spec["count"]:
            mags.recreate(spec["count"], self.config.init_magnitude, layer.w0.device)
        cls = SDCurrentBranch if type_name == SDCurrentBranch.__name__ else SDDirectionBranch
        return cls(spec["in_features"], spec["out_features"], spec["rank"], spec["task"], spec["count"], mags)

    def extra_state(self) -> dict:
        return {"tasks_seen": self.tasks_seen,
                "magnitudes": {key: [float(p.detach()) for p in m.values] for key, m in self.all_magnitudes().items()},
                "absorbed": {n: list(v) for n, v in self.absorbed.items()}}

    def load_extra_state(self, state: dict) -> None:
        self.tasks_seen = int(state.get("tasks_seen", 0))
        self.absorbed = {n: list(v) for n, v in state.get("absorbed", {}).items()}
        device = next(iter(self.layers.values())).w0.device if self.layers else None
        for key, values in state.get("magnitudes", {}).items():
            mags = self.shared if key == "" else self.magnitudes_of(key)
            if len(mags.values) != len(values):
                mags.recreate(len(values), self.config.init_magnitude, device)
            with torch.no_grad():
                for p, v in zip(mags.values, values):
                    p.fill_(v)


# -- the authors' regime (`--preset paper`; cldash.core.presets) ------------------------------

_SDLORA = "WuYichen-97/SD-Lora-CL/"

PAPER_PRESET = PaperPreset(
    paper="SD-LoRA (Wu et al.), ICLR 2025, arXiv 2501.13198",
    code="WuYichen-97/SD-Lora-CL",
    values={
        "optimizer": Cited("sgd", _SDLORA + "models/sdlora.py: _train builds optim.SGD on every task"),
        "momentum": Cited(0.9, _SDLORA + "models/sdlora.py: optim.SGD(..., momentum=0.9)"),
        "lr": Cited(8e-3, _SDLORA + "exps/sdlora_c100.json: \"init_lr\" and \"lrate\": 8e-3"),
        "lr_schedule": Cited("constant", _SDLORA + "models/sdlora.py: _train's MultiStepLR milestones "
                             "[60, 120, 170] (first task) and [40, 70] (later tasks) lie past the 20 epochs, so "
                             "the rate never changes (the json's \"scheduler\": \"cosine\" is read only by "
                             "get_scheduler, which _train does not call)"),
        "weight_decay": Cited(0.0, _SDLORA + "models/sdlora.py: _train's SGD has no weight decay (the "
                              "argument is commented out; the json's 2e-4 goes unused)"),
        "batch_size": Cited(128, _SDLORA + "exps/sdlora_c100.json: \"batch_size\": 128"),
        "max_grad_norm": Cited(0.0, _SDLORA + "models/sdlora.py: _update_representation steps the optimizer "
                               "without clipping"),
        "loss_classes": Cited("current", _SDLORA + "models/sdlora.py: _update_representation: "
                              "F.cross_entropy(logits[:, self._known_classes:], targets - _known_classes)"),
        "targets": Cited(("q", "v"), _SDLORA + "backbone/lora.py: _LoRA_qkv_timm_train adds the low-rank "
                         "updates to the q and v slices of timm's fused qkv"),
        "method.rank": Cited(10, _SDLORA + "models/sdlora.py: rank=10 (LoRA_ViT_timm(r=rank))"),
        "method.init_magnitude": Cited(0.8, _SDLORA + "backbone/lora.py: scaling_factor = "
                                       "nn.Parameter(torch.Tensor([0.8]))"),
    },
    notes=(
        "20 epochs per task (exps/sdlora_c100.json: init_epoch, epochs); " + EPOCHS_RULE + " on the small "
        "streams. On the named benchmarks the preset takes that data set's configuration (below), its epochs as "
        "steps per task.",
    ),
    benchmarks={
        "cifar100-10": {"epochs": Cited(20, _SDLORA + "exps/sdlora_c100.json: \"epochs\": 20")},
        "imagenet-r-10": {
            "epochs": Cited(20, _SDLORA + "exps/sdlora_inr.json: \"init_epoch\" and \"epochs\": 20"),
            "lr": Cited(1e-2, _SDLORA + "exps/sdlora_inr.json: \"init_lr\" and \"lrate\": 1e-2"),
        },
        "domainnet": {
            "epochs": Cited(10, _SDLORA + "exps/sdlora_dom.json: \"init_epoch\" and \"epochs\": 10",
                            note="SD-LoRA's DomainNet is 5 tasks of 69 classes (init_cls, increment 69: "
                                 "--stream-scenario class-il); the default here is one task per domain"),
            "lr": Cited(2e-2, _SDLORA + "exps/sdlora_dom.json: \"init_lr\" and \"lrate\": 0.02",
                        note="the json's milestones [4, 6, 8] decay the rate by 0.005 at those epochs; ours "
                             "keeps it constant"),
        },
    },
)
