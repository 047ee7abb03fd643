"""Bad input through the whole CLI, one row per mistake a user can make. For every row cldash exits
with code 2 and writes one sentence on stderr (a single line starting with "error: "), no traceback and
nothing on stdout, and writes nothing: no store file, or no new row in an existing store, and no file
anywhere else.

The rows: a sweep over the commands (unknown names, out-of-range and malformed numbers, seeds, devices,
--config files, exports, Hub names without network), every RunConfig field given the wrong JSON type in
a --config file, exports to places that cannot be written, control characters in text options, and the
bad-input rows of tests/cli/test_cli.py (BAD, MISTAKES) under the same checks. ``python tests/cli/test_bad_inputs.py``
prints how many rows there are.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cldash.cli import main
from cldash.config import RunConfig
from cldash.core.options import describe
from cldash.store import Store

from test_cli import BAD, MISTAKES

# A row: (argv after `cldash --db DB`, a phrase the sentence must contain[, environment variables]).
# RUN stands for the id of a finished run in an existing store (the row then runs against that store),
# TMP for the row's own empty folder, FILE for a regular file in it.

SWEEP = [
    # names
    (["run"], "choose a method with --method"),
    (["run", "--method", ""], "choose a method with --method"),
    (["run", "--method", "LoRA"], "unknown method 'LoRA'"),
    (["run", "--method", "lora", "--stream", "digits-rotat"], "unknown stream 'digits-rotat'"),
    (["run", "--method", "lora", "--backbone", "resnet"], "unknown backbone 'resnet'"),
    (["run", "--method", "lora", "--backbone", "hf:"], "needs a name or a path after 'hf:'"),
    (["run", "--method", "lora", "--backbone", "gpt2-tiny"],
     "stream digits-rotate needs an image-classification backbone; gpt2-tiny is a causal-lm model."),
    (["run", "--method", "lora", "--stream", "skills", "--backbone", "vit-tiny"],
     "stream skills needs a causal-lm backbone; vit-tiny is an image-classification model."),
    (["run", "--method", "lora", "--stream", "hf:"], "needs at least one data set after 'hf:'"),
    (["run", "--method", "lora", "--stream", "hf:TMP/missing.csv"], "does not exist"),
    (["run", "--method", "lora", "extra"], "unexpected argument 'extra' for cldash run"),
    # ranks and method options
    (["run", "--method", "lora", "--rank", "-3"], "--rank must be an integer between 1 and 65536 (got -3)."),
    (["run", "--method", "lora", "--rank", "1.5"], "--rank must be an integer"),
    (["run", "--method", "lora", "--rank", "abc"], "--rank must be an integer"),
    (["run", "--method", "lora", "--rank", "100000"], "--rank must be an integer between 1 and 65536"),
    (["run", "--method", "dora", "--rank", "65"], "--rank 65 is larger than layer"),
    (["run", "--method", "lora", "--rank"], "--rank needs a value."),
    (["run", "--method", "lora", "--alpha", "1e300"], "--alpha must be a number > 0 and <= 1000000"),
    (["run", "--method", "lora", "--dropout", "1"], "--dropout must be a number between 0.0 and 0.9"),
    (["run", "--method", "lora", "--rslora", "maybe"], "--rslora must be true or false"),
    (["run", "--method", "adalora", "--init-r", "0"], "--init-r must be an integer"),
    (["run", "--method", "adalora", "--target-r", "20"], "--target-r 20 is larger than --init-r 12"),
    (["run", "--method", "olora", "--lambda-1", "-1"], "--lambda-1 must be a number between 0.0 and 1000000"),
    (["run", "--method", "sdlora", "--rr-tasks", "5", "--rr-ranks", "8,6"], "must have the same length"),
    # learning rate and training numbers
    (["run", "--method", "lora", "--lr", "0"], "--lr must be a number > 0.0 and <= 10.0 (got 0.0)."),
    (["run", "--method", "lora", "--lr", "nan"], "--lr must be a finite number"),
    (["run", "--method", "lora", "--lr", "inf"], "--lr must be a finite number"),
    (["run", "--method", "lora", "--lr=-inf"], "--lr must be a finite number"),
    (["run", "--method", "lora", "--lr", "1e400"], "--lr must be a finite number"),
    (["run", "--method", "lora", "--lr", "11"], "--lr must be a number > 0.0 and <= 10.0 (got 11.0)."),
    (["run", "--method", "lora", "--lr", "fast"], "--lr must be a number"),
    (["run", "--method", "lora", "--steps-per-task", "0"], "--steps-per-task must be an integer between 1"),
    (["run", "--method", "lora", "--steps-per-task", "100000000"], "--steps-per-task must be an integer between 1"),
    (["run", "--method", "lora", "--steps-per-task"], "--steps-per-task needs a value."),
    (["run", "--method", "lora", "--batch-size", "0"], "--batch-size must be an integer between 1 and 65536"),
    (["run", "--method", "lora", "--batch-size", "1e9"], "--batch-size must be an integer"),
    (["run", "--method", "lora", "--eval-batch-size", "0"], "--eval-batch-size must be an integer"),
    (["run", "--method", "lora", "--warmup-steps", "100000000000"], "--warmup-steps must be an integer between 0"),
    (["run", "--method", "lora", "--max-grad-norm", "-1"], "--max-grad-norm must be a number between 0.0"),
    (["run", "--method", "lora", "--max-grad-norm", "1e300"], "--max-grad-norm must be a number between 0.0"),
    (["run", "--method", "lora", "--eval-interval", "-5"], "--eval-interval must be an integer between 0"),
    (["run", "--method", "lora", "--lr-schedule", "linear"], "--lr-schedule must be one of constant, cosine"),
    (["run", "--method", "lora", "--policy", "sometimes"], "policy 'sometimes' is not available for lora"),
    (["run", "--method", "full", "--policy", "merge"], "full fixes its own task-boundary behaviour"),
    # regimes (cldash.config.presets) and claims
    (["run", "--method", "lora", "--preset", "paper"], "lora has no paper preset"),
    (["run", "--method", "lora", "--preset", "paper:nobody"], "names no method with a paper preset"),
    (["run", "--method", "lora", "--preset", "authors"], "preset must be common, paper or paper:METHOD"),
    (["run", "--method", "lora", "--aid-preset", "lwf"], "--aid-preset must be one of ewc, replay, or empty"),
    (["run", "--method", "eblora", "--optimizer", "sgd"], "eblora trains with its own optimizer"),
    (["run", "--method", "lora", "--optimizer", "rmsprop"], "optimizer must be one of adamw, adam, sgd"),
    (["run", "--method", "lora", "--loss-classes", "old"], "--loss-classes must be one of all, current"),
    (["run", "--method", "lora", "--warmup-ratio", "1.5"], "--warmup-ratio must be a number between 0.0 and 1.0"),
    (["run", "--method", "lora", "--momentum", "1"], "momentum must be a number between 0.0 and 0.999"),
    (["claims", "--claim", "nope"], "unknown claim 'nope'"),
    (["presets", "--method", "lora"], "lora has no paper preset"),
    (["run", "--method", "lora", "--threads", "5000"], "threads must be an integer between 0 and 1024"),
    (["run", "--method", "lora", "--train-head", "maybe"], "--train-head must be true or false"),
    (["run", "--method", "lora", "--targets", "q_proj("], "not a valid regular expression"),
    # replay and EWC
    (["run", "--method", "lora", "--ewc-lambda", "1e30"], "--ewc-lambda must be a number between 0.0 and 100000000"),
    (["run", "--method", "lora", "--ewc-lambda", "-1"], "--ewc-lambda must be a number between 0.0"),
    (["run", "--method", "lora", "--ewc-gamma", "2"], "--ewc-gamma must be a number between 0.0 and 1.0"),
    (["run", "--method", "lora", "--ewc-batches", "0"], "--ewc-batches must be an integer between 1"),
    (["run", "--method", "lora", "--replay", "-1"], "replay must be an integer between 0"),
    (["run", "--method", "lora", "--replay-rule", "fifo"], "--replay-rule must be one of balanced, reservoir"),
    (["run", "--method", "lora", "--replay-batch-size", "100000"], "--replay-batch-size must be an integer between 0"),
    # seeds and devices
    (["run", "--method", "lora", "--seed", "-1"], "seed must be an integer between 0 and 2147483647 (got -1)."),
    (["run", "--method", "lora", "--seed", "2147483648"], "seed must be an integer between 0 and 2147483647"),
    (["run", "--method", "lora", "--seed", "1.5"], "seed must be an integer"),
    (["run", "--method", "lora", "--seed", "one"], "seed must be an integer"),
    (["run", "--method", "lora", "--stream", "digits-permute", "--stream-permutation-seed", "-2"],
     "--stream-permutation-seed must be an integer between 0 and 2147483647"),
    (["run", "--method", "lora", "--backbone-seed", "99999999999"], "--backbone-seed must be an integer between 0"),
    (["run", "--method", "lora", "--device", "tpu"], "device must be cpu, cuda, cuda:N, mps or auto (got 'tpu')."),
    (["run", "--method", "lora", "--device", ""], "device must be cpu, cuda, cuda:N, mps or auto"),
    (["run", "--method", "lora", "--device", "cuda:banana"], "device 'cuda:banana'"),
    # stream and backbone options
    (["run", "--method", "lora", "--stream-angles", "720"], "between -360.0 and 360.0"),
    (["run", "--method", "lora", "--stream-angles", "abc"], "--stream-angles must be a number"),
    (["run", "--method", "lora", "--stream-angles", ""], "needs at least one angle"),
    (["run", "--method", "lora", "--stream", "digits-permute", "--stream-tasks", "0"], "--stream-tasks"),
    (["run", "--method", "lora", "--stream", "digits-split", "--stream-evaluation", "domain-il"],
     "one of class-il, task-il"),
    (["run", "--method", "lora", "--backbone-heads", "3"], "heads 3 must divide"),
    (["run", "--method", "lora", "--backbone-patch-size", "3"], "one of 1, 2, 4, 8"),
    # --config files
    (["run", "--config", "TMP"], "is a folder; give a JSON file"),
    (["run", "--config", "FILE"], "is not valid JSON"),
    (["run", "--config", "TMP/list.json"], "must hold a JSON object of run options"),
    (["run", "--config", "TMP/string.json"], "must hold a JSON object of run options"),
    (["run", "--config", "TMP/empty.json"], "is not valid JSON"),
    (["run", "--config", "TMP/binary.json"], "is not text"),
    (["run", "--config", "TMP/unknown.json"], "a run configuration has no option 'rank'"),
    (["run", "--config", "TMP/nan.json"], "lr must be a finite number"),
    (["run", "--config"], "--config needs a value."),
    # Hub names with no network (every row runs under conftest.no_network: name lookups fail)
    (["run", "--method", "lora", "--stream", "skills", "--backbone", "hf:cldash-test/no-such-model"],
     "cldash cannot reach the Hugging Face Hub"),
    (["run", "--method", "lora", "--stream", "skills", "--backbone", "hf:cldash-test/no-such-model"],
     "HF_HUB_OFFLINE is set", {"HF_HUB_OFFLINE": "1"}),
    (["run", "--method", "lora", "--stream", "hf:cldash-test/no-such-data", "--backbone", "hf:cldash-test/x"],
     "data set"),
    # cldash sweep: a run's own flag names the --set (and --grid) that gives it
    (["sweep", "--methods", "lora", "--steps-per-task", "100"],
     "unknown option --steps-per-task for cldash sweep; steps_per_task is a run option: give it to every run with "
     "--set steps_per_task=100, or several values with --grid steps_per_task=V1,V2."),
    (["sweep", "--methods", "lora", "--steps-per-task=50"], "--set steps_per_task=50"),
    (["sweep", "--methods", "lora", "--steps-per-task"], "--set steps_per_task=N"),
    (["sweep", "--methods", "lora", "--lr-schedule", "cosine"], "--set lr_schedule=cosine"),
    (["sweep", "--methods", "lora", "--checkpoints"], "--set checkpoints={auto,latest,all,none}"),
    (["sweep", "--methods", "lora", "--rank", "4"], "rank is an option of lora, "),
    (["sweep", "--methods", "lora", "--ranks", "4"], "unknown option --ranks for cldash sweep; cldash sweep --help"),
    (["sweep", "--methods", "lora", "--set", "steps_per_task=0"], "steps_per_task must be an integer between 1"),
    # other commands against a store holding one finished run
    (["show", "99"], "there is no run 99"),
    (["show", "1.5"], "a run id is a whole number (got '1.5')"),
    (["cancel", "99"], "there is no run 99"),
    (["delete", "99", "--yes"], "there is no run 99"),
    (["delete", "RUN"], "repeat with --yes to confirm"),
    (["execute", "RUN"], "only a queued run can be executed"),
    (["execute", "99"], "there is no run 99"),
    (["export", "RUN", "--what", "bogus"], "cannot export 'bogus'; choose from matrix"),
    (["export", "RUN", "--what", "matrix,bogus"], "cannot export 'bogus'"),
    (["export", "RUN", "--out", "-"], "exporting to standard output takes one table"),
    (["export", "RUN", "--format", "peft", "--out", "-"], "a PEFT adapter is a folder of files"),
    (["export", "RUN", "--out", "FILE"], "is a file; give a folder"),
    (["export", "RUN", "--format", "peft", "--out", "FILE"], "is a file; give a folder"),
    (["db", "frobnicate"], "must be one of current, upgrade"),
    # artifact locations (cldash.store.artifacts)
    (["--artifacts", "nosuch://b/x", "run", "--method", "lora"], "has a protocol fsspec does not know (nosuch://)"),
    (["run", "--method", "lora"], "the artifact location in $CLDASH_ARTIFACTS 's3:/typo' looks like a URL",
     {"CLDASH_ARTIFACTS": "s3:/typo"}),
    (["db", "artifacts", "s3://"], "names no bucket or folder"),
    (["order", "--batches", "0"], "--batches must be at least 1 (got 0)."),
    (["order", "--batch-size", "-1"], "--batch-size must be at least 1 (got -1)."),
    (["order", "--stream", "nope"], "unknown stream 'nope'"),
    (["pretrain", "--backbone", "resnet"], "unknown backbone 'resnet'"),
    (["pretrain", "--backbone", "vit-tiny", "--backbone-heads", "3"], "heads 3 must divide"),
    (["pretrain", "--backbone", "vit-tiny", "--out", "FILE"], "is a file; give a folder"),
]

# Issue 11, defect 4: an export into a place that cannot be written (no such place, not a folder).
EXPORTS = [(["export", "RUN", "--format", fmt, "--out", out], "cannot write") for fmt in ("csv", "json", "peft")
           for out in ("/proc/cldash-export", "FILE/sub")]
# ... and TensorBoard event files (issue 26)
EXPORTS += [(["export", "RUN", "--tensorboard", out], "cannot write") for out in ("/proc/cldash-export", "FILE/sub")]
EXPORTS += [(["export", "RUN", "--tensorboard", "FILE"], "is a file; give a folder to write the TensorBoard"),
            (["export", "RUN", "--tensorboard", "TMP/tb", "--what", "matrix"], "leave out --format, --what and --out")]

# Issue 11, defect 9: control characters in text that cldash prints.
CONTROLS = [(["run", "--method", "lora", flag, value], "must be plain text, without control characters")
            for flag, value in (("--name", "\x1b[2J\x1b[31mred"), ("--name", "two\nlines"), ("--name", "tab\there"),
                                ("--name", "bell\x07"), ("--name", "line\u2028separator"),
                                ("--targets", "q_proj\x1b[0m"), ("--policy", "single\n"))]

# Issue 11, defect 3: every RunConfig field given a JSON value of the wrong type in a --config file.
WRONG_TYPES = {str: ([7, ["a"], {"a": 1}, True], "must be text"),
               dict: ([[], 5, "rank=4", True, None], "must be a mapping of option names to values"),
               list: ([7, {"a": 1}, True], "must be a list of text values"),
               int: (["many", [1], {}, True, 1.5], "must be an integer"),
               float: (["fast", [0.1], {}, True], "must be a number"),
               bool: (["maybe", [True], {}, 2], "must be true or false")}


def _plain_type(typ):
    args = [a for a in getattr(typ, "__args__", ()) if a is not type(None)]
    if getattr(typ, "__origin__", None) in (list, tuple):
        return list
    return args[0] if len(args) == 1 else typ


CONFIG_TYPES = [(["run", "--config", f"TMP/config.json={json.dumps({'method': 'lora', row['name']: value})}"],
                 f"{row['name']} {WRONG_TYPES[_plain_type(row['type'])][1]}")
                for row in describe(RunConfig) for value in WRONG_TYPES[_plain_type(row["type"])][0]]


# tests/cli/test_cli.py's bad-input rows, counted and checked here too
FROM_TEST_CLI = BAD + MISTAKES
GROUPS = {"sweep": SWEEP, "export": EXPORTS, "controls": CONTROLS, "config-types": CONFIG_TYPES,
          "test_cli": FROM_TEST_CLI}
ROWS = [row for rows in GROUPS.values() for row in rows]


def _ids(rows):
    return [" ".join(row[0])[:70].encode("unicode_escape").decode() + (f" {row[2]}" if len(row) > 2 else "")
            for row in rows]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A store holding one short finished LoRA run (for show, export, delete...)."""
    db = tmp_path_factory.mktemp("finished") / "runs.db"
    assert main(["--db", str(db), "run", "--method", "lora", "--stream-angles", "90", "--steps-per-task", "2",
                 "--eval-interval", "0", "--spectra-interval", "0", "--dense-spectra-interval", "0",
                 "--quiet"]) == 0
    (run,) = Store(str(db)).runs()
    return db, run["id"]


def _files(folder: Path) -> set[Path]:
    return set(folder.rglob("*"))


def check_one_sentence(row, tmp_path, finished, capfd, monkeypatch, no_network):
    argv, phrase, env = (*row, {})[:3]
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    work = tmp_path / "work"
    work.mkdir()
    (work / "FILE").write_text("not json, not a folder\n")
    (work / "list.json").write_text("[1, 2]")
    (work / "string.json").write_text('"lora"')
    (work / "empty.json").write_text("")
    (work / "binary.json").write_bytes(b"\xff\xfe\x00{")
    (work / "unknown.json").write_text('{"method": "lora", "rank": 4}')
    (work / "nan.json").write_text('{"method": "lora", "lr": NaN}')
    args = []
    for arg in argv:
        if arg.startswith("TMP/config.json="):       # a --config file written for this row
            (work / "config.json").write_text(arg.split("=", 1)[1])
            arg = "TMP/config.json"
        args.append(arg.replace("TMP", str(work)).replace("FILE", str(work / "FILE")))
    uses_store = argv[:1] in (["show"], ["cancel"], ["delete"], ["execute"], ["export"])
    db = finished[0] if uses_store else tmp_path / "runs.db"
    args = [a.replace("RUN", str(finished[1])) if uses_store else a for a in args]
    before = [(r["id"], r["status"]) for r in Store(str(db)).runs()] if uses_store else None
    files = _files(work)
    capfd.readouterr()

    code = main(["--db", str(db), *args])

    out, err = capfd.readouterr()
    assert code == 2, (code, err)
    assert err.startswith("error: ") and err.count("\n") == 1 and err.endswith("\n"), err
    assert "Traceback" not in err and out == "", (out, err)
    assert phrase in err, err
    if uses_store:
        assert [(r["id"], r["status"]) for r in Store(str(db)).runs()] == before
    else:
        assert not db.exists()
    assert _files(work) == files, _files(work) - files
    assert len(no_network) <= 1     # at most the Hub probe's one lookup: no download was tried


@pytest.mark.parametrize("row", SWEEP, ids=_ids(SWEEP))
def test_sweep_of_bad_inputs_gets_one_sentence(row, tmp_path, finished, capfd, monkeypatch, no_network):
    check_one_sentence(row, tmp_path, finished, capfd, monkeypatch, no_network)


@pytest.mark.parametrize("row", CONFIG_TYPES, ids=_ids(CONFIG_TYPES))
def test_config_file_field_of_the_wrong_type_gets_one_sentence(row, tmp_path, finished, capfd, monkeypatch,
                                                               no_network):
    check_one_sentence(row, tmp_path, finished, capfd, monkeypatch, no_network)


@pytest.mark.parametrize("row", EXPORTS, ids=_ids(EXPORTS))
def test_export_into_a_place_that_cannot_be_written_gets_one_sentence(row, tmp_path, finished, capfd,
                                                                      monkeypatch, no_network):
    check_one_sentence(row, tmp_path, finished, capfd, monkeypatch, no_network)


@pytest.mark.parametrize("row", CONTROLS, ids=_ids(CONTROLS))
def test_control_characters_in_text_options_get_one_sentence(row, tmp_path, finished, capfd, monkeypatch,
                                                             no_network):
    check_one_sentence(row, tmp_path, finished, capfd, monkeypatch, no_network)


@pytest.mark.parametrize("row", FROM_TEST_CLI, ids=_ids(FROM_TEST_CLI))
def test_test_cli_rows_get_one_sentence_too(row, tmp_path, finished, capfd, monkeypatch, no_network):
    check_one_sentence(row, tmp_path, finished, capfd, monkeypatch, no_network)


def test_count_of_bad_inputs():
    """What the README quotes: every row tried got one sentence (each row above is its own test)."""
    assert len(ROWS) >= 60
    assert len(CONFIG_TYPES) >= 3 * len(describe(RunConfig))


if __name__ == "__main__":
    print(f"{len(ROWS)} bad inputs: " + ", ".join(f"{len(rows)} {name}" for name, rows in GROUPS.items()))


@pytest.mark.parametrize("argv,field", [
    (["--method", "inflora", "--stream", "imagenet-r-10", "--backbone", "vit-b16-in21k"], "weights of vit-b16-in21k"),
    (["--method", "lora", "--stream", "clip-mtil-5"], "weights of clip-vit-b16"),
])
def test_a_run_whose_pinned_weights_cannot_be_had_offline_is_refused_before_anything_is_stored(
        tmp_path, monkeypatch, capsys, argv, field):
    """Offline, with nothing in the caches: one sentence and exit 2 before the store exists (it used to store a run
    that failed at once)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    db = tmp_path / "runs.db"
    assert main(["run", *argv, "--db", str(db)]) == 2
    err = capsys.readouterr().err.strip()
    assert field in err and "HF_HUB_OFFLINE" in err and err.count("\n") == 0
    assert not db.exists()


def test_a_run_whose_benchmark_data_cannot_be_had_offline_says_what_to_fetch(tmp_path, monkeypatch):
    """The weights are there (pretend), the data is not: the data's sentence names `cldash data fetch`."""
    from cldash.backbones import pretrained
    from cldash.config import check_inputs, resolve
    from cldash.core.errors import ConfigError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(pretrained, "missing_weights", lambda name: None)
    with pytest.raises(ConfigError) as exc:
        check_inputs(resolve({"method": "lora", "stream": "cifar100-10"}))
    assert exc.value.field == "stream" and "cldash data fetch cifar100-10" in str(exc.value)
    check_inputs(resolve({"method": "lora"}))   # the shipped digits and vit-tiny: nothing to fetch


def test_runs_per_gpu_out_of_range_is_one_sentence_and_writes_no_store(tmp_path, capsys):
    db = tmp_path / "runs.db"
    assert main(["queue", "--runs-per-gpu", "0", "--db", str(db)]) == 2
    assert capsys.readouterr().err == "error: --runs-per-gpu must be between 1 and 64 (got 0).\n"
    assert not db.exists()
    assert main(["queue", "--runs-per-gpu", "3", "--no-start", "--db", str(db)]) == 0
    assert Store(str(db)).get_setting("runs_per_gpu") == "3"
