"""The Runs page filters by launcher and by host (issue 26): the runs of a Ray cluster, of one machine, a run
still queued (on no host yet); the table's launcher and where columns say the same."""

from __future__ import annotations

from cldash.config import resolve
from cldash.store import Store

from test_app import app, no_starts


def test_the_runs_page_filters_by_launcher_and_host(tmp_path, monkeypatch):
    no_starts(monkeypatch)
    db = str(tmp_path / "runs.db")
    store = Store(db)
    config = resolve({"method": "lora"}).to_dict()
    store.create_run(config, status="finished", launcher="cli", host="laptop", pid=11)
    store.create_run(config, status="finished", host="vm", pid=12)
    store.create_run(config, status="finished", launcher="ray", host="node-3", pid=13,
                     launcher_info={"address": "ray://head:10001", "job": "cldash-run-1a2b"})
    store.create_run(config, status="finished", launcher="ray", host="node-4", pid=14,
                     launcher_info={"address": "ray://head:10001", "job": "cldash-run-3c4d"})
    store.create_run(config, status="queued")
    at = app(db, monkeypatch)
    assert not at.error, [e.value for e in at.error]
    table = at.dataframe[0].value
    assert table["launcher"].tolist() == ["cli", "local", "ray", "ray", "local"]
    assert table["where"].tolist() == ["laptop", "vm", "node-3 · ray", "node-4 · ray", ""]

    launcher, host = at.multiselect(key="runs_launcher_filter"), at.multiselect(key="runs_host_filter")
    assert launcher.options == ["cli", "local", "ray"]
    assert host.options == ["not started yet", "laptop", "node-3", "node-4", "vm"]
    launcher.set_value(["ray"]).run()
    assert at.dataframe[0].value["id"].tolist() == [3, 4]
    host.set_value(["node-4", "vm"]).run()          # both filters: the ray runs on node-4
    assert at.dataframe[0].value["id"].tolist() == [4]
    launcher.set_value([]).run()
    assert at.dataframe[0].value["id"].tolist() == [2, 4]
    host.set_value([""]).run()                      # the queued run, which has no host yet
    assert at.dataframe[0].value["id"].tolist() == [5]
