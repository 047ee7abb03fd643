"""WeGeFT (earlier GIFT): the update is generated from the frozen weight by a low-rank map.

Savadikar, Song, Wu, ICML 2025, arXiv 2312.00700; code savadikarc/gift
(``peft/src/peft/tuners/wegeft/layer.py``, the "input" form). With ``Phi, Psi: (r, in)``::

    dW = s W Phi^T Psi        (W = the layer's frozen base weight; s = alpha / r)
    y  = W x + s (W Phi^T)(Psi x)

so the update is multiplicative, ``W' = W (I + s Phi^T Psi)``: its columns lie in the column span
of ``W Phi^T`` (hence of W), and its row space in that of Psi. Init as the authors: ``Phi = 0``,
``Psi`` Kaiming-uniform (a = sqrt(5)), so the adapter is a no-op at step 0.

``tie`` shares one generator pair ``(Phi, Psi)`` across all layers of one module type (every
block's ``q_proj``...), the configuration of the authors' language-model experiments (one tied
generator per module type); the config class's own default is per-layer generators. Layers of
one type must then have the same input size (checked).

The ``W`` inside the generator is the current base weight: after a ``merge`` the next task's
generator acts on the merged weight, ``W <- W (I + s Phi^T Psi)`` (reference note section 2.6
(d)). The update against the pre-trained weight stays factored: each merge adds the offset
``(s W Phi^T, Psi)`` with the ``W`` it was generated from. The authors' "output" form and their
dropout on ``W`` are not implemented.
Read-outs: the generator's own spectrum ``sigma(s Phi^T Psi)`` (``in x in``, extra kind
``generator``) and its Frobenius norm per module.
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
from cldash.measures.spectra import LowRank, Update
from cldash.methods.base import AdapterMethod, TaskContext, register
from cldash.methods.layer import AdaptedLinear, Branch


class WeGeFTGenerator(nn.Module):
    """The generator pair ``Phi, Psi: (r, in)``; possibly shared by several branches."""

    def __init__(self, in_features: int, rank: int):
        super().__init__()
        self.phi = nn.Parameter(torch.zeros(rank, in_features))
        self.psi = nn.Parameter(torch.empty(rank, in_features))

    def reset(self, generator: torch.Generator | None = None) -> None:
        nn.init.zeros_(self.phi)
        nn.init.kaiming_uniform_(self.psi, a=math.sqrt(5), generator=generator)


class WeGeFTBranch(Branch):
    """``y += s (W Phi^T)(Psi x)`` with the layer's current base weight W."""

    def __init__(self, in_features: int, rank: int, scaling: float, group: str,
                 generator: WeGeFTGenerator | None = None):
        super().__init__()
        self.rank = rank
        self.scaling = scaling
        self.group = group    # which tied generator this is ("" if the branch owns its generator)
        self.generator = generator if generator is not None else WeGeFTGenerator(in_features, rank)

    def spec(self) -> dict:
        return {"in_features": self.generator.psi.shape[1], "rank": self.rank, "scaling": self.scaling,
                "group": self.group}

    def forward(self, x: torch.Tensor, y: torch.Tensor, layer: AdaptedLinear) -> torch.Tensor:
        w_phi = layer.weight @ self.generator.phi.T                  # (out, r)
        return y + F.linear(F.linear(x, self.generator.psi), w_phi) * self.scaling

    def factors(self, layer: AdaptedLinear) -> LowRank:
        return LowRank(self.scaling * (layer.weight @ self.generator.phi.T), self.generator.psi)

    def generator_update(self) -> LowRank:
        """``s Phi^T Psi`` (in x in): what the generator multiplies the weight by, minus the identity."""
        return LowRank(self.scaling * self.generator.phi.T, self.generator.psi)


@dataclass
class WeGeFTConfig:
    rank: int = option(8, "rank r of the generator Phi^T Psi", source="WeGeFTConfig default r=8 (arXiv 2312.00700)",
                       low=1, high=65_536)
    alpha: float = option(8.0, "scale numerator: the update is (alpha / r) W Phi^T Psi",
                          source="WeGeFTConfig default wegeft_alpha=8", low=0, low_open=True, high=1_000_000)
    tie: bool = option(True, "share one generator across all layers of the same module type (q_proj, fc1, ...)",
                       source="the authors' LLM configuration, one tied generator per module type (arXiv 2312.00700)")

    def scaling(self) -> float:
        return self.alpha / self.rank


def module_type(name: str) -> str:
    """The module's role without its layer index: ``vit.layers.3.attention.q_proj`` -> ``attention.q_proj``
    (the parent is kept because GPT-2 names both its attention output and its MLP output ``c_proj``)."""
    parts = [p for p in name.split(".") if not p.isdigit()]
    return ".".join(parts[-2:])


@register
class WeGeFT(AdapterMethod):
    name = "wegeft"
    display_name = "WeGeFT"
    label = "WeGeFT"
    paper = "Savadikar, Song, Wu, ICML 2025, arXiv 2312.00700"
    summary = ("The update is generated from the frozen weight itself, W Phi^T Psi: it stays in the span of "
               "the pre-trained weight; optionally one generator per module type, shared by all layers.")
    equation = (r"\Delta W = \frac{\alpha}{r} W_0 \Phi^\top \Psi,\quad "
                r"\Phi, \Psi \in \mathbb{R}^{r\times n},\ \Phi_0 = 0")
    Config = WeGeFTConfig
    policies = ("single", "merge", "stack")
    policy_notes = {"merge": "merge, then a fresh generator acts on the merged weight"}
    default_lr = 5e-3

    def __init__(self, config, policy: str | None = None):
        super().__init__(config, policy)
        self.generators: dict[str, WeGeFTGenerator] = {}   # tied generators by group
        self.generation = 0                                  # bumps at every new set of branches

    def check_layers(self, shapes: dict[str, tuple[int, int]]) -> None:
        r = self.config.rank
        for name, (out_f, in_f) in shapes.items():
            if r > in_f:
                raise ConfigError(f"wegeft.rank {r} is larger than the input size of layer {name} ({out_f} x {in_f}); "
                                  f"choose a rank of at most {in_f}.", "wegeft.rank")
        if self.config.tie:
            first: dict[str, tuple[str, int]] = {}
            for name, (_, in_f) in shapes.items():
                kind = module_type(name)
                if kind in first and first[kind][1] != in_f:
                    raise ConfigError(
                        f"wegeft.tie shares one generator across every {kind}, but {first[kind][0]} has "
                        f"{first[kind][1]} inputs and {name} has {in_f}; set wegeft.tie to false.", "wegeft.tie")
                first.setdefault(kind, (name, in_f))

    def group_of(self, layer: AdaptedLinear) -> str:
        return f"{module_type(layer.name)}#{self.generation}" if self.config.tie else ""

    def add_branches(self, ctx: TaskContext) -> None:
        self.generation += 1
        live = {b.group for layer in self.layers.values() for b in layer.branches}
        self.generators = {g: m for g, m in self.generators.items() if g in live}   # drop merged ones
        super().add_branches(ctx)

    def new_branch(self, layer: AdaptedLinear, ctx: TaskContext) -> Branch:
        c = self.config
        group = self.group_of(layer)
        if group and group in self.generators:
            return WeGeFTBranch(layer.in_features, c.rank, c.scaling(), group, self.generators[group])
        generator = WeGeFTGenerator(layer.in_features, c.rank)
        generator.reset(ctx.generator)     # on the CPU generator; add_branch moves it to the device
        if group:
            self.generators[group] = generator
        return WeGeFTBranch(layer.in_features, c.rank, c.scaling(), group, generator)

    def build_branch(self, layer: AdaptedLinear, type_name: str, spec: dict) -> Branch:
        group = spec["group"]
        if group and group not in self.generators:
            self.generators[group] = WeGeFTGenerator(spec["in_features"], spec["rank"])
        return WeGeFTBranch(spec["in_features"], spec["rank"], spec["scaling"], group,
                            self.generators.get(group) if group else None)

    def load_state_dict(self, state: dict) -> None:
        self.generators = {}
        super().load_state_dict(state)

    def extra_state(self) -> dict:
        return {"generation": self.generation}

    def load_extra_state(self, state: dict) -> None:
        self.generation = int(state.get("generation", 0))

    def extra_updates(self) -> dict[tuple[str, str], Update]:
        out = {}
        for name, layer in self.layers.items():
            branch = self.current_branch(layer)
            if isinstance(branch, WeGeFTBranch):
                g = branch.generator_update()
                out[(name, "generator")] = LowRank(g.B.detach(), g.A.detach())
        return out

    def module_scalars(self) -> dict[str, dict[str, float]]:
        norms = {}
        for name, layer in self.layers.items():
            branch = self.current_branch(layer)
            if isinstance(branch, WeGeFTBranch):
                norms[name] = float(branch.generator.phi.detach().norm())
        return {"phi_norm": norms}


# -- the authors' regime (`--preset paper`; cldash.core.presets) ------------------------------

_GIFT = "savadikarc/gift/"

PAPER_PRESET = PaperPreset(
    paper="WeGeFT (Savadikar, Song, Wu), ICML 2025, arXiv 2312.00700 (its earlier versions: GIFT)",
    code="savadikarc/gift",
    values={
        "optimizer": Cited("adamw", _GIFT + "configs/training/vtab/gift.yaml: opt: 'adamw', betas 0.9, 0.999"),
        "lr": Cited(1e-4, _GIFT + "configs/training/vtab/gift.yaml: lr: 1e-4",
                    note="the configuration's default; scripts/visual_classification/vtab/tune_vtab_gift.sh "
                         "searches 1e-4 to 5e-3 per data set"),
        "lr_schedule": Cited("cosine", _GIFT + "configs/training/vtab/gift.yaml: sched: 'cosine'"),
        "warmup_ratio": Cited(0.1, _GIFT + "configs/training/vtab/gift.yaml: warmup_epochs: 10 of epochs: 100"),
        "weight_decay": Cited(0.0, _GIFT + "configs/training/vtab/gift.yaml: weight_decay: 0.0",
                              note="the default; tune_vtab_gift.sh searches 0.01, 0.001, 0.0001 and 0"),
        "batch_size": Cited(64, _GIFT + "configs/training/vtab/gift.yaml: batch_size: 64"),
        "max_grad_norm": Cited(0.0, _GIFT + "configs/training/vtab/gift.yaml: \"# clip_grad: 5.0\" is "
                               "commented out"),
        "targets": Cited(("o",), _GIFT + "configs/training/vtab/gift.yaml: gift_target_modules: attn:proj "
                         "(timm ViT's attention output projection)"),
        "method.rank": Cited(16, _GIFT + "configs/training/vtab/gift.yaml: gift_rank: 16"),
        "method.alpha": Cited(16.0, _GIFT + "gift/gift/modeling_gift.py: the generated update "
                              "out_projections(in_projections(W)) is added unscaled",
                              note="alpha = rank makes our alpha / r scale 1, as the code's"),
        "method.tie": Cited(True, _GIFT + "gift/gift/modeling_gift.py: one in / out projection pair per target "
                            "module type (in_projections[target_key]), shared by every layer"),
    },
    notes=(
        "The ICML 2025 code (savadikarc/wegeft) could not be read here; the values are from savadikarc/gift, "
        "the same paper's earlier code (ViT-B/16 on VTAB and FGVC; configs/training/CUB/gift.yaml is the "
        "same).",
        "The configuration's drop_path 0.1, warm-up from 1e-7 and floor of 1e-6 (timm's cosine) have no "
        "equivalent on our backbones and schedule.",
        "100 epochs (epochs: 100); " + EPOCHS_RULE + ".",
        "The language-model setup (scripts/language_modeling/run_commonsense.sh and README.md) uses lr 2.5e-4, "
        "rank 64, q_proj and v_proj, warmup_ratio 0.1, a linear schedule and a batch of 32 for 6 epochs; this "
        "preset follows the ViT setup, the one closest to ours.",
    ),
)
