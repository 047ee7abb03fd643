"""Adversarial task orders: the stored order is the argmin of the stored conflict matrix; the matrix is
a cosine matrix; the command works for the language and the vision stream and says one sentence otherwise."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from cldash.analysis.orders import EXHAUSTIVE_UP_TO, adversarial_order, order_cost
from cldash.cli import main
from cldash.store import Store


def brute_force(C) -> tuple[float, list[list[int]]]:
    costs = {p: order_cost(C, p) for p in itertools.permutations(range(len(C)))}
    best = min(costs.values())
    return best, [list(p) for p, c in costs.items() if c <= best + 1e-12]


def test_adversarial_order_by_hand():
    # tasks 0 and 2 oppose each other most, 2 and 1 next: 0 -> 2 -> 1 costs -0.9 + -0.5
    C = np.array([[1.0, 0.2, -0.9],
                  [0.2, 1.0, -0.5],
                  [-0.9, -0.5, 1.0]])
    assert adversarial_order(C) == [0, 2, 1]
    assert order_cost(C, [0, 2, 1]) == pytest.approx(-1.4)
    assert order_cost(C, [0, 1, 2]) == pytest.approx(-0.3)


@pytest.mark.parametrize("seed", range(5))
def test_adversarial_order_is_the_argmin_and_the_heuristic_is_close(seed):
    rng = np.random.default_rng(seed)
    A = rng.uniform(-1, 1, (6, 6))
    C = (A + A.T) / 2
    np.fill_diagonal(C, 1.0)
    best, argmins = brute_force(C)
    assert adversarial_order(C) in argmins
    # beyond the exhaustive size: a permutation, no worse than the greedy start, near a sampled optimum
    B = rng.uniform(-1, 1, (EXHAUSTIVE_UP_TO + 2,) * 2)
    C2 = (B + B.T) / 2
    order = adversarial_order(C2)
    assert sorted(order) == list(range(len(C2)))
    sampled = min(order_cost(C2, rng.permutation(len(C2))) for _ in range(3000))
    assert order_cost(C2, order) <= sampled + 1e-9


@pytest.mark.slow
def test_cli_order_on_skills_stores_the_argmin_of_its_matrix(tmp_path, capsys):
    db = str(tmp_path / "runs.db")
    args = ["--db", db, "order", "--stream", "skills", "--stream-skills", "sort,successor,add_mod,lookup",
            "--stream-train-examples", "128", "--batches", "2", "--batch-size", "32"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "adversarial order:" in out and "run it: cldash run --method lora --stream skills" in out
    (o,) = Store(db).orders()
    C = np.array(o["matrix"])
    assert C.shape == (4, 4) and np.allclose(C, C.T) and np.allclose(np.diag(C), 1.0)
    assert (np.abs(C) <= 1 + 1e-9).all() and not np.allclose(C, 1.0)
    best, argmins = brute_force(C)
    assert o["order"] in argmins and o["cost"] == pytest.approx(best)
    assert o["natural_cost"] == pytest.approx(order_cost(C, [0, 1, 2, 3]))
    skills = ["sort", "successor", "add_mod", "lookup"]
    assert o["ordered_options"]["skills"] == [skills[i] for i in o["order"]]
    assert o["tasks"][0].startswith("sort")
    # the same measurement again gives the same matrix (seeded batches, eval mode)
    assert main(args) == 0
    assert np.allclose(np.array(Store(db).get_order(2)["matrix"]), C)
    assert main(["--db", db, "order", "--list"]) == 0 and main(["--db", db, "order", "--show", "1"]) == 0
    out = capsys.readouterr().out
    assert "--stream-skills " + ",".join(o["ordered_options"]["skills"]) in out


def test_cli_order_on_rotations_reorders_the_angles(tmp_path):
    db = str(tmp_path / "runs.db")
    assert main(["--db", db, "order", "--stream", "digits-rotate", "--stream-angles", "30,90,180",
                 "--batches", "1", "--batch-size", "16"]) == 0
    (o,) = Store(db).orders()
    best, argmins = brute_force(np.array(o["matrix"]))
    assert o["order"] in argmins
    assert o["ordered_options"]["angles"] == [[30.0, 90.0, 180.0][i] for i in o["order"]]


def test_cli_order_bad_input_is_one_sentence(tmp_path, capsys):
    db = str(tmp_path / "runs.db")
    assert main(["--db", db, "order", "--stream", "digits-permute", "--batches", "1"]) == 2
    err = capsys.readouterr().err
    assert "cannot run its tasks in another order" in err and err.count("\n") == 1
    assert main(["--db", db, "order", "--show", "7"]) == 2
    assert "there is no order 7" in capsys.readouterr().err
    assert main(["--db", db, "order", "--stream", "skills", "--batches", "0"]) == 2
    assert "--batches must be at least 1" in capsys.readouterr().err


def test_a_store_made_before_the_orders_table_gets_it(tmp_path):
    import shutil
    import sqlite3

    path = tmp_path / "old.db"
    shutil.copy(Path(__file__).parents[1] / "fixtures" / "store-rev1.db", path)   # made before migrations
    with sqlite3.connect(path) as con:
        con.execute("DROP TABLE orders")
    store = Store(str(path))
    assert store.orders() == [] and len(store.runs()) == 5


def test_a_measurement_that_stopped_says_its_last_error_line(tmp_path):
    import subprocess
    import sys

    from cldash.analysis.orders import measurement_state, order_args

    assert order_args("digits-rotate", "", {"angles": [20.0, 100.0]}, 1, 16) == [
        "--stream", "digits-rotate", "--stream-angles", "20,100", "--batches", "1", "--batch-size", "16"]
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    log = tmp_path / "order.log"
    log.write_text("loading\nerror: stream digits-split cannot run its tasks in another order.\n")
    started = {"pid": gone.pid, "args": [], "log": str(log), "started_at": 0.0}
    state, reason = measurement_state(Store(str(tmp_path / "runs.db")), started)
    assert (state, reason) == ("failed", "the measurement stopped: stream digits-split cannot run its tasks in "
                                         f"another order. (its log: {log})")
