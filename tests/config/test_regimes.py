"""The run options the authors' regimes need, and the paper presets: each resolves, runs a few steps, and the
run records its values and where each comes from."""

import pytest
import torch

from cldash.config import resolve
from cldash.config.presets import ROLE_PATTERNS, apply, regime_table, role_patterns
from cldash.core.errors import ConfigError
from cldash.engine.loop import ContinualRun
from cldash.methods import paper_presets
from cldash.runs.execute import execute
from cldash.store import Store

PAPER = paper_presets()

TINY = {"steps_per_task": 3, "eval_interval": 0, "spectra_interval": 0, "dense_spectra_interval": 0,
        "stream_options": {"angles": [60, 120]}}


@pytest.fixture(scope="module")
def rotate_run():
    return ContinualRun(resolve({"method": "lora", "lr": 0.01, **TINY}))


def test_sgd_with_momentum_and_adam_are_optimizer_choices(rotate_run):
    params = [torch.nn.Parameter(torch.zeros(1))]
    assert type(rotate_run.make_optimizer(params)) is torch.optim.AdamW       # the default
    cfg = rotate_run.cfg
    try:
        cfg.optimizer, cfg.momentum = "sgd", 0.8
        opt = rotate_run.make_optimizer(params)
        assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["momentum"] == 0.8
        cfg.optimizer = "adam"
        assert type(rotate_run.make_optimizer(params)) is torch.optim.Adam
    finally:
        cfg.optimizer, cfg.momentum = "adamw", 0.9


def test_sgd_and_adamw_train_differently(tmp_path):
    store = Store(tmp_path / "r.db")
    losses = {}
    for opt in ("adamw", "sgd"):
        rid = store.create_run(resolve({"method": "lora", "optimizer": opt, "lr": 0.01, **TINY}).to_dict())
        assert execute(store, rid) == "finished"
        losses[opt] = store.scalars(rid, names=["loss"]).value.tolist()
    assert losses["adamw"][0] == losses["sgd"][0] and losses["adamw"][1:] != losses["sgd"][1:]


def test_a_method_with_its_own_optimizer_refuses_another():
    with pytest.raises(ConfigError, match="eblora trains with its own optimizer"):
        resolve({"method": "eblora", "optimizer": "sgd"})


def test_warmup_ratio_is_a_share_of_each_tasks_steps():
    assert resolve({"method": "lora", "warmup_ratio": 0.03}).warmup() == 9          # 3 % of 300 steps
    assert resolve({"method": "lora", "warmup_ratio": 0.03, "warmup_steps": 5}).warmup() == 5


def test_current_task_classes_loss_masks_earlier_classes():
    """The class-incremental loss on the task's own classes: the head rows of every other class get no
    gradient, and the loss is the cross-entropy over the pair alone."""
    run = ContinualRun(resolve({"method": "lora", "stream": "digits-split", "loss_classes": "current", **TINY,
                                "stream_options": {}}))
    task = run.tasks[1]                                   # digits 2/3
    batch = next(run.stream.batches(task, 16, torch.Generator().manual_seed(0)))
    head = run.model.heads["stream"]
    loss = run.stream.loss(run.model, batch, task)
    logits = run.model(batch.x, task.head)
    pair = logits[:, list(task.classes)]
    target = torch.tensor([list(task.classes).index(int(y)) for y in batch.y])
    assert torch.allclose(loss, torch.nn.functional.cross_entropy(pair, target))
    loss.backward()
    others = [c for c in range(10) if c not in task.classes]
    assert head.weight.grad[others].abs().max() == 0 and head.weight.grad[list(task.classes)].abs().max() > 0
    run.stream.loss_classes = "all"
    head.weight.grad = None
    run.stream.loss(run.model, batch, task).backward()
    assert head.weight.grad[others].abs().max() > 0      # every class in the loss: earlier classes pushed down


def test_domain_incremental_tasks_have_every_class_either_way(rotate_run):
    task = rotate_run.tasks[0]
    batch = next(rotate_run.stream.batches(task, 16, torch.Generator().manual_seed(0)))
    rotate_run.stream.loss_classes = "current"
    masked = rotate_run.stream.loss(rotate_run.model, batch, task)
    rotate_run.stream.loss_classes = "all"
    assert torch.equal(masked, rotate_run.stream.loss(rotate_run.model, batch, task))


def test_explicit_values_win_over_the_preset_and_the_record_says_so():
    method = "codyra" if "codyra" in PAPER else sorted(PAPER)[0]
    mine = {"lr": 0.123, "steps_per_task": 7, "weight_decay": 0.5}
    key = next(k for k in mine if k in PAPER[method].values)
    mine = mine[key]
    r = resolve({"method": method, "preset": "paper", key: mine})
    assert getattr(r.config, key) == mine and key in r.config.regime["overridden"] and key not in \
        r.config.regime["values"]


def test_another_methods_training_regime_lends_no_method_options():
    owner = next(m for m in sorted(PAPER) if any(k.startswith("method.") for k in PAPER[m].values))
    r = resolve({"method": "lora", "preset": f"paper:{owner}"})
    assert r.config.regime["owner"] == owner
    assert not any(k.startswith("method.") for k in r.config.regime["values"])
    assert r.config.method_options == resolve({"method": "lora"}).config.method_options


def test_bad_presets_get_one_sentence():
    with pytest.raises(ConfigError, match="lora has no paper preset"):
        resolve({"method": "lora", "preset": "paper"})
    with pytest.raises(ConfigError, match="names no method with a paper preset"):
        resolve({"method": "lora", "preset": "paper:nothing"})
    with pytest.raises(ConfigError, match="preset must be common, paper or paper:METHOD"):
        resolve({"method": "lora", "preset": "authors"})


def test_role_patterns_pick_the_roles_on_the_vit_and_c_attn_on_gpt2():
    from cldash.backbones import get_backbone, match_targets

    vit = get_backbone("vit-tiny")
    names = match_targets(vit.build_net(vit.Options()), role_patterns(("q", "v")))
    assert names and all(n.rsplit(".", 1)[-1] in ("q_proj", "v_proj") for n in names)
    gpt = get_backbone("gpt2-tiny")
    names = match_targets(gpt.build_net(gpt.Options()), role_patterns(("k", "v")))
    assert names and all(n.endswith("c_attn") for n in names)
    assert set(ROLE_PATTERNS) == {"q", "k", "v", "o", "mlp"}


def test_the_common_regime_sets_nothing():
    raw, record = apply({"method": "lora"}, "lora")
    assert raw == {"method": "lora"} and record["preset"] == "common" and not record["values"]


@pytest.mark.parametrize("method", sorted(PAPER))
def test_each_paper_preset_resolves_runs_and_is_recorded(method, tmp_path):
    store = Store(tmp_path / "p.db")
    r = resolve({"method": method, "preset": "paper", **TINY})
    record = r.config.regime
    assert record["preset"] == "paper" and record["paper"] == PAPER[method].paper
    assert set(record["sources"]) == set(record["values"]) and all(record["sources"].values())
    for key, value in record["values"].items():     # every value the preset set is the one that runs
        got = r.config.method_options[key[7:]] if key.startswith("method.") else getattr(r.config, key)
        assert got == (role_patterns(value) if key == "targets" else value), key
    rid = store.create_run(r.to_dict())
    assert execute(store, rid) == "finished", store.get_run(rid)["error"]
    stored = store.get_run(rid)["config"]
    assert stored["preset"] == "paper" and stored["regime"] == record
    assert resolve(stored).config.regime == record          # re-resolving the stored config keeps its record
    rows = regime_table(method)
    assert [row["option"] for row in rows] == list(PAPER[method].values) and all(row["source"] for row in rows)


def test_traces_aid_settings_go_on_top_of_any_regime_and_are_recorded():
    from cldash.config.presets import AIDS

    r = resolve({"method": "codyra", "preset": "paper", "aid_preset": "ewc", "ewc_lambda": 100})
    assert r.config.ewc_lambda == 100 and "ewc_lambda" in r.config.regime["overridden"]   # yours wins
    assert r.config.ewc_online is True and r.config.regime["sources"]["ewc_online"] == \
        AIDS["ewc"].values["ewc_online"].source
    assert r.config.lr == PAPER["codyra"].values["lr"].value and r.config.regime["aid"] == "ewc"
    assert resolve(r.to_dict()).config.regime == r.config.regime
    plain = resolve({"method": "lora", "aid_preset": "replay"}).config
    assert (plain.replay, plain.replay_rule, plain.preset) == (200, "balanced", "common")
    with pytest.raises(ConfigError, match="aid_preset must be one of ewc, replay, or empty"):
        resolve({"method": "lora", "aid_preset": "lwf"})
