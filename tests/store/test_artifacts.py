"""Artifact locations (cldash.store.artifacts): every kind of location through one contract, which location a
new run gets (--artifacts > $CLDASH_ARTIFACTS > the store's setting > the default), bad locations refused in
one sentence with nothing stored, and the one-line warning of a shared store whose files stay on one machine.

The S3 cases run against a real S3 API: the server .ci/run starts (CLDASH_TEST_S3, .ci/services-s3.sh), else
moto's server started here in a thread. s3fs finds it through AWS_ENDPOINT_URL_S3, as any process would.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import pytest

from cldash.cli import main
from cldash.core.errors import UserError
from cldash.store import Store, artifacts as artifacts_module
from cldash.store.artifacts import (
    ENV,
    LocalArtifacts,
    RemoteArtifacts,
    check_location,
    chosen,
    given,
    local_only_warning,
    open_location,
)

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "cldash-test", "AWS_SECRET_ACCESS_KEY": "cldash-test",
               "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="session")
def s3_server():
    """The environment that points s3fs at a local S3 API ({name: value}), and a bucket made for this session.
    The variables are also set in this process while the session lasts."""
    pytest.importorskip("s3fs")
    server = None
    endpoint = os.environ.get("CLDASH_TEST_S3")
    if not endpoint:
        from moto.server import ThreadedMotoServer

        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
    env = {**CREDENTIALS, **{k: os.environ[k] for k in CREDENTIALS if k in os.environ},
           "AWS_ENDPOINT_URL_S3": endpoint}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        import s3fs

        bucket = f"cldash-test-{uuid.uuid4().hex[:8]}"
        s3fs.S3FileSystem().mkdir(bucket)
        yield {"env": env, "bucket": bucket}
    if server is not None:
        server.stop()


# -- every kind of location, one contract ---------------------------------------------------------------------------
def _local(tmp_path, s3):
    return open_location(f"sqlite:///{tmp_path / 'runs.db'}", None), LocalArtifacts


def _file_url(tmp_path, s3):
    return open_location("sqlite:///elsewhere/runs.db", f"file://{tmp_path}/shared"), LocalArtifacts


def _s3(tmp_path, s3):
    return open_location("postgresql+psycopg://u@db/cluster", f"s3://{s3['bucket']}/{tmp_path.name}"), RemoteArtifacts


def _memory(tmp_path, s3):   # an fsspec filesystem that is not an object store: a temporary name, then a move
    return open_location("postgresql+psycopg://u@db/cluster", f"memory://cldash/{tmp_path.name}"), RemoteArtifacts


LOCATIONS = {"next-to-sqlite": _local, "file-url": _file_url, "s3": _s3, "fsspec-memory": _memory}


@pytest.mark.parametrize("kind", LOCATIONS)
def test_every_kind_of_location_keeps_the_same_contract(kind, tmp_path, request):
    s3 = request.getfixturevalue("s3_server") if kind == "s3" else None
    files, cls = LOCATIONS[kind](tmp_path, s3)
    assert isinstance(files, cls)
    folder = files.checkpoint_dir(5)
    assert folder.endswith("run-5") and files.adapter_file(5).endswith("run-5.pt")
    assert files.names(folder) == [] and not files.exists(files.join(folder, "task-1.pt"))
    first, second = b"first checkpoint" * 100, b"second"
    digest = files.write(files.join(folder, "task-1.pt"), lambda fh: fh.write(first))
    assert digest == hashlib.sha256(first).hexdigest()
    assert files.read(files.join(folder, "task-1.pt")) == first

    def broken(fh):
        fh.write(second)
        raise RuntimeError("the disk went away")

    with pytest.raises(RuntimeError):   # a write cut short: the old file stays whole, and no temporary is left
        files.write(files.join(folder, "task-1.pt"), broken)
    assert files.read(files.join(folder, "task-1.pt")) == first
    files.write(files.join(folder, "task-2.pt"), lambda fh: fh.write(second))
    assert files.names(folder) == ["task-1.pt", "task-2.pt"]
    files.remove(files.join(folder, "task-1.pt"))
    files.remove(files.join(folder, "task-1.pt"))   # removing what is gone is no error
    assert files.names(folder) == ["task-2.pt"]
    with pytest.raises(FileNotFoundError):
        files.read(files.join(folder, "task-1.pt"))
    files.remove_tree(folder)
    assert files.names(folder) == []
    where = files.where(files.join(folder, "task-2.pt"))
    assert where.startswith({"s3": "s3://", "fsspec-memory": "memory://"}.get(kind, "/"))


def test_the_default_place_is_next_to_a_sqlite_file_and_a_shared_location_is_kept_apart_per_store(tmp_path):
    files = open_location(f"sqlite:///{tmp_path / 'runs.db'}", None)
    assert files.checkpoint_dir(3) == str(tmp_path / "runs.checkpoints" / "run-3")
    assert files.adapter_file(3) == str(tmp_path / "runs.adapters" / "run-3.pt")
    shared = open_location("postgresql+psycopg://u:secret@db:5432/cluster?sslmode=require", str(tmp_path / "mnt"))
    assert shared.checkpoint_dir(3) == str(tmp_path / "mnt" / "cluster.checkpoints" / "run-3")
    other = open_location(f"sqlite:///{tmp_path / 'other.db'}", str(tmp_path / "mnt"))
    assert other.adapter_file(3) == str(tmp_path / "mnt" / "other.adapters" / "run-3.pt")


# -- which location a new run gets -----------------------------------------------------------------------------------
@pytest.mark.parametrize("flag, env, setting, source", [
    ("/flag", "/env", "/setting", "--artifacts"),
    (None, "/env", "/setting", f"${ENV}"),
    (None, None, "/setting", "the store's setting"),
    (None, None, None, "default"),
])
def test_the_flag_comes_before_the_environment_before_the_stores_setting(flag, env, setting, source, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    if env:
        monkeypatch.setenv(ENV, env)
    with given(flag):
        expected = {"--artifacts": flag, f"${ENV}": env, "the store's setting": setting}.get(source)
        assert chosen(lambda: setting) == (expected, source)


def test_a_run_records_its_location_and_any_process_opening_the_store_finds_the_setting(tmp_path, monkeypatch,
                                                                                       capsys):
    from cldash.config import resolve

    monkeypatch.delenv(ENV, raising=False)
    db = str(tmp_path / "runs.db")
    cfg = resolve({"method": "lora"}).to_dict()
    default = Store(db).create_run(cfg)
    assert main(["--db", db, "db", "artifacts"]) == 0
    assert capsys.readouterr().out == f"{tmp_path} (default: next to the store)\n"
    assert main(["--db", db, "db", "artifacts", str(tmp_path / "shared")]) == 0
    assert capsys.readouterr().out.startswith(f"new runs in {db} keep their checkpoints and adapters at "
                                              f"{tmp_path / 'shared'} (the store's setting")
    assert main(["--db", db, "db", "artifacts"]) == 0
    assert capsys.readouterr().out == f"{tmp_path / 'shared'} (the store's setting)\n"
    store = Store(db)   # another process: it reads the setting from the store
    from_setting = store.create_run(cfg)
    with given(str(tmp_path / "flag")):
        from_flag = Store(db).create_run(cfg)
    runs = {r["id"]: r["artifacts"] for r in store.runs()}
    assert runs == {default: None, from_setting: str(tmp_path / "shared"), from_flag: str(tmp_path / "flag")}
    # a run's files are where it recorded, whatever the location of new runs is now
    assert store.artifacts(from_flag).adapter_file(from_flag) == str(tmp_path / "flag" / "runs.adapters" /
                                                                     f"run-{from_flag}.pt")
    assert store.artifacts(default).adapter_file(default) == str(tmp_path / "runs.adapters" / f"run-{default}.pt")


# -- bad locations ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("location, says", [
    ("nosuch://bucket/x", "has a protocol fsspec does not know (nosuch://)"),
    ("s3:/bucket/x", "looks like a URL but is not one"),
    ("s3://", "names no bucket or folder"),
    ("", "the artifact location is empty"),
])
def test_a_bad_location_is_one_sentence(location, says):
    with pytest.raises(UserError, match=says.replace("(", r"\(").replace(")", r"\)")) as err:
        check_location(location)
    assert "\n" not in str(err.value) and str(err.value).endswith(".")


def test_a_driver_that_is_not_installed_is_named(monkeypatch):
    import fsspec

    def missing(protocol):
        raise ImportError("Install gcsfs to access Google Storage")

    monkeypatch.setattr(fsspec, "get_filesystem_class", missing)
    with pytest.raises(UserError, match=r"^the artifact location gs://b/x needs a package that is not installed "
                                        r"\(Install gcsfs to access Google Storage\)\.$"):
        check_location("gs://b/x")


def test_a_bad_location_on_the_command_line_stores_nothing(tmp_path, capsys, monkeypatch):
    from conftest import SHORT

    db = tmp_path / "runs.db"
    assert main(["--db", str(db), "--artifacts", "nosuch://b/x", "run", "--method", "lora", *SHORT]) == 2
    err = capsys.readouterr().err
    assert err == "error: the artifact location nosuch://b/x has a protocol fsspec does not know (nosuch://); give " \
                  "a folder, or a URL such as s3://bucket/prefix or gs://bucket/prefix.\n"
    assert not db.exists()   # refused before the store is opened
    monkeypatch.setenv(ENV, "s3:/typo")
    assert main(["--db", str(db), "run", "--method", "lora", *SHORT]) == 2
    assert capsys.readouterr().err.startswith("error: the artifact location in $CLDASH_ARTIFACTS 's3:/typo' looks like "
                                              "a URL but is not one")
    assert not db.exists()
    monkeypatch.delenv(ENV)
    Store(str(db))
    assert main(["--db", str(db), "db", "artifacts", "nosuch://b"]) == 2
    assert Store(str(db)).get_setting(artifacts_module.SETTING) is None


# -- a shared store without a location warns, once -------------------------------------------------------------------
@pytest.mark.parametrize("store_url, location, warns", [
    ("sqlite:///runs.db", None, False),
    ("postgresql+psycopg://u:secret@db/cluster", None, True),
    ("postgresql+psycopg://u:secret@db/cluster", "s3://bucket/cluster", False),
    ("postgresql+psycopg://u:secret@db/cluster", "/mnt/shared", False),
])
def test_only_a_shared_store_without_a_location_warns(store_url, location, warns):
    warning = local_only_warning(store_url, location)
    assert (warning is not None) == warns
    if warns:
        assert "\n" not in warning and "secret" not in warning and "resume, fork and export from another machine " \
            "will not find them" in warning


@pytest.mark.skipif(not os.environ.get("CLDASH_TEST_POSTGRES"), reason="set CLDASH_TEST_POSTGRES to run")
def test_a_run_on_postgres_without_a_location_warns_once(capsys, monkeypatch):
    from conftest import TINY
    from test_postgres import _fresh_database

    monkeypatch.delenv(ENV, raising=False)
    databases = _fresh_database()
    url = next(databases)
    try:
        for _ in range(2):   # two runs in one process: one line
            assert main(["--db", url, "run", "--method", "lora", "--stream-angles", "45,90", *TINY]) == 0
        err = capsys.readouterr().err
        assert err.count("no artifact location is set") == 1
        assert main(["--db", url, "--artifacts", "s3://bucket/x", "db", "artifacts"]) == 0
        assert capsys.readouterr().out == "s3://bucket/x (--artifacts)\n"
    finally:
        next(databases, None)


def test_paths_are_made_absolute_where_the_run_records_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert check_location("shared") == str(tmp_path / "shared")
    assert check_location("file://" + str(tmp_path / "x")) == str(tmp_path / "x")
    assert check_location("~/x") == str(Path.home() / "x")


def test_a_location_that_cannot_be_reached_is_one_sentence(tmp_path, monkeypatch):
    """A driver's own errors (botocore's, for no connection or no credentials, are not OSErrors) reach the
    checkpoints and the adapters as one sentence that names the place."""
    from cldash.config import resolve
    from cldash.engine import checkpoints
    from cldash.engine.adapters import saved_adapters

    class NoCredentials(Exception):   # as botocore.exceptions.NoCredentialsError is: no OSError
        pass

    def unreachable(*args, **kwargs):
        raise NoCredentials("Unable to locate credentials")

    monkeypatch.delenv(ENV, raising=False)
    store = Store(str(tmp_path / "runs.db"))
    location = f"memory://cldash/{tmp_path.name}"
    with given(location):
        rid = store.create_run(resolve({"method": "lora"}).to_dict())
    fs = store.artifacts(rid).fs
    for name in ("ls", "cat_file"):
        monkeypatch.setattr(fs, name, unreachable)
    where = f"memory:///cldash/{tmp_path.name}/runs"
    with pytest.raises(UserError, match=f"^cannot list the checkpoints of run {rid} at {where}.checkpoints/run-{rid} "
                                        r"\(cannot reach .*Unable to locate credentials\)\)\.$"):
        checkpoints.available(store, rid)
    with pytest.raises(UserError, match=f"^cannot read the checkpoint of run {rid} after task 1 at "):
        checkpoints.load(store, rid, 1)
    with pytest.raises(UserError, match=f"^cannot read run {rid}'s saved adapters at {where}.adapters/run-{rid}.pt "):
        saved_adapters(store, rid)
