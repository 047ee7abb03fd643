"""The paper presets (each method module's PAPER_PRESET, cldash.methods.paper_presets): every key an existing
option, every value in its range, every value cited to a file of the authors' repository or a section of the
paper, and every preset resolvable into a run whose targets match the default backbones."""

import dataclasses
import re

import pytest

from cldash.config import RunConfig, check_against_model, resolve
from cldash.config.presets import AIDS, ROLE_PATTERNS, apply, role_patterns
from cldash.core.options import build
from cldash.core.presets import Cited, PaperPreset
from cldash.methods import REGISTRY, get_method, paper_presets

PAPER = paper_presets()

# RunConfig fields being added in another branch: allowed here even where RunConfig lacks them, with
# the ranges that branch gives them
PENDING = {
    "optimizer": lambda v: v in ("adamw", "adam", "sgd"),
    "momentum": lambda v: isinstance(v, float) and 0.0 <= v < 1.0,
    "warmup_ratio": lambda v: isinstance(v, float) and 0.0 <= v < 1.0,
    "loss_classes": lambda v: v in ("all", "current"),
    "preset": lambda v: isinstance(v, str),
}
RUN_FIELDS = {f.name for f in dataclasses.fields(RunConfig)}
# the methods that must have a preset (the registry may hold more: full fine-tuning, SLICE, LoRA)
EXPECTED = ("codyra", "eblora", "olora", "inflora", "sdlora", "loraga", "pissa", "dora", "adalora", "wegeft",
            "loretta")
# a file of a repository ("OWNER/REPO/path/file.ext") or a section of a paper
FILE = re.compile(r"[\w.-]+/[\w.-]+/(?:[\w.*${}-]+/)*[\w.*-]+\.(?:py|sh|json|yaml|md|config)\b")
SECTION = re.compile(r"arXiv \d{4}\.\d{4,5}.*\b(?:[Ss]ection|Sec\.|Table|Appendix|App\.)")


def _items():
    for name, preset in PAPER.items():
        yield f"paper:{name}", name, preset
    for name, preset in AIDS.items():
        yield f"aid:{name}", None, preset


ITEMS = list(_items())
IDS = [i[0] for i in ITEMS]


def test_every_method_has_a_preset_and_only_registered_ones():
    assert set(EXPECTED) <= set(PAPER)
    assert set(PAPER) <= set(REGISTRY)
    assert set(AIDS) == {"replay", "ewc"}


@pytest.mark.parametrize("label, method, preset", ITEMS, ids=IDS)
def test_preset_shape(label, method, preset):
    assert isinstance(preset, PaperPreset)
    assert preset.paper and re.search(r"arXiv \d{4}\.\d{4,5}", preset.paper), label
    assert "/" in preset.code, f"{label}: the authors' repository, OWNER/REPO"
    assert preset.values, label
    assert all(isinstance(n, str) and n.strip().endswith(".") for n in preset.notes), \
        f"{label}: notes are sentences"


@pytest.mark.parametrize("label, method, preset", ITEMS, ids=IDS)
def test_every_value_is_cited_to_a_file_or_a_paper_section(label, method, preset):
    for key, cited in preset.values.items():
        assert isinstance(cited, Cited), f"{label} {key}"
        assert cited.source.strip(), f"{label} {key}: no source"
        assert FILE.search(cited.source) or SECTION.search(cited.source), \
            f"{label} {key}: the source names no file or paper section: {cited.source!r}"
        assert ": " in cited.source, f"{label} {key}: the source says what the file says ('FILE: what')"
        if preset.code and FILE.search(cited.source):
            owner = preset.code.split("/")[0]
            assert owner in cited.source, f"{label} {key}: the file is not in the authors' repository {preset.code}"


@pytest.mark.parametrize("label, method, preset", ITEMS, ids=IDS)
def test_run_level_keys_are_run_options_in_range(label, method, preset):
    run = {k: c.value for k, c in preset.values.items() if not k.startswith("method.")}
    for key, value in run.items():
        assert key in RUN_FIELDS or key in PENDING, f"{label}: {key!r} is no RunConfig field"
        assert key not in ("method", "method_options", "stream", "backbone", "seed", "name"), \
            f"{label}: a preset sets a training regime, not {key}"
        if key not in RUN_FIELDS:
            assert PENDING[key](value), f"{label}: {key} = {value!r} is out of range"
    if "targets" in run:
        roles = run["targets"]
        assert isinstance(roles, tuple) and roles and set(roles) <= set(ROLE_PATTERNS), f"{label}: {roles!r}"
        run["targets"] = role_patterns(roles)
    if "policy" in run:
        assert method is not None and run["policy"] in get_method(method).policies, \
            f"{label}: policy only where the method leaves it open"
    known = {k: v for k, v in run.items() if k in RUN_FIELDS}
    build(RunConfig, known, prefix="")          # types and ranges, as a user's values would be checked


@pytest.mark.parametrize("label, method, preset", [i for i in ITEMS if i[1]], ids=[i[0] for i in ITEMS if i[1]])
def test_method_options_exist_and_are_in_range(label, method, preset):
    cls = get_method(method)
    fields = {f.name for f in dataclasses.fields(cls.Config)}
    opts = {k.split(".", 1)[1]: c.value for k, c in preset.values.items() if k.startswith("method.")}
    for opt in opts:
        assert opt in fields, f"{label}: {cls.Config.__name__} has no option {opt!r}"
    build(cls.Config, opts, prefix=method)      # ranges, choices and the Config's own checks together


@pytest.mark.parametrize("label, method, preset", [i for i in ITEMS if i[1]], ids=[i[0] for i in ITEMS if i[1]])
def test_translations_are_noted(label, method, preset):
    """steps_per_task other than the common 300 comes with a note, and so do the authors' epochs."""
    values = preset.values
    if "steps_per_task" in values and values["steps_per_task"].value != 300:
        assert values["steps_per_task"].note
    notes = " ".join(preset.notes)
    if "steps_per_task" not in values:
        assert "epoch" in notes.lower() or "iteration" in notes.lower(), \
            f"{label}: say what became of the authors' epochs"


def _resolved(method: str, stream: str):
    raw = {"method": method, "preset": "paper", "stream": stream}
    if "preset" in RUN_FIELDS:                  # resolve applies the preset itself
        return resolve(raw)
    out, record = apply(raw, method)
    assert record["owner"] == method and set(record["values"]) == set(PAPER[method].values)
    return resolve({k: v for k, v in out.items() if k in RUN_FIELDS})


@pytest.mark.parametrize("method", sorted(PAPER))
@pytest.mark.parametrize("stream", ["digits-rotate", "skills"])
def test_each_preset_resolves_and_fits_the_default_backbones(method, stream):
    """The preset's ranks fit the 64-wide layers and its module roles match linear modules."""
    resolved = _resolved(method, stream)
    shapes = check_against_model(resolved)
    assert shapes
    preset = PAPER[method]
    for key, cited in preset.values.items():
        if key.startswith("method."):
            assert resolved.config.method_options[key.split(".", 1)[1]] == cited.value, key
        elif key == "targets":
            assert resolved.config.targets == role_patterns(cited.value)
        elif key in RUN_FIELDS:
            assert getattr(resolved.config, key) == cited.value, key


@pytest.mark.parametrize("name", sorted(AIDS))
def test_aids_set_only_the_aid_options(name):
    aid_fields = {"replay", "replay_rule", "replay_batch_size", "ewc_lambda", "ewc_online", "ewc_gamma",
                  "ewc_batches"}
    assert set(AIDS[name].values) <= aid_fields
    cfg = resolve({**{k: c.value for k, c in AIDS[name].values.items()}, "method": "lora"})
    for key, cited in AIDS[name].values.items():
        assert getattr(cfg.config, key) == cited.value


def test_a_paper_preset_on_a_named_benchmark_takes_that_data_sets_configuration():
    """InfLoRA on imagenet-r-10: configs/mimg10_inflora.json's 50 epochs of 2,400 training images a task at batch 128
    are ceil(50 x 2400 / 128) = 938 steps, and its lamb 0.98; the same preset on a small stream keeps the common 300
    steps and CIFAR-100's lamb; a baseline on paper:inflora gets the schedule but not the method's option; the user's
    own steps win, and the record says so."""
    from cldash.config import resolve

    inr = resolve({"method": "inflora", "stream": "imagenet-r-10", "preset": "paper"}).config
    assert (inr.steps_per_task, inr.method_options["lamb"]) == (938, 0.98)
    assert "mimg10_inflora.json" in inr.regime["sources"]["steps_per_task"]
    small = resolve({"method": "inflora", "stream": "digits-split", "preset": "paper"}).config
    assert (small.steps_per_task, small.method_options["lamb"]) == (300, 0.95)
    lora = resolve({"method": "lora", "stream": "imagenet-r-10", "preset": "paper:inflora"}).config
    assert lora.steps_per_task == 938 and "lamb" not in lora.method_options
    mine = resolve({"method": "inflora", "stream": "imagenet-r-10", "preset": "paper", "steps_per_task": 7}).config
    assert mine.steps_per_task == 7 and "steps_per_task" in mine.regime["overridden"]


def test_every_benchmark_value_of_a_paper_preset_names_a_benchmark_and_a_field():
    import dataclasses

    from cldash.config.run_config import RunConfig
    from cldash.methods import get_method, paper_presets
    from cldash.streams import get_stream

    fields = {f.name for f in dataclasses.fields(RunConfig)} | {"epochs"}
    seen = 0
    for method, preset in paper_presets().items():
        options = {f.name for f in dataclasses.fields(get_method(method).Config)}
        for stream, values in preset.benchmarks.items():
            assert get_stream(stream).train_sizes(), stream
            for key, cited in values.items():
                assert (key.split(".", 1)[1] in options) if key.startswith("method.") else key in fields, key
                assert cited.source.startswith(preset.code), cited.source
                seen += 1
    assert seen >= 10
