"""A cluster's runs through shared artifacts: a run writes its checkpoints to S3 (a real S3 API, see
tests/store/test_artifacts.py), and other processes, each with its own CLDASH_CACHE and none of the first one's
local files, resume it, fork it and export its adapters, with the same numbers, bit for bit, as a local resume.

The store is a SQLite file that every process opens (a PostgreSQL store too, where CLDASH_TEST_POSTGRES is set),
standing for the store a cluster shares; the run's files are only on S3. The other processes are `cldash`
command lines, whose run processes find S3 through the environment as on any machine (AWS_ENDPOINT_URL_S3).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cldash.cli import main
from cldash.config import resolve
from cldash.engine import checkpoints
from cldash.runs import lineage
from cldash.runs.execute import execute
from cldash.store import Store
from cldash.store.artifacts import ENV, given, open_location

from test_artifacts import s3_server  # noqa: F401 - the fixture, shared with the store's tests
from test_checkpoints import adapters, interrupt_in_task_2, rows, same

STEPS = 4
# evaluated on the whole held-out split (the command lines cannot take the tests' smaller one), at task ends only
CONFIG = {"method": "lora", "steps_per_task": STEPS, "batch_size": 16, "eval_interval": STEPS, "spectra_interval": 2,
          "dense_spectra_interval": STEPS, "checkpoints": "all", "stream_options": {"angles": [45, 90, 135]}}
STORES = ["sqlite"] + (["postgresql"] if os.environ.get("CLDASH_TEST_POSTGRES") else [])


@pytest.fixture(params=STORES)
def shared_db(request, tmp_path):
    if request.param == "sqlite":
        yield str(tmp_path / "runs.db")
        return
    from test_postgres import _fresh_database

    databases = _fresh_database()
    yield next(databases)
    next(databases, None)


def cldash(args: list[str], cache: Path, s3: dict, **env) -> subprocess.CompletedProcess:
    """A `cldash` command line as another machine runs it: its own cache, S3 from the environment."""
    environ = {k: v for k, v in os.environ.items() if k != ENV}
    environ.update(s3["env"], CLDASH_CACHE=str(cache), **env)
    done = subprocess.run([sys.executable, "-m", "cldash", *args], env=environ, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_a_run_on_s3_resumes_forks_and_exports_from_other_processes_as_a_local_resume(
        shared_db, tmp_path, s3_server, monkeypatch):  # noqa: F811 - s3_server is the fixture imported above
    import s3fs

    monkeypatch.delenv(ENV, raising=False)
    store = Store(shared_db)
    cfg = resolve(CONFIG).to_dict()
    location = f"s3://{s3_server['bucket']}/{tmp_path.name}"

    # here, the local reference: interrupted in task 2, resumed from its checkpoint in the default place
    local = store.create_run(cfg)
    assert execute(store, local, progress=interrupt_in_task_2()) == "interrupted"
    lineage.resume(store, local, start=False)
    assert execute(store, local) == "finished"

    # the same run on S3, interrupted in task 2: its checkpoint is on S3 and nowhere on this machine
    with given(location):
        cut = store.create_run(cfg)
    assert store.get_run(cut)["artifacts"] == location
    assert execute(store, cut, progress=interrupt_in_task_2()) == "interrupted"
    assert checkpoints.available(store, cut) == [1]
    fs = s3fs.S3FileSystem()
    name = Path(shared_db).stem if "://" not in shared_db else shared_db.rsplit("/", 1)[-1]
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.ls(f"{location}/{name}.checkpoints/run-{cut}", refresh=True)) == \
        ["sha256.json", "task-1.pt"]
    default = open_location(store.url, None)   # next to the SQLite file, or in this machine's cache
    assert Path(default.checkpoint_dir(local)).is_dir() and not Path(default.checkpoint_dir(cut)).exists()

    # another machine resumes it: rows, summary and adapters as the local resume's, bit for bit
    db = ["--db", shared_db]
    resumed = cldash([*db, "resume", str(cut), "--wait"], tmp_path / "machine-b", s3_server)
    assert resumed.stdout.startswith(f"run {cut}: continues after task 1 of 3 from its checkpoint (step {STEPS})")
    a, b = store.get_run(local), store.get_run(cut)
    assert b["status"] == "finished" and (b["resumes"], b["step"]) == (1, 3 * STEPS)
    assert rows(store, cut) == rows(store, local) and a["summary"] == b["summary"]
    assert store.accuracy_matrix(cut)["R"].tobytes() == store.accuracy_matrix(local)["R"].tobytes()
    assert same(adapters(store, cut), adapters(store, local))
    assert fs.exists(f"{location}/{name}.adapters/run-{cut}.pt")

    # and forks it after task 1, to another prefix (--artifacts): the fork reproduces its parent
    forked = cldash([*db, "--artifacts", f"{location}/forks", "fork", str(cut), "--after-task", "1", "--wait"],
                    tmp_path / "machine-c", s3_server)
    child = int(forked.stdout.split()[1].rstrip(":"))
    run = store.get_run(child)
    assert (run["status"], run["parent_id"], run["fork_task"], run["artifacts"]) == \
        ("finished", cut, 1, f"{location}/forks")
    assert rows(store, child) == rows(store, local) and same(adapters(store, child), adapters(store, local))
    assert fs.exists(f"{location}/forks/{name}.checkpoints/run-{child}/task-1.pt")

    # a third machine exports its adapters in PEFT's format: the same files as the local run's export
    cldash([*db, "export", str(cut), "--format", "peft", "--out", str(tmp_path / "remote")], tmp_path / "machine-d",
           s3_server)
    assert main([*db, "export", str(local), "--format", "peft", "--out", str(tmp_path / "here")]) == 0
    theirs, ours = load_file(tmp_path / "remote" / "adapter_model.safetensors"), \
        load_file(tmp_path / "here" / "adapter_model.safetensors")
    assert theirs.keys() == ours.keys() and all(torch.equal(theirs[k], ours[k]) for k in ours)
    assert json.loads((tmp_path / "remote" / "adapter_config.json").read_text()) == \
        json.loads((tmp_path / "here" / "adapter_config.json").read_text())


@pytest.mark.parametrize("shared", [False, True], ids=["default-place", "shared-location"])
def test_a_cluster_run_resumes_here_only_from_a_shared_location(shared, db, tmp_path, monkeypatch):
    """A run that a Ray node ran keeps its checkpoints on that node unless it recorded a shared location."""
    from cldash.core.errors import UserError
    from cldash.runs.recovery import requeue

    monkeypatch.delenv(ENV, raising=False)
    store = Store(db)
    with given(str(tmp_path / "shared") if shared else None):
        rid = store.create_run(resolve(CONFIG).to_dict())
    store.update_run(rid, status="interrupted", launcher="ray", checkpoint_task=None)
    if shared:
        assert requeue(store, rid) == 0 and store.get_run(rid)["status"] == "queued"
    else:
        with pytest.raises(UserError, match=f"^run {rid} ran on a ray cluster, whose node keeps its checkpoints; "):
            requeue(store, rid)
