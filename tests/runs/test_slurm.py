"""The SLURM launcher: its spec, sbatch's argument list, and the reading of squeue, scontrol and sacct
(outputs recorded from slurm 22.05), all without SLURM; then, on a real one-node SLURM, a run whose process is
killed reconciled with SLURM's reason, and a job that sbatch refuses. The sweep of three tiny runs that every
launcher runs (one cancelled while it trains, one's log read, the rest finish, the jobs' ends read from SLURM) is
in tests/runs/test_launchers.py, its SLURM row set by the same CLDASH_TEST_SLURM.

The real-SLURM tests need CLDASH_TEST_SLURM (and SLURM_CONF where the cluster's slurm.conf is not in
/etc/slurm); .ci/run starts one with .ci/services-slurm.sh, and under CI a missing one fails them.
"""

from __future__ import annotations

import os
import signal
import sys

import pytest

from cldash.config import resolve
from cldash.core.errors import UserError
from cldash.runs.launch import launch
from cldash.runs.launchers import JobState, Resources, logs, parse, slurm as slurm_module
from cldash.runs.launchers.slurm import (
    SlurmError,
    SlurmLauncher,
    gpu_count,
    job_state,
    parse_sacct,
    parse_scontrol,
    parse_spec,
    parse_squeue,
)
from cldash.runs.queue import reconcile
from cldash.store import Store

from test_launchers import until  # the live sweeps' one wait

SLURM = os.environ.get("CLDASH_TEST_SLURM")
TINY = {"method": "lora", "steps_per_task": 4, "eval_interval": 0, "spectra_interval": 0,
        "dense_spectra_interval": 0, "stream_options": {"angles": [45, 90]}}
LONG = {**TINY, "steps_per_task": 100_000}

# recorded from slurm 22.05 (Debian bookworm), one node "vm": a job that failed with exit code 3, a pending one,
# a running one; and `scontrol show job -o` of the failed one (cut after the fields read)
SQUEUE = ("2|cldash-run-b|FAILED|NonZeroExitCode\n3|cldash-run-c|PENDING|Resources\n"
          "1|cldash-run-a|RUNNING|None\n")
SCONTROL_FAILED = ("JobId=2 JobName=cldash-run-b UserId=root(0) GroupId=root(0) MCS_label=N/A Priority=4294901758 "
                   "Nice=0 Account=(null) QOS=(null) JobState=FAILED Reason=NonZeroExitCode Dependency=(null) "
                   "Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=3:0 RunTime=00:00:00 TimeLimit=UNLIMITED "
                   "Partition=debug NodeList=vm BatchHost=vm NumNodes=1 NumCPUs=1 Command=(null) WorkDir=/tmp "
                   "StdErr=/tmp/sl-b.out StdIn=/dev/null StdOut=/tmp/sl-b.out Power= \n")
SCONTROL_KILLED = ("JobId=4 JobName=cldash-run-d JobState=FAILED Reason=JobLaunchFailure Dependency=(null) "
                   "ExitCode=0:9\n")
SACCT = "7|CANCELLED by 0|0:15\n8|TIMEOUT|0:0\n"


# -- without SLURM ----------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, options", [
    ("slurm", {}),
    ("slurm:partition=debug", {"partition": "debug"}),
    ("slurm:time=00:10:00, account=lab,partition=gpu-a100", {"time": "00:10:00", "account": "lab",
                                                             "partition": "gpu-a100"}),
    ("slurm:time=2-12", {"time": "2-12"}), ("slurm:time=90", {"time": "90"}),
])
def test_a_slurm_spec_names_partition_time_and_account(spec, options):
    assert parse_spec(spec) == options
    launcher = parse(spec)
    assert isinstance(launcher, SlurmLauncher) and launcher.name == "slurm"
    assert (launcher.partition, launcher.time, launcher.account) == tuple(options.get(k) for k in
                                                                          ("partition", "time", "account"))
    assert parse(launcher.address).address == launcher.address   # what the CLI prints names it again


@pytest.mark.parametrize("spec, phrase", [
    ("slurm:queue=debug", "the SLURM launcher has no option 'queue'; write slurm:partition=P,time=T,account=A"),
    ("slurm:partition", "the SLURM option partition has no value; write partition=VALUE"),
    ("slurm:time=", "the SLURM option time has no value"),
    ("slurm:time=10,time=20", "the SLURM option time is given twice"),
    ("slurm:time=ten minutes", "the SLURM time limit 'ten minutes' is not one that sbatch reads"),
    ("slurm:time=1:2:3:4", "is not one that sbatch reads"),
    ("slurm:account=lab;rm -rf", "the SLURM account 'lab;rm -rf' is not a name"),
])
def test_a_bad_slurm_spec_is_one_sentence(spec, phrase):
    with pytest.raises(UserError) as said:
        parse(spec)
    assert phrase in str(said.value) and "\n" not in str(said.value)


def test_sbatch_runs_this_python_with_this_environment_and_the_resources_asked():
    launcher = parse("slurm:partition=debug,time=00:10:00,account=lab")
    info = launcher.info(Resources(cpus=1.5, gpus=2))
    assert info["job_name"].startswith("cldash-run-") and info["job"] is None
    assert {k: info[k] for k in ("partition", "time", "account")} == {"partition": "debug", "time": "00:10:00",
                                                                       "account": "lab"}
    args = launcher.sbatch_args(12, info, Resources(cpus=1.5, gpus=2), "/logs/run-12.log")
    assert args[:2] == ["sbatch", "--parsable"] and "--export=ALL" in args
    assert {"--cpus-per-task=2", "--gres=gpu:2", "--partition=debug", "--time=00:10:00", "--account=lab",
            f"--job-name={info['job_name']}", "--output=/logs/run-12.log", "--open-mode=append"} <= set(args)
    assert args[-1] == f"--wrap=exec {sys.executable} -m cldash execute 12"
    cpu_only = parse("slurm").sbatch_args(3, parse("slurm").info(Resources()), Resources(), "/l")
    assert not any(a.startswith(("--gres", "--partition", "--time", "--account")) for a in cpu_only)


def test_slurm_gives_whole_gpus():
    with pytest.raises(UserError, match=r"SLURM gives a job whole GPUs; ask for 0, 1 or more GPUs per run "
                                        r"\(got 0.125\)"):
        parse("slurm").info(Resources(cpus=1, gpus=0.125))


@pytest.mark.parametrize("gres, gpus", [("(null)", 0), ("gpu:4", 4), ("gpu:a100:2(S:0-1)", 2),
                                        ("gpu:a100:2(S:0),gpu:v100:1", 3), ("gpu:2,shard:8", 2)])
def test_gpus_are_read_from_sinfo(gres, gpus):
    assert gpu_count(gres) == gpus


def test_squeue_scontrol_and_sacct_outputs_are_read():
    assert parse_squeue(SQUEUE) == {"cldash-run-b": ("2", "FAILED", "NonZeroExitCode"),
                                    "cldash-run-c": ("3", "PENDING", "Resources"),
                                    "cldash-run-a": ("1", "RUNNING", "None")}
    # a resumed run submitted again under its name: its newest job is the one that counts
    assert parse_squeue("9|cldash-run-a|RUNNING|None\n12|cldash-run-a|PENDING|Priority\n")["cldash-run-a"][0] == "12"
    fields = parse_scontrol(SCONTROL_FAILED)
    assert (fields["JobState"], fields["Reason"], fields["ExitCode"]) == ("FAILED", "NonZeroExitCode", "3:0")
    assert parse_sacct(SACCT) == {"7": ("CANCELLED", "0:15"), "8": ("TIMEOUT", "0:0")}
    assert job_state("PENDING", "Resources") == JobState("pending", "Resources")
    assert job_state("COMPLETING") == JobState("running")
    assert job_state("FAILED", "NonZeroExitCode", "3:0") == JobState("ended", "FAILED (NonZeroExitCode), exit code 3")
    assert job_state("CANCELLED", "None", "0:15") == JobState("ended", "CANCELLED, signal 15")
    assert job_state("TIMEOUT", "TimeLimit", "0:0") == JobState("ended", "TIMEOUT (TimeLimit), exit code 0")


class RecordedSlurm:
    """Answers SLURM's commands with recorded outputs; records what was asked."""

    def __init__(self, answers: dict[str, str | Exception]):
        self.answers, self.asked = answers, []

    def __call__(self, args, env=None):
        self.asked.append(args)
        answer = self.answers[args[0]]
        if isinstance(answer, dict):   # scontrol: by job id
            answer = answer.get(args[-1], SlurmError("slurm_load_jobs error: Invalid job id specified"))
        if isinstance(answer, Exception):
            raise answer
        return answer


def _row(rid, name, job):
    return {"id": rid, "launcher": "slurm", "launcher_info": {"job_name": name, "job": job,
                                                              "resources": {"cpus": 1.0, "gpus": 0.0}}}


def test_job_states_come_from_squeue_then_scontrol_then_sacct(monkeypatch):
    fake = RecordedSlurm({"squeue": SQUEUE + "4|cldash-run-d|FAILED|JobLaunchFailure\n",
                          "scontrol": {"2": SCONTROL_FAILED, "4": SCONTROL_KILLED},
                          "sacct": SlurmError("Slurm accounting storage is disabled")})
    monkeypatch.setattr(slurm_module, "run_slurm", fake)
    monkeypatch.setattr(slurm_module, "_down", {})
    rows = [_row(1, "cldash-run-a", "1"), _row(2, "cldash-run-b", "2"), _row(3, "cldash-run-c", "3"),
            _row(4, "cldash-run-d", "4"), _row(5, "cldash-run-gone", "5"), _row(6, "cldash-run-new", None)]
    states = SlurmLauncher().states(rows)
    assert states[1] == JobState("running") and states[3] == JobState("pending", "Resources")
    assert states[2] == JobState("ended", "FAILED (NonZeroExitCode), exit code 3")
    assert states[4] == JobState("ended", "FAILED (JobLaunchFailure), signal 9")
    assert states[5].state == "missing" and "SLURM no longer knows job 5" in states[5].message
    assert "sacct cannot say how it ended: Slurm accounting storage is disabled" in states[5].message
    assert states[6] == JobState("missing", "SLURM has no job named cldash-run-new")
    assert [a[0] for a in fake.asked] == ["squeue", "scontrol", "scontrol", "sacct"]   # one squeue for all
    # with accounting, a job the controller forgot is read from sacct
    fake.answers["sacct"] = "5|TIMEOUT|0:0\n"
    assert SlurmLauncher().states([rows[4]])[5] == JobState("ended", "TIMEOUT, exit code 0")
    # a controller that does not answer: unknown (reconcile waits for the heartbeat), and not asked again at once
    fake.answers["squeue"] = SlurmError("squeue did not answer within 30 s")
    assert SlurmLauncher().states(rows[:1])[1] == JobState("unknown", "SLURM did not answer (squeue did not answer "
                                                                      "within 30 s)")
    asked = len(fake.asked)
    assert SlurmLauncher().states(rows[:1])[1] == JobState("unknown", "SLURM did not answer (squeue did not answer "
                                                                      "within 30 s; asked again 60 s after)")
    assert len(fake.asked) == asked
    with pytest.raises(UserError, match="asked again 60 s after"):   # sinfo too: it is the same controller
        SlurmLauncher().resources()
    assert len(fake.asked) == asked


def test_a_queued_run_whose_job_failed_is_failed_with_slurms_reason(db, monkeypatch):
    """reconcile, from recorded outputs: the run never started, SLURM says why its job ended."""
    store = Store(db)
    launcher = parse("slurm")
    info = {**launcher.info(Resources()), "job": "2", "job_name": "cldash-run-b"}
    rid = store.create_run(resolve(TINY).to_dict(), status="queued", launcher="slurm", launcher_info=info)
    recorded = RecordedSlurm({"squeue": SQUEUE, "scontrol": {"2": SCONTROL_FAILED}})
    monkeypatch.setattr(slurm_module, "run_slurm", recorded)
    monkeypatch.setattr(slurm_module, "_down", {})
    assert reconcile(store) == [rid]
    run = store.get_run(rid)
    assert run["status"] == "failed"
    assert run["error"].startswith("its slurm job 2 ended before the run started (FAILED (NonZeroExitCode), exit "
                                   f"code 3); `cldash logs {rid}` shows its output")


@pytest.mark.parametrize("hosts, phrase", [
    (["vm-other"], "has nodes other than this one (vm-other)"),
    (["HERE", "node-7"], "has nodes other than this one (node-7)"),
    (["HERE"], None),
])
def test_a_sqlite_store_works_only_when_every_node_is_this_machine(hosts, phrase, monkeypatch):
    import socket

    launcher = SlurmLauncher(partition="debug")
    here = socket.gethostname()
    monkeypatch.setattr(launcher, "nodes", lambda: [(h, here if h == "HERE" else h, 2.0, 0.0) for h in hosts])
    launcher.check_store("postgresql+psycopg://u@db/cl")   # every node reaches a server
    if phrase is None:
        launcher.check_store("sqlite:////data/runs.db")
        return
    with pytest.raises(UserError) as said:
        launcher.check_store("sqlite:////data/runs.db")
    assert str(said.value).startswith("a SQLite store works only on one host, and partition debug ")
    assert phrase in str(said.value) and "use a PostgreSQL store" in str(said.value)


def test_without_slurm_the_launcher_says_where_to_run_it(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(slurm_module, "_down", {})
    with pytest.raises(UserError, match=r"cannot ask SLURM for its nodes \(sinfo is not on this machine's PATH; run "
                                        r"cldash on a login node of the SLURM cluster"):
        SlurmLauncher().resources()
    assert SlurmLauncher().status(None, _row(1, "cldash-run-x", "9")).state == "unknown"


# -- on a real SLURM --------------------------------------------------------------------------------

needs_slurm = pytest.mark.skipif(not SLURM and not os.environ.get("CI"),
                                 reason="set CLDASH_TEST_SLURM=1 with a running SLURM (.ci/services-slurm.sh "
                                        "start_slurm starts a one-node one) to run")


@pytest.fixture
def cluster():
    if not SLURM:
        pytest.fail("CI must run the SLURM tests: .ci/run starts a one-node SLURM (.ci/services-slurm.sh) and sets "
                    "CLDASH_TEST_SLURM")
    slurm_module._down.clear()
    return parse("slurm")


@needs_slurm
def test_a_run_whose_process_is_killed_is_reconciled_with_slurms_reason(cluster, db):
    store = Store(db)
    (rid,) = launch(store, [resolve(LONG).to_dict()], launcher=cluster, resources=Resources(cpus=1))
    run = until("the run to train", lambda: (lambda r: r if r["status"] == "running" and r["step"] > 5 else None)(
        store.get_run(rid)), store)
    # the row says another host, so that reconcile cannot look at the pid and goes by SLURM's job state, as for a
    # run on another node
    store.update_run(rid, host="node-b")
    os.kill(run["pid"], signal.SIGKILL)
    until("its job to end", lambda: cluster.status(store, run).state == "ended", store, timeout=60)
    ended = store.get_run(rid)
    job = run["launcher_info"]["job"]
    assert ended["status"] == "interrupted"
    assert ended["error"].startswith(f"its slurm job {job} ended (FAILED (JobLaunchFailure), signal 9) without the "
                                     "run recording an end")
    # sbatch's job id and the job's output file are on the row: the log is the run's own, up to where it was killed
    assert job.isdigit() and run["launcher_info"]["log"].endswith(f"run-{rid}.log")
    assert logs(store, ended).startswith(f"run {rid} (lora")


@needs_slurm
def test_a_job_that_sbatch_refuses_fails_its_run_with_sbatchs_sentence(cluster, db):
    store = Store(db)
    assert cluster.resources()["GPU"] == 0
    (rid,) = launch(store, [resolve(TINY).to_dict()], launcher=cluster, resources=Resources(cpus=1, gpus=1))
    run = store.get_run(rid)
    assert run["status"] == "failed" and run["error"] == ("could not submit the run to SLURM: sbatch: error: Invalid "
                                                          "generic resource (gres) specification")
    with pytest.raises(UserError, match="partition nope has no nodes"):   # before anything is stored
        launch(store, [resolve(TINY).to_dict()], launcher=parse("slurm:partition=nope"))
    assert len(store.runs()) == 1
