"""A tiny ViT for 8x8 digits, built from a transformers config and pre-trained in-project.

transformers' ViTForImageClassification with a small config (hidden 64, 2 layers, patch 2 on
8x8 single-channel images, about 69k parameters), pre-trained in-project on the upright digits
of the fixed train split (cldash.streams.digits). The weights of the default options ship with
the package (cldash/backbones/weights/vit-tiny.*, made by `cldash pretrain --backbone vit-tiny`),
so every machine gets the same bits; other options are pre-trained on first use (about 8 s on
one CPU thread) and cached, keyed by the options, the recipe and the transformers major version
(whose module names the state dict depends on). About 95 % test accuracy.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cldash.backbones.base import Backbone, load_pretrained
from cldash.backbones.weights import make_record, one_thread
from cldash.core.errors import ConfigError
from cldash.core.options import option
from cldash.streams.digits import digits_splits, normalize

# transformers 5.x names the attention linears q/k/v/o_proj and the MLP fc1/fc2; 4.x used
# query/key/value/attention.output.dense and intermediate.dense/output.dense.
VIT_TARGETS = ["q_proj|k_proj|v_proj|o_proj|fc1|fc2|query|key|value|dense"]


@dataclass
class ViTTinyOptions:
    hidden_size: int = option(64, "width of the transformer", low=8, high=1024)
    layers: int = option(2, "number of transformer blocks", low=1, high=24)
    heads: int = option(4, "attention heads (must divide hidden_size)", low=1, high=64)
    mlp_size: int = option(128, "width of each block's MLP", low=8, high=8192)
    patch_size: int = option(2, "side of a square patch in pixels", choices=(1, 2, 4, 8))
    pretrain_steps: int = option(1000, "optimizer steps of pre-training on upright digits", low=1, high=100_000)
    pretrain_lr: float = option(3e-3, "peak learning rate of pre-training (one-cycle schedule)",
                                low=0.0, low_open=True, high=1.0)
    seed: int = option(0, "seed of the pre-training (shared by every run, whatever the run's seed)", low=0,
                       high=2**31 - 1)

    def check(self, prefix: str) -> None:
        if self.hidden_size % self.heads:
            raise ConfigError(f"{prefix}.heads {self.heads} must divide {prefix}.hidden_size "
                              f"{self.hidden_size}.", f"{prefix}.heads")


def _config(o: ViTTinyOptions):
    from transformers import ViTConfig  # deferred: loads transformers' model code

    return ViTConfig(image_size=8, patch_size=o.patch_size, num_channels=1, hidden_size=o.hidden_size,
                     num_hidden_layers=o.layers, num_attention_heads=o.heads, intermediate_size=o.mlp_size,
                     num_labels=10, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def build_net(o: ViTTinyOptions):
    from transformers import ViTForImageClassification  # deferred: loads transformers' model code

    return ViTForImageClassification(_config(o))


def _features(net, x: torch.Tensor) -> torch.Tensor:
    return net.vit(pixel_values=x).last_hidden_state[:, 0]   # [CLS] after the final layer norm


def _logits(net, x: torch.Tensor) -> torch.Tensor:
    return net.classifier(_features(net, x))


RECIPE = "adamw-onecycle-b64-v1"


def scores(net) -> dict[str, float]:
    """The pre-trained model's score on the held-out upright digits (the runs' general task)."""
    _, test = digits_splits()
    net.eval()
    with torch.no_grad():
        return {"test_accuracy": float((_logits(net, normalize(test.x)).argmax(-1) == test.y).float().mean())}


def pretrain(o: ViTTinyOptions) -> tuple[dict, dict]:
    """Train a fresh tiny ViT on upright digits on one CPU thread; return its state dict and record."""
    train, _ = digits_splits()
    x, y = normalize(train.x), train.y
    with torch.random.fork_rng(devices=[]), one_thread():
        torch.manual_seed(o.seed)
        net = build_net(o)
        g = torch.Generator().manual_seed(o.seed)
        opt = torch.optim.AdamW(net.parameters(), lr=o.pretrain_lr, weight_decay=0.01)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=o.pretrain_lr, total_steps=o.pretrain_steps,
                                                    pct_start=0.1)
        start = time.perf_counter()
        net.train()
        for _ in range(o.pretrain_steps):
            idx = torch.randint(len(y), (64,), generator=g)
            loss = F.cross_entropy(_logits(net, x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        seconds = time.perf_counter() - start
        result = scores(net)
    return net.state_dict(), make_record("vit-tiny", o, RECIPE, _config(o).to_dict(), result, seconds)


def load(o: ViTTinyOptions) -> Backbone:
    net, weights = load_pretrained("vit-tiny", o, RECIPE, pretrain, build_net)
    return Backbone(name="vit-tiny", net=net, kind="image-classification", default_targets=list(VIT_TARGETS),
                    hidden_size=o.hidden_size, num_labels=10, features=_features, logits=_logits,
                    info=weights.summary(), image_size=8, num_channels=1,
                    # cldash.streams.digits.normalize: x * 2 - 1 on pixels in [0, 1], i.e. mean 0.5, std 0.5
                    image_mean=(0.5,), image_std=(0.5,))
