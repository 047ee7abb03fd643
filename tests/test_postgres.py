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


@pytest.fixture(scope="module")
def pg_url():
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
