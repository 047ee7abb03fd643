"""Mixed precision: the run's ``--precision`` (fp32, bf16, fp16) as one object the loop and the scoring use.

- The forward pass and the loss (the task's, the method's extra term, the aids' terms) run under
  ``torch.autocast`` in the precision used; the backward pass runs outside it, as PyTorch's AMP recipe says
  (https://pytorch.org/docs/stable/notes/amp_examples.html): autocast already recorded each op's dtype.
- The parameters that train stay float32 (master weights): autocast casts copies for its matmuls and never
  the parameters, so the optimizer, gradient clipping and the methods' ``after_step`` (proximal steps,
  retractions) see float32 tensors.
- fp16 scales the loss with a GradScaler (its range is too small for small gradients): scale, backward,
  unscale before clipping, step (skipped when a gradient overflowed), update. The divergence check reads the
  unscaled loss of the forward pass, so a step the scaler skips for an inf gradient never reads as a
  diverged run; only a loss that is itself not finite does. A skipped step's gradients are dropped, so the
  methods' after_step never reads an inf gradient.
- Spectra never run here: the read-outs are taken outside autocast, in float32 or float64
  (cldash.engine.readouts, cldash.measures.spectra).

Fallbacks, each said in one sentence on stderr and recorded with the run: a CUDA GPU without bf16 (before
Ampere) uses fp16; a device type without autocast uses fp32. CPU autocast has both bf16 and fp16 in
torch 2.x (checked on torch 2.13: fp16 autocast and GradScaler("cpu") work), so a CPU run keeps either;
on a CPU they are for checking, not speed (measured on this project's 2-core reference machine, the default
5-task digits-rotate LoRA run at 50 steps a task: fp32 7.0 s, bf16 9.9 s, fp16 47 s).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def usable(requested: str, device: torch.device) -> tuple[str, str]:
    """(the precision a run on `device` uses for `requested`, why it differs; '' when it does not)."""
    if requested == "fp32":
        return "fp32", ""
    if not torch.amp.is_autocast_available(device.type):
        return "fp32", f"{device.type} has no autocast in this PyTorch, so the run uses fp32 instead of {requested}"
    if requested == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return "fp16", (f"{torch.cuda.get_device_name(device)} has no bf16, so the run uses fp16 (with a gradient "
                        "scaler) instead")
    return requested, ""


def master_weights(params: list[torch.nn.Parameter]) -> list[torch.nn.Parameter]:
    """`params` in float32 at least, in place (the same Parameter objects, so every reference to them holds): what
    trains is float32 whatever the dtype a backbone was loaded in; autocast makes the low-precision copies."""
    for p in params:
        if p.dtype in (torch.float16, torch.bfloat16):
            p.data = p.data.float()
    return params


@dataclass
class Precision:
    """The precision a run asked for and the one it uses on its device, its autocast and (fp16) its scaler."""

    requested: str
    used: str
    device: torch.device
    note: str = ""                     # why `used` differs from `requested`; '' when it does not
    scaler: torch.amp.GradScaler | None = field(default=None, repr=False)

    @classmethod
    def for_device(cls, requested: str, device: torch.device) -> Precision:
        used, note = usable(requested, device)
        scaler = torch.amp.GradScaler(device.type) if used == "fp16" else None
        return cls(requested, used, device, note, scaler)

    def autocast(self):
        """The context the forward passes and losses run in (nothing for fp32)."""
        if self.used == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=DTYPES[self.used])

    def step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer, params: list, max_grad_norm: float) -> bool:
        """Backward (outside autocast), clipping on the unscaled gradients, and the optimizer step. Returns
        False when fp16's scaler skipped the step because a gradient was not finite."""
        if self.scaler is None:
            loss.backward()
            if max_grad_norm:
                torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
            optimizer.step()
            return True
        scale = self.scaler.get_scale()
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(optimizer)   # clip the true gradients, not the scaled ones
        if max_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        self.scaler.step(optimizer)
        self.scaler.update()
        if self.scaler.get_scale() >= scale:   # the scaler lowers its scale exactly when it skipped the step
            return True
        # a skipped step's gradients are not finite: what reads them after the step (AdaLoRA's importance
        # scores in after_step) sees none, as after a step with nothing to learn
        optimizer.zero_grad(set_to_none=True)
        return False

    def state(self) -> dict | None:
        """What a checkpoint keeps (fp16: the scaler's scale and growth counter, so a resumed run goes on with
        the scale the uninterrupted one has)."""
        return self.scaler.state_dict() if self.scaler is not None else None

    def restore(self, saved: dict | None) -> None:
        if saved and self.scaler is not None:
            self.scaler.load_state_dict(saved)

    def record(self) -> dict:
        """What the run row keeps: the precision used, and the one asked for with why, where they differ."""
        out = {"precision": self.used}
        if self.note:
            out.update(precision_requested=self.requested, precision_note=self.note)
        return out
