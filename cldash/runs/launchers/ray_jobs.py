"""The Ray launcher: each run is a Ray job, submitted through Ray Jobs' JobSubmissionClient.

Why Ray Jobs, not Ray tasks or actors: a run is already a process with an entrypoint (``python -m
cldash execute RUN_ID``), and Ray Jobs is Ray's official API for exactly that. A job outlives the
process that submitted it (a `cldash sweep` exits, a dashboard restarts; a task or a non-detached
actor dies with its driver), it is addressed by a submission id that we choose and store on the run
row, so any process can ask for its status, its logs or its stop, and it takes the resources it needs
(``entrypoint_num_cpus``, ``entrypoint_num_gpus``, fractional: eight tiny runs share one GPU at 0.125)
from Ray's scheduler, which queues what does not fit. Stopping a job sends SIGTERM to its process tree
(the run records itself as cancelled) and SIGKILL a few seconds later.

The run writes to the store directly, so the store must be one that every node can reach: a PostgreSQL
URL. A SQLite file cannot be shared across hosts, and a cluster of more than one node (or one node on
another host) with a SQLite store is refused in one sentence.

The store's URL reaches the run in its environment (CLDASH_DB, in the job's runtime_env), never on its
command line; Ray keeps a job's runtime_env in its job table, which users of the Ray dashboard can read.

Addresses: ``ray://HEAD:10001`` (Ray Client's port: the dashboard on HEAD's default port 8265 is tried first,
else Ray Client resolves it, about 3 s once per process) or ``http://HEAD:8265`` (the dashboard's own).
The python that runs on the nodes is ``python`` on their PATH, as `ray start` found it, or CLDASH_RAY_PYTHON.
"""

from __future__ import annotations

import os
import shlex
import socket
import threading
import time
import uuid
from urllib.parse import urlsplit

from cldash.core.errors import UserError
from cldash.runs.launchers.base import JobState, Resources, register_launcher
from cldash.store import sqlite_path

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
PROBE_SECONDS = 1.0   # a cluster that does not accept a connection within this is unreachable
DOWN_SECONDS = 10.0   # ... and is not asked again for this long (reconcile runs on every refresh)

_clients: dict[str, object] = {}
_down: dict[str, tuple[float, str]] = {}
_lock = threading.Lock()


class Unreachable(Exception):
    pass


def _ended_message(info) -> str:
    parts = [str(getattr(info, "status", "")).rsplit(".", 1)[-1]]
    message = (getattr(info, "message", "") or "").strip()
    if message:
        parts.append(message.splitlines()[0][:300])
    code = getattr(info, "driver_exit_code", None)
    if code is not None and "exit code" not in message:
        parts.append(f"exit code {code}")
    return ": ".join(parts[:1] + ["; ".join(parts[1:])]) if len(parts) > 1 else parts[0]


@register_launcher("ray")
class RayLauncher:
    spec_help = "a Ray cluster's address: ray://HEAD:10001 or http://HEAD:8265"
    title = "a Ray cluster"

    @classmethod
    def suggested_spec(cls) -> str:
        return os.environ.get("RAY_ADDRESS", "ray://127.0.0.1:10001")

    @classmethod
    def from_spec(cls, spec: str) -> RayLauncher | None:
        """`ray` (the cluster named by RAY_ADDRESS, else the local one), `ray://HEAD:10001` (a Ray Client
        address) or `http://HEAD:8265` (a Ray dashboard address)."""
        if spec == "ray" or spec.startswith(("ray://", "http://", "https://")):
            return cls(None if spec == "ray" else spec)
        return None

    @classmethod
    def for_info(cls, info: dict) -> RayLauncher:
        return cls(info.get("address"))

    def __init__(self, address: str | None = None):
        self.address = (address or os.environ.get("RAY_ADDRESS") or DEFAULT_ADDRESS).strip().rstrip("/")
        parts = urlsplit(self.address if "://" in self.address else f"ray://{self.address}")
        if not parts.hostname:
            raise UserError(f"the Ray address {self.address!r} names no host; write ray://HEAD:10001 or "
                            "http://HEAD:8265.")
        self.host = parts.hostname
        self.port = parts.port or (10001 if parts.scheme == "ray" else 8265)

    # -- the cluster --------------------------------------------------------------------------------
    def client(self):
        """Ray's JobSubmissionClient for this cluster (one per address and process); Unreachable when the
        cluster does not answer (asked again after DOWN_SECONDS)."""
        with _lock:
            if self.address in _clients:
                return _clients[self.address]
            down = _down.get(self.address)
            if down and time.monotonic() - down[0] < DOWN_SECONDS:
                raise Unreachable(down[1])
            # a ray:// (Ray Client) address is tried first as the same host's dashboard on its default port: that
            # is where Ray Client would send us, without opening a Ray Client session on the head (a process
            # there, about 3 s, and under load it can fail to start); Ray Client resolves it otherwise
            tries = ([(self.host, 8265, f"http://{self.host}:8265")] if self.address.startswith("ray://") else []) \
                + [(self.host, self.port, self.address)]
            client, reason = None, ""
            for host, port, address in tries:
                try:   # a bare TCP probe first: Ray's client has no timeout of its own for a host that is down
                    socket.create_connection((host, port), timeout=PROBE_SECONDS).close()
                except OSError as exc:
                    reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
                    continue
                # Ray only once something answers: a cluster that is down reads the same with or without Ray here
                client_class = _job_submission_client()
                try:
                    client = client_class(address)
                    break
                except Exception as exc:  # noqa: BLE001 - refused, timed out, not a Ray head: the same to a user
                    reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            if client is None:
                _down[self.address] = (time.monotonic(), reason)
                raise Unreachable(reason)
            _clients[self.address] = client
            return client

    def _client_or_error(self):
        try:
            return self.client()
        except Unreachable as exc:
            raise UserError(f"cannot reach the Ray cluster at {self.address} ({exc}); start one with `ray start "
                            "--head`, or check the address (ray://HEAD:10001 or http://HEAD:8265).") from None

    def nodes(self) -> list:
        client = self._client_or_error()   # first: it says in one sentence when Ray is not installed
        from ray.util.state import list_nodes  # deferred: Ray is an extra (cldash[ray])

        return [n for n in list_nodes(address=client.get_address(), limit=10_000) if n.state == "ALIVE"]

    def resources(self, store=None) -> dict:
        nodes = self.nodes()
        total = lambda key: float(sum((n.resources_total or {}).get(key, 0.0) for n in nodes))  # noqa: E731
        return {"nodes": len(nodes), "CPU": total("CPU"), "GPU": total("GPU"), "limit": None}

    def check_store(self, url: str) -> None:
        """Refuse a store (its URL) that the cluster's nodes cannot all reach: a SQLite file on a cluster of
        several nodes, or of one node on another host."""
        if sqlite_path(url) is None:
            return
        nodes = self.nodes()
        if len(nodes) > 1:
            raise UserError(f"a SQLite file cannot be shared across hosts, and the Ray cluster at {self.address} "
                            f"has {len(nodes)} nodes; use a PostgreSQL store that every node can reach "
                            "(--db postgresql://USER@HOST/DB).")
        if nodes and nodes[0].node_ip not in _local_addresses():
            raise UserError(f"a SQLite file cannot be shared across hosts, and the Ray cluster at {self.address} "
                            f"runs on another host ({nodes[0].node_ip}); use a PostgreSQL store that it can reach "
                            "(--db postgresql://USER@HOST/DB).")

    def default_gpus(self, backbones: list[str]) -> float:
        """GPUs per run when the user named none: none on a cluster without GPUs; else 1/8 of one for cldash's
        own tiny backbones (eight share a GPU) and a whole one for a Hugging Face model."""
        if not self.resources()["GPU"]:
            return 0.0
        return 1.0 if any(b.startswith("hf:") for b in backbones) else 0.125

    # -- runs -----------------------------------------------------------------------------------------
    def info(self, resources: Resources) -> dict:
        """What a new run row records: the cluster, the job's submission id (chosen here, so the row and the
        job agree before the job exists) and the resources asked for."""
        return {"address": self.address, "job": f"cldash-run-{uuid.uuid4().hex[:16]}",
                "resources": resources.to_dict()}

    def submit(self, store, runs: list[dict], resources: Resources | None = None) -> list[int]:
        """Submit each queued run as a Ray job; a run whose job exists already (a repeated submit) is left as
        it is. A run that cannot be submitted is marked failed with the reason."""
        client = self._client_or_error()
        python = os.environ.get("CLDASH_RAY_PYTHON", "python")
        submitted = []
        for run in runs:
            info = run.get("launcher_info") or {}
            ask = Resources(**info.get("resources", {})) if info.get("resources") else (resources or Resources())
            env = {"CLDASH_DB": store.url, "CLDASH_THREADS": str(max(1, int(ask.cpus))), "PYTHONUNBUFFERED": "1"}
            if not ask.gpus:   # what a run asks for is what it gets: no GPU that Ray does not count
                env["CUDA_VISIBLE_DEVICES"] = ""
            try:
                client.submit_job(
                    entrypoint=f"{shlex.quote(python)} -m cldash execute {int(run['id'])}",
                    submission_id=info["job"], entrypoint_num_cpus=ask.cpus,
                    entrypoint_num_gpus=ask.gpus or None, runtime_env={"env_vars": env},
                    metadata={"cldash_run": str(run["id"]), "cldash_store": store.display})
            except Exception as exc:  # noqa: BLE001 - Ray raises RuntimeError for every refusal
                text = str(exc)
                if "already exists" in text:
                    continue
                store.update_run(run["id"], status="failed", finished_at=time.time(),
                                 error=f"could not submit the run to the Ray cluster at {self.address}: "
                                       f"{text.splitlines()[0][:500] if text else type(exc).__name__}")
                continue
            submitted.append(run["id"])
        return submitted

    def cancel(self, store, run: dict, timeout: float = 2.0) -> None:
        """Ray's own stop (SIGTERM to the job's processes, SIGKILL after RAY_JOB_STOP_WAIT_TIME_S)."""
        job = (run.get("launcher_info") or {}).get("job")
        if not job:
            return
        try:
            self.client().stop_job(job)
        except Exception:  # noqa: BLE001 - unreachable, or no such job: the row's cancel request remains
            pass

    def states(self, runs: list[dict]) -> dict[int, JobState]:
        """Each run's job state, from one listing of the cluster's jobs."""
        try:
            jobs = {j.submission_id: j for j in self.client().list_jobs()}
        except Unreachable as exc:
            return {r["id"]: JobState("unknown", f"the Ray cluster at {self.address} is unreachable ({exc})")
                    for r in runs}
        except Exception as exc:  # noqa: BLE001
            return {r["id"]: JobState("unknown", f"the Ray cluster at {self.address} did not answer ({exc})")
                    for r in runs}
        out = {}
        for r in runs:
            job = jobs.get((r.get("launcher_info") or {}).get("job"))
            if job is None:
                out[r["id"]] = JobState("missing", f"the Ray cluster at {self.address} has no job "
                                                   f"{(r.get('launcher_info') or {}).get('job')}")
                continue
            status = str(job.status).rsplit(".", 1)[-1].upper()
            if status == "PENDING":
                out[r["id"]] = JobState("pending")
            elif status == "RUNNING":
                out[r["id"]] = JobState("running")
            else:
                out[r["id"]] = JobState("ended", _ended_message(job))
        return out

    def status(self, store, run: dict) -> JobState:
        return self.states([run])[run["id"]]

    def logs(self, store, run: dict, tail: int = 200) -> str:
        job = (run.get("launcher_info") or {}).get("job")
        try:
            text = self.client().get_job_logs(job)
        except Unreachable as exc:
            return f"cannot reach the Ray cluster at {self.address} for the log of run {run['id']} ({exc})."
        except Exception as exc:  # noqa: BLE001
            return f"the Ray cluster at {self.address} has no log of run {run['id']} (job {job}): {exc}"
        lines = text.splitlines(keepends=True)[-max(1, tail):]
        return "".join(lines) or f"run {run['id']} (Ray job {job}) has written nothing to its log yet."


def _job_submission_client():
    try:
        from ray.job_submission import JobSubmissionClient  # deferred: Ray is an extra (cldash[ray])
    except ImportError:
        raise UserError("the Ray launcher needs Ray: pip install 'cldash[ray]' (ray[default]), on this "
                        "machine and on the cluster's nodes.") from None
    return JobSubmissionClient


def _local_addresses() -> set[str]:
    out = {"127.0.0.1", "::1"}
    try:
        import psutil  # deferred: comes with Ray, an extra

        for addrs in psutil.net_if_addrs().values():
            out.update(a.address for a in addrs)
    except ImportError:
        try:
            out.update(socket.gethostbyname_ex(socket.gethostname())[2])
        except OSError:
            pass
    return out
