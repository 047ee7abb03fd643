"""Backbones: small transformers models built from configs and pre-trained in-project, pre-trained Hub
image models by short name (pinned to a commit: cldash.backbones.pretrained), and any Hugging Face model.

Each entry names its options dataclass, a builder of the bare network (random weights, cheap:
used to check a configuration against the layer sizes without pre-training), a loader of the
pre-trained backbone (shipped weights for the default options, else pre-trained and cached:
cldash.backbones.weights) and, for the in-project backbones, the pre-training recipe that
`cldash pretrain` runs.
"""

from __future__ import annotations

from cldash.backbones import gpt2, hf, pretrained, vit
from cldash.backbones.base import (
    Backbone,
    BackboneEntry,
    CausalLMModel,
    ClassifierModel,
    linear_modules,
    match_targets,
    task_model,
)
from cldash.core.errors import ConfigError

BACKBONES: dict[str, BackboneEntry] = {
    "vit-tiny": BackboneEntry("vit-tiny", "Tiny ViT (8x8 digits, 2 layers, width 64)", "image-classification",
                              vit.ViTTinyOptions, vit.build_net, vit.load, tuple(vit.VIT_TARGETS),
                              vit.pretrain, vit.scores, vit.RECIPE),
    "gpt2-tiny": BackboneEntry("gpt2-tiny", "Tiny GPT-2 (generated skills, 2 layers, width 64)", "causal-lm",
                               gpt2.GPT2TinyOptions, gpt2.build_net, gpt2.load, tuple(gpt2.GPT2_TARGETS),
                               gpt2.pretrain, gpt2.scores, gpt2.RECIPE),
    **pretrained.entries(),
}


def get_backbone(name: str) -> BackboneEntry:
    """A registered backbone, or any Hugging Face model as ``hf:NAME_OR_PATH`` (cldash.backbones.hf)."""
    if name.startswith(hf.PREFIX):
        return hf.entry(name)
    if name not in BACKBONES:
        raise ConfigError(f"unknown backbone {name!r}; choose one of: {', '.join(BACKBONES)}, or hf:NAME_OR_PATH "
                          "for a Hugging Face model.", "backbone")
    return BACKBONES[name]


__all__ = ["BACKBONES", "Backbone", "BackboneEntry", "CausalLMModel", "ClassifierModel", "get_backbone",
           "linear_modules", "match_targets", "task_model"]
