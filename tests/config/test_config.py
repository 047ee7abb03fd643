"""Config validation: every invalid value gets its own one-sentence message naming the field."""

import pytest

from cldash.config import check_against_model, resolve
from cldash.core.errors import ConfigError

CASES = [
    # (overrides, field named in the error, words the message must contain)
    ({"method": "nope"}, "method", ["unknown method 'nope'", "lora"]),
    ({"stream": "mnist"}, "stream", ["unknown stream 'mnist'", "digits-rotate"]),
    ({"backbone": "resnet"}, "backbone", ["unknown backbone 'resnet'", "vit-tiny"]),
    ({"method_options": {"rank": 0}}, "lora.rank", ["lora.rank must be an integer between 1 and 65536 (got 0)."]),
    ({"method_options": {"rank": "eight"}}, "lora.rank", ["lora.rank must be an integer", "'eight'"]),
    ({"method_options": {"alpha": -1}}, "lora.alpha", ["lora.alpha must be a number > 0"]),
    ({"method_options": {"dropout": 1.5}}, "lora.dropout", ["lora.dropout", "between 0.0 and 0.9"]),
    ({"method_options": {"rslora": "maybe"}}, "lora.rslora", ["lora.rslora must be true or false"]),
    ({"method_options": {"rnak": 4}}, "lora.rnak", ["no option 'rnak'", "rank, alpha"]),
    ({"lr": -0.1}, "lr", ["lr must be a number > 0.0 and <= 10.0 (got -0.1)."]),
    ({"lr": 0}, "lr", ["lr must be a number > 0.0"]),
    ({"lr": "fast"}, "lr", ["lr must be a number"]),
    ({"steps_per_task": 0}, "steps_per_task", ["steps_per_task must be an integer between 1 and 10000000 (got 0)."]),
    ({"batch_size": 0}, "batch_size", ["batch_size must be an integer between 1 and 65536"]),
    ({"eval_interval": -5}, "eval_interval", ["eval_interval", "between 0 and 10000000"]),
    ({"spectra_interval": 2.5}, "spectra_interval", ["spectra_interval must be an integer"]),
    ({"seed": -1}, "seed", ["seed must be an integer between 0 and 2147483647 (got -1)."]),
    ({"weight_decay": -1}, "weight_decay", ["weight_decay"]),
    ({"lr_schedule": "linear"}, "lr_schedule", ["lr_schedule must be one of constant, cosine"]),
    ({"device": "tpu"}, "device", ["device must be cpu, cuda"]),
    ({"policy": "sometimes"}, "policy", ["policy 'sometimes' is not available for lora", "single, merge, stack"]),
    ({"method": "full", "policy": "merge"}, "policy", ["full fixes its own task-boundary behaviour"]),
    ({"stream_options": {"angles": []}}, "digits-rotate.angles", ["needs at least one angle"]),
    ({"stream_options": {"angles": [45, 720]}}, "digits-rotate.angles", ["between -360.0 and 360.0", "720"]),
    ({"stream": "digits-split", "stream_options": {"evaluation": "domain-il"}}, "digits-split.evaluation",
     ["one of class-il, task-il"]),
    ({"stream": "digits-permute", "stream_options": {"tasks": 0}}, "digits-permute.tasks",
     ["between 1 and 50", "got 0"]),
    ({"backbone_options": {"heads": 3}}, "vit-tiny.heads", ["heads 3 must divide", "hidden_size 64"]),
    ({"backbone_options": {"patch_size": 3}}, "vit-tiny.patch_size", ["one of 1, 2, 4, 8"]),
    ({"threads": -2}, "threads", ["threads"]),
    ({"bogus": 1}, "bogus", ["has no option 'bogus'"]),
]


@pytest.mark.parametrize("overrides,field,words", CASES, ids=[c[1] + ":" + str(i) for i, c in enumerate(CASES)])
def test_each_invalid_field_has_its_own_sentence(overrides, field, words):
    with pytest.raises(ConfigError) as info:
        resolve({"method": "lora", **overrides})
    message = str(info.value)
    assert info.value.field == field
    for w in words:
        assert w in message, message
    assert message.endswith(".") and "\n" not in message


def test_cuda_requested_without_a_gpu():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ConfigError, match="device 'cuda' is not available"):
        resolve({"method": "lora", "device": "cuda"})


def test_rank_larger_than_a_target_layer_names_the_layer():
    r = resolve({"method": "lora", "method_options": {"rank": 65}})
    with pytest.raises(ConfigError) as info:
        check_against_model(r)
    assert str(info.value).startswith("lora.rank 65 is larger than layer vit.layers.0.attention.q_proj (64 x 64); "
                                      "choose a rank of at most 64.")
    # fc1 is 128 x 64: rank 64 fits every layer
    assert len(check_against_model(resolve({"method": "lora", "method_options": {"rank": 64}}))) == 12


def test_target_pattern_that_matches_nothing_lists_the_linear_modules():
    r = resolve({"method": "lora", "targets": ["query_proj"]})
    with pytest.raises(ConfigError) as info:
        check_against_model(r)
    msg = str(info.value)
    assert "'query_proj' matches no linear module" in msg
    assert "vit.layers.0.attention.q_proj" in msg and "classifier" in msg


def test_target_patterns_select_by_suffix_and_regex():
    shapes = check_against_model(resolve({"method": "lora", "targets": ["q_proj", r"layers\.1\.mlp\.fc\d"]}))
    assert list(shapes) == ["vit.layers.0.attention.q_proj", "vit.layers.1.attention.q_proj",
                            "vit.layers.1.mlp.fc1", "vit.layers.1.mlp.fc2"]
    assert shapes["vit.layers.1.mlp.fc1"] == (128, 64)
    with pytest.raises(ConfigError, match="not a valid regular expression"):
        check_against_model(resolve({"method": "lora", "targets": ["q_proj("]}))


def test_defaults_are_filled_and_recorded():
    r = resolve({"method": "lora", "method_options": {"rank": "4", "rslora": "true"}, "lr": "0.01"})
    c = r.config
    assert c.method_options == {"rank": 4, "alpha": 16.0, "dropout": 0.0, "rslora": True}
    assert c.lr == 0.01 and c.policy == "single" and c.backbone == "vit-tiny"
    assert r.method_options.scaling() == pytest.approx(16 / 2)
    assert resolve({"method": "full"}).config.lr == pytest.approx(1e-3)
    assert resolve({"method": "full"}).config.policy is None


def _option_owners():
    """Every options dataclass in the registries: the run's, each method's, each stream's, each backbone's."""
    from cldash.backbones import BACKBONES
    from cldash.backbones.hf import HFOptions
    from cldash.config import RunConfig
    from cldash.methods import REGISTRY
    from cldash.streams import STREAMS
    from cldash.streams.hf import HFStreamOptions

    return {"run": RunConfig, **{f"method {n}": c.Config for n, c in REGISTRY.items()},
            **{f"stream {n}": c.Options for n, c in STREAMS.items()}, "stream hf:": HFStreamOptions,
            **{f"backbone {n}": e.Options for n, e in BACKBONES.items()}, "backbone hf:": HFOptions}


@pytest.mark.parametrize("owner", list(_option_owners()))
def test_every_numeric_option_has_a_low_and_a_high_bound(owner):
    from cldash.core.options import describe

    unbounded = []
    for row in describe(_option_owners()[owner]):
        typ = row["type"]
        args = [a for a in getattr(typ, "__args__", ()) if a is not type(None) and a is not Ellipsis]
        numeric = (typ in (int, float)) or (len(args) == 1 and args[0] in (int, float))
        if numeric and not row["choices"] and (row["low"] is None or row["high"] is None):
            unbounded.append(row["name"])
    assert unbounded == [], f"{owner}: {unbounded} need both a low and a high bound"


def test_a_backbone_of_the_wrong_kind_is_named_with_a_or_an():
    with pytest.raises(ConfigError) as info:
        resolve({"method": "lora", "backbone": "gpt2-tiny"})
    assert str(info.value) == ("stream digits-rotate needs an image-classification backbone; gpt2-tiny is a "
                               "causal-lm model.")
    with pytest.raises(ConfigError) as info:
        resolve({"method": "lora", "stream": "skills", "backbone": "vit-tiny"})
    assert str(info.value) == "stream skills needs a causal-lm backbone; vit-tiny is an image-classification model."


def test_with_article():
    from cldash.core.text import with_article

    assert [with_article(w) for w in ("image-classification", "causal-lm", "Embedding", "Conv2d", "")] == \
        ["an image-classification", "a causal-lm", "an Embedding", "a Conv2d", "a "]


# Each RunConfig field given values of another type (as a JSON file or a Python caller can): one
# ConfigError naming the field, never a TypeError from deeper down.
WRONG = {"method": [7, ["lora"]], "stream": [["a"], {}], "backbone": [7, True], "policy": [3, ["single"]],
         "method_options": [[], 5, "rank=4", None], "stream_options": [5, ["angles"]], "backbone_options": [[], 1.5],
         "targets": [7, {"q": 1}, True], "name": [5, ["x"]], "steps_per_task": [[1], {}], "lr": [[0.1], {}],
         "train_head": [[True], "maybe"], "ewc_online": [{}, 2]}


@pytest.mark.parametrize("field,value", [(f, v) for f, vs in WRONG.items() for v in vs],
                         ids=[f"{f}={v!r}" for f, vs in WRONG.items() for v in vs])
def test_a_field_of_the_wrong_type_is_one_sentence_naming_it(field, value):
    with pytest.raises(ConfigError) as info:
        resolve({"method": "lora", field: value})
    assert info.value.field == field and str(info.value).startswith(f"{field} must be ")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("value", ["\x1b[31mred", "two\nlines", "nul\x00", "del\x7f", "c1\x9b2J", "sep\u2029"])
def test_text_with_control_characters_is_refused(value):
    with pytest.raises(ConfigError) as info:
        resolve({"method": "lora", "name": value})
    message = str(info.value)
    assert info.value.field == "name" and "without control characters" in message
    assert all(c.isprintable() for c in message)     # the value is quoted escaped, never raw
    assert resolve({"method": "lora", "name": "rotation sweep · r=8 (ü)"}).config.name == "rotation sweep · r=8 (ü)"


def test_check_fields_finds_every_bad_field_at_once():
    from cldash.config import check_fields

    errors = check_fields({"method": "lora", "seed": -1, "steps_per_task": 0, "lr": "fast", "batch_size": 32,
                           "method_options": {"rank": 0, "alpha": 16}, "stream_options": {"angles": "x"}})
    assert sorted(errors) == ["digits-rotate.angles", "lora.rank", "lr", "seed", "steps_per_task"]
    assert str(errors["steps_per_task"]) == "steps_per_task must be an integer between 1 and 10000000 (got 0)."
    assert all(exc.field == field for field, exc in errors.items())
    # what needs the whole configuration and the model's layers, once every field passes on its own
    (exc,) = check_fields({"method": "lora", "method_options": {"rank": 65}}).values()
    assert str(exc).startswith("lora.rank 65 is larger than layer vit.layers.0.attention.q_proj (64 x 64)")
    assert check_fields({"method": "lora", "steps_per_task": 5}) == {}


def test_worded_names_options_as_each_surface_does():
    from cldash.core.options import option_label, worded

    labels = {"lora.rank": "rank", "lr": "learning rate", "steps_per_task": option_label("steps_per_task")}
    assert worded("lora.rank 100 is larger than layer q (64 x 64); choose a rank of at most 64.", labels) == \
        "rank 100 is larger than layer q (64 x 64); choose a rank of at most 64."
    assert worded("lr must be a number > 0.0 (got -1.0).", labels) == "learning rate must be a number > 0.0 (got -1.0)."
    assert worded("steps_per_task must be an integer between 1 and 10000000 (got 0).", labels).startswith(
        "steps per task must be")
    # whole names only: lr_schedule, eblora.lr and a flag stay as they are
    assert worded("lr_schedule and eblora.lr and --lr", labels) == "lr_schedule and eblora.lr and --lr"
    assert worded("adalora.target_r 9 is larger than adalora.init_r 8",
                  {"adalora.target_r": "target r", "adalora.init_r": "init r"}) == "target r 9 is larger than init r 8"
    assert worded("lora.rank must be", {}) == "lora.rank must be"


def test_checkpoints_default_to_every_task_on_a_tiny_backbone_and_an_explicit_value_wins():
    """A shipped tiny backbone's checkpoint is about 630 KiB (bench/results/checkpoint_cost_lora.json): every task's
    is kept, so a fork can start after any task; an hf: model keeps the latest (tests/backbones/test_hf.py)."""
    assert resolve({"method": "lora"}).config.checkpoints == "all"
    assert resolve({"method": "lora", "stream": "skills"}).config.checkpoints == "all"     # gpt2-tiny
    for kept in ("latest", "none", "all"):
        assert resolve({"method": "lora", "checkpoints": kept}).config.checkpoints == kept
    with pytest.raises(ConfigError, match=r"checkpoints must be one of auto, latest, all, none \(got 'some'\)"):
        resolve({"method": "lora", "checkpoints": "some"})
