"""Launchers and sweeps: the launcher registry, a cancel request on the run row honoured at the run's
next flush, the reconcile rules for a cluster's runs (a fake cluster answers), the local scheduler
leaving a cluster's runs alone, a SQLite store refused on a cluster of several nodes, logs, and sweeps
(counts, idempotence, collapsed and skipped combinations, bad input). Then one sweep of three tiny runs
on every registered launcher, through the same test (one cancelled while it trains, one's log read, the
rest finish): the local one always, Ray and SLURM where .ci/run starts them (CLDASH_TEST_RAY,
CLDASH_TEST_SLURM). What only a real Ray cluster or SLURM shows is in tests/runs/test_ray.py and
tests/runs/test_slurm.py."""

from __future__ import annotations

import os
import socket
import time
import uuid
from dataclasses import dataclass
from types import SimpleNamespace

import pytest

import cldash.runs.launch as launch_module
import cldash.runs.launchers as launchers
import cldash.runs.queue as queue_module
from cldash.cli import main
from cldash.config import resolve
from cldash.core.errors import UserError
from cldash.runs.execute import execute
from cldash.runs.launch import cancel
from cldash.runs.launchers import LAUNCHERS, JobState, Resources, for_run, parse
from cldash.runs.launchers.local import LocalLauncher, queue
from cldash.runs.launchers.ray_jobs import RayLauncher
from cldash.runs.processes import log_path
from cldash.runs.queue import STALE_SECONDS, reconcile, schedule
from cldash.runs.sweeps import Sweep, launch_sweep, parse_seeds, plan
from cldash.store import ENDED, RunWriter, Store

TINY_RUN = {"method": "lora", "steps_per_task": 6, "eval_interval": 0, "spectra_interval": 0,
            "dense_spectra_interval": 0, "stream_options": {"angles": [45, 90, 135]}}


def use_launcher(monkeypatch, for_run) -> None:
    """Every run's launcher is `for_run(run)`, where reconcile and cancel look it up."""
    monkeypatch.setattr(queue_module, "for_run", for_run)
    monkeypatch.setattr(launch_module, "for_run", for_run)


@pytest.mark.parametrize("spec, name, address", [
    (None, "local", None), ("local", "local", None),
    ("ray://head.example:10001", "ray", "ray://head.example:10001"),
    ("http://10.0.0.5:8265", "ray", "http://10.0.0.5:8265"),
    ("ray", "ray", "http://127.0.0.1:8265"),
])
def test_launchers_are_named_by_what_a_user_writes(spec, name, address, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    launcher = parse(spec)
    assert launcher.name == name and launcher.address == address


# One row per registered launcher: what a user writes to name it. A new launcher joins the contract below by
# adding its row (the first test fails until it does).
LAUNCHER_CASES = {"local": "local", "ray": "ray://head.example:10001",
                  "slurm": "slurm:partition=debug,time=00:10:00,account=lab"}
PROTOCOL = ("info", "check_store", "default_gpus", "submit", "cancel", "status", "logs", "resources")


def test_every_registered_launcher_has_a_row():
    assert sorted(LAUNCHERS) == sorted(LAUNCHER_CASES)


@pytest.mark.parametrize("name", sorted(LAUNCHER_CASES))
def test_a_launcher_keeps_the_contract(name):
    """Named by its spec, rebuilt from what a run row records of it, answering every call of the protocol,
    and listed in the sentence that answers an unknown launcher."""
    launcher = parse(LAUNCHER_CASES[name])
    assert launcher.name == name and isinstance(launcher, LAUNCHERS[name])
    assert all(callable(getattr(launcher, call, None)) for call in PROTOCOL), name
    row = {"id": 1, "launcher": name, "launcher_info": launcher.info(Resources())}
    again = for_run(row)
    assert type(again) is type(launcher) and again.address == launcher.address
    with pytest.raises(UserError) as said:
        parse("no-such-launcher")
    assert LAUNCHERS[name].spec_help in str(said.value)


@pytest.mark.parametrize("spec, phrase", [
    ("pbs", "unknown launcher 'pbs'; use local, or a Ray cluster's address: ray://HEAD:10001 or http://HEAD:8265, "
            "or slurm (or slurm:partition=P,time=T,account=A)."),
    ("ray://:10001", "names no host"),
    ("slurm:queue=debug", "the SLURM launcher has no option 'queue'"),
])
def test_a_bad_launcher_is_one_sentence(spec, phrase):
    with pytest.raises(UserError) as said:
        parse(spec)
    assert phrase in str(said.value)


@pytest.mark.parametrize("cpus, gpus, phrase", [
    (0, 0, "CPUs per run must be more than 0"), (1, -1, "GPUs per run must be between 0 and 64"),
    (1, 1.5, "GPUs per run above 1 must be a whole number"),
])
def test_resources_are_bounded(cpus, gpus, phrase):
    with pytest.raises(UserError, match=phrase):
        Resources(cpus, gpus).check()
    assert Resources(2, 0.125).check().to_dict() == {"cpus": 2, "gpus": 0.125}


def test_a_cancel_request_on_the_row_stops_the_run_at_its_next_flush(db, few_test_digits, monkeypatch):
    """What a cancel from another host does: no signal reaches the process, only the row's request."""
    # no flush by the clock (every 0.5 s): on a loaded machine one landed mid-task and read the request at step 5
    monkeypatch.setattr(RunWriter, "due", lambda self: False)
    store = Store(db)
    run_id = store.create_run(resolve(TINY_RUN).to_dict())
    asked = []

    def progress(p):
        if p.step == 3 and not asked:   # mid-way through task 1: the request waits for the flush at its end
            store.update_run(run_id, cancel_requested_at=time.time())
            asked.append(p.step)

    assert execute(store, run_id, progress=progress) == "cancelled"
    run = store.get_run(run_id)
    assert run["status"] == "cancelled" and run["error"] == "cancelled at step 6" and run["step"] == 6
    R = store.accuracy_matrix(run_id)
    assert len(R["rows"]) == 2   # before, and after task 1: what was written stays


def _remote_row(store, status="running", beat_age=0.0, host="node-b", cancel=False, age=0.0):
    now = time.time()
    run_id = store.create_run(resolve(TINY_RUN).to_dict(), status="queued", launcher="ray",
                              launcher_info={"address": "http://head:8265", "job": f"cldash-run-{time.time_ns()}",
                                             "resources": {"cpus": 1.0, "gpus": 0.0}})
    store.update_run(run_id, status=status, host=host if status == "running" else None,
                     pid=4242 if status == "running" else None, started_at=now - beat_age,
                     heartbeat_at=now - beat_age, created_at=now - age,
                     cancel_requested_at=now if cancel else None)
    return run_id


class FakeCluster:
    """Answers like the Ray launcher, from a table of job states; records the stops it is sent."""

    name = "ray"

    def __init__(self, states):
        self.table, self.stopped = states, []

    def states(self, runs):
        return {r["id"]: self.table[r["id"]] for r in runs}

    def cancel(self, store, run, timeout=2.0):
        self.stopped.append(run["id"])


# (row status, job state, seconds since the heartbeat, seconds since created, cancel asked) -> end status
REMOTE = [
    ("running", JobState("running"), 5, 5, False, None),
    ("running", JobState("running"), STALE_SECONDS + 20, 400, False, "interrupted"),   # and the job is stopped
    ("running", JobState("ended", "FAILED: exit code -9"), 5, 5, False, "interrupted"),
    ("running", JobState("missing", "no such job"), 5, 5, False, "interrupted"),
    ("running", JobState("unknown", "unreachable"), 5, 5, False, None),
    ("running", JobState("unknown", "unreachable"), STALE_SECONDS + 20, 400, False, "interrupted"),
    ("queued", JobState("pending"), 0, 500, False, None),
    ("queued", JobState("ended", "STOPPED: stopped"), 0, 5, True, "cancelled"),
    ("queued", JobState("ended", "FAILED: runtime env"), 0, 5, False, "failed"),
    ("queued", JobState("missing", "no such job"), 0, 5, False, None),         # submission may be under way
    ("queued", JobState("missing", "no such job"), 0, 120, False, "failed"),   # never submitted
    ("queued", JobState("unknown", "unreachable"), 0, 500, False, None),
]


def test_a_clusters_runs_are_reconciled_from_its_job_states_and_the_heartbeat(db, monkeypatch):
    store = Store(db)
    rows = {_remote_row(store, status, beat, cancel=asked, age=age): (state, want)
            for status, state, beat, age, asked, want in REMOTE}
    fake = FakeCluster({rid: state for rid, (state, _) in rows.items()})
    use_launcher(monkeypatch, lambda run: fake)
    changed = reconcile(store)
    got = {r["id"]: r for r in store.runs(ids=list(rows))}
    assert {rid: got[rid]["status"] if rid in changed else None for rid in rows} == \
           {rid: want for rid, (_, want) in rows.items()}
    stale = [rid for rid, (state, want) in rows.items() if state.state == "running" and want]
    assert fake.stopped == stale
    ended = next(rid for rid, (s, _) in rows.items() if s.message == "FAILED: exit code -9")
    assert "job cldash-run-" in got[ended]["error"] and "FAILED: exit code -9" in got[ended]["error"]
    assert "without the run recording an end" in got[ended]["error"]


def test_a_run_that_ended_while_the_cluster_answered_is_left_as_it_recorded(db, monkeypatch):
    store = Store(db)
    rid = _remote_row(store)

    class Finishing(FakeCluster):
        def states(self, runs):   # the run finishes, then its job ends, then the cluster is asked
            store.update_run(rid, status="finished", finished_at=time.time())
            return {rid: JobState("ended", "SUCCEEDED")}

    use_launcher(monkeypatch, lambda run: Finishing({}))
    assert reconcile(store) == [] and store.get_run(rid)["status"] == "finished"


def test_the_local_scheduler_leaves_a_clusters_runs_to_the_cluster(db, monkeypatch):
    store = Store(db)
    queued = _remote_row(store, status="queued")
    running = _remote_row(store, status="running")
    use_launcher(monkeypatch, lambda run: FakeCluster({queued: JobState("pending"),
                                                                       running: JobState("running")}))
    active, waiting = queue(store)
    assert active == [] and waiting == []   # neither takes a local slot, neither is started here
    assert schedule(store) == []


def test_cancel_records_the_request_and_sends_the_clusters_stop(db, monkeypatch):
    store = Store(db)
    rid = _remote_row(store, status="queued")
    fake = FakeCluster({rid: JobState("pending")})
    use_launcher(monkeypatch, lambda run: fake)
    assert cancel(store, rid) == "cancelled"
    run = store.get_run(rid)
    assert fake.stopped == [rid] and run["cancel_requested_at"] and run["status"] == "cancelled"


def _nodes(*ips):
    return [SimpleNamespace(node_ip=ip, state="ALIVE", resources_total={"CPU": 4.0, "GPU": 1.0}) for ip in ips]


@pytest.mark.parametrize("url, ips, phrase", [
    ("sqlite:////data/runs.db", ("10.0.0.5", "10.0.0.6"), "the Ray cluster at http://h:8265 has 2 nodes"),
    ("sqlite:////data/runs.db", ("10.9.9.9",), "runs on another host (10.9.9.9)"),
    ("sqlite:////data/runs.db", ("127.0.0.1",), None),
    ("postgresql+psycopg://u@db/cl", ("10.0.0.5", "10.0.0.6"), None),
])
def test_a_sqlite_store_is_refused_on_a_cluster_it_cannot_reach(url, ips, phrase, monkeypatch):
    ray = RayLauncher("http://h:8265")
    monkeypatch.setattr(ray, "nodes", lambda: _nodes(*ips))
    if phrase is None:
        ray.check_store(url)
        return
    with pytest.raises(UserError, match="a SQLite file cannot be shared across hosts") as err:
        ray.check_store(url)
    assert phrase in str(err.value) and "use a PostgreSQL store" in str(err.value)


def test_an_unreachable_cluster_is_one_sentence_and_reconcile_falls_back_on_heartbeats(db):
    ray = RayLauncher("http://127.0.0.1:9")   # the discard port: nothing listens
    with pytest.raises(UserError, match=r"cannot reach the Ray cluster at http://127.0.0.1:9 \(.*\); start one"):
        ray.resources()
    store = Store(db)
    fresh = _remote_row(store, beat_age=5)
    stale = _remote_row(store, beat_age=STALE_SECONDS + 20, age=400)
    for rid in (fresh, stale):
        info = store.get_run(rid)["launcher_info"]
        store.update_run(rid, launcher_info=dict(info, address="http://127.0.0.1:9"))
    assert reconcile(store) == [stale]
    assert "no heartbeat from host node-b" in store.get_run(stale)["error"]
    assert "unreachable" in store.get_run(stale)["error"]


def test_logs_of_local_runs(db, tmp_path):
    store = Store(db)
    rid = store.create_run(resolve(TINY_RUN).to_dict())
    assert "has no log yet" in launchers.logs(store, store.get_run(rid))
    path = log_path(store, rid)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"line {i}\n" for i in range(500)))
    store.update_run(rid, pid=1, host=__import__("socket").gethostname())
    assert launchers.logs(store, store.get_run(rid), tail=3) == "line 497\nline 498\nline 499\n"
    cli = store.create_run(resolve(TINY_RUN).to_dict(), launcher="cli", host="laptop", pid=7)
    assert "ran in the foreground (`cldash run`) on laptop" in launchers.logs(store, store.get_run(cli))
    assert isinstance(launchers.for_run(store.get_run(cli)), LocalLauncher)


# -- sweeps ---------------------------------------------------------------------------------------

def test_a_sweep_is_the_cross_product_collapsed_where_an_option_does_not_apply(db):
    store = Store(db)
    sweep = Sweep(methods=["lora", "codyra", "full"], seeds=[0, 1], presets=["common", "paper"],
                  grid={"rank": [2, 4]}, fixed={"steps_per_task": 5}, name="grid")
    p = plan(store, sweep)
    # lora and codyra: 2 ranks x 2 seeds under common; codyra also under paper; full: 2 seeds under common
    assert len(p.configs) == 2 * 2 + 2 * 2 + 2 * 2 + 2
    assert p.summary().startswith("sweep grid: 3 methods x 2 presets x 2 seeds x 2 rank = 14 runs; "
                                  "0 already in the store, 14 to queue")
    assert "full has no option rank: its runs do not vary with it" in p.summary()
    assert "lora, full have no paper preset: skipped under paper" in p.summary()
    assert {c["steps_per_task"] for c in p.configs} == {5}
    assert sorted({(c["method"], c["preset"], c["method_options"].get("rank")) for c in p.configs}) == sorted(
        {("lora", "common", 2), ("lora", "common", 4), ("codyra", "common", 2), ("codyra", "common", 4),
         ("codyra", "paper", 2), ("codyra", "paper", 4), ("full", "common", None)})
    assert len(set(p.keys)) == len(p.keys) and all(k.startswith("sweep:grid:") for k in p.keys)


def test_a_sweep_is_idempotent_and_widening_it_queues_only_the_new_runs(db):
    store = Store(db)
    sweep = Sweep(methods=["lora"], seeds=[0, 1], grid={"rank": [2, 4]}, fixed={"steps_per_task": 5})
    p, ids = launch_sweep(store, sweep, launcher=_NoStart())
    assert len(ids) == 4 and {r["group_key"] for r in store.runs()} == {sweep.group}
    again, none = launch_sweep(store, sweep, launcher=_NoStart())
    assert none == [] and len(again.existing) == 4 and len(store.runs()) == 4
    wider = Sweep(methods=["lora"], seeds=[0, 1, 2], grid={"rank": [2, 4]}, fixed={"steps_per_task": 5},
                  name=sweep.key())
    w, more = launch_sweep(store, wider, launcher=_NoStart())
    assert len(more) == 2 and len(w.existing) == 4 and len(store.runs()) == 6
    assert sweep.key() == Sweep(methods=["lora"], seeds=[0, 1], grid={"rank": [2, 4]},
                                fixed={"steps_per_task": 5}).key()   # the same command, the same sweep


class _NoStart(LocalLauncher):
    name = "queue-only"   # queues like a cluster would, starts nothing (cldash.runs.launch.launch)

    def info(self, resources):
        return {"resources": resources.to_dict()}

    def submit(self, store, runs, resources=None):
        return []


@pytest.mark.parametrize("sweep, phrase", [
    (Sweep(methods=["lora"], grid={"rnak": [2]}), "no run, method (lora) or stream (digits-rotate) option is "
                                                  "called 'rnak'"),
    (Sweep(methods=["lora"], grid={"rank": [0]}), "rank must be an integer between 1 and 65536 (got 0) "
                                                  "(in the sweep's run lora, preset common, rank=0)."),
    (Sweep(methods=["nope"]), "unknown method 'nope'"),
    (Sweep(methods=["lora"], presets=["paper"]), "the sweep has no runs: no method has the presets asked for."),
    (Sweep(methods=["lora"], grid={"rank": [2]}, fixed={"rank": 4}), "option rank is both in the grid and fixed"),
    (Sweep(methods=["lora"], name="bad name"), "a sweep's name is letters, digits"),
    (Sweep(methods=["lora"], seeds=list(range(101)), grid={"rank": list(range(1, 101))}), "more than 10000"),
])
def test_a_bad_sweep_is_one_sentence_before_anything_is_stored(sweep, phrase, db):
    with pytest.raises(UserError) as err:
        plan(None, sweep)
    assert phrase in str(err.value) and "lora." not in str(err.value)   # options named as the sweep names them


@pytest.mark.parametrize("text, seeds", [("0-4", [0, 1, 2, 3, 4]), ("0,1,2", [0, 1, 2]), ("0-2,7,1", [0, 1, 2, 7])])
def test_seed_lists(text, seeds):
    assert parse_seeds(text) == seeds


def test_cldash_sweep_shows_the_count_first_and_a_dry_run_stores_nothing(tmp_path, capsys):
    db = tmp_path / "runs.db"
    argv = ["--db", str(db), "sweep", "--methods", "lora,full", "--seeds", "0-2", "--grid", "rank=2,4",
            "--set", "steps_per_task=5", "--name", "cli"]
    assert main([*argv, "--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == ("sweep cli: 2 methods x 1 preset x 3 seeds x 2 rank = 9 runs; "
                                                       "0 already in the store, 9 to queue")
    assert not db.exists()


@pytest.mark.parametrize("argv, phrase", [
    (["sweep", "--methods", "lora", "--seeds", "4-1"], "seeds must be whole numbers or ranges"),
    (["sweep", "--methods", "lora", "--grid", "rank"], "write an option as NAME=VALUE"),
    (["sweep", "--methods", "lora", "--grid", "rank=2", "--grid", "rank=4"], "--grid rank is given twice"),
    (["sweep", "--methods", "lora", "--launcher", "pbs"], "unknown launcher 'pbs'"),
    (["sweep", "--methods", "lora", "--launcher", "slurm:time=soon"], "the SLURM time limit 'soon' is not one"),
    (["sweep", "--methods", "lora", "--gpus-per-run", "-1"], "GPUs per run must be between 0 and 64"),
    (["sweep", "--methods", "lora", "--grid", "targets=[oops"], "are not a JSON list"),
    (["sweep", "--methods", "lora", "--launcher", "http://127.0.0.1:9"], "cannot reach the Ray cluster"),
    (["sweep", "--methods", "lora", "--launcher", "ray://127.0.0.2:9"], "cannot reach the Ray cluster at ray://127.0.0.2:9"),
])
def test_cldash_sweep_bad_input_is_one_sentence_and_no_store(argv, phrase, tmp_path, capsys):
    db = tmp_path / "runs.db"
    assert main(["--db", str(db), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and phrase in err
    assert not db.exists()


def test_a_local_sweep_runs_to_the_end_and_cldash_logs_reads_a_run(tmp_path, capsys, few_test_digits):
    db = str(tmp_path / "runs.db")
    argv = ["--db", db, "sweep", "--methods", "lora", "--seeds", "0-1", "--set", "steps_per_task=4",
            "--set", "eval_interval=0", "--set", "angles=45,90", "--wait"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "queued 2 runs" in out and "(2/2)" in out
    store = Store(db)
    assert [r["status"] for r in store.runs()] == ["finished", "finished"]
    assert main(["--db", db, "logs", "1"]) == 0
    log = capsys.readouterr().out
    assert log.startswith("run 1 (lora r=8 · digits-rotate · seed 0") and "step 8/8" in log


@pytest.mark.parametrize("gpus, backbones, want", [(0.0, ["vit-tiny"], 0.0), (1.0, ["vit-tiny"], 0.125),
                                                   (4.0, ["vit-tiny", "hf:gpt2"], 1.0)])
def test_gpus_per_run_default_to_a_share_of_one_for_tiny_models(gpus, backbones, want, monkeypatch):
    ray = RayLauncher("http://h:8265")
    monkeypatch.setattr(ray, "resources", lambda store=None: {"nodes": 1, "CPU": 8.0, "GPU": gpus})
    assert ray.default_gpus(backbones) == want
    assert LocalLauncher().default_gpus(backbones) == 0.0


def test_the_runs_table_says_where_each_run_ran(db):
    from cldash.dashboard.tables import runs_table

    store = Store(db)
    rid = _remote_row(store, host="node-3")
    store.update_run(rid, device="cuda:0")
    local = store.create_run(resolve(TINY_RUN).to_dict(), status="finished", host="laptop")
    store.update_run(local, device="cpu")
    assert runs_table(store.run_listing())["where"].tolist() == ["node-3 · cuda:0 · ray", "laptop · cpu"]


# -- the same sweep on every launcher ---------------------------------------------------------------

@dataclass(frozen=True)
class Live:
    """A launcher that runs real runs here: the variable that names a running one (none: always here), its spec
    from that variable's value, and how its jobs read once their runs ended (a part of the job's message)."""

    needs: str | None
    spec: str
    finished: str    # a finished run's job
    cancelled: str   # a cancelled run's job


# One row per registered launcher; .ci/run starts a one-node Ray (.ci/services.sh) and SLURM (.ci/services-slurm.sh)
LIVE_CASES = {
    "local": Live(None, "local", finished="is gone", cancelled="is gone"),
    "ray": Live("CLDASH_TEST_RAY", "{}", finished="SUCCEEDED", cancelled=""),   # STOPPED, or SUCCEEDED if the run
    # recorded its cancel and exited before Ray's stop arrived
    "slurm": Live("CLDASH_TEST_SLURM", "slurm", finished="COMPLETED, exit code 0", cancelled="CANCELLED"),
}


def test_every_registered_launcher_runs_the_live_sweep():
    assert sorted(LIVE_CASES) == sorted(LAUNCHERS)


def _live(name: str):
    case = LIVE_CASES[name]
    value = os.environ.get(case.needs) if case.needs else ""
    if value is None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the {name} launcher's sweep: .ci/run starts one and sets {case.needs}")
        pytest.skip(f"set {case.needs} with a running {name} cluster to run (.ci/run starts a one-node one)")
    return parse(case.spec.format(value))


def until(what, check, store=None, timeout=240.0, every=0.5, poll=reconcile):
    """`check()`'s value once it has one, `poll(store)` meanwhile (reconcile: what a cluster's jobs did; schedule:
    that, then the local slots); the live sweeps here and in test_ray.py and test_slurm.py wait with it."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if store is not None:
            poll(store)
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("name", sorted(LIVE_CASES))
def test_a_sweep_on_each_launcher_one_cancelled_one_read_the_rest_finish(name, db):
    launcher = _live(name)
    res = launcher.resources()
    assert res["nodes"] >= 1 and res["CPU"] >= 1
    store = Store(db)
    launcher.check_store(store.url)   # a one-node cluster on this machine: a SQLite store is fine
    sweep = Sweep(methods=["lora"], name=f"{name}-{uuid.uuid4().hex[:6]}", grid={"steps_per_task": [4, 5, 100_000]},
                  fixed={"eval_interval": 0, "spectra_interval": 0, "angles": "45,90"})
    _, ids = launch_sweep(store, sweep, launcher=launcher, resources=Resources(cpus=1))
    runs = {r["config"]["steps_per_task"]: r for r in store.runs(ids=ids)}
    assert len(ids) == 3 and {r["launcher"] for r in runs.values()} == {name}
    long = until("the long run to train", lambda: (lambda r: r if r["status"] == "running" and r["step"] > 5
                                                   else None)(store.get_run(runs[100_000]["id"])),
                 store, poll=schedule)
    assert launcher.status(store, long) == JobState("running")
    assert cancel(store, long["id"], timeout=10.0) == "cancelled"
    ended = until("the sweep to end", lambda: (lambda rs: rs if all(r["status"] in ENDED for r in rs) else None)(
        store.runs(ids=ids)), store, poll=schedule)
    got = {r["config"]["steps_per_task"]: r for r in ended}
    assert [(got[s]["status"], got[s]["error"]) for s in (4, 5)] == [("finished", None)] * 2
    # cancelled by the launcher's stop or by the row's request, whichever came first: the step is where it stopped
    stopped = got[100_000]
    assert stopped["status"] == "cancelled" and stopped["error"] == f"cancelled at step {stopped['step']}"
    assert stopped["step"] > 5
    for steps in (4, 5):
        run = got[steps]
        assert run["host"] == socket.gethostname() and run["group_key"] == sweep.group
        assert len(store.accuracy_matrix(run["id"])["rows"]) == 3   # before, after task 1, after task 2
        assert f"step {2 * steps}/{2 * steps}" in launchers.logs(store, run)   # from wherever its output went
    # a job ends a moment after its run recorded its end (the process exits)
    states = until("the jobs to end", lambda: (lambda st: st if all(s.state == "ended" for s in st.values())
                                                else None)({r["id"]: launcher.status(store, r) for r in ended}),
                    store, timeout=60, poll=schedule)
    case = LIVE_CASES[name]
    assert all(case.finished in states[got[s]["id"]].message for s in (4, 5)), states
    assert case.cancelled in states[stopped["id"]].message, states
    again, none = launch_sweep(store, sweep, launcher=launcher)
    assert none == [] and len(again.existing) == 3   # repeating the sweep queues nothing
