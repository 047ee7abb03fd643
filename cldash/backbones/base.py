"""What every backbone provides, target selection by name patterns, and loading pre-trained weights."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import transformers
from torch import nn

from cldash.backbones.weights import SHIPPED_NEEDS_TRANSFORMERS, cache_path, cached, record_path, shipped
from cldash.core.errors import ConfigError
from cldash.methods.layer import is_linear, linear_shape


@dataclass
class Backbone:
    """A loaded model and what the engine needs to know about it."""

    name: str
    net: nn.Module                                # the transformers model
    kind: str                                     # "image-classification" | "causal-lm" | ...
    default_targets: list[str]
    hidden_size: int
    num_labels: int
    features: Callable[[nn.Module, torch.Tensor], torch.Tensor]   # (net, x) -> (N, hidden)
    logits: Callable[[nn.Module, torch.Tensor], torch.Tensor]     # (net, x) -> pre-trained head
    info: dict = field(default_factory=dict)      # where the weights came from (Weights.summary())
    head_modules: tuple[str, ...] = ("classifier",)   # the pre-trained head (trains with --train-head)
    tokenizer: object = None                      # a Hugging Face model's tokenizer (hf: backbones)
    # an image model's input, as its image processor (or its authors' transform) prepares it; a stream
    # resizes to image_size and normalises with image_mean / image_std itself (0: not an image model)
    image_size: int = 0
    image_mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    image_std: tuple[float, ...] = (0.5, 0.5, 0.5)
    num_channels: int = 3
    # CLIP-style models: prompts -> their L2-normalised text embeddings (C, hidden) in the space of
    # `features`, so that logit_scale * prompt_embeddings(prompts) is a zero-shot head's weight
    prompt_embeddings: Callable[[list[str]], torch.Tensor] | None = None
    logit_scale: float = 1.0


@dataclass(frozen=True)
class BackboneEntry:
    name: str
    label: str
    kind: str
    Options: type
    build_net: Callable[[object], nn.Module]
    load: Callable[[object], Backbone]
    default_targets: tuple[str, ...]
    # in-project backbones only (None for hf:): options -> (state_dict, record), net -> scores
    pretrain: Callable[[object], tuple[dict, dict]] | None = None
    scores: Callable[[nn.Module], dict] | None = None
    recipe: str | None = None


class ClassifierModel(nn.Module):
    """A backbone with its pre-trained head and any new heads a stream asks for.

    ``model(x, head="pretrained")`` uses the backbone's own classifier (the general task and
    domain-incremental streams); ``model(x, head="stream")`` a fresh linear head on the same
    features (class-incremental streams).

    ``head_init[name] = (weight (n, hidden), trainable)`` starts head `name` from that weight with a zero
    bias (CLIP's zero-shot head: logit_scale times the class prompts' embeddings), frozen unless
    `trainable`. Every head is first made as nn.Linear makes it, so the global generator advances the
    same with or without an initial weight.
    """

    def __init__(self, backbone: Backbone, heads: dict[str, int] | None = None,
                 head_init: dict[str, tuple[torch.Tensor, bool]] | None = None):
        super().__init__()
        self.backbone = backbone
        self.net = backbone.net
        self.heads = nn.ModuleDict({k: nn.Linear(backbone.hidden_size, n) for k, n in (heads or {}).items()})
        for name, (weight, trainable) in (head_init or {}).items():
            self._start_head(name, weight, trainable)

    @torch.no_grad()
    def _start_head(self, name: str, weight: torch.Tensor, trainable: bool) -> None:
        if name not in self.heads:
            raise ValueError(f"head_init names head {name!r}, which the stream does not ask for "
                             f"(its heads: {', '.join(self.heads) or 'none'})")
        head = self.heads[name]
        if tuple(weight.shape) != tuple(head.weight.shape):
            raise ValueError(f"head_init[{name!r}] has shape {tuple(weight.shape)}; head {name!r} needs "
                             f"{tuple(head.weight.shape)} (classes, the backbone's hidden size)")
        head.weight.copy_(weight.detach())
        head.bias.zero_()
        head.requires_grad_(bool(trainable))

    def forward(self, x: torch.Tensor, head: str = "pretrained") -> torch.Tensor:
        if head == "pretrained":
            return self.backbone.logits(self.net, x)
        return self.heads[head](self.backbone.features(self.net, x))


class CausalLMModel(nn.Module):
    """A causal language model as the engine sees it: ``model(input_ids)`` -> next-token logits
    (N, T, vocab) from the backbone's own LM head. Language streams need no new heads."""

    def __init__(self, backbone: Backbone, heads: dict[str, int] | None = None, head_init: dict | None = None):
        super().__init__()
        if heads or head_init:
            raise ValueError(f"a causal language model takes no new classifier heads (asked for {sorted(heads)})")
        self.backbone = backbone
        self.net = backbone.net
        self.heads = nn.ModuleDict()

    def forward(self, x: torch.Tensor, head: str = "pretrained") -> torch.Tensor:
        return self.backbone.logits(self.net, x)


def task_model(backbone: Backbone, heads: dict[str, int] | None = None,
               head_init: dict[str, tuple[torch.Tensor, bool]] | None = None) -> nn.Module:
    """The model a run trains: a causal LM as is, any other backbone with its classifier heads (`head_init`:
    the heads that start from a given weight, ClassifierModel)."""
    if backbone.kind == "causal-lm":
        return CausalLMModel(backbone, heads, head_init)
    return ClassifierModel(backbone, heads, head_init)


def linear_modules(model: nn.Module) -> dict[str, tuple[int, int]]:
    """Every nn.Linear / Conv1D of a model with its (out, in) shape."""
    return {name: linear_shape(m) for name, m in model.named_modules() if is_linear(m)}


def match_targets(model: nn.Module, patterns: list[str]) -> list[str]:
    """Names of the linear modules matched by any pattern.

    A pattern matches a module whose dotted name ends with it at a segment boundary; it may be
    a regular expression (``"q_proj"``, ``"layers\\.0\\..*"``, ``"(q|v)_proj"``). A pattern that
    matches no linear module is an error that lists the model's linear modules.
    """
    linears = linear_modules(model)
    chosen: list[str] = []
    for pattern in patterns:
        try:
            rx = re.compile(rf"(?:^|\.)(?:{pattern})$")
        except re.error as exc:
            raise ConfigError(f"target pattern {pattern!r} is not a valid regular expression ({exc}).",
                              "targets") from None
        hits = [n for n in linears if rx.search(n)]
        if not hits:
            listing = ", ".join(linears) or "none"
            raise ConfigError(f"target pattern {pattern!r} matches no linear module of the model; "
                              f"its linear modules are: {listing}.", "targets")
        chosen.extend(h for h in hits if h not in chosen)
    return [n for n in linears if n in chosen]  # model order


def load_pretrained(name: str, options, recipe: str, pretrain: Callable, build_net: Callable):
    """A pre-trained in-project backbone: its network built from `options` with the shipped weights
    when `options` are the defaults they were made with, else with locally pre-trained ones
    (``pretrain(options) -> (state_dict, record)`` on first use, then cached; cldash.backbones.weights).
    Returns (net in eval mode, Weights)."""
    net = build_net(options)
    found = shipped(name, options, recipe)
    path = cache_path(name, options, recipe)
    if found is not None:
        if set(found.state_dict) == set(net.state_dict()):
            net.load_state_dict(found.state_dict)
            return net.eval(), found
        # the module names of this transformers are not those the file was saved with (5.9 renamed ViT's)
        made = found.record.get("versions", {}).get("transformers", "?")
        what = (f"using the copy pre-trained here before ({path})" if record_path(path).exists() else
                f"pre-training {name} on this machine instead, once (cached in {path})")
        print(f"cldash: the shipped {name} weights need transformers {SHIPPED_NEEDS_TRANSFORMERS} or later (made with "
              f"{made}) and this is transformers {transformers.__version__}, whose module names differ; {what}; "
              "its numbers are not the shipped weights' (`pip install -U transformers` gives those).", file=sys.stderr)
    weights = cached(name, path, lambda: pretrain(options))
    net.load_state_dict(weights.state_dict)
    return net.eval(), weights
