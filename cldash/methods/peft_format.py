"""Export adapters in HF PEFT's LoRA format: ``adapter_model.safetensors`` + ``adapter_config.json``.

The exported adapter applies to the *original pre-trained* model, like every update here is
measured against it, and ``peft.PeftModel.from_pretrained(pretrained_model, folder)`` then computes
what our adapted model computes (tested). Three forms, the most faithful that fits:

- **native**: one LoRA (or DoRA) branch per layer on the untouched pre-trained weight (``lora``
  and ``dora`` with policy ``single``, or after one task): ``lora_A``, ``lora_B`` (and DoRA's
  ``lora_magnitude_vector``) as they are, with the run's ``r``, ``lora_alpha``, ``use_rslora``,
  ``use_dora``.
- **rank 2r**: one branch whose init was taken out of the base weight (PiSSA, LoRA-GA after one
  task): ``s (B A - B0 A0) = s [B | -B0] [A; A0]`` becomes a plain LoRA of rank 2r with
  ``lora_alpha`` 2 alpha (or sqrt(2) alpha with rsLoRA), so the scaling is unchanged: PEFT's own
  conversion (``path_initial_model_for_weight_conversion``).
- **cumulative**: anything else whose update against W0 is low-rank (several tasks merged or
  stacked, AdaLoRA, WeGeFT, LoRETTA): each layer's factored update ``B A`` (scaling folded into
  B) as a LoRA of rank = its inner size and ``lora_alpha`` = that rank (scaling 1), with
  ``rank_pattern`` / ``alpha_pattern`` where layers differ.

Dense updates (full fine-tuning; DoRA after a merge folded a full-rank update into the weights)
have no LoRA form: asking for one is an error sentence. Heads trained outside the adapted linears
(``--train-head``, a class-incremental stream's new head) are not part of the export.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import safetensors.torch
import torch

from cldash.core.errors import UserError
from cldash.methods.dora import DoRABranch
from cldash.methods.layer import AdaptedLinear
from cldash.methods.lora import LoRABranch

PREFIX = "base_model.model."


def _native(layer: AdaptedLinear) -> bool:
    return len(layer.branches) == 1 and not layer.offset and not layer.dense_offset


def _rank_2r(layer: AdaptedLinear) -> bool:
    return (len(layer.branches) == 1 and type(layer.branches[0]) is LoRABranch and len(layer.offset) == 1
            and not layer.dense_offset)


def peft_adapter(method) -> tuple[dict[str, torch.Tensor], dict]:
    """The adapter's tensors (PEFT's key names) and its adapter_config.json as a dict."""
    layers = method.layers
    if not layers:
        raise UserError(f"{method.name} has no adapted layers to export.")
    if any(layer.dense_offset for layer in layers.values()) or not type(method).low_rank and method.name != "dora":
        raise UserError(f"{method.name}'s update is dense (full rank), so it has no LoRA form; only adapters whose "
                        "update is low-rank can be exported in PEFT's format.")
    config = method.config
    cfg = {"peft_type": "LORA", "task_type": None, "inference_mode": True, "bias": "none",
           "fan_in_fan_out": any(layer.transposed for layer in layers.values()), "init_lora_weights": True,
           "lora_dropout": float(getattr(config, "dropout", 0.0)), "use_rslora": False, "use_dora": False,
           "rank_pattern": {}, "alpha_pattern": {}, "modules_to_save": None}
    branches = [layer.branches[0] for layer in layers.values() if len(layer.branches)]
    if method.name == "dora":
        tensors, form = _dora_form(layers, config)
    elif all(_native(layer) and type(layer.branches[0]) is LoRABranch for layer in layers.values()) and \
            len({b.rank for b in branches}) == 1 and hasattr(config, "rslora"):
        tensors, form = _native_form(layers, config)
    elif method.name in ("pissa", "loraga") and all(_rank_2r(layer) for layer in layers.values()):
        tensors, form = _rank_2r_form(layers, config)
    else:
        tensors, form = _cumulative_form(method)
    cfg.update(form)
    cfg["target_modules"] = sorted({key[len(PREFIX):].rsplit(".lora_", 1)[0] for key in tensors})
    tensors = {k: v.detach().to(torch.float32).contiguous().cpu() for k, v in tensors.items()}
    return tensors, cfg


def _dora_form(layers: dict[str, AdaptedLinear], config) -> tuple[dict[str, torch.Tensor], dict]:
    """DoRA on the untouched pre-trained weights: its A, B and magnitude as they are, ``use_dora``."""
    if not all(_native(layer) and isinstance(layer.branches[0], DoRABranch) for layer in layers.values()):
        raise UserError("a DoRA adapter can be exported only while it sits on the untouched pre-trained weights "
                        "(policy single); this one merged a full-rank DoRA update into the weights, which "
                        "PEFT's LoRA format cannot hold.")
    tensors = {}
    for name, layer in layers.items():
        b = layer.branches[0]
        tensors[f"{PREFIX}{name}.lora_A.weight"] = b.lora_A.detach()
        tensors[f"{PREFIX}{name}.lora_B.weight"] = b.lora_B.detach()
        tensors[f"{PREFIX}{name}.lora_magnitude_vector"] = b.magnitude.detach()
    return tensors, {"r": config.rank, "lora_alpha": config.alpha, "use_rslora": config.rslora, "use_dora": True}


def _native_form(layers: dict[str, AdaptedLinear], config) -> tuple[dict[str, torch.Tensor], dict]:
    """One LoRA branch per layer on the untouched pre-trained weight: A and B as they are."""
    tensors = {}
    for name, layer in layers.items():
        b = layer.branches[0]
        tensors[f"{PREFIX}{name}.lora_A.weight"] = b.lora_A.detach()
        tensors[f"{PREFIX}{name}.lora_B.weight"] = b.lora_B.detach()
    return tensors, {"r": config.rank, "lora_alpha": config.alpha, "use_rslora": config.rslora}


def _rank_2r_form(layers: dict[str, AdaptedLinear], config) -> tuple[dict[str, torch.Tensor], dict]:
    """PiSSA / LoRA-GA after one task: ``s (B A - B0 A0) = s [B | -B0] [A; A0]``, a LoRA of rank 2r whose
    alpha keeps the scaling (PEFT's path_initial_model_for_weight_conversion)."""
    tensors = {}
    for name, layer in layers.items():
        b = layer.branches[0]
        init = layer.offset[0]           # (-s B0, A0): the init taken out of the base weight
        tensors[f"{PREFIX}{name}.lora_A.weight"] = torch.cat([b.lora_A.detach(), init.A], dim=0)
        tensors[f"{PREFIX}{name}.lora_B.weight"] = torch.cat([b.lora_B.detach(), init.B / b.scaling], dim=1)
    alpha = config.alpha * (math.sqrt(2) if config.rslora else 2)
    return tensors, {"r": 2 * config.rank, "lora_alpha": alpha, "use_rslora": config.rslora}


def _cumulative_form(method) -> tuple[dict[str, torch.Tensor], dict]:
    """Any other low-rank update against W0: each layer's factored ``B A`` (scaling folded into B) as a LoRA of
    rank its inner size and alpha that rank, with rank and alpha patterns where layers differ."""
    tensors, ranks = {}, {}
    for name, layer in method.layers.items():
        update = layer.update()
        if not hasattr(update, "inner"):
            raise UserError(f"{method.name}'s update of {name} is dense, so it has no LoRA form.")
        if update.inner == 0:
            continue    # nothing learned in this layer: PEFT has no rank-0 LoRA
        tensors[f"{PREFIX}{name}.lora_A.weight"] = update.A.detach()
        tensors[f"{PREFIX}{name}.lora_B.weight"] = update.B.detach()
        ranks[name] = update.inner
    if not ranks:
        raise UserError(f"{method.name}'s adapters are all zero; there is nothing to export.")
    r = max(ranks.values())
    return tensors, {"r": r, "lora_alpha": r, "rank_pattern": {n: k for n, k in ranks.items() if k != r},
                     "alpha_pattern": {n: k for n, k in ranks.items() if k != r}}


def save_peft(method, folder: str | Path, base_model: str = "") -> Path:
    """Write ``adapter_model.safetensors`` and ``adapter_config.json`` into `folder`."""
    tensors, cfg = peft_adapter(method)
    cfg["base_model_name_or_path"] = base_model or None
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder} is a file; give a folder to write the PEFT adapter into.")
    folder.mkdir(parents=True, exist_ok=True)
    # written by Python rather than by safetensors' own writer, so that a failing write is an OSError
    (folder / "adapter_model.safetensors").write_bytes(safetensors.torch.save(tensors, metadata={"format": "pt"}))
    (folder / "adapter_config.json").write_text(json.dumps(cfg, indent=2))
    return folder
