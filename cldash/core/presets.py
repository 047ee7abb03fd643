"""What a paper preset is: a method's authors' published training regime, every value cited.

A method module that has one ends with its ``PAPER_PRESET``, a `PaperPreset` beside the method it
describes; `cldash.methods.paper_presets()` collects them by method name, and `cldash.config.presets`
applies them to a run. A preset holds the optimizer, learning rate, schedule, warm-up, weight decay,
batch size, gradient clipping, loss masking, adapted module roles and the method's own options that
the authors' released code (or, where there is none, the paper) uses. Each value is a
`Cited(value, source, note)`:

- ``source`` names the file of the authors' repository it was read from, as
  ``OWNER/REPO/path/file: what the file says``, or a section of the paper;
- ``note`` says how the value was translated to our tiny backbones (a 2-layer, width-64 ViT on
  8x8 digits; a tiny GPT-2), where it had to be.

The translation rules, the same for every method:

- epochs of a data set we do not have do not carry over: ``steps_per_task`` stays at the common
  regime's 300 unless the authors give iterations per task (CoDyRA's 500);
- batch sizes of 7B-model runs stay at our 64 (said in the notes); smaller models' batch sizes
  carry over as they are;
- learning rates are the authors' AdamW / Adam / SGD rates, unchanged;
- a warm-up given in steps of a run much longer than ours becomes its share of that run
  (``warmup_ratio``), with the arithmetic in the note;
- a transformers ``TrainingArguments`` default that the authors' script leaves in force
  (``max_grad_norm`` 1.0, ``weight_decay`` 0) is cited to the script that leaves it, and noted;
- what cannot carry over at all (a linear-decay schedule, a rank wider than our 64-wide layers,
  an option our reconstruction does not have) is a sentence in the preset's ``notes``;
- only values the authors' code or paper gives are set; everything else stays at the common
  regime (RunConfig's defaults).

``targets`` holds module roles of `cldash.config.presets.ROLE_PATTERNS` ("q", "k", "v", "o", "mlp"),
not name patterns. ``policy`` is never set: the single-task methods' authors define no
task-boundary policy, and the continual methods fix their own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# the two translation rules that many presets' notes and sources say in the same words
EPOCHS_RULE = "epochs of a data set we do not have do not carry over, so steps_per_task stays at the common 300"
HF_CLIP_DEFAULT = "transformers' TrainingArguments default max_grad_norm 1.0 applies"


@dataclass(frozen=True)
class Cited:
    """One value of a preset and where it comes from (a file of the authors' repository, a section
    of the paper); `note` says how it was translated to the small backbones, where it was."""

    value: Any
    source: str
    note: str = ""


@dataclass(frozen=True)
class PaperPreset:
    """A method's authors' regime. `values` keys are RunConfig fields, or ``method.OPTION`` for the
    method's own options; ``targets`` holds module roles (ROLE_PATTERNS), not patterns."""

    paper: str                       # "CoDyRA, arXiv 2412.01004"
    code: str                        # the authors' repository, "Artificer-AI-Lab/CoDyRA", or "" (none public)
    values: dict[str, Cited]
    notes: tuple[str, ...] = ()      # what did not carry over at all, in sentences
    # named benchmark stream -> the values the authors set for that data set, over `values`; ``epochs`` there is
    # translated into steps_per_task from the benchmark's training-set size (cldash.config.presets.apply)
    benchmarks: dict[str, dict[str, Cited]] = field(default_factory=dict)

    def for_stream(self, stream: str) -> dict[str, Cited]:
        """The values of a run on `stream`: the authors' settings for that benchmark where they have some."""
        return {**self.values, **self.benchmarks.get(stream, {})}

    def training(self, stream: str = "") -> dict[str, Cited]:
        """The run-level part (no method options): what ``paper:METHOD`` lends another method."""
        return {k: v for k, v in self.for_stream(stream).items() if not k.startswith("method.")}
