"""Sequential full fine-tuning (SeqFT): every weight of the backbone trains on each task in turn.

The naive lower bound of continual learning and the reference that low-rank updates are
compared against (reference note baseline-methods.md, section 3.1). Optimizer state is reset
at each task, as is common practice. The update of each targeted linear layer is dense, so its
spectrum is taken with ``svdvals`` at the sparser dense-spectra interval.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from cldash.methods.base import Method, register


@dataclass
class FullConfig:
    """Full fine-tuning has no hyper-parameters of its own (learning rate is a run option)."""


@register
class FullFineTuning(Method):
    name = "full"
    display_name = "full FT"
    label = "Full fine-tuning (SeqFT)"
    paper = "the naive continual-learning baseline; e.g. TRACE's SeqFT, arXiv 2310.06762"
    summary = "Trains every weight of the backbone on each task in turn; the update is dense (full rank)."
    equation = r"W_t = W_{t-1} - \eta \nabla_W \mathcal{L}_t \quad\text{(every parameter)}"
    Config = FullConfig
    default_lr = 1e-3
    trains_backbone = True
    low_rank = False

    def attach(self, model: nn.Module, targets: list[str]) -> None:
        super().attach(model, targets)
        self.model = model
        for layer in self.layers.values():
            layer.dense_offset = True

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def state_dict(self) -> dict:
        """Every backbone parameter trains, so the whole model's state is saved (not only the targets)."""
        state = super().state_dict()
        state["model"] = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.model.load_state_dict(state["model"])
