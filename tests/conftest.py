"""Shared fixtures: a project-local backbone cache and temporary stores seeded with real runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
# Pre-trained backbones are cached inside the checkout (git-ignored) unless the caller chose a place,
# so a test session pre-trains each backbone at most once and never touches the user's cache.
os.environ.setdefault("CLDASH_CACHE", str(ROOT / ".cldash-cache"))
# One intra-op thread (unless the caller chose): the tests' tensors are tiny, and on a small machine
# shared with other work two spinning OpenMP threads per process made the suite up to 15x slower
# (measured on 2 cores next to another test run); CLI subprocesses inherit the setting.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

# The from-scratch pre-trainings of the band tests (test_backbone_weights.py) take about 2.5 minutes on
# one core. They start in a background process as soon as the tests are collected, and the band tests
# themselves run last and read the results. Under pytest-xdist (the default: pyproject's addopts) every
# worker collects the tests: the first one to create the shared folder's "started" entry starts the
# pre-training, the worker that gets the band tests waits for its files, and the controller, which
# named the folder before the workers started (they inherit it through the environment), stops it at
# the end.
BAND_TEST = "test_pretraining_from_scratch_lands_in_the_documented_band"
BAND_DIR = "CLDASH_TEST_BAND_DIR"
_BAND_SCRIPT = """
import json, sys, traceback
from pathlib import Path
out = Path(sys.argv[1])
try:
    from cldash.backbones import BACKBONES
    for name in sys.argv[2:]:
        entry = BACKBONES[name]
        state_dict, record = entry.pretrain(entry.Options())
        (out / f"{name}.json.tmp").write_text(json.dumps({"scores": record["scores"], "keys": sorted(state_dict)}))
        (out / f"{name}.json.tmp").rename(out / f"{name}.json")
except BaseException:
    (out / "failed").write_text(traceback.format_exc())
    raise
"""


def _is_worker(config) -> bool:
    return hasattr(config, "workerinput")


def pytest_configure(config):
    if not _is_worker(config):
        os.environ[BAND_DIR] = tempfile.mkdtemp(prefix="cldash-band-")


# last: after -m / -k / --deselect have chosen the tests, so that a run without the band tests (pytest -m floors)
# starts no pre-training
@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    band = [item for item in items if getattr(item, "originalname", "") == BAND_TEST]
    if not band:
        return
    items[:] = [item for item in items if item not in band] + band
    out = Path(os.environ[BAND_DIR])
    try:
        (out / "started").mkdir()
    except FileExistsError:   # another worker started it
        return
    names = [item.callspec.params["name"] for item in band]
    proc = subprocess.Popen([sys.executable, "-c", _BAND_SCRIPT, str(out), *names], cwd=ROOT,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True)
    (out / "pid").write_text(str(proc.pid))


def leftover_runs(folder: str) -> list[tuple[int, str]]:
    """Run processes (`cldash execute`) whose store lies under `folder`: (pid, its test), from /proc."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
            env = dict(e.split("=", 1) for e in (proc / "environ").read_bytes().decode(errors="replace").split("\0")
                       if "=" in e)
        except OSError:
            continue
        if b"execute" in cmd and b"cldash" in cmd and folder in env.get("CLDASH_DB", ""):
            found.append((int(proc.name), env.get("PYTEST_CURRENT_TEST", "?")))
    return found


def pytest_sessionfinish(session, exitstatus):
    if _is_worker(session.config):
        return
    # a test that queues runs and does not wait for them leaves them running (and starting the next queued one)
    # through the rest of the suite and after it: end them, and say which test did
    left = leftover_runs(str(session.config._tmp_path_factory.getbasetemp()))
    for pid, _test in left:
        try:
            os.killpg(pid, 9)
        except (ProcessLookupError, PermissionError):
            pass
    if left:
        print(f"\nwarning: {len(left)} run process(es) outlived their tests and were ended: "
              + ", ".join(sorted({test for _, test in left})))
    if BAND_DIR not in os.environ:
        return
    out = Path(os.environ[BAND_DIR])
    pid = (out / "pid").read_text() if (out / "pid").exists() else ""
    if pid:
        try:
            os.killpg(int(pid), 9)
        except ProcessLookupError:
            pass
    shutil.rmtree(out, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)   # our own child: reap it once it ended
    except ChildProcessError:                      # another worker's: is it still there?
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return waited == 0


@pytest.fixture
def background_pretraining():
    """`result(name)`: the scores and state-dict keys of the background from-scratch pre-training."""
    def result(name: str) -> dict:
        out = Path(os.environ[BAND_DIR])
        pid = int((out / "pid").read_text())
        deadline = time.time() + 1800
        while not (out / f"{name}.json").exists():
            assert not (out / "failed").exists(), "the background pre-training failed:\n" + \
                (out / "failed").read_text()
            assert _alive(pid) or (out / f"{name}.json").exists(), "the background pre-training ended without a result"
            assert time.time() < deadline, "the background pre-training took more than 30 minutes"
            time.sleep(1)
        return json.loads((out / f"{name}.json").read_text())
    return result


# Short runs: enough steps for LoRA to learn each rotation, few enough for a fast suite.
SHORT = ["--steps-per-task", "40", "--eval-interval", "20", "--spectra-interval", "10",
         "--dense-spectra-interval", "20", "--quiet"]
# Shorter still, for runs that only have to finish (or fail) through the CLI: two steps a task, no
# evaluation or spectra but the ones at each task boundary.
TINY = ["--steps-per-task", "2", "--eval-interval", "0", "--spectra-interval", "0", "--dense-spectra-interval", "0",
        "--quiet"]


FEW_TEST_DIGITS = 64


def use_few_test_digits(monkeypatch) -> None:
    """Every digits stream evaluates on the first FEW_TEST_DIGITS of the 539 held-out digits (its tasks'
    test splits and the general one are made from that split; training batches come from the full
    training split as always). For tests of what a run stores and how it ends, never of how well it
    scores: one evaluation of the whole split costs as much as about twelve training steps, and a
    short run evaluates every task at least once per task boundary."""
    from cldash.streams import digits
    from cldash.streams.base import Split

    train, test = digits.digits_splits()
    few = (train, Split(test.x[:FEW_TEST_DIGITS], test.y[:FEW_TEST_DIGITS]))
    monkeypatch.setattr(digits, "digits_splits", lambda: few)


def keep_runs_queued(monkeypatch) -> None:
    """Every schedule, wherever it is called from (a launch, the sidebar, a CLI command, a resume), reconciles
    as usual and starts no run process: this machine's slots stay empty, the queued runs stay queued. (A
    patch on one module's `schedule` misses the modules that imported it by name; the CLI's did, and a test's
    18 demo runs then trained through the rest of the suite.)"""
    import cldash.runs.launchers.local as local
    import cldash.runs.queue as queue

    for module in (queue, local):
        monkeypatch.setattr(module, "start_waiting", lambda store: [])


@pytest.fixture
def few_test_digits(monkeypatch):
    """use_few_test_digits for one test."""
    use_few_test_digits(monkeypatch)


@pytest.fixture
def db(tmp_path) -> str:
    return str(tmp_path / "runs.db")


@pytest.fixture(scope="session")
def seeded_store(tmp_path_factory):
    """A store with one short finished LoRA run and one full fine-tuning run on digits-rotate.

    Its runs evaluate on FEW_TEST_DIGITS held-out digits (use_few_test_digits): the tests read its
    numbers back through the CLI, the exports and the dashboard and compare them with the store, and
    none asks how well these runs score (evaluation was half of their cost)."""
    from cldash.cli import main
    from cldash.store import Store

    path = str(tmp_path_factory.mktemp("seeded") / "runs.db")
    with pytest.MonkeyPatch.context() as patch:
        use_few_test_digits(patch)
        for method in ("lora", "full"):
            assert main(["--db", path, "run", "--method", method, "--stream", "digits-rotate",
                         "--stream-angles", "45,90,135", *SHORT]) == 0
    return Store(path)


@pytest.fixture
def read_only_copy(seeded_store, tmp_path):
    """A copy of the seeded store with a run whose process is gone (still "running") and a queued run,
    as (its path, the queued run's id); open it read-only as ``sqlite:///file:PATH?mode=ro&uri=true``
    (the tests run as root, for whom chmod 0444 does not stop a write)."""
    import socket
    import sqlite3

    from cldash.store import Store, _engine

    path = tmp_path / "read-only.db"
    with sqlite3.connect(seeded_store.display) as src, sqlite3.connect(path) as dst:
        src.backup(dst)
    store = Store(str(path))
    store.update_run(1, status="running", pid=2 ** 22 + 5, host=socket.gethostname())
    queued = store.create_run(store.get_run(2)["config"])
    _engine(store.url).dispose()   # the last connection closing moves the WAL into the file
    return path, queued


@pytest.fixture
def no_network(monkeypatch):
    """A machine without network: every name lookup fails at once and is counted (the Hub probe of
    cldash.core.hub makes one; a download attempt one per retry). HF_HUB_OFFLINE is unset, and the answers
    cached from earlier loads (the probe's, the Hugging Face configs and streams) are forgotten."""
    import socket
    import sys

    import huggingface_hub.constants

    from cldash.backbones.hf import auto_config
    from cldash.streams.hf import hf_stream

    lookups = []

    def lookup(host, *args, **kwargs):
        lookups.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", lookup)
    if "cldash.core.hub" in sys.modules:
        monkeypatch.setattr(sys.modules["cldash.core.hub"], "_probed", None)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    auto_config.cache_clear()
    hf_stream.cache_clear()
    return lookups
