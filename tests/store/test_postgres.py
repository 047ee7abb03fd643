"""The same store code on PostgreSQL (design: any SQLAlchemy URL, PostgreSQL must work).

Runs when CLDASH_TEST_POSTGRES holds a server URL (``postgresql+psycopg://user@host:port/db``);
.ci/run starts a throw-away server and sets it. Each session gets a fresh database.
"""

import os
import uuid

import numpy as np
import pytest

URL = os.environ.get("CLDASH_TEST_POSTGRES")
pytestmark = pytest.mark.skipif(not URL, reason="set CLDASH_TEST_POSTGRES to a PostgreSQL URL to run")


def _fresh_database():
    """A new, empty database on the server, dropped afterwards."""
    sqlalchemy = pytest.importorskip("sqlalchemy")
    pytest.importorskip("psycopg")
    name = f"cldash_test_{uuid.uuid4().hex[:8]}"
    admin = sqlalchemy.create_engine(URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    base = URL.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    from cldash.store import _engine

    _engine(f"{base}/{name}").dispose()
    with admin.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.dispose()


pg_url = pytest.fixture(scope="module")(_fresh_database)
empty_pg_url = pytest.fixture(_fresh_database)


def test_a_cli_run_into_postgres_reads_back_and_deletes(pg_url, capsys):
    from cldash.cli import main
    from cldash.store import Store, count_rows

    from conftest import SHORT

    assert main(["--db", pg_url, "run", "--method", "lora", "--stream-angles", "45,90", *SHORT]) == 0
    store = Store(pg_url)
    (run,) = store.runs()
    assert run["status"] == "finished" and run["summary"]["acc"] >= 0
    m = store.accuracy_matrix(run["id"])
    assert m["R"].shape == (3, 2) and np.isfinite(m["R"]).all()
    spectra = store.spectra(run["id"])
    assert len(spectra) and all(np.isfinite(v).all() for v in spectra["values"])
    assert main(["--db", pg_url, "export", str(run["id"]), "--what", "matrix", "--out", "-"]) == 0
    assert "trained_through" in capsys.readouterr().out
    store.delete_run(run["id"])
    assert all(n == 0 for n in count_rows(store, run["id"]).values())


@pytest.mark.parametrize("recorded", [True, False], ids=["at-0001", "made-before-migrations"])
def test_upgrading_a_postgres_store_from_0001_keeps_its_runs(empty_pg_url, recorded, capsys):
    from sqlalchemy import create_engine

    from cldash.store import Store, migrations

    from test_migrations import alembic_upgrade, assert_run_kept, insert_run_at_0001

    alembic_upgrade(empty_pg_url, "0001")
    insert_run_at_0001(empty_pg_url)
    if not recorded:   # as cldash 0.1.0 left a store: no alembic_version, meta says schema_version 1
        engine = create_engine(empty_pg_url)
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE alembic_version")
            conn.exec_driver_sql("INSERT INTO meta VALUES ('schema_version', '1')")
        engine.dispose()
    store = Store(empty_pg_url, migrate=False)
    assert migrations.current(store)["pending"] == ["0002", "0003", "0004", "0005", "0006", "0007", "0008", "0009"]
    store = Store(empty_pg_url)
    assert capsys.readouterr().err == f"upgraded the run store {store.display} from revision 0001 to " \
                                      f"{migrations.HEAD} (cldash {migrations.__version__}).\n"
    assert migrations.current(store) == {"store": store.display, "revision": migrations.HEAD, "head": migrations.HEAD,
                                         "known": True, "pending": [], "cldash": migrations.__version__,
                                         "backup": None}
    assert_run_kept(store)


def test_a_failed_postgres_upgrade_leaves_the_store_as_it_was(empty_pg_url, monkeypatch):
    from sqlalchemy import create_engine, inspect

    from cldash.store import Store

    from test_migrations import alembic_upgrade, fail_after_upgrading

    alembic_upgrade(empty_pg_url, "0001")
    fail_after_upgrading(monkeypatch)
    with pytest.raises(RuntimeError, match="disk on fire"):
        Store(empty_pg_url)
    engine = create_engine(empty_pg_url)
    with engine.connect() as conn:
        assert "weights" not in [c["name"] for c in inspect(conn).get_columns("runs")]
        assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == "0001"
    engine.dispose()


def test_a_postgres_upgrade_waits_for_the_one_under_way(empty_pg_url, capsys):
    import threading
    import time

    from sqlalchemy import create_engine

    from cldash.store import Store, migrations

    from test_migrations import alembic_upgrade

    alembic_upgrade(empty_pg_url, "0001")
    engine = create_engine(empty_pg_url)
    with engine.connect() as holder:   # another process's upgrade, under way
        holder.exec_driver_sql(f"SELECT pg_advisory_lock({migrations._PG_LOCK})")
        opened = threading.Thread(target=Store, args=(empty_pg_url,))
        opened.start()
        deadline = time.time() + 30
        while not holder.exec_driver_sql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                                         "AND NOT granted").scalar():
            assert time.time() < deadline and opened.is_alive(), "opening the store did not wait"
            time.sleep(0.05)
            holder.rollback()
        with engine.begin() as other:   # it finished meanwhile: the waiting one must see that
            migrations._alembic_upgrade(other)
        holder.exec_driver_sql(f"SELECT pg_advisory_unlock({migrations._PG_LOCK})")
        holder.commit()
        opened.join(timeout=30)
    engine.dispose()
    assert not opened.is_alive()
    assert capsys.readouterr().err == ""   # it found the store upgraded and did nothing
    assert migrations.current(Store(empty_pg_url))["revision"] == migrations.HEAD


def test_a_background_run_on_postgres_keeps_the_password_off_its_command_line(empty_pg_url):
    """The run process gets the store's URL in its environment: `ps` (any local user) never shows the
    password. The test server trusts local connections, so any password in the URL is accepted."""
    import time
    from pathlib import Path

    from sqlalchemy import make_url

    from cldash.config import resolve
    from cldash.runs.launch import launch
    from cldash.runs.queue import schedule
    from cldash.store import Store, _engine

    url = make_url(empty_pg_url).set(password="s3cret").render_as_string(hide_password=False)
    store = Store(url)
    (rid,) = launch(store, [resolve({"method": "lora", "steps_per_task": 15, "eval_interval": 0,
                                     "stream_options": {"angles": [90]}}).to_dict()])
    pid = store.get_run(rid)["pid"]
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():
        assert b"s3cret" not in cmdline.read_bytes() and b"cldash" in cmdline.read_bytes()
    deadline = time.time() + 180
    while store.get_run(rid)["status"] in ("queued", "running"):
        assert time.time() < deadline, store.get_run(rid)
        schedule(store)
        time.sleep(0.3)
    run = store.get_run(rid)
    assert run["status"] == "finished", run["error"]
    _engine(url).dispose()   # before the fixture drops the database
