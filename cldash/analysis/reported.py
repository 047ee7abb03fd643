"""The numbers each claim's paper itself reports, as data, to show beside ours.

A claim's verdict (`cldash.analysis.claims`) is computed from our runs: a 4-layer vit-tiny on
8 x 8 scikit-learn digits, five tasks of 300 steps by default. The papers measured something much larger
(CLIP ViT-B/16 on ten image domains, LLaVA-1.5-7B, LLaMA-2-7B ...), so their numbers are never a
target our runs should hit: they say which way and roughly how far the authors saw a difference,
and `SETTING` says how far their setting is from ours.

Only numbers read in a source are here, each with the place it was read (`Reported.where`);
nothing is estimated or recomputed. Where no number could be read (the paper's tables were not
reachable, or the paper has none for the claim) the claim's tuple is empty and `SETTING` says
why. `SOURCE` says where the claim's *words* come from: the paper's abstract, the authors'
project page or code README, or only the reference note's paraphrase of a paper read no further
than its abstract ("003 paraphrase only"; /work/shared/reference/seed-methods.md).

Sources read for this table (December 2026): Artificer-AI-Lab/CoDyRA index.html (the CoDyRA
project page, commit 3eed0cc); WuYichen-97/SD-Lora-CL README.md with its result images
imgs/results1.jpg and imgs/results2.jpg (the paper's Tables 2 and 3) and logs/C100.log (commit
8bacded); haodotgu/EBLoRA README.md and liangyanshuo/InfLoRA README.md (no numbers in either);
the arXiv abstracts of 2602.00722 (EBLoRA), 2605.12752 (SLICE), 2603.09684 (the forgetting study),
2404.00228 (InfLoRA) and 2501.13198 (SD-LoRA).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Reported:
    """One number a paper reports: what it measures, for which method, and where it was read."""

    quantity: str      # what the number is, in the paper's terms: "forgetting (X-TAIL)"
    method: str        # the paper's name for the method or baseline: "LoRA (r=16)"
    value: float
    unit: str          # "%" (accuracy or forgetting in points) or "" (a norm, a rank)
    where: str         # table or figure and the file or page it was read in
    metric: str = ""   # the claims.METRICS key it corresponds to, if one does ("" where none is close)


_CODYRA_PAGE = "CoDyRA project page (index.html)"
_XTAIL_FGT = _CODYRA_PAGE + ", 'Efficiency & forgetting': X-TAIL Forgetting table"
_XTAIL_ACC = _CODYRA_PAGE + ", X-TAIL Transfer / Average / Last table, column Last"
_CODYRA_T6 = _CODYRA_PAGE + ", Table 6 (per-task update magnitude ||dW||_F vs effective rank rho)"
_CODYRA_T5 = _CODYRA_PAGE + ", Table 5 (cumulative drift ||theta_t - theta_0||_F after the 10-task stream)"
_SDLORA_T2 = ("SD-LoRA paper Table 2, ImageNet-R (N = 10), column Acc (mean of runs; read in the code README's "
              "imgs/results1.jpg, WuYichen-97/SD-Lora-CL)")
_SDLORA_LOG = "WuYichen-97/SD-Lora-CL logs/C100.log (one logged SD-LoRA run, CIFAR-100, 10 tasks)"


def _xtail_forgetting() -> tuple[Reported, ...]:
    """CoDyRA's X-TAIL forgetting table (lower is better), every row we can name."""
    rows = (("CoDyRA", 1.87), ("InfLoRA", 3.12), ("MoE-Adapter", 5.43), ("ZSCL", 8.78), ("LoRA (r=4)", 13.94),
            ("LoRA (r=16)", 14.86))
    return tuple(Reported("forgetting (X-TAIL)", m, v, "%", _XTAIL_FGT, "forgetting") for m, v in rows)


def _xtail_last() -> tuple[Reported, ...]:
    """X-TAIL Last (final average accuracy) of CoDyRA and of the naive LoRA baseline."""
    return (Reported("Last accuracy (X-TAIL)", "CoDyRA", 79.2, "%", _XTAIL_ACC, "acc"),
            Reported("Last accuracy (X-TAIL)", "LoRA (r=16)", 59.4, "%", _XTAIL_ACC, "acc"))


def _codyra_update_size() -> tuple[Reported, ...]:
    """Per-task ||dW||_F (Table 6), CoDyRA's mean effective rank there, and the cumulative drift (Table 5).

    Our update_norm is the cumulative update's norm, so only Table 5 maps to it; Table 6 is per task.
    """
    per_task = (("LoRA (r=1)", 4.21), ("LoRA (r=4)", 5.37), ("LoRA (r=8)", 6.25), ("LoRA (r=16)", 7.44),
                ("CoDyRA", 3.22))
    return (tuple(Reported("per-task update norm ||dW||_F", m, v, "", _CODYRA_T6) for m, v in per_task)
            + (Reported("mean effective rank rho (nonzero gates)", "CoDyRA", 8.3, "", _CODYRA_T6),
               Reported("cumulative drift ||theta_10 - theta_0||_F", "LoRA (r=16)", 50.11, "", _CODYRA_T5,
                        "update_norm"),
               Reported("cumulative drift ||theta_10 - theta_0||_F", "CoDyRA", 7.51, "", _CODYRA_T5, "update_norm")))


def _sdlora_rows() -> tuple[Reported, ...]:
    """SD-LoRA's Table 2 (ImageNet-R, 10 tasks, final accuracy) and the forgetting of its logged CIFAR-100 run."""
    table = (("Full Fine-Tuning", 60.57), ("InfLoRA", 74.75), ("SD-LoRA", 77.34))
    return (tuple(Reported("final accuracy Acc (ImageNet-R, 10 tasks)", m, v, "%", _SDLORA_T2, "acc")
                  for m, v in table)
            + (Reported("final accuracy (CIFAR-100, 10 tasks; last 'CNN top1 curve' entry)", "SD-LoRA", 87.26, "%",
                        _SDLORA_LOG, "acc"),
               Reported("forgetting (CIFAR-100, 10 tasks; 'Forgetting (CNN)')", "SD-LoRA", 6.41, "%", _SDLORA_LOG,
                        "forgetting")))


REPORTED: dict[str, tuple[Reported, ...]] = {
    "eblora-spectrum": (),
    "codyra-rank": _xtail_forgetting() + _xtail_last() + _codyra_update_size(),
    "slice-natural": (),
    "slice-adversarial": (),
    "study-pissa": (),
    "study-rank": (),
    "study-budget": (),
    "codyra-classil": _xtail_forgetting() + _xtail_last(),
    "inflora-classil": (),
    "sdlora-classil": _sdlora_rows(),
}

# "{ours}" is filled with the setting the verdict was computed on (`paper_setting`)
_OURS = "ours: {ours}"

SETTING: dict[str, str] = {
    "eblora-spectrum": "LLaVA-1.5-7B (Vicuna-7B, CLIP ViT-L/14-336), UCIT (6 tasks) and MLLM-DCL (5 tasks), r = 16 / "
                       "32, 1-3 epochs a task; " + _OURS + ". No number read: the README and the abstract give none "
                       "(no top-1 energy share, no accuracy); the paper's tables were not reachable.",
    "codyra-rank": "CLIP ViT-B/16, vision and text encoders, X-TAIL (10 image domains, 16-shot, 500 iterations a "
                   "task) and MTIL; LLaMA/Gemma on TRACE; " + _OURS + ". Their ||dW||_F is per task (Table 6) or "
                   "cumulative over 10 tasks (Table 5), summed how over modules the page does not say.",
    "slice-natural": "LLMs on TRACE (8 tasks) and Super-NI sequences; " + _OURS + " (rotations in their natural "
                     "order). No number read: only the abstract was reachable, and it gives none.",
    "slice-adversarial": "LLMs on adversarial Super-NI sequences (task pairs mined for maximally opposing "
                         "gradients); " + _OURS + " in the most-conflicting rotation order. No number read: only the "
                         "abstract was reachable.",
    "study-pissa": "Backbone, data, ranks and metric unknown (abstract only); " + _OURS + ". No number read; the "
                   "abstract does not name PiSSA.",
    "study-rank": "Backbone, data, ranks and metric unknown (abstract only); " + _OURS + ". No number read; the "
                  "abstract does not speak of rank.",
    "study-budget": "Backbone, data and the budget in parameters unknown (abstract only: 'ultra-compact budgets'); "
                    + _OURS + ". No number read.",
    "codyra-classil": "CLIP ViT-B/16 on X-TAIL (10 domains, task-agnostic: one label space, no task id at test), "
                      "16-shot, 500 iterations a task, loss over the current task's classes; ours: {ours} "
                      "(5 tasks of two digits, one ten-way head).",
    "inflora-classil": "ViT-B/16 (ImageNet-21k) on ImageNet-R (5/10/20 tasks), CIFAR-100 (10 tasks) and DomainNet, "
                       "20-50 epochs a task; ours: {ours} (5 tasks of two digits). "
                       "No number read from InfLoRA itself: its README has none and the paper's tables were not "
                       "reachable (SD-LoRA's Table 2 re-runs InfLoRA: see sdlora-classil).",
    "sdlora-classil": "ViT-B/16 (ImageNet-21k) on ImageNet-R (5/10/20 tasks), ImageNet-A, DomainNet and CIFAR-100, "
                      "20 epochs a task, SGD; ours: {ours} (5 tasks of two digits). "
                      "The paper's baseline is full fine-tuning (no sequential-LoRA row in Tables 2-3).",
}

SOURCE: dict[str, str] = {
    "eblora-spectrum": "abstract",
    "codyra-rank": "project page",
    "slice-natural": "abstract",
    "slice-adversarial": "abstract",
    "study-pissa": "003 paraphrase only",
    "study-rank": "003 paraphrase only",
    "study-budget": "abstract",
    "codyra-classil": "project page",
    "inflora-classil": "abstract",
    "sdlora-classil": "abstract",
}


def reported(key: str) -> tuple[Reported, ...]:
    """The rows a claim's paper reports (() for a claim with none, or a key we do not know)."""
    return REPORTED.get(key, ())


def paper_setting(key: str, ours: str) -> str:
    """How the paper's setting differs from ours, with ours (e.g. "digits-rotate, vit-tiny, 100 steps per task")
    filled in; empty for a claim with no line."""
    return SETTING.get(key, "").format(ours=ours)
