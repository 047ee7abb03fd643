"""End to end through the CLI: every method on every stream into a temporary store, read back
with list/show/export; bad input exits with 2, one sentence, and writes nothing."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from cldash.cli import main
from cldash.store import Store

from conftest import SHORT

STREAMS = {"digits-rotate": ["--stream-angles", "45,90,135"], "digits-permute": ["--stream-tasks", "3"],
           "digits-split": []}


@pytest.mark.slow
@pytest.mark.parametrize("stream", list(STREAMS))
@pytest.mark.parametrize("method", ["lora", "full"])
def test_each_method_on_each_stream(tmp_path, method, stream, capsys):
    db = str(tmp_path / "runs.db")
    assert main(["--db", db, "run", "--method", method, "--stream", stream, *STREAMS[stream], *SHORT]) == 0
    out = capsys.readouterr().out
    assert "Accuracy matrix R[i][j]" in out and "Backward transfer (BWT)" in out
    store = Store(db)
    (run,) = store.runs()
    assert run["status"] == "finished"
    m = store.accuracy_matrix(run["id"])
    T = 5 if stream == "digits-split" else 3
    assert m["R"].shape == (T + 1, T) and m["rows"] == list(range(T + 1))
    assert np.isfinite(m["R"]).all() and ((m["R"] >= 0) & (m["R"] <= 1)).all()
    (general,) = m["general"].values()
    assert len(general) == T + 1 and general[0] > 0.9      # the pre-trained backbone knows upright digits
    diag = np.array([m["R"][j + 1, j] for j in range(T)])
    if stream == "digits-rotate":
        # the method learns: each rotated task is better right after training on it than before
        assert (diag > m["R"][0] + 0.2).all(), (diag, m["R"][0])
    if stream == "digits-split" and method == "full":
        assert (diag > 0.9).all()    # a fresh head learns each pair of digits
    ev = store.evaluations(run["id"])
    if stream == "digits-split":
        assert set(ev.metric) == {"accuracy", "task_il_accuracy"}
    anytime = ev[~ev.final]
    assert len(anytime) > 0 and set(anytime.trained_through) == set(range(1, T + 1))


def test_list_show_export(seeded_store, tmp_path, capsys):
    db = seeded_store.display
    assert main(["--db", db, "list"]) == 0
    out = capsys.readouterr().out
    assert "finished" in out and "lora" in out and "full" in out
    assert main(["--db", db, "show", "1"]) == 0
    out = capsys.readouterr().out
    assert "before" in out and "after T3" in out and "Forgetting (Chaudhry)" in out and "rotate 135°" in out
    assert main(["--db", db, "export", "1", "--format", "csv", "--out", str(tmp_path / "x")]) == 0
    files = sorted(p.name for p in (tmp_path / "x").iterdir())
    assert files == ["run-1-config.json", "run-1-evaluations.csv", "run-1-matrix.csv", "run-1-scalars.csv",
                     "run-1-spectra.csv"]
    matrix = pd.read_csv(tmp_path / "x" / "run-1-matrix.csv")
    assert matrix.trained_through.tolist() == [0, 1, 2, 3]
    assert list(matrix.columns) == ["trained_through", "rotate 45°", "rotate 90°", "rotate 135°",
                                    "general: upright digits"]
    np.testing.assert_allclose(matrix.iloc[:, 1:4].to_numpy(), seeded_store.accuracy_matrix(1)["R"])
    spectra = pd.read_csv(tmp_path / "x" / "run-1-spectra.csv")
    assert {"module", "kind", "erank", "values"} <= set(spectra.columns)
    capsys.readouterr()
    assert main(["--db", db, "export", "2", "--what", "matrix", "--format", "json", "--out", "-"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 4 and rows[0]["trained_through"] == 0


BAD = [
    (["run", "--method", "lora", "--rank", "0"], "lora.rank must be an integer >= 1 (got 0)."),
    (["run", "--method", "lora", "--rank", "100"], "lora.rank 100 is larger than layer vit.layers.0.attention.q_proj"),
    (["run", "--method", "lora", "--lr", "-1"], "lr must be a number > 0.0 and <= 10.0 (got -1.0)."),
    (["run", "--method", "lorax"], "unknown method 'lorax'"),
    (["run", "--method", "lora", "--stream", "cifar"], "unknown stream 'cifar'"),
    (["run", "--method", "lora", "--targets", "attention.query"], "matches no linear module"),
    (["run", "--method", "lora", "--config", "missing.json"], "the config file missing.json does not exist."),
    (["show", "7"], "there is no run 7"),
    (["export", "7"], "there is no run 7"),
]


@pytest.mark.parametrize("argv,message", BAD, ids=[" ".join(a[:4]) for a, _ in BAD])
def test_bad_input_exits_2_with_one_sentence_and_writes_no_run(tmp_path, argv, message, capsys):
    db = str(tmp_path / "runs.db")
    assert main(["--db", db, *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert Store(db).runs() == []


def test_unopenable_store_is_one_sentence(tmp_path, capsys):
    assert main(["--db", str(tmp_path / "nope" / "runs.db"), "list"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_console_script_end_to_end(tmp_path):
    """The installed entry point, as a user types it, with CLDASH_DB choosing the store."""
    env = {**os.environ, "CLDASH_DB": str(tmp_path / "env.db")}
    cmd = [sys.executable, "-m", "cldash", "run", "--method", "lora", "--stream-angles", "90", *SHORT]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "run 1 finished" in done.stdout
    listed = subprocess.run([sys.executable, "-m", "cldash", "list"], env=env, capture_output=True, text=True)
    assert listed.returncode == 0 and "finished" in listed.stdout
    assert (tmp_path / "env.db").exists()


def test_execute_refuses_a_run_that_is_not_queued(seeded_store, capsys):
    assert main(["--db", seeded_store.display, "execute", "1"]) == 2
    assert "run 1 is finished; only a queued run can be executed" in capsys.readouterr().err


def test_run_help_lists_method_stream_and_backbone_options(capsys):
    assert main(["run", "--method", "lora", "--stream", "digits-split", "--help"]) == 0
    out = capsys.readouterr().out
    for flag in ("--rank", "--rslora", "--stream-evaluation", "--backbone-pretrain-steps", "--steps-per-task",
                 "--policy", "arXiv 2312.03732"):
        assert flag in out
