"""Store migrations (cldash.store.migrations): a store written by cldash 0.1.0 before migrations opens,
is upgraded with a backup and shows every run; revision 0001 is exactly that release's schema and
the head is exactly the models'; an upgrade keeps the data and fails whole; a store from a newer
cldash is refused in one sentence; a store at the head is read without writing; `cldash db`."""

import json
import math
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, inspect

from cldash import __version__
from cldash.cli import main
from cldash.core.errors import UserError
from cldash.store import Base, Store, count_rows, migrations

pytestmark = pytest.mark.floors   # run again at the lowest declared versions (.ci/floors.sh)

FIXTURE = Path(__file__).parents[1] / "fixtures" / "store-rev1.db"
RECORD = json.loads(FIXTURE.with_suffix(".json").read_text())


def fixture_copy(tmp_path, name="runs.db") -> Path:
    path = tmp_path / name
    shutil.copy(FIXTURE, path)
    return path


def alembic_upgrade(url: str, revision: str) -> None:
    """Bring a database to `revision` with Alembic alone, as an earlier cldash would have left it."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            migrations._alembic_upgrade(conn, revision)
    finally:
        engine.dispose()


def schema(url: str) -> dict:
    """Tables, columns (type, nullability, primary key), indexes, unique constraints and foreign keys."""
    engine = create_engine(url)
    try:
        insp = inspect(engine)
        out = {}
        for name in sorted(set(insp.get_table_names()) - {"alembic_version"}):
            out[name] = {
                "columns": [(c["name"], str(c["type"]), c["nullable"]) for c in insp.get_columns(name)],
                "primary_key": insp.get_pk_constraint(name)["constrained_columns"],
                "indexes": sorted((i["name"], tuple(i["column_names"]), bool(i["unique"]))
                                  for i in insp.get_indexes(name)),
                "unique": sorted(tuple(u["column_names"]) for u in insp.get_unique_constraints(name)),
                "foreign_keys": sorted((tuple(f["constrained_columns"]), f["referred_table"],
                                        tuple(f["referred_columns"]), f["options"].get("ondelete"))
                                       for f in insp.get_foreign_keys(name)),
            }
        return out
    finally:
        engine.dispose()


def revision_of(path: Path) -> str | None:
    with sqlite3.connect(path) as conn:
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'alembic_version'").fetchone():
            return None
        return conn.execute("SELECT version_num FROM alembic_version").fetchone()[0]


def test_a_store_from_cldash_0_1_0_is_upgraded_backed_up_and_shows_every_run(tmp_path, capsys):
    path = fixture_copy(tmp_path)
    store = Store(str(path))
    err = capsys.readouterr().err
    backup = tmp_path / "runs.db.bak-0001"
    assert err == f"upgraded the run store {path} from revision 0001 to {migrations.HEAD} (cldash {__version__}); " \
                  f"the file as it was is kept as {backup}.\n"
    assert revision_of(path) == migrations.HEAD

    # the backup is the whole store as it was, in one file that opens on its own
    assert not (tmp_path / "runs.db.bak-0001-wal").exists()
    with sqlite3.connect(backup) as b, sqlite3.connect(FIXTURE) as f:
        assert b.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert list(b.iterdump()) == list(f.iterdump())

    with store.engine.connect() as conn:
        counts = {t: conn.exec_driver_sql(f"SELECT count(*) FROM {t}").scalar() for t in RECORD["tables"]}
        meta = dict(conn.exec_driver_sql("SELECT key, value FROM meta").all())
    assert counts == {**RECORD["tables"], "meta": 1}
    assert meta == {"cldash_version": __version__}   # schema_version's job is alembic_version's now

    assert [r["id"] for r in store.runs()] == [r["id"] for r in RECORD["runs"]]
    for rec in RECORD["runs"]:
        run = store.get_run(rec["id"])
        assert {k: run[k] for k in ("method", "stream", "backbone", "status", "name", "step", "total_steps")} == \
               {k: rec[k] for k in ("method", "stream", "backbone", "status", "name", "step", "total_steps")}
        assert run["weights"] is None   # not recorded before revision 0002
        assert run["runtime"] is None   # nor this before revision 0006
        assert count_rows(store, rec["id"]) == rec["rows"]
        m = store.accuracy_matrix(rec["id"])
        want = rec["matrix"]
        assert (m["metric"], m["rows"], m["tasks"]) == (want["metric"], want["rows"], want["tasks"])
        np.testing.assert_array_equal(m["R"], np.array(want["R"], dtype=float).reshape(m["R"].shape))
        assert {k: [None if math.isnan(v) else v for v in col] for k, col in m["general"].items()} == want["general"]
    assert [(o["id"], o["order"]) for o in store.orders()] == [(o["id"], o["order"]) for o in RECORD["orders"]]

    assert main(["--db", str(path), "list"]) == 0
    lines = capsys.readouterr().out.splitlines()[1:]
    assert [line.split()[:2] for line in lines] == [[str(r["id"]), r["status"]] for r in RECORD["runs"]]
    for rec in RECORD["runs"]:
        assert main(["--db", str(path), "show", str(rec["id"])]) == 0
        out = capsys.readouterr().out
        assert out.startswith(f"run {rec['id']}: {rec['name']}\n")
        assert "  stored    " + ", ".join(f"{v} {k}" for k, v in rec["rows"].items()) in out
        assert ("accuracy matrix R[i][j]" in out) == bool(rec["matrix"]["rows"])


def test_revision_0001_is_the_schema_cldash_0_1_0_wrote(tmp_path):
    fresh = tmp_path / "0001.db"
    alembic_upgrade(f"sqlite:///{fresh}", "0001")
    old = fixture_copy(tmp_path, "old.db")
    want = schema(f"sqlite:///file:{old}?mode=ro&uri=true")
    assert sorted(want) == ["evaluations", "meta", "modules", "orders", "runs", "scalars", "spectra", "tasks"]
    assert schema(f"sqlite:///{fresh}") == want


def test_a_new_store_has_exactly_the_models_schema(tmp_path):
    """The head revision and the models in cldash.store agree (a model change needs a revision)."""
    Store(str(tmp_path / "new.db"))
    engine = create_engine(f"sqlite:///{tmp_path / 'models.db'}")
    Base.metadata.create_all(engine)
    engine.dispose()
    assert schema(f"sqlite:///{tmp_path / 'new.db'}") == schema(f"sqlite:///{tmp_path / 'models.db'}")


def test_the_head_constant_is_the_scripts_head():
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    config.set_main_option("path_separator", "os")
    scripts = ScriptDirectory.from_config(config)
    assert scripts.get_heads() == [migrations.HEAD]
    assert tuple(reversed([s.revision for s in scripts.walk_revisions()])) == migrations.REVISIONS


def insert_run_at_0001(url: str) -> None:
    """One run with a task, a final evaluation and a spectrum, written as revision 0001 had them."""
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO runs (id, name, method, stream, backbone, seed, config, status, progress, step, total_steps, "
            "task, num_tasks, primary_metric, versions, summary, created_at) VALUES (7, 'kept', 'lora', "
            "'digits-rotate', 'vit-tiny', 3, '{\"method\": \"lora\"}', 'finished', 1.0, 40, 40, 1, 1, 'accuracy', "
            "'{\"torch\": \"2\"}', '{\"acc\": 0.5}', 1.5)")
        conn.exec_driver_sql("INSERT INTO tasks VALUES (7, 1, 'rotate 45', 'stream', 10, 5)")
        conn.exec_driver_sql("INSERT INTO evaluations (run_id, step, trained_through, task, metric, value, final) "
                             "VALUES (7, 40, 1, 1, 'accuracy', 0.625, true)")
        conn.execute(Base.metadata.tables["spectra"].insert(), [{
            "run_id": 7, "step": 40, "task": 1, "module": "q", "kind": "task", "n": 2, "numerical_rank": 2,
            "frobenius": 1.0, "values": np.array([3.0, 1.5], dtype=np.float32).tobytes()}])
    engine.dispose()


def assert_run_kept(store: Store) -> None:
    run = store.get_run(7)
    assert (run["name"], run["seed"], run["config"], run["summary"], run["weights"]) == \
           ("kept", 3, {"method": "lora"}, {"acc": 0.5}, None)
    assert store.accuracy_matrix(7)["R"].tolist() == [[0.625]]
    assert store.spectra(7)["values"][0].tolist() == [3.0, 1.5]
    store.update_run(7, weights={"source": "pre-trained here", "steps": 300})
    assert store.get_run(7)["weights"] == {"source": "pre-trained here", "steps": 300}


def test_upgrade_from_0001_keeps_the_data_on_sqlite(tmp_path, capsys):
    path = tmp_path / "runs.db"
    alembic_upgrade(f"sqlite:///{path}", "0001")
    insert_run_at_0001(f"sqlite:///{path}")
    assert revision_of(path) == "0001"
    store = Store(str(path))
    assert f"from revision 0001 to {migrations.HEAD}" in capsys.readouterr().err
    assert revision_of(path) == migrations.HEAD and (tmp_path / "runs.db.bak-0001").exists()
    assert_run_kept(store)


def test_revision_0006_adds_the_runtime_a_run_used_and_keeps_the_runs_before_it(tmp_path, capsys):
    """A store at 0005 (as the cldash before it left one) upgrades to a runs.runtime column: its run reads with
    runtime None, in the run dict and the listing, and takes a runtime afterwards; the downgrade drops it."""
    path = tmp_path / "runs.db"
    alembic_upgrade(f"sqlite:///{path}", "0001")
    insert_run_at_0001(f"sqlite:///{path}")
    alembic_upgrade(f"sqlite:///{path}", "0005")
    with sqlite3.connect(path) as conn:
        assert "runtime" not in [row[1] for row in conn.execute("PRAGMA table_info(runs)")]
    store = Store(str(path))
    assert f"from revision 0005 to {migrations.HEAD}" in capsys.readouterr().err
    assert (tmp_path / "runs.db.bak-0005").exists()
    assert_run_kept(store)
    assert store.get_run(7)["runtime"] is None and store.run_listing()[0]["runtime"] is None
    runtime = {"precision": "fp16", "precision_requested": "bf16", "compile": False, "eval_subset": 500,
               "stream": {"source": "hub", "split_sha256": "ab" * 32}}
    store.update_run(7, runtime=runtime)
    assert store.get_run(7)["runtime"] == runtime and store.run_listing()[0]["runtime"] == runtime
    store.engine.dispose()
    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    config.set_main_option("path_separator", "os")
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0005")
    engine.dispose()
    with sqlite3.connect(path) as conn:
        assert "runtime" not in [row[1] for row in conn.execute("PRAGMA table_info(runs)")]
        assert conn.execute("SELECT name FROM runs WHERE id = 7").fetchone() == ("kept",)


def fail_after_upgrading(monkeypatch) -> None:
    """Make the next upgrade fail once all its revisions have run, before it commits."""
    real = migrations._alembic_upgrade

    def upgrade_then_fail(conn, revision="head"):
        real(conn, revision)
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(migrations, "_alembic_upgrade", upgrade_then_fail)


def test_a_failed_upgrade_leaves_the_store_as_it_was(tmp_path, monkeypatch):
    path = fixture_copy(tmp_path)
    fail_after_upgrading(monkeypatch)
    with pytest.raises(RuntimeError, match="disk on fire"):
        Store(str(path))
    with sqlite3.connect(path) as conn:   # the upgrade's DDL was rolled back with the rest
        assert "weights" not in [row[1] for row in conn.execute("PRAGMA table_info(runs)")]
        assert not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'alembic_version'").fetchone()
    assert sorted(p.name for p in tmp_path.iterdir() if ".bak" in p.name) == []
    monkeypatch.undo()
    assert len(Store(str(path)).runs()) == len(RECORD["runs"])


def test_two_processes_opening_an_old_store_upgrade_it_once(tmp_path):
    locks = Path("/proc/locks")
    if not locks.exists():
        pytest.skip("needs /proc/locks to see the processes waiting")
    from cldash.core.cache import file_lock

    path = fixture_copy(tmp_path)
    lock = tmp_path / "runs.db-migrate.lock"
    code = f"from cldash.store import Store; print(len(Store({str(path)!r}).runs()))"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    with file_lock(lock):   # hold the lock until both processes wait for it
        procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, env=env) for _ in range(2)]
        inode = f":{lock.stat().st_ino} "
        deadline = time.time() + 60
        while sum("->" in line and inode in line for line in locks.read_text().splitlines()) < 2:
            assert time.time() < deadline and all(p.poll() is None for p in procs), "the processes did not wait"
            time.sleep(0.05)
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert [out for out, _ in outs] == [f"{len(RECORD['runs'])}\n"] * 2
    assert sorted(err.count("upgraded the run store") for _, err in outs) == [0, 1]
    assert sorted(p.name for p in tmp_path.iterdir() if ".bak" in p.name) == ["runs.db.bak-0001"]


def test_a_store_from_a_newer_cldash_is_refused_in_one_sentence(tmp_path, capsys):
    path = tmp_path / "newer.db"
    alembic_upgrade(f"sqlite:///{path}", "head")
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0099'")
        conn.execute("INSERT INTO meta VALUES ('cldash_version', '9.9.0')")
    with pytest.raises(UserError) as info:
        Store(str(path))
    assert str(info.value) == (
        f"the run store {path} is at revision 0099, written by cldash 9.9.0, which is newer than this cldash "
        f"{__version__} (revisions up to {migrations.HEAD}); upgrade cldash (pip install -U cldash) to open it, "
        f"or give another --db.")
    assert main(["--db", str(path), "list"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == f"error: {info.value}\n"
    assert main(["--db", str(path), "db", "upgrade"]) == 2
    assert capsys.readouterr().err == f"error: {info.value}\n"
    assert main(["--db", str(path), "db", "current"]) == 0
    out = capsys.readouterr().out
    assert "revision  0099\n" in out and "cldash    9.9.0 last created or upgraded it\n" in out
    assert "pending   none: the store is newer than this cldash" in out
    assert revision_of(path) == "0099"
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM meta")
    with pytest.raises(UserError, match=r"at revision 0099, written by a newer cldash, which is newer than this "
                                        rf"cldash {__version__} \(revisions up to {migrations.HEAD}\)"):
        Store(str(path))


def test_a_store_at_the_head_is_read_without_writing(tmp_path, capsys):
    path = fixture_copy(tmp_path)
    Store(str(path)).engine.dispose()
    with sqlite3.connect(path) as conn:   # one file again, as a store handed out read-only would be
        conn.execute("PRAGMA journal_mode=DELETE")
    before = path.read_bytes(), sorted(os.listdir(tmp_path))
    read_only = f"sqlite:///file:{path}?mode=ro&uri=true"   # SQLite itself refuses every write
    capsys.readouterr()
    assert main(["--db", read_only, "list"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1 + len(RECORD["runs"])
    assert main(["--db", read_only, "show", "1"]) == 0
    assert (path.read_bytes(), sorted(os.listdir(tmp_path))) == before
    # the same read-only opening of a store that needs an upgrade fails: the check above can fail
    old = fixture_copy(tmp_path, "old.db")
    assert main(["--db", f"sqlite:///file:{old}?mode=ro&uri=true", "list"]) == 2
    assert "attempt to write a readonly database" in capsys.readouterr().err
    assert revision_of(old) is None and not list(tmp_path.glob("old.db.bak*"))


def test_opening_a_store_at_the_head_does_not_import_alembic(tmp_path):
    at_head = fixture_copy(tmp_path, "head.db")
    Store(str(at_head))
    old = fixture_copy(tmp_path, "old.db")
    code = ("import sys; from cldash.store import Store; Store(sys.argv[1]); "
            "print('alembic' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    seen = [subprocess.run([sys.executable, "-c", code, str(p)], capture_output=True, text=True, env=env,
                           check=True).stdout.strip() for p in (at_head, old)]
    assert seen == ["False", "True"]


def test_cldash_db_current_and_upgrade(tmp_path, capsys):
    path = fixture_copy(tmp_path)
    db = ["--db", str(path), "db"]
    assert main([*db, "current"]) == 0
    assert capsys.readouterr().out == (
        f"store     {path}\n"
        f"revision  0001\n"
        f"head      {migrations.HEAD} (this cldash {__version__})\n"
        f"cldash    not recorded\n"
        f"pending   0002, 0003, 0004, 0005, 0006, 0007, 0008, 0009: `cldash db upgrade` (or any command) applies "
        f"them, after copying the "
        f"file to {path}.bak-0001\n")
    assert revision_of(path) is None and not (tmp_path / "runs.db.bak-0001").exists()   # current changes nothing
    assert main([*db, "upgrade"]) == 0
    assert capsys.readouterr().out == f"upgraded the run store {path} from revision 0001 to {migrations.HEAD} " \
                                      f"(cldash {__version__}); the file as it was is kept as {path}.bak-0001.\n"
    assert main([*db, "current"]) == 0
    out = capsys.readouterr().out
    assert f"revision  {migrations.HEAD}\n" in out and out.endswith(
        f"cldash    {__version__} last created or upgraded it\npending   none\n")
    assert main([*db, "upgrade"]) == 0
    assert capsys.readouterr().out == f"the run store {path} is at revision {migrations.HEAD}, the head of this " \
                                      f"cldash {__version__}; nothing to upgrade.\n"
    new = tmp_path / "new.db"
    assert main(["--db", str(new), "db", "current"]) == 0
    assert "revision  none (an empty database)\n" in capsys.readouterr().out
    assert main(["--db", str(new), "db", "upgrade"]) == 0
    assert capsys.readouterr().out == f"created the run store {new} at revision {migrations.HEAD} " \
                                      f"(cldash {__version__}).\n"


def test_a_database_that_is_not_a_store_is_refused(tmp_path):
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER)")
    with pytest.raises(UserError, match=r"it holds tables \(invoices\) but is not a cldash run store"):
        Store(str(path))


def test_revision_0007_adds_the_tuning_journal_and_keeps_the_runs_before_it(tmp_path, capsys):
    """A store at 0006 upgrades to a tuning_log table (Optuna's journal, cldash.analysis.tuning) with its runs
    kept; the journal reads back in the order it was written, from any offset."""
    path = tmp_path / "runs.db"
    alembic_upgrade(f"sqlite:///{path}", "0001")
    insert_run_at_0001(f"sqlite:///{path}")
    alembic_upgrade(f"sqlite:///{path}", "0006")
    store = Store(str(path))
    assert f"from revision 0006 to {migrations.HEAD}" in capsys.readouterr().err
    assert_run_kept(store)
    store.append_tuning_log([{"op_code": 0, "n": i} for i in range(3)])
    store.append_tuning_log([{"op_code": 1, "n": 3}])
    assert [e["n"] for e in store.tuning_log()] == [0, 1, 2, 3] and [e["n"] for e in store.tuning_log(2)] == [2, 3]
    store.engine.dispose()


def test_revision_0009_adds_the_queue_priority_and_marks_the_batches_queued_before_it(tmp_path, capsys):
    """A store at 0008 with a claims run, a sweep's run, a search trial and a lesson's run waiting upgrades to
    runs.priority: the batch groups' runs are batch (so they stay behind a lesson launched after the upgrade),
    the others read as interactive; the queue then starts the lesson's run first."""
    from cldash.runs.launchers.local import queue
    from cldash.runs.priority import priority_name

    path = tmp_path / "runs.db"
    alembic_upgrade(f"sqlite:///{path}", "0001")
    insert_run_at_0001(f"sqlite:///{path}")
    alembic_upgrade(f"sqlite:///{path}", "0008")
    groups = {8: "claims", 9: "sweep:grid", 10: "tune:lora", 11: "lesson:forgetting", 12: None}
    with sqlite3.connect(path) as conn:
        for run_id, group in groups.items():
            conn.execute("INSERT INTO runs (id, name, method, stream, backbone, seed, config, status, progress, step, "
                         "total_steps, task, num_tasks, primary_metric, created_at, group_key, launcher) VALUES "
                         "(?, 'q', 'lora', 'digits-rotate', 'vit-tiny', 0, '{}', 'queued', 0, 0, 0, 0, 0, 'accuracy', "
                         "2.0, ?, 'local')", (run_id, group))
    store = Store(str(path))
    assert f"from revision 0008 to {migrations.HEAD}" in capsys.readouterr().err
    assert_run_kept(store)
    assert {r["id"]: priority_name(r) for r in store.runs()} == {
        7: "interactive", 8: "batch", 9: "batch", 10: "batch", 11: "interactive", 12: "interactive"}
    assert [r["id"] for r in queue(store)[1]] == [11, 12, 8, 9, 10]
    store.engine.dispose()
