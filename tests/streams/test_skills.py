"""The `skills` language stream and the tiny GPT-2: deterministic generation, hand-checked scoring,
the pre-trained backbone's general performance, and short LoRA / full fine-tuning runs via the CLI."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from cldash.cli import main
from cldash.store import Store
from cldash.streams.skills import (
    GENERAL_SKILLS,
    IGNORE,
    IN_CONTEXT_SKILLS,
    PAD,
    SKILLS,
    STREAM_SKILLS,
    VOCAB,
    answer_scores,
    decode,
    few_shot_example,
    mixture_split,
    skill_split,
    tagged_example,
    to_split,
    trim,
)


def _tokens(row) -> list[str]:
    return decode(row[row != PAD])


def test_generation_is_deterministic_per_seed():
    for skill in SKILLS:
        a, b, c = skill_split(skill, 50, 1), skill_split(skill, 50, 1), skill_split(skill, 50, 2)
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y), skill
        assert not torch.equal(a.x, c.x), skill
    # the same first examples in every process and Python version (str seeds hash with SHA-512 in `random`)
    assert _tokens(skill_split("sort", 1, 1).x[0]) == "<bos> [sort] 1 2 9 0 3 8 <sep> 0 1 2 3 8 9 <eos>".split()
    assert _tokens(skill_split("add_mod", 1, 1).x[0]) == "<bos> [add_mod] 1 9 <sep> 0 <eos>".split()
    assert _tokens(skill_split("lookup", 1, 1).x[0]) == "<bos> [lookup] a 1 b 2 h 8 ? b <sep> 2 <eos>".split()


def test_every_generated_answer_follows_its_skill():
    rng = random.Random(7)
    rules = {
        "copy": lambda x: x, "reverse": lambda x: x[::-1], "max": lambda x: [max(x)], "min": lambda x: [min(x)],
        "first": lambda x: x[:1], "last": lambda x: x[-1:], "sort": sorted,
        "successor": lambda x: [str((int(d) + 1) % 10) for d in x],
        "add_mod": lambda x: [str((int(x[0]) + int(x[1])) % 10)],
        "count": lambda x: [str(x[2:].count(x[0]))],
        "parity": lambda x: [str(sum(d == "1" for d in x) % 2)],
        "lookup": lambda x: [x[x.index(x[-1]) + 1]],
        "repeat": lambda x: [d for d in x for _ in range(2)],
    }
    assert set(rules) == set(SKILLS)
    for skill, rule in rules.items():
        for _ in range(30):
            prompt, answer = tagged_example(skill, rng)
            assert prompt[:2] == ["<bos>", f"[{skill}]"] and prompt[-1] == "<sep>" and answer[-1] == "<eos>"
            assert answer[:-1] == rule(prompt[2:-1]), (skill, prompt, answer)


def test_split_labels_only_the_answer_shifted_by_one():
    split = to_split([("<bos> [add_mod] 3 4 <sep>".split(), ["7", "<eos>"])])
    x, y = split.x[0], split.y[0]
    assert decode(x[:7]) == "<bos> [add_mod] 3 4 <sep> 7 <eos>".split() and (x[7:] == PAD).all()
    # position t predicts token t + 1: the <sep> position predicts 7, the 7 position predicts <eos>
    assert y[4].item() == VOCAB.index("7") and y[5].item() == VOCAB.index("<eos>")
    assert (y[:4] == IGNORE).all() and (y[6:] == IGNORE).all()
    tx, ty = trim(split.x, split.y)
    assert tx.shape == (1, 6) and torch.equal(ty[0], y[:6])      # up to the last labelled position


def test_few_shot_prompts_are_untagged_demonstrations_then_a_query():
    prompt, answer = few_shot_example("last", random.Random(3), shots=2)
    assert prompt[:2] == ["<bos>", "[?]"] and prompt.count(";") == 2 and prompt.count("<sep>") == 3
    demos = " ".join(prompt[2:]).split(" ; ")
    for demo in demos[:2]:
        x, y = demo.split(" <sep> ")
        assert y.split() == x.split()[-1:]
    assert answer == [prompt[-2], "<eos>"]


def test_exact_match_and_token_accuracy_by_hand():
    # two examples, vocabulary of 5; answers at positions 1-2 (example 0) and 2 (example 1)
    labels = torch.tensor([[IGNORE, 3, 4, IGNORE], [IGNORE, IGNORE, 2, IGNORE]])
    predicted = torch.tensor([[0, 3, 1, 0], [0, 0, 2, 0]])      # example 0: one of two right; example 1: right
    logits = torch.nn.functional.one_hot(predicted, 5).float()
    s = answer_scores(logits, labels)
    assert s["exact_match"] == pytest.approx(0.5)          # 1 of 2 answers entirely right
    assert s["token_accuracy"] == pytest.approx(2 / 3)     # 2 of 3 answer tokens right


def test_stream_skills_are_disjoint_from_the_pretraining_skills():
    assert not set(STREAM_SKILLS) & set(GENERAL_SKILLS + IN_CONTEXT_SKILLS)
    for skill in ("copy", "nope"):
        with pytest.raises(Exception) as err:
            from cldash.config import resolve
            resolve({"method": "lora", "stream": "skills", "stream_options": {"skills": ["sort", skill]}})
        assert "skills.skills" in str(err.value) and str(err.value).endswith(".")


@pytest.fixture(scope="module")
def gpt2():
    from cldash.backbones.gpt2 import GPT2TinyOptions, load

    return load(GPT2TinyOptions())


def test_pretrained_gpt2_knows_the_general_skills(gpt2):
    """The shipped weights' exact match on the general mixture's held-out examples is the one their
    record states, inside the documented band; a new skill is unknown before training."""
    from cldash.backbones import task_model
    from cldash.streams.base import Task
    from cldash.streams.skills import LanguageStream

    model = task_model(gpt2)
    test = Task("general", test=mixture_split(list(GENERAL_SKILLS), 300, seed=2))
    scores = LanguageStream(None, gpt2).evaluate(model, test)
    assert gpt2.info["source"] == "shipped"
    assert scores["exact_match"] == gpt2.info["scores"]["general_exact_match"] >= 0.85, scores
    assert scores["token_accuracy"] >= scores["exact_match"]
    # a new skill is unknown before training: the tag was never seen
    new = LanguageStream(None, gpt2).evaluate(model, Task("sort", test=skill_split("sort", 200, 2)))
    assert new["exact_match"] < 0.2, new


@pytest.mark.slow
@pytest.mark.parametrize("method", ["lora", "full"])
def test_cli_run_on_skills_stores_a_matrix_with_general_columns(tmp_path, method, capsys):
    db = str(tmp_path / "runs.db")
    args = ["--db", db, "run", "--method", method, "--stream", "skills", "--stream-skills", "successor,add_mod",
            "--stream-train-examples", "512", "--stream-test-examples", "100", "--steps-per-task", "80",
            "--eval-interval", "40", "--spectra-interval", "40", "--dense-spectra-interval", "40", "--quiet"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "Accuracy matrix R[i][j] (exact_match)" in out and "general: pre-training skills" in out
    store = Store(db)
    (run,) = store.runs()
    assert run["status"] == "finished" and run["primary_metric"] == "exact_match"
    assert run["config"]["backbone"] == "gpt2-tiny"
    m = store.accuracy_matrix(run["id"])
    assert m["R"].shape == (3, 2) and np.isfinite(m["R"]).all()
    assert list(m["general"]) == ["general: pre-training skills", "in-context: first/last from 2 demonstrations"]
    general = m["general"]["general: pre-training skills"]
    assert len(general) == 3 and general[0] >= 0.85         # row 0: the pre-trained model
    # the new skills are learned (unknown before: 0), and learning them erodes the general skills
    # (measured with 80 steps a task: R[1][0] 0.60 and 0.56, R[2][1] 0.12 and 0.26 for LoRA and full
    # fine-tuning, general 0.90 -> 0.10 and 0.04; with 120 steps 0.69 / 0.64, 0.11 / 0.39, -> 0.05 / 0.06)
    assert m["R"][1, 0] > m["R"][0, 0] + 0.3 and m["R"][2, 1] > m["R"][0, 1] + 0.05, m["R"]
    assert general[-1] < general[0] - 0.2, general
    summary = run["summary"]
    assert summary["general:general: pre-training skills"] == pytest.approx(general[-1])
    assert summary["general_retention:general: pre-training skills"] == pytest.approx(general[-1] / general[0])
    tok = store.accuracy_matrix(run["id"], metric="token_accuracy")
    assert (tok["R"] >= m["R"] - 1e-9).all()                # every exact match is all tokens right


@pytest.fixture(scope="module")
def tiny_skills_config():
    return {"stream": "skills", "steps_per_task": 3, "batch_size": 16, "eval_interval": 0, "spectra_interval": 3,
            "dense_spectra_interval": 3, "eval_batch_size": 256,
            "stream_options": {"skills": ["successor", "add_mod"], "train_examples": 64, "test_examples": 20}}


@pytest.mark.parametrize("method", sorted(__import__("cldash.methods", fromlist=["REGISTRY"]).REGISTRY))
def test_every_registered_method_runs_on_skills(method, tiny_skills_config, tmp_path):
    """Every method trains the GPT-2's Conv1D linears (weights stored transposed) and the engine stores
    a full matrix with general columns and finite spectra; the loss changes the model."""
    from cldash.config import resolve
    from cldash.engine.loop import ContinualRun

    store = Store(str(tmp_path / "m.db"))
    resolved = resolve({"method": method, **tiny_skills_config})
    run_id = store.create_run(resolved.to_dict())
    crun = ContinualRun(resolved, writer=store.writer(run_id))
    x = crun.stream.tasks[0].test.x[:8]
    before = crun.model(x).detach().clone()
    summary = crun.run()
    crun.writer.flush()
    assert set(crun.method.layers) == {f"transformer.h.{i}.{m}" for i in range(2)
                                       for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")}
    R, general = crun.matrix()
    assert np.isfinite(np.array(R)).all() and len(general) == 2
    assert all(len(col) == 3 for col in general.values())
    assert np.isfinite(summary["acc"]) and np.isfinite(summary["general_retention"])
    crun.model.eval()
    assert not torch.allclose(crun.model(x), before), method        # training changed the language model
    spectra = store.spectra(run_id)
    assert len(spectra) and all(np.isfinite(v).all() for v in spectra["values"])
