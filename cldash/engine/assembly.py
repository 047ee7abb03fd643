"""One function assembles a run's model: the pre-trained backbone, the stream's heads on it, the method on
its target modules.

`assemble` is the only place that does it: a run (cldash.engine.loop), a finished run's model rebuilt from
its saved adapters (cldash.engine.adapters), an order's gradient measurement (cldash.analysis.orders, with
no method). A fork that changes the method attaches the new one to the checkpoint's merged weights with
`attach_method`, assemble's second half, after `merge_into_base`.

The order of the steps is part of the result: loading the backbone, initialising the new heads and the
bare network `check_against_model` builds to match the targets all draw from torch's global generator, so
a caller that seeds it first gets the same weights (and the same training after) on every path.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from cldash.backbones import Backbone, task_model
from cldash.config import Resolved, check_against_model
from cldash.methods import Method
from cldash.streams.base import Stream

CPU = torch.device("cpu")


@dataclass
class Assembled:
    backbone: Backbone
    stream: Stream
    model: nn.Module                       # backbones.task_model: the backbone's network with the stream's heads
    method: Method | None                  # attached to the targets; None when assembled without one
    targets: dict[str, tuple[int, int]]    # each target module's (out, in) size


def assemble(resolved: Resolved, device: torch.device = CPU, with_method: bool = True,
             targets: dict[str, tuple[int, int]] | None = None) -> Assembled:
    """The run's backbone, stream (its data on `device`, its loss as the run configures it), model and, with
    `with_method`, a fresh method attached to the target modules; the model on `device`. `targets`: what
    `check_against_model` returned to a caller that checked the configuration before loading anything (an
    order's measurement); else they are matched here, after the heads."""
    backbone = resolved.backbone.load(resolved.backbone_options)
    stream = resolved.stream_cls(resolved.stream_options, backbone)
    if resolved.config.validation:
        stream.hold_out(resolved.config.validation)
    stream.to(device)
    stream.loss_classes = resolved.config.loss_classes
    model = task_model(backbone, stream.heads, stream.head_init)
    if targets is None:
        targets = check_against_model(resolved)
    method = attach_method(resolved, model, targets) if with_method else None
    model.to(device)
    return Assembled(backbone, stream, model, method, targets)


def attach_method(resolved: Resolved, model: nn.Module, targets: dict[str, tuple[int, int]]) -> Method:
    """A fresh method of the run attached to `model`'s target modules (the backbone trains or not as the method
    says); the caller moves the model to its device afterwards (attaching adds the adapters' tensors)."""
    method = resolved.make_method()
    model.net.requires_grad_(resolved.method_cls.trains_backbone)
    method.attach(model.net, list(targets))
    return method


@torch.no_grad()
def merge_into_base(model: nn.Module, method: Method) -> None:
    """Replace each of the method's adapted layers in `model` by its base module holding the layer's effective
    weight (base plus every branch): the model computes the same function with no adapter left."""
    for name, layer in method.layers.items():
        w = layer.effective_weight().detach()
        layer.base.weight.copy_(w.T if layer.transposed else w)
        parent_name, _, child = name.rpartition(".")
        parent = model.net.get_submodule(parent_name) if parent_name else model.net
        setattr(parent, child, layer.base)
