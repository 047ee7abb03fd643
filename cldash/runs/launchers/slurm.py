"""The SLURM launcher: each run is a SLURM batch job, submitted with sbatch.

Why sbatch directly, not submitit: a run is already a command (``python -m cldash execute RUN_ID``, which
claims its queued row and writes straight to the store), and sbatch, squeue, scontrol, sacct and scancel
are on every SLURM login node. submitit pickles a Python callable and runs it on the node; we have no
callable to send, only a command, and it would be one more dependency to install on both sides.

How a user names it (``--launcher``, the Launch page), so that the CLI and the pages need no case of
their own: ``slurm``, or ``slurm:partition=debug,time=00:10:00,account=lab`` (any of the three, in any
order). CPUs and GPUs come from `Resources`: ``--cpus-per-task`` (rounded up) and ``--gres=gpu:N``;
SLURM gives a job whole GPUs, so a share of one (0.125) is refused in one sentence.

The job runs this process's python (``sys.executable``) in this process's working folder, with its
whole environment (``--export=ALL``: CLDASH_CACHE, CLDASH_ARTIFACTS, a virtual environment's PATH), and
the store's URL as CLDASH_DB in that environment, never on the command line (``scontrol show job``
shows a job's command to every user; its environment is kept in the controller's spool, readable by
the SLURM administrators). A login node and its compute nodes share the home and project folders on
every SLURM cluster we know of, which is what makes this python and this folder valid on the nodes.

The job's name is chosen when the run row is written (``cldash-run-<hex>``, in ``runs.launcher_info``),
and sbatch's job id is added to it once sbatch answers, so a process that stops between the two still
finds the job by its name. Its output goes to ``--output`` = the run's log file under CLDASH_CACHE (the
path the local launcher uses, cldash.runs.processes.log_path), appended to when a resumed run is
submitted again, and also recorded on the row; `logs` reads it there.

`status`: squeue (pending, running, and ended jobs the controller still remembers), then, for an ended
job, ``scontrol show job`` for its exit code and SLURM's reason; a job the controller has forgotten
(after MinJobAge, 300 s by default) is looked up with sacct, which needs SLURM's accounting (slurmdbd).
Without accounting sacct cannot answer, and a forgotten job reads as missing: the run's heartbeat then
decides (cldash.runs.queue.reconcile). The reason reaches the run's error: reconcile marks a queued run
whose job ended as failed, and a running one whose job ended without the run recording its end as
interrupted (it can be resumed from its checkpoint), each with SLURM's state, reason and exit code.

The store: a SQLite store works only when every node of the partition is this machine. Its WAL mode needs
the processes on one host (SQLite's documentation: WAL does not work over a network filesystem), so a
SQLite file on a disk that several nodes share is refused too; use PostgreSQL there. On a one-node cluster
on this machine (a workstation with SLURM, the CI) SQLite is fine.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid

from cldash.core.errors import UserError
from cldash.runs.launchers.base import JobState, Resources, register_launcher
from cldash.runs.launchers.local import tail_lines
from cldash.runs.processes import log_path
from cldash.store import sqlite_path

OPTIONS = ("partition", "time", "account")
# SLURM's names (partition, account): letters, digits, _ . - ; a comma would end the option in our spec
NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
# sbatch --time: MIN, MIN:SEC, H:MIN:SEC, D-H, D-H:MIN, D-H:MIN:SEC, or UNLIMITED
TIME = re.compile(r"^(\d+(:\d{1,2}){0,2}|\d+-\d{1,2}(:\d{1,2}){0,2}|UNLIMITED|INFINITE)$")
COMMAND_SECONDS = 30.0   # a SLURM command that has not answered by then: the controller is down or overloaded
# ... and SLURM is not asked again for this long: reconcile runs on every refresh, and a controller that is down
# takes about 9 s to say so (squeue and sinfo retrying, measured with slurm 22.05)
DOWN_SECONDS = 60.0

# SLURM's job states (squeue's %T, scontrol's JobState, sacct's State) as cldash reads them
PENDING = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD"}
RUNNING = {"RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT", "RESIZING"}

_down: dict[str, tuple[float, str]] = {}
_lock = threading.Lock()


class SlurmError(Exception):
    """A SLURM command could not be run or refused (its message: SLURM's own first line)."""


def parse_spec(spec: str) -> dict[str, str]:
    """The options of ``slurm:partition=P,time=T,account=A`` (none for ``slurm``); one sentence for a bad one."""
    if spec == "slurm":
        return {}
    text = spec[len("slurm:"):].strip()
    options: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, eq, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if key not in OPTIONS:
            raise UserError(f"the SLURM launcher has no option {key!r}; write slurm:partition=P,time=T,account=A "
                            "(any of them), for example slurm:partition=debug,time=00:10:00.")
        if not eq or not value:
            raise UserError(f"the SLURM option {key} has no value; write {key}=VALUE, for example "
                            f"{'time=00:10:00' if key == 'time' else key + '=debug'}.")
        if key in options:
            raise UserError(f"the SLURM option {key} is given twice in {spec!r}; give it once.")
        if key == "time" and not TIME.match(value):
            raise UserError(f"the SLURM time limit {value!r} is not one that sbatch reads; write MINUTES, "
                            "HOURS:MINUTES:SECONDS or DAYS-HOURS:MINUTES, for example time=00:10:00.")
        if key != "time" and not NAME.match(value):
            raise UserError(f"the SLURM {key} {value!r} is not a name; a {key} is letters, digits, _ . and -.")
        options[key] = value
    return options


def parse_squeue(text: str) -> dict[str, tuple[str, str, str]]:
    """squeue's ``-o '%i|%j|%T|%r'`` lines: job name -> (job id, state, reason). A name submitted twice (a
    resumed run) keeps its newest job, the one with the highest id."""
    jobs: dict[str, tuple[str, str, str]] = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 4:
            continue
        job, name, state, reason = parts
        if name not in jobs or _job_number(job) > _job_number(jobs[name][0]):
            jobs[name] = (job, state.upper(), reason)
    return jobs


def parse_scontrol(text: str) -> dict[str, str]:
    """The fields of ``scontrol show job -o`` (one job on one line of KEY=VALUE words). Values with spaces
    (Command, WorkDir) are cut at the first space; none that is read here has one."""
    return dict(re.findall(r"(?:^|\s)([A-Za-z/:_]+)=(\S*)", text))


def parse_sacct(text: str) -> dict[str, tuple[str, str]]:
    """sacct's ``-n -P -X -o JobID,State,ExitCode`` lines: job id -> (state, exit code). sacct writes a
    cancelled job's state as ``CANCELLED by UID``."""
    jobs = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3:
            jobs[parts[0]] = (parts[1].split()[0].upper() if parts[1].strip() else "", parts[2])
    return jobs


def ended_message(state: str, reason: str = "", exit_code: str = "") -> str:
    """How SLURM says a job ended: its state, its reason where it gives one, and its exit code or the signal
    that ended it (ExitCode=CODE:SIGNAL): "FAILED (NonZeroExitCode), exit code 3", "CANCELLED, signal 15"."""
    text = state + (f" ({reason})" if reason and reason not in ("None", "(null)") else "")
    code, _, sig = exit_code.partition(":")
    if sig.isdigit() and int(sig):
        text += f", signal {int(sig)}"
    elif code.isdigit():
        text += f", exit code {int(code)}"
    return text


def job_state(state: str, reason: str = "", exit_code: str = "") -> JobState:
    """A SLURM job state as a `JobState` (an ended one with `ended_message`)."""
    if state in PENDING:
        return JobState("pending", reason if reason not in ("None", "") else "")
    if state in RUNNING:
        return JobState("running")
    return JobState("ended", ended_message(state, reason, exit_code))


def _job_number(job: str) -> int:
    head = job.split("_")[0].split(";")[0]
    return int(head) if head.isdigit() else -1


def run_slurm(args: list[str], env: dict | None = None) -> str:
    """A SLURM command's output; SlurmError with its message when it is not installed, times out or refuses."""
    if shutil.which(args[0]) is None:
        raise SlurmError(f"{args[0]} is not on this machine's PATH; run cldash on a login node of the SLURM "
                         "cluster (where sbatch and squeue are)")
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=COMMAND_SECONDS, env=env,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise SlurmError(f"{args[0]} did not answer within {COMMAND_SECONDS:g} s") from None
    except OSError as exc:
        raise SlurmError(f"{args[0]} could not be run ({exc.strerror or exc})") from None
    if done.returncode != 0:
        said = (done.stderr.strip() or done.stdout.strip() or f"exit code {done.returncode}").splitlines()
        raise SlurmError(said[0][:500])
    return done.stdout


@register_launcher("slurm")
class SlurmLauncher:
    spec_help = "slurm (or slurm:partition=P,time=T,account=A)"
    title = "a SLURM cluster"

    @classmethod
    def suggested_spec(cls) -> str:
        return "slurm"

    @classmethod
    def from_spec(cls, spec: str) -> SlurmLauncher | None:
        if spec == "slurm" or spec.startswith("slurm:"):
            return cls(**parse_spec(spec))
        return None

    @classmethod
    def for_info(cls, info: dict) -> SlurmLauncher:
        return cls(**{k: info[k] for k in OPTIONS if info.get(k)})

    def __init__(self, partition: str | None = None, time: str | None = None, account: str | None = None):
        self.partition, self.time, self.account = partition, time, account
        options = [f"{k}={v}" for k, v in zip(OPTIONS, (partition, time, account)) if v]
        # what a user wrote to name it, in one order: what the CLI and the pages print as where the runs go
        self.address = "slurm" + (":" + ",".join(options) if options else "")

    # -- the cluster --------------------------------------------------------------------------------
    def _ask(self, args: list[str]) -> str:
        """A SLURM query (sinfo, squeue), refused at once for DOWN_SECONDS after one that did not answer."""
        with _lock:
            down = _down.get("controller")
        if down and time.monotonic() - down[0] < DOWN_SECONDS:
            raise SlurmError(f"{down[1]}; asked again {DOWN_SECONDS:g} s after")
        try:
            return run_slurm(args)
        except SlurmError as exc:
            if "did not answer" in str(exc) or "Unable to contact" in str(exc):
                with _lock:
                    _down["controller"] = (time.monotonic(), str(exc))
            raise

    def nodes(self) -> list[tuple[str, str, float, float]]:
        """The partition's nodes (all of SLURM's without one): (name, host name, CPUs, GPUs)."""
        args = ["sinfo", "-h", "-N", "-o", "%N|%n|%c|%G"] + (["-p", self.partition] if self.partition else [])
        try:
            text = self._ask(args)
        except SlurmError as exc:
            raise UserError(f"cannot ask SLURM for its nodes ({exc}).") from None
        nodes = {}
        for line in text.splitlines():
            parts = line.strip().split("|")
            if len(parts) == 4:
                cpus = float(parts[2]) if parts[2].isdigit() else 0.0
                nodes[parts[0]] = (parts[0], parts[1], cpus, gpu_count(parts[3]))
        if not nodes:
            where = f"partition {self.partition}" if self.partition else "SLURM"
            raise UserError(f"{where} has no nodes (sinfo listed none); check the partition's name with `sinfo`.")
        return list(nodes.values())

    def resources(self, store=None) -> dict:
        nodes = self.nodes()
        return {"nodes": len(nodes), "CPU": float(sum(n[2] for n in nodes)), "GPU": float(sum(n[3] for n in nodes)),
                "limit": None}

    def check_store(self, url: str) -> None:
        """Refuse a SQLite store unless every node of the partition is this machine (see the module's note)."""
        if sqlite_path(url) is None:
            return
        here = {socket.gethostname(), socket.gethostname().split(".")[0], "localhost"}
        others = sorted(n[1] for n in self.nodes() if n[1] not in here and n[1].split(".")[0] not in here)
        if others:
            where = f"partition {self.partition}" if self.partition else "the SLURM cluster"
            raise UserError(f"a SQLite store works only on one host, and {where} has nodes other than this one "
                            f"({', '.join(others[:5])}{', ...' if len(others) > 5 else ''}); use a PostgreSQL "
                            "store that every node can reach (--db postgresql://USER@HOST/DB).")

    def default_gpus(self, backbones: list[str]) -> float:
        """GPUs per run when the user named none: a whole one for a Hugging Face model on a cluster with GPUs,
        else none (SLURM gives whole GPUs, and cldash's tiny backbones train well on a node's CPUs)."""
        if not any(b.startswith("hf:") for b in backbones):
            return 0.0
        return 1.0 if self.resources()["GPU"] else 0.0

    # -- runs -----------------------------------------------------------------------------------------
    def info(self, resources: Resources) -> dict:
        """What a new run row records: the options, the job's name (chosen here, so that the row finds its
        job before sbatch has answered with the job's id) and the resources asked for."""
        if resources.gpus and resources.gpus != int(resources.gpus):
            raise UserError(f"SLURM gives a job whole GPUs; ask for 0, 1 or more GPUs per run (got "
                            f"{resources.gpus:g}).")
        options = {k: v for k, v in zip(OPTIONS, (self.partition, self.time, self.account)) if v}
        return {**options, "job_name": f"cldash-run-{uuid.uuid4().hex[:16]}", "job": None,
                "resources": resources.to_dict()}

    def sbatch_args(self, run_id: int, info: dict, ask: Resources, log) -> list[str]:
        """sbatch's argument list for a run (its command is this python running `cldash execute RUN_ID`)."""
        args = ["sbatch", "--parsable", f"--job-name={info['job_name']}", f"--output={log}", "--open-mode=append",
                "--export=ALL", "--nodes=1", "--ntasks=1", f"--cpus-per-task={max(1, math.ceil(ask.cpus))}"]
        args += [f"--{k}={info[k]}" for k in OPTIONS if info.get(k)]
        if ask.gpus:
            args.append(f"--gres=gpu:{int(ask.gpus)}")
        # exec: the python is the job's batch process, so scancel's SIGTERM reaches the run itself
        args.append(f"--wrap=exec {shlex.quote(sys.executable)} -m cldash execute {int(run_id)}")
        return args

    def submit(self, store, runs: list[dict], resources: Resources | None = None) -> list[int]:
        """Submit each queued run as a SLURM job; a run whose job exists already (a repeated submit) is left as
        it is. A run that sbatch refuses is marked failed with sbatch's sentence."""
        submitted = []
        try:   # a job that sbatch took before the submitting process could record its id is found by its name
            known = self._jobs(sorted({(r.get("launcher_info") or {}).get("job_name") or "" for r in runs} - {""}))
        except SlurmError:
            known = {}   # SLURM does not answer: sbatch will say so for each run
        for run in runs:
            info = dict(run.get("launcher_info") or {})
            if info.get("job") or info.get("job_name") in known:
                continue
            ask = Resources(**info["resources"]) if info.get("resources") else (resources or Resources())
            info.setdefault("job_name", f"cldash-run-{uuid.uuid4().hex[:16]}")
            log = log_path(store, run["id"])
            env = {**os.environ, "CLDASH_DB": store.url, "CLDASH_THREADS": str(max(1, math.ceil(ask.cpus))),
                   "PYTHONUNBUFFERED": "1"}
            if not ask.gpus:   # what a run asks for is what it gets: no GPU that SLURM did not give it
                env["CUDA_VISIBLE_DEVICES"] = ""
            try:
                log.parent.mkdir(parents=True, exist_ok=True)   # sbatch does not create it: the job would fail
                out = run_slurm(self.sbatch_args(run["id"], info, ask, log), env=env)
            except (SlurmError, OSError) as exc:
                store.update_run(run["id"], status="failed", finished_at=time.time(),
                                 error=f"could not submit the run to SLURM: {exc}")
                continue
            info.update(job=out.strip().split(";")[0], log=str(log))
            store.update_run(run["id"], launcher_info=info)
            submitted.append(run["id"])
        return submitted

    def cancel(self, store, run: dict, timeout: float = 2.0) -> None:
        """scancel: SIGTERM to the job (the run records itself as cancelled), SIGKILL after SLURM's KillWait."""
        info = run.get("launcher_info") or {}
        target = [str(info["job"])] if info.get("job") else [f"--name={info['job_name']}"] if info.get("job_name") \
            else []
        if target:
            try:
                run_slurm(["scancel", *target])
            except SlurmError:
                pass   # SLURM unreachable, or the job is gone: the row's cancel request remains

    def _jobs(self, names: list[str]) -> dict[str, tuple[str, str, str]]:
        """squeue's answer for these job names: every job the controller remembers, ended ones included."""
        if not names:
            return {}
        return parse_squeue(self._ask(["squeue", "-h", "-a", "-t", "all", "-o", "%i|%j|%T|%r",
                                       f"--name={','.join(names)}"]))

    def states(self, runs: list[dict]) -> dict[int, JobState]:
        """Each run's job state, from one squeue, then scontrol (an ended job's exit code and reason) and sacct
        (a job the controller has forgotten)."""
        infos = {r["id"]: r.get("launcher_info") or {} for r in runs}
        try:
            jobs = self._jobs(sorted({i["job_name"] for i in infos.values() if i.get("job_name")}))
        except SlurmError as exc:
            return {r["id"]: JobState("unknown", f"SLURM did not answer ({exc})") for r in runs}
        out, forgotten = {}, {}
        for rid, info in infos.items():
            found = jobs.get(info.get("job_name", ""))
            if found is None:
                if info.get("job"):
                    forgotten[rid] = str(info["job"])
                else:
                    out[rid] = JobState("missing", f"SLURM has no job named {info.get('job_name')}")
                continue
            job, state, reason = found
            if state in PENDING or state in RUNNING:
                out[rid] = job_state(state, reason)
                continue
            try:
                fields = parse_scontrol(run_slurm(["scontrol", "show", "job", "-o", job]))
            except SlurmError:
                fields = {}
            out[rid] = job_state(fields.get("JobState", state), fields.get("Reason", reason),
                                 fields.get("ExitCode", ""))
        out.update(self._from_accounting(forgotten))
        return out

    def _from_accounting(self, jobs: dict[int, str]) -> dict[int, JobState]:
        """sacct's record of jobs the controller no longer lists; missing where there is none (no accounting)."""
        if not jobs:
            return {}
        try:
            found = parse_sacct(run_slurm(["sacct", "-n", "-P", "-X", "-o", "JobID,State,ExitCode",
                                           "-j", ",".join(sorted(set(jobs.values())))]))
            why = "and sacct has no record of it"
        except SlurmError as exc:
            found, why = {}, f"and sacct cannot say how it ended: {exc}"
        out = {}
        for rid, job in jobs.items():
            if job in found and found[job][0]:
                out[rid] = job_state(found[job][0], "", found[job][1])
            else:
                out[rid] = JobState("missing", f"SLURM no longer knows job {job} (the controller forgets an ended "
                                               f"job after its MinJobAge, {why})")
        return out

    def status(self, store, run: dict) -> JobState:
        return self.states([run])[run["id"]]

    def logs(self, store, run: dict, tail: int = 200) -> str:
        info = run.get("launcher_info") or {}
        if not info.get("log"):
            return f"run {run['id']} has no SLURM job yet, so no log."
        try:
            return tail_lines(info["log"], tail) or f"run {run['id']} (SLURM job {info['job']}) has written nothing " \
                                                    "to its log yet."
        except FileNotFoundError:
            return (f"run {run['id']} has no log yet at {info['log']}: its SLURM job {info['job']} has not started, "
                    "or this machine does not share that folder with the node that runs it.")
        except OSError as exc:
            return f"cannot read the log of run {run['id']} at {info['log']}: {exc.strerror or exc}."


def gpu_count(gres: str) -> float:
    """The GPUs in sinfo's %G field: ``gpu:4``, ``gpu:a100:2(S:0-1)``, ``gpu:2,shard:8``; ``(null)`` for none."""
    total = 0
    for item in gres.split(","):
        parts = re.sub(r"\(.*?\)", "", item).split(":")
        if parts[0] == "gpu" and len(parts) > 1 and parts[-1].isdigit():
            total += int(parts[-1])
    return float(total)

