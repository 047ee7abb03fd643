"""Pre-trained image backbones by short name, each pinned to a Hub commit.

- ``vit-b16-in21k``: google/vit-base-patch16-224-in21k, a ViT-B/16 pre-trained on ImageNet-21k (the ViT
  paper's, Dosovitskiy et al., as its model card says), the architecture, resolution and pre-training data
  InfLoRA and SD-LoRA start from. Kind image-classification: the checkpoint has no classifier; a new linear
  head reads the [CLS] token after the final layer norm, as InfLoRA's does (liangyanshuo/InfLoRA
  models/sinet_inflora.py: ViT_lora_co.forward ends with self.norm(x), SiNet takes image_features[:, 0, :]).
  Not necessarily the authors' exact weights: InfLoRA builds timm's vit_base_patch16_224_in21k
  (models/sinet_inflora.py: SiNet), whose URL in its copy of timm's table (models/vit_inflora.py:
  default_cfgs) is the AugReg checkpoint (Steiner et al., arXiv 2106.10270:
  B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0.npz); older timm versions gave the original
  weights under the same name. Which of the two the Hub copy is was not checked here (it cannot be
  offline); a transformers-format copy of other weights can be given as ``hf:PATH``.
- ``clip-vit-b16``: openai/clip-vit-base-patch16, CoDyRA's backbone (Artificer-AI-Lab/CoDyRA main.py:
  --backbone_type ViT-B-16, --pretrained_weight openai). Kind clip: the vision tower and its projection as
  image features, zero-shot heads from text prompts (cldash.backbones.clip).

Both load through the ``hf:`` path (cldash.backbones.hf, ``from_pretrained(revision=...)``), so a user's own
``hf:`` image model works the same way. The revisions are the commits these repositories' files have on
the Hub, as public code that pins them records (found offline, not checked against the Hub from here:
embeddings-benchmark/mteb mteb/models/clip_models.py pins openai/clip-vit-base-patch16 at 57c21647..., and
Hugging Face cache listings and download scripts in several public repositories show the ViT's snapshot
b4569560...). A run records the commit it actually read in ``info["revision"]``: the Hub cache's snapshot
folder the weights came from, named by the commit.

Checking a configuration needs no download: the network that target patterns are matched on is built on
the ``meta`` device from a config shipped here (the standard ViT-B/16 sizes: width 768, 12 layers, 12
heads, MLP 3072, patch 16, 224 pixels; CLIP's text tower is not part of the network a run adapts). Loading
the weights without network and without a cached copy is one sentence (cldash.core.hub).

Default targets: every linear module of the image encoder (attention q, k, v, output and the MLP pair), the
common regime's "every linear adapted" on any backbone; each method's paper preset sets its authors' own
roles (InfLoRA k and v, SD-LoRA q and v, CoDyRA q, k, v, o and the MLP: cldash.config.presets.ROLE_PATTERNS
maps them onto transformers' q_proj / k_proj / v_proj names). The authors' timm ViT fuses q, k and v into
one ``qkv`` Linear and adapts slices of it; transformers' ViT has three Linears, so a slice of the fused
one is the Linear of that name here.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from torch import nn

from cldash.backbones import clip, hf
from cldash.backbones.base import Backbone, BackboneEntry
from cldash.core import hub

# transformers 5 names ViT's attention linears q_proj/k_proj/v_proj/o_proj and its MLP fc1/fc2 (4.x:
# query/key/value/attention.output.dense, intermediate.dense/output.dense): both spellings
VIT_B16_TARGETS = ["q_proj|k_proj|v_proj|o_proj|fc1|fc2|query|key|value|attention\\.output\\.dense|"
                   "intermediate\\.dense|output\\.dense"]


@dataclass(frozen=True)
class Pinned:
    """A Hub model under a short name, at one commit."""

    name: str                 # the short name (--backbone NAME)
    label: str
    repo: str                 # the Hub repository
    revision: str             # its commit
    kind: str                 # "image-classification" | "clip"
    config: dict = field(default_factory=dict)   # the shipped config: builds the network to match targets
    targets: tuple[str, ...] = ()


# google/vit-base-patch16-224-in21k's config.json (ViT-B/16: transformers' ViTConfig defaults are these sizes)
_VIT_B16 = {"model_type": "vit", "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
            "intermediate_size": 3072, "patch_size": 16, "image_size": 224, "num_channels": 3, "qkv_bias": True,
            "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, "architectures": ["ViTModel"]}
# openai/clip-vit-base-patch16's config.json, the sizes that matter: vision tower ViT-B/16 (768 wide, 12 layers,
# 12 heads, MLP 3072, patch 16, 224 pixels), text tower 512 wide, 12 layers, 8 heads; joint space 512
_CLIP_B16 = {"model_type": "clip", "projection_dim": 512, "logit_scale_init_value": 2.6592,
             "architectures": ["CLIPModel"],
             "vision_config": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                               "intermediate_size": 3072, "patch_size": 16, "image_size": 224,
                               "projection_dim": 512},
             "text_config": {"hidden_size": 512, "num_hidden_layers": 12, "num_attention_heads": 8,
                             "intermediate_size": 2048, "max_position_embeddings": 77, "vocab_size": 49408,
                             "projection_dim": 512}}

PINNED: dict[str, Pinned] = {p.name: p for p in (
    Pinned("vit-b16-in21k", "ViT-B/16, ImageNet-21k (google/vit-base-patch16-224-in21k)",
           "google/vit-base-patch16-224-in21k", "b4569560a39a0f1af58e3ddaf17facf20ab919b0",
           "image-classification", _VIT_B16, tuple(VIT_B16_TARGETS)),
    Pinned("clip-vit-b16", "CLIP ViT-B/16, OpenAI (openai/clip-vit-base-patch16): zero-shot heads from prompts",
           "openai/clip-vit-base-patch16", "57c216476eefef5ab752ec549e440a49ae4ae5f3", "clip", _CLIP_B16,
           tuple(clip.CLIP_TARGETS)),
)}


def shipped_config(pinned: Pinned):
    """The transformers config shipped for `pinned` (no download)."""
    from transformers import CLIPConfig, ViTConfig  # deferred: loads transformers' model code

    cls = CLIPConfig if pinned.config["model_type"] == "clip" else ViTConfig
    return cls.from_dict({k: v for k, v in pinned.config.items() if k != "model_type"})


def build_net(key: str, o: hf.HFOptions) -> nn.Module:
    """The network of a pinned model without weights (meta device), from its shipped config."""
    pinned = PINNED[key]
    return hf.net_from_config(shipped_config(pinned), pinned.kind, o.num_labels)


def load(key: str, o: hf.HFOptions) -> Backbone:
    """The pinned model's weights at its commit (downloaded once into the Hugging Face cache)."""
    pinned = PINNED[key]
    backbone = hf.load(pinned.repo, pinned.kind, o, revision=pinned.revision, short=pinned.name)
    backbone.default_targets = list(pinned.targets)
    backbone.info["pinned_revision"] = pinned.revision
    return backbone


def missing_weights(key: str) -> str | None:
    """Why the pinned model's weights cannot be had now (one sentence), or None: they are in the local Hugging
    Face cache at the pinned commit, or the Hub can be asked. Reads no weights (a check before a run is
    stored)."""
    pinned = PINNED[key]
    offline = hub.why_not(pinned.repo)
    if offline is None or hf.hub_file(pinned.repo, "config.json", pinned.revision) is not None:
        return None
    return str(hf.offline_error(f"the weights of {pinned.name}", pinned.repo, offline))


def entries() -> dict[str, BackboneEntry]:
    """The registry rows of the pinned models (cldash.backbones.BACKBONES)."""
    return {key: BackboneEntry(key, p.label, p.kind, hf.HFOptions, functools.partial(build_net, key),
                               functools.partial(load, key), p.targets) for key, p in PINNED.items()}
