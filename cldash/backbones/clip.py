"""CLIP as a backbone (kind "clip"): the image tower trains, the text tower makes zero-shot heads.

`clip-vit-b16` (cldash.backbones.pretrained) and any ``hf:`` model whose config's model_type is "clip"
load as this kind (cldash.backbones.hf reads the weights; this module splits the model):

- ``net`` is `CLIPImageTower`: CLIP's vision_model and visual_projection, nothing of the text side, so
  adapter targets and --train-head never reach the text tower. ``features(net, x)`` is the image
  embedding, L2-normalised: transformers' modeling_clip.py ``CLIPModel.get_image_features`` projects the
  vision tower's pooler_output (post_layernorm of the class token) with visual_projection, and
  ``CLIPModel.forward`` normalises it before its logits.
- ``prompt_embeddings(prompts)`` is the L2-normalised text embedding of each prompt (get_text_features),
  computed by the frozen text tower under no_grad, so that ``logit_scale * prompt_embeddings(prompts)`` as
  a head's weight (bias 0) gives CLIP's zero-shot logits, ``logit_scale.exp() * image @ text.T``
  (modeling_clip.py CLIPModel.forward; CoDyRA's evaluation does the same:
  Artificer-AI-Lab/CoDyRA main.py: evaluation, ``model.logit_scale.exp() * out @ all_embeddings.t()``).
- ``logit_scale`` is the model's learned temperature, exp(logit_scale) (100 for OpenAI's CLIP).
- CLIP has no classifier of its own: the pre-trained head ("pretrained") is refused in one sentence;
  a stream asks for heads with initial weights instead (``Stream.head_init``).

The text tower (about 63M parameters for ViT-B/16) is not pickled into a run's checkpoints: a
`PromptEncoder` drops it when pickled and loads it again from the same files the first time it is
called after that.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

CLIP_TYPES = ("clip", "clip_vision_model")   # model_type of a CLIP config (the whole model, or its vision tower)
# Every linear module of the vision encoder: attention q, k, v, out and the MLP pair, not the projection
# into the joint space (CoDyRA adapts these: Artificer-AI-Lab/CoDyRA main.py LORA_MAPPING "qkvoinout" is
# q_proj, k_proj, v_proj, out_proj, ffn_in, ffn_out, which are fc1 and fc2 in transformers' CLIP).
CLIP_TARGETS = ["q_proj|k_proj|v_proj|out_proj|fc1|fc2"]
PROMPT_BATCH = 256         # prompts encoded at once (a few hundred class names fit any memory)


class CLIPImageTower(nn.Module):
    """CLIP's image side: ``forward(pixel_values)`` -> L2-normalised image embeddings (N, projection_dim).

    A CLIPVisionModel without a projection (a bare ``clip_vision_model`` checkpoint) gives its normalised
    pooled output instead (``visual_projection`` None)."""

    # transformers' and PEFT's helpers walking a model ask its root for this (the part that holds the encoder)
    base_model_prefix = "vision_model"

    def __init__(self, vision_model: nn.Module, visual_projection: nn.Module | None, config):
        super().__init__()
        self.vision_model = vision_model
        self.visual_projection = visual_projection
        self.config = config            # the transformers config (hidden sizes, model_type) for whoever asks

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        pooled = self.vision_model(pixel_values=pixel_values).pooler_output      # (N, vision hidden)
        embedded = self.visual_projection(pooled) if self.visual_projection is not None else pooled
        return F.normalize(embedded, dim=-1)


def vision_config(config):
    """The vision tower's config of a CLIP config (CLIPConfig or CLIPVisionConfig)."""
    return getattr(config, "vision_config", None) or config


def has_projection(config) -> bool:
    """Whether the checkpoint holds a visual_projection: a whole CLIPModel, or CLIPVisionModelWithProjection."""
    return config.model_type == "clip" or "CLIPVisionModelWithProjection" in (config.architectures or [])


def embedding_size(config) -> int:
    """Width of the features: the joint space's (projection_dim), or the vision tower's without a projection."""
    return config.projection_dim if has_projection(config) else vision_config(config).hidden_size


def tower_from_config(config) -> CLIPImageTower:
    """A randomly initialised image tower of this config (on the current default device: ``meta`` to match
    targets without weights)."""
    from transformers import CLIPVisionConfig, CLIPVisionModel  # deferred: loads transformers' model code

    vc = vision_config(config)
    if not isinstance(vc, CLIPVisionConfig):
        vc = CLIPVisionConfig.from_dict(vc.to_dict())
    projection = nn.Linear(vc.hidden_size, embedding_size(config), bias=False) if has_projection(config) else None
    return CLIPImageTower(CLIPVisionModel(vc), projection, config)


def split(model: nn.Module) -> tuple[CLIPImageTower, nn.Module | None, nn.Module | None, float]:
    """A loaded transformers CLIP model as (image tower, text_model, text_projection, logit_scale); a vision-only
    model has no text side (None, None) and a logit scale of 1."""
    projection = getattr(model, "visual_projection", None)
    # CLIPModel and CLIPVisionModelWithProjection hold a CLIPVisionModel; a bare checkpoint is one
    tower = CLIPImageTower(getattr(model, "vision_model", model), projection, model.config)
    text, text_projection = getattr(model, "text_model", None), getattr(model, "text_projection", None)
    scale = float(model.logit_scale.detach().float().exp()) if hasattr(model, "logit_scale") else 1.0
    return tower, text, text_projection, scale


class PromptEncoder:
    """``encoder(prompts) -> (C, projection_dim)`` L2-normalised text embeddings, under no_grad.

    `reload() -> (text_model, text_projection, tokenizer)` loads the text side again after unpickling
    (a checkpoint does not carry it)."""

    def __init__(self, text_model: nn.Module, text_projection: nn.Module, tokenizer, reload: Callable):
        self.text_model, self.text_projection, self.tokenizer = text_model.eval(), text_projection, tokenizer
        self.reload = reload

    def __getstate__(self) -> dict:
        return {"reload": self.reload}

    def __setstate__(self, state: dict) -> None:
        self.reload = state["reload"]
        self.text_model = self.text_projection = self.tokenizer = None

    @torch.no_grad()
    def __call__(self, prompts: list[str]) -> torch.Tensor:
        if self.text_model is None:
            self.text_model, self.text_projection, self.tokenizer = self.reload()
            self.text_model.eval()
        device = next(self.text_model.parameters()).device
        out = []
        for i in range(0, len(prompts), PROMPT_BATCH):
            batch = self.tokenizer(list(prompts[i:i + PROMPT_BATCH]), padding=True, truncation=True,
                                   return_tensors="pt").to(device)
            pooled = self.text_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).pooler_output
            out.append(F.normalize(self.text_projection(pooled).float(), dim=-1))
        return torch.cat(out).cpu()


# How a CLIP backbone gives features and (no) logits: module-level functions, so a checkpoint pickles them.
def features(net: CLIPImageTower, x: torch.Tensor) -> torch.Tensor:
    return net(x)


def logits(net: CLIPImageTower, x: torch.Tensor) -> torch.Tensor:
    raise ValueError("a CLIP backbone has no classifier of its own; its stream gives it heads from class-name "
                     "prompts (Backbone.prompt_embeddings, Stream.head_init)")
