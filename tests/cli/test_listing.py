"""`cldash list` and `cldash show` name each run's launcher and host: a foreground `cldash run`, the local queue,
a Ray cluster's job, a run still queued (no host yet)."""

from __future__ import annotations

from cldash.cli import main
from cldash.config import resolve
from cldash.store import Store

from conftest import keep_runs_queued


def _store(db: str) -> Store:
    """#1 a foreground `cldash run` on laptop, #2 a run of the local queue on vm, #3 a Ray cluster's job on
    node-3, #4 queued locally (no host yet)."""
    store = Store(db)
    config = resolve({"method": "lora"}).to_dict()
    store.create_run(config, status="finished", launcher="cli", host="laptop", pid=11, name="one")
    store.create_run(config, status="finished", host="vm", pid=12, name="two")
    store.create_run(config, status="finished", launcher="ray", host="node-3", pid=13, name="three",
                     launcher_info={"address": "ray://head:10001", "job": "cldash-run-1a2b"})
    store.create_run(config, status="queued", name="four")
    return store


def test_list_has_a_launcher_and_a_host_column(tmp_path, capsys, monkeypatch):
    keep_runs_queued(monkeypatch)    # the listing would start the queued run
    db = str(tmp_path / "runs.db")
    _store(db)
    assert main(["--db", db, "list"]) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split()[-3:] == ["launcher", "host", "name"]
    assert [row.split()[-3:] for row in rows] == [["cli", "laptop", "one"], ["local", "vm", "two"],
                                                  ["ray", "node-3", "three"], ["local", "-", "four"]]
    at = header.index("launcher")
    assert {row[at:at + 8].strip() for row in rows} == {"cli", "local", "ray"}     # one column, aligned


def test_show_names_the_launcher_and_the_host(tmp_path, capsys, monkeypatch):
    keep_runs_queued(monkeypatch)
    db = str(tmp_path / "runs.db")
    _store(db)
    said = {}
    for run in (1, 2, 3, 4):
        assert main(["--db", db, "show", str(run)]) == 0
        said[run] = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("  launcher", "  host"))]
    assert said == {1: ["  launcher  cli", "  host      laptop, pid 11"],
                    2: ["  launcher  local", "  host      vm, pid 12"],
                    3: ["  launcher  ray (ray://head:10001, job cldash-run-1a2b)", "  host      node-3, pid 13"],
                    4: ["  launcher  local", "  host      none yet (not started)"]}
