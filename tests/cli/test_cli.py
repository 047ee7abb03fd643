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

from conftest import SHORT, TINY

STREAMS = {"digits-rotate": ["--stream-angles", "45,90,135"], "digits-permute": ["--stream-tasks", "3"],
           "digits-split": []}
# The rows that check learning (rotations; a fresh head on each pair of digits) train SHORT runs; the
# others check what a finished run stores (shape, ranges, the general column, anytime evaluations of
# every task), which ten steps a task with an evaluation and spectra halfway show as well as forty.
LEARNS = {("lora", "digits-rotate"), ("full", "digits-rotate"), ("full", "digits-split")}
STORES = ["--steps-per-task", "10", "--eval-interval", "5", "--spectra-interval", "5", "--dense-spectra-interval", "5",
          "--quiet"]


@pytest.mark.slow
@pytest.mark.parametrize("stream", list(STREAMS))
@pytest.mark.parametrize("method", ["lora", "full"])
def test_each_method_on_each_stream(tmp_path, method, stream, capsys):
    db = str(tmp_path / "runs.db")
    steps = SHORT if (method, stream) in LEARNS else STORES
    assert main(["--db", db, "run", "--method", method, "--stream", stream, *STREAMS[stream], *steps]) == 0
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


def test_export_writes_tensorboard_event_files_and_says_how_to_open_them(seeded_store, tmp_path, capsys,
                                                                          monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    db, out = seeded_store.display, tmp_path / "tb"
    assert main(["--db", db, "export", "2", "--tensorboard", str(out)]) == 0
    folder = out / "run-2-full-digits-rotate-seed-0"
    assert capsys.readouterr().out == f"{folder}\nopen it with: tensorboard --logdir {out}\n"
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    loss = seeded_store.scalars(2, names=["loss"])
    assert [(e.step, e.value) for e in events.Scalars("loss/train")] == \
        [(s, float(np.float32(v))) for s, v in zip(loss.step, loss.value)]
    # without the tensorboard package: how to install it, exit 2, nothing written
    monkeypatch.setitem(sys.modules, "tensorboard.summary.writer.event_file_writer", None)
    assert main(["--db", db, "export", "1", "--tensorboard", str(tmp_path / "none")]) == 2
    assert capsys.readouterr().err == ("error: the TensorBoard export needs the tensorboard package; install it with "
                                       "pip install 'cldash[tensorboard]' (or pip install tensorboard).\n")
    assert not (tmp_path / "none").exists()


BAD = [
    (["run", "--method", "lora", "--rank", "0"], "--rank must be an integer between 1 and 65536 (got 0)."),
    (["run", "--method", "lora", "--rank", "100"], "--rank 100 is larger than layer vit.layers.0.attention.q_proj"),
    (["run", "--method", "lora", "--lr", "-1"], "--lr must be a number > 0.0 and <= 10.0 (got -1.0)."),
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
    cmd = [sys.executable, "-m", "cldash", "run", "--method", "lora", "--stream-angles", "90", *TINY]
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


# --db may stand before the command, after it, or among its arguments, as `--db PATH` or `--db=PATH`.
DB_PLACES = {
    "before": lambda db, argv: ["--db", db, *argv],
    "after": lambda db, argv: [*argv, "--db", db],
    "equals": lambda db, argv: [*argv, f"--db={db}"],
    "between": lambda db, argv: [argv[0], "--db", db, *argv[1:]],
}
READS = [(["list"], "finished"), (["show", "1"], "after T3"), (["list", "--method", "full"], "full")]


@pytest.mark.parametrize("place", list(DB_PLACES))
@pytest.mark.parametrize("argv,expected", READS, ids=[" ".join(a) for a, _ in READS])
def test_db_option_anywhere_for_list_and_show(seeded_store, place, argv, expected, capsys, tmp_path,
                                              monkeypatch):
    monkeypatch.chdir(tmp_path)       # a misread --db would open ./runs.db here
    assert main(DB_PLACES[place](seeded_store.display, argv)) == 0
    assert expected in capsys.readouterr().out
    assert not (tmp_path / "runs.db").exists()


def test_db_option_after_run(tmp_path, monkeypatch, capsys, few_test_digits):
    monkeypatch.chdir(tmp_path)
    db = str(tmp_path / "after.db")
    # "db" as another flag's value stays that flag's value
    assert main(["run", "--method", "lora", "--stream-angles", "90", "--name", "db", *TINY, "--db", db]) == 0
    (run,) = Store(db).runs()
    assert run["status"] == "finished" and run["name"] == "db"
    assert not (tmp_path / "runs.db").exists()


HOISTED = [  # argv -> (global options, the rest)
    (["list", "--db", "x.db"], (["--db", "x.db"], ["list"])),
    (["--db=x.db", "show", "1"], (["--db=x.db"], ["show", "1"])),
    (["--db", "a.db", "list", "--db", "b.db"], (["--db", "a.db", "--db", "b.db"], ["list"])),   # the last wins
    (["--db", "list", "list"], (["--db", "list"], ["list"])),              # a store named like a command
    (["run", "--name", "--db x", "--quiet"], ([], ["run", "--name", "--db x", "--quiet"])),
    (["run", "--name=--db", "--db=y"], (["--db=y"], ["run", "--name=--db"])),
    (["run", "--", "--db", "x"], ([], ["run", "--", "--db", "x"])),        # after --, nothing is an option
]


@pytest.mark.parametrize("argv,split", HOISTED, ids=[" ".join(a) for a, _ in HOISTED])
def test_global_options_are_moved_in_front(argv, split):
    from cldash.cli.arguments import hoist_global_options

    assert hoist_global_options(argv) == split


def test_help_and_the_cli_docstring_list_every_command_of_the_table(capsys):
    import cldash.cli as cli

    assert main(["--help"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines() if line.startswith("    ")
              and not line.startswith("     ")]
    assert listed == [c.name for c in cli.COMMANDS]
    documented = cli.__doc__.split("The commands:", 1)[1]
    assert [line.split()[0] for line in documented.splitlines() if line.startswith("  ")
            and not line.startswith("   ")] == listed


def test_help_shows_plain_metavars(capsys):
    assert main(["run", "--method", "lora", "--help"]) == 0
    out = capsys.readouterr().out
    for shown in ("--steps-per-task N", "--rank N", "--lr X", "--alpha X", "--stream-angles LIST", "--name TEXT",
                  "--lr-schedule {constant,cosine}", "--backbone-patch-size {1,2,4,8}", "--rslora [BOOL]",
                  "--method NAME", "--config FILE"):
        assert shown in out, shown
    for prefix in ("RUN:", "METHOD:", "STREAM:", "BACKBONE:"):
        assert prefix not in out
    assert main(["order", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--batches N" in out and "--targets LIST" in out and "--stream-skills LIST" in out
    assert main(["--help"]) == 0
    assert "--db PATH" in capsys.readouterr().out


HELPS = [["--help"], ["-h"], ["list", "--help"], ["show", "-h"], ["export", "--help"], ["run", "--help"],
         ["order", "--stream", "digits-rotate", "--help"], ["list", "--help", "--db", "x.db"]]


@pytest.mark.parametrize("argv", HELPS, ids=[" ".join(a) for a in HELPS])
def test_help_everywhere_exits_0(argv, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert out.startswith("usage: cldash") and err == ""
    assert list(tmp_path.iterdir()) == []


MISTAKES = [
    (["run", "--method", "lora", "--rnak", "4"],
     "unknown option --rnak for cldash run; did you mean --rank? (cldash run --method lora --help lists them)"),
    (["run", "--method", "lora", "--stream-angels", "90"], "did you mean --stream-angles?"),
    (["run", "--method", "lora", "--backbone-layer", "1"], "did you mean --backbone-layers?"),   # no abbreviations
    (["run", "--method", "lora", "--stream", "digits-split", "--stream-evalution", "task-il"],
     "did you mean --stream-evaluation? (cldash run --method lora --stream digits-split --help lists them)"),
    (["run", "--method", "lora", "--backbone-layres=1"], "unknown option --backbone-layres for cldash run; "
     "did you mean --backbone-layers?"),
    (["run", "--method", "lora", "--frobnicate"],
     "unknown option --frobnicate for cldash run; cldash run --method lora --help lists the options."),
    (["run", "--method", "lora", "--dbb", "x.db"], "did you mean --db?"),
    (["run", "--method"], "--method needs a value."),
    (["run", "--method", "lora", "--quiet=yes"], "--quiet takes no value (got 'yes')."),
    (["list", "--staus", "finished"],
     "unknown option --staus for cldash list; did you mean --status? (cldash list --help lists them)"),
    (["list", "extra"], "unexpected argument 'extra' for cldash list; cldash list --help shows its usage."),
    (["list", "--db"], "--db needs a value: the run store, a file path or a SQLAlchemy URL"),
    (["order", "--batchs", "2"], "unknown option --batchs for cldash order; did you mean --batches? "
     "(cldash order --stream skills --help lists them)"),
    (["order", "--batches", "x"], "--batches must be an integer (got 'x')."),
    (["lsit"], "unknown command lsit; did you mean list? (cldash --help lists them)"),
    (["frobnicate"], "unknown command frobnicate; cldash --help lists the commands."),
    (["--dbb", "x.db", "list"], "unknown option --dbb for cldash; did you mean --db? (cldash --help lists them)"),
    ([], "choose a command: run, execute, list, show"),
    (["show", "abc"], "a run id is a whole number (got 'abc'); cldash list shows the stored runs."),
    (["show"], "cldash show needs RUN_ID, the run's id (cldash list shows them)."),
    (["export", "1", "--format", "xml"], "--format must be one of csv, json, peft (got 'xml')."),
]


@pytest.mark.parametrize("argv,message", MISTAKES, ids=[" ".join(a) for a, _ in MISTAKES])
def test_parse_mistakes_are_one_sentence_and_touch_no_store(tmp_path, argv, message, capsys):
    db = tmp_path / "runs.db"
    assert main(["--db", str(db), *argv]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err
    assert not db.exists()


def test_mistake_exit_code_from_the_shell(tmp_path):
    done = subprocess.run([sys.executable, "-m", "cldash", "list", "--staus", "x", "--db", str(tmp_path / "r.db")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == "error: unknown option --staus for cldash list; did you mean --status? " \
                          "(cldash list --help lists them)\n"
    assert not (tmp_path / "r.db").exists()


SECRET_URLS = [("postgresql+psycopg2://u:s3cret@host/db", "its database driver is not installed (psycopg2)"),
               ("postgresql+psycopg://u:s3cret@host:x/db", "not a valid database URL"),
               ("postgresql+psycopg://u:s3cret@localhost:1/db", "cannot open the run store "
                                                                 "postgresql+psycopg://u:***@localhost:1/db: "),
               ("postgresql+psycopg://u:s3cret@x@localhost:1/db", "u:***@localhost:1/db"),   # an @ in the password
               ("postgresql:u:s3cret@host/db", "looks like a database URL but is not one")]


@pytest.mark.parametrize("url,message", SECRET_URLS, ids=[u.split("//")[0] + m[:12] for u, m in SECRET_URLS])
def test_a_store_password_appears_in_no_message(url, message, capsys):
    assert main(["--db", url, "list"]) == 2
    out, err = capsys.readouterr()
    assert "s3cret" not in out + err and message in err and err.count("\n") == 1, err


@pytest.mark.parametrize("value", ["not a url::", "postgresql:/x", "sqlite:/x.db", "sqlite:runs.db"])
def test_a_value_that_looks_like_a_broken_url_is_one_sentence_and_creates_no_file(tmp_path, monkeypatch, value,
                                                                                   capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["--db", value, "list"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: the run store {value!r} looks like a database URL but is not one (a URL starts with its " \
                  "scheme and ://, as in sqlite:///runs.db or postgresql+psycopg://user@host/db); for a file of that " \
                  f"name, write it as a path: ./{value}.\n"
    assert list(tmp_path.iterdir()) == []
    assert main(["--db", "./a:b.db", "list"]) == 0   # plainly a path: a file with a colon in its name
    assert (tmp_path / "a:b.db").exists()


def test_names_already_in_a_store_are_printed_escaped(tmp_path, capsys):
    """A store written by an older cldash (which took any --name) may hold escapes and line breaks:
    list, show and the dashboard's runs table print them escaped, one line per run."""
    from cldash.config import resolve
    from cldash.dashboard.tables import runs_table

    store = Store(str(tmp_path / "old.db"))
    config = resolve({"method": "lora"}).to_dict()
    run_id = store.create_run(config, status="failed", name="\x1b[2J\x1b[31mred\nsecond line")
    store.update_run(run_id, error="boom\x1b[0m in\rthe middle\nand a traceback")
    assert main(["--db", store.display, "list"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\r" not in out and len(out.splitlines()) == 2      # the header and one run
    assert out.splitlines()[1].endswith(r"  \x1b[2J\x1b[31mred\nsecond line")
    assert main(["--db", store.display, "show", str(run_id)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\r" not in out
    assert out.startswith(f"run {run_id}: \\x1b[2J\\x1b[31mred\\nsecond line\n")
    assert r"  reason    boom\x1b[0m in" + "\n" in out      # the first line (\r ends one too)
    row = runs_table(store.runs()).iloc[0]
    assert row["name"] == r"\x1b[2J\x1b[31mred\nsecond line" and row["error"] == r"boom\x1b[0m in\rthe middle"
