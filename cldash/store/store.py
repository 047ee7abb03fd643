"""The Store: one run store opened (its schema checked and brought to the head), and everything the
engine, the launchers and the dashboard ask of it: run rows created, claimed, updated, forked and
deleted; a run's structure; its series read back as frames; accuracy matrices; orders; settings.

The Store is one class, not readers apart from writers: the run-row writes and the reads share the
engine, the one way a refused write is worded (`Store._writing`), and the messages that name the store.
A run's own buffered rows go through `Store.writer` (cldash.store.writer).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import socket
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import ArgumentError, DatabaseError, DBAPIError, OperationalError

import cldash.store.migrations as migrations
from cldash.core.errors import StoreWriteError, UserError
from cldash.store.artifacts import SETTING as ARTIFACTS_SETTING, Artifacts, chosen, open_location
from cldash.store.refusals import write_failure
from cldash.store.schema import (
    Evaluation,
    Meta,
    ModuleRow,
    OrderRow,
    Run,
    Scalar,
    Spectrum,
    TaskRow,
    TuningLog,
    _j,
    _now,
)
from cldash.store.urls import _engine, display_of, mask_in, sqlite_path, to_url
from cldash.store.writer import FLUSH_SECONDS, RunWriter

if TYPE_CHECKING:   # pandas is imported by the readers that make frames: a run's process only writes, and
    import pandas as pd  # importing pandas was a tenth of the time before its first step

_READY: set = set()   # stores this process has already found at the head revision


def _schema_token(url: str):
    """A SQLite file deleted and re-created is checked again (its inode changes)."""
    path = sqlite_path(url)
    if path is not None:
        try:
            return url, os.stat(path).st_ino
        except OSError:
            return url, None
    return url


class Store:
    """One run store (database). Cheap to create: engines are cached per URL, and a store found at
    the head revision once is not checked again in this process.

    Opening applies pending schema upgrades (cldash.store.migrations); ``migrate=False`` opens without
    them, for `cldash db current` (reading a store at an older revision may then fail).
    """

    def __init__(self, db: str | os.PathLike | None = None, *, migrate: bool = True):
        self.url = to_url(db)
        self.refused: str | None = None   # why the last write was refused (a read-only store, a full disk)
        try:
            self.engine = _engine(self.url)
            if _schema_token(self.url) not in _READY and migrations.ensure(self, migrate) == migrations.HEAD:
                _READY.add(_schema_token(self.url))
        except UserError:
            raise
        except (ArgumentError, ValueError) as exc:   # ValueError: make_url's, for a port that is not a number
            raise UserError(f"cannot open the run store {self.display}: not a valid database URL "
                            f"({self.mask(str(exc))}).") from None
        except ModuleNotFoundError as exc:
            raise UserError(f"cannot open the run store {self.display}: its database driver is not installed "
                            f"({exc.name}).") from None
        except (OperationalError, DatabaseError) as exc:
            reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
            raise UserError(f"cannot open the run store {self.display}: {self.mask(reason)}.") from None

    @property
    def display(self) -> str:
        """The store as messages name it: a SQLite file's path, else the URL with its password masked."""
        return display_of(self.url)

    def mask(self, text: str) -> str:
        """`text` with this store's URL shown as `display` and its password masked wherever it appears."""
        return mask_in(text, self.url)

    @contextlib.contextmanager
    def _writing(self):
        """Turn a write the store refuses (read-only, a full disk) into one sentence (StoreWriteError)."""
        try:
            yield
        except (DBAPIError, OSError) as exc:
            reason = write_failure(exc)
            if reason is None:
                raise
            self.refused = f"cannot write to the run store {self.display}: {self.mask(reason)}"
            raise StoreWriteError(self.refused + ".", self.mask(reason)) from None

    # -- runs ---------------------------------------------------------------------------------
    def create_run(self, config: dict, *, status: str = "queued", launch_key: str | None = None,
                   group_key: str | None = None, name: str = "", launcher: str = "local",
                   pid: int | None = None, host: str | None = None, launcher_info: dict | None = None,
                   priority: int = 0) -> int:
        """Insert a run row. With a `launch_key` already used, returns the existing run (idempotent).

        `launcher` "cli" is a foreground `cldash run`: its row is created owned by its process (`pid`,
        `host` in the same INSERT), so there is no moment when the scheduler could take it for a
        queued background run, and reconcile can end it if the process dies before claiming it.
        The run records its artifact location (`artifact_location`) unless it is the default. `priority` orders
        the local queue (cldash.runs.priority: 0 interactive, 1 batch).
        """
        location = self.artifact_location()[0]   # before the INSERT: a bad location stores nothing
        with self._writing(), self.engine.begin() as conn:
            if launch_key:
                found = conn.execute(select(Run.id).where(Run.launch_key == launch_key)).first()
                if found:
                    return found[0]
            result = conn.execute(insert(Run).values(
                launch_key=launch_key, group_key=group_key, name=name or config.get("name") or "",
                method=config["method"], stream=config["stream"], backbone=config["backbone"],
                policy=config.get("policy"), seed=config["seed"], config=_j(config), status=status,
                launcher=launcher, pid=pid, host=host, created_at=_now(), artifacts=location, priority=priority,
                launcher_info=_j(launcher_info) if launcher_info else None))
            return result.inserted_primary_key[0]

    def update_run(self, run_id: int, **fields) -> None:
        for key in ("versions", "summary", "weights", "launcher_info", "runtime"):
            if key in fields and not isinstance(fields[key], (str, type(None))):
                fields[key] = _j(fields[key])
        with self._writing(), self.engine.begin() as conn:
            conn.execute(update(Run).where(Run.id == run_id).values(**fields))

    def claim(self, run_id: int, *, pid: int, host: str | None = None) -> bool:
        """Atomically move a queued run to running under this process; False if someone else has it."""
        with self._writing(), self.engine.begin() as conn:
            res = conn.execute(update(Run).where(Run.id == run_id, Run.status == "queued").values(
                status="running", pid=pid, host=host or socket.gethostname(), started_at=_now(),
                heartbeat_at=_now()))
            return res.rowcount == 1

    def get_run(self, run_id: int) -> dict:
        with self.engine.connect() as conn:
            row = conn.execute(select(Run).where(Run.id == run_id)).mappings().first()
        if row is None:
            raise UserError(f"there is no run {run_id} in {self.display}; `cldash list` shows the runs.")
        return _run_dict(row)

    def runs(self, status: Iterable[str] | None = None, method: str | None = None,
             stream: str | None = None, ids: Iterable[int] | None = None) -> list[dict]:
        q = select(Run).order_by(Run.id)
        if ids is not None:
            q = q.where(Run.id.in_([int(i) for i in ids]))
        if status:
            q = q.where(Run.status.in_(list(status)))
        if method:
            q = q.where(Run.method == method)
        if stream:
            q = q.where(Run.stream == stream)
        with self.engine.connect() as conn:
            return [_run_dict(r) for r in conn.execute(q).mappings()]

    def run_ids_for_launch_keys(self, keys: Iterable[str]) -> dict[str, int]:
        """The runs already stored under these launch keys: {key: run id} (a sweep's plan)."""
        keys, out = list(keys), {}
        with self.engine.connect() as conn:
            for i in range(0, len(keys), 500):   # bounded IN lists
                out.update({k: rid for k, rid in conn.execute(
                    select(Run.launch_key, Run.id).where(Run.launch_key.in_(keys[i:i + 500])))})
        return out

    def delete_run(self, run_id: int) -> None:
        """Remove a run and every row that belongs to it, in one transaction (and its saved adapters and
        checkpoints)."""
        files = self.artifacts(run_id)
        with self._writing(), self.engine.begin() as conn:
            for table in (Spectrum, Scalar, Evaluation, ModuleRow, TaskRow):
                conn.execute(delete(table).where(table.run_id == run_id))
            conn.execute(delete(Run).where(Run.id == run_id))
        for remove, path in ((files.remove, files.adapter_file(run_id)),
                             (files.remove_tree, files.checkpoint_dir(run_id))):
            with contextlib.suppress(OSError):   # the rows are gone; files left where they cannot be reached are inert
                remove(path)

    # -- artifacts: checkpoints and saved adapters (cldash.store.artifacts) -------------------------
    def artifact_location(self) -> tuple[str | None, str]:
        """Where a new run's checkpoints and adapters go, and why: (location, "--artifacts" | "$CLDASH_ARTIFACTS"
        | "the store's setting"), or (None, "default") for the store's default place. The setting is read only
        when neither of the others is given."""
        return chosen(lambda: self.get_setting(ARTIFACTS_SETTING))

    def artifacts(self, run_id: int) -> Artifacts:
        """The artifact location of a run's files: the one it recorded when it was created, else the default."""
        with self.engine.connect() as conn:
            location = conn.execute(select(Run.artifacts).where(Run.id == run_id)).scalar()
        return open_location(self.url, location)

    def truncate_after(self, run_id: int, after_step: int, **run_fields) -> None:
        """Delete the run's evaluations, scalars and spectra after `after_step` and update its row, in one
        transaction (a resume replaces what the interrupted task wrote)."""
        with self._writing(), self.engine.begin() as conn:
            for table in (Spectrum, Scalar, Evaluation):
                conn.execute(delete(table).where(table.run_id == run_id, table.step > after_step))
            conn.execute(update(Run).where(Run.id == run_id).values(**run_fields))

    def copy_rows(self, source: int, target: int, through_step: int) -> None:
        """Copy a run's evaluations, scalars and spectra up to `through_step`, and its task and module rows,
        to another run, in one transaction (a fork shares its parent's rows up to the fork point)."""
        with self._writing(), self.engine.begin() as conn:
            for table in (TaskRow, ModuleRow, Evaluation, Scalar, Spectrum):
                cols = [c for c in table.__table__.columns if c.name not in ("id", "run_id")]
                q = select(*cols).where(table.run_id == source)
                if hasattr(table, "step"):
                    q = q.where(table.step <= through_step)
                rows = [{"run_id": target, **dict(zip([c.name for c in cols], r))} for r in conn.execute(q)]
                if rows:
                    conn.execute(insert(table), rows)

    # -- static run structure -------------------------------------------------------------------
    def write_structure(self, run_id: int, tasks: list[dict], modules: list[dict]) -> None:
        with self._writing(), self.engine.begin() as conn:
            conn.execute(delete(TaskRow).where(TaskRow.run_id == run_id))
            conn.execute(delete(ModuleRow).where(ModuleRow.run_id == run_id))
            if tasks:
                conn.execute(insert(TaskRow), [{"run_id": run_id, **t} for t in tasks])
            if modules:
                conn.execute(insert(ModuleRow), [{"run_id": run_id, **m} for m in modules])

    def tasks(self, run_id: int) -> pd.DataFrame:
        return self._frame(select(TaskRow).where(TaskRow.run_id == run_id).order_by(TaskRow.position))

    def modules(self, run_id: int) -> pd.DataFrame:
        return self._frame(select(ModuleRow).where(ModuleRow.run_id == run_id))

    # -- series ---------------------------------------------------------------------------------
    def evaluations(self, run_id: int, since_step: int | None = None, final: bool | None = None) -> pd.DataFrame:
        q = select(Evaluation).where(Evaluation.run_id == run_id)
        if since_step is not None:
            q = q.where(Evaluation.step > since_step)
        if final is not None:
            q = q.where(Evaluation.final == final)
        return self._frame(q.order_by(Evaluation.step, Evaluation.task))

    def scalars(self, run_id: int, names: Iterable[str] | None = None, since_step: int | None = None,
                module: str | None = None) -> pd.DataFrame:
        q = select(Scalar.step, Scalar.name, Scalar.module, Scalar.value).where(Scalar.run_id == run_id)
        if names is not None:
            q = q.where(Scalar.name.in_(list(names)))
        if module is not None:
            q = q.where(Scalar.module == module)
        if since_step is not None:
            q = q.where(Scalar.step > since_step)
        return self._frame(q.order_by(Scalar.step))

    def spectra(self, run_id: int, module: str | None = None, kind: str | None = None,
                since_step: int | None = None, with_values: bool = True, step: int | None = None,
                steps: Iterable[int] | None = None) -> pd.DataFrame:
        cols = [c for c in Spectrum.__table__.columns if c.name not in ("id", "run_id")]
        if not with_values:
            cols = [c for c in cols if c.name != "values"]
        q = select(*cols).where(Spectrum.run_id == run_id)
        if module is not None:
            q = q.where(Spectrum.module == module)
        if kind is not None:
            q = q.where(Spectrum.kind == kind)
        if since_step is not None:
            q = q.where(Spectrum.step > since_step)
        if step is not None:
            q = q.where(Spectrum.step == step)
        if steps is not None:
            q = q.where(Spectrum.step.in_([int(x) for x in steps]))
        df = self._frame(q.order_by(Spectrum.step, Spectrum.module))
        if with_values and len(df):
            df["values"] = [np.frombuffer(b, dtype=np.float32) for b in df["values"]]
        return df

    def accuracy_matrix(self, run_id: int, metric: str | None = None) -> dict:
        """R from the final evaluations: {"R": (rows x T) array, "general": {name: column},
        "rows": trained-through indices present, "tasks": names, "metric": metric}.

        Rows are 0..i for the tasks finished so far; a row is complete only once its task ended.
        """
        return self.accuracy_matrices([run_id], metric)[run_id]

    def accuracy_matrices(self, run_ids: Iterable[int], metric: str | None = None) -> dict[int, dict]:
        """`accuracy_matrix` for many runs in three queries (the compare page draws 50 at once)."""
        ids = [int(i) for i in run_ids]
        runs = {r["id"]: r for r in self.runs(ids=ids)}
        missing = [i for i in ids if i not in runs]
        if missing:
            raise UserError(f"there is no run {missing[0]} in {self.display}; `cldash list` shows the runs.")
        tasks = self._frame(select(TaskRow).where(TaskRow.run_id.in_(ids)))
        ev = self._frame(select(Evaluation.run_id, Evaluation.trained_through, Evaluation.task, Evaluation.metric,
                                Evaluation.value).where(Evaluation.run_id.in_(ids), Evaluation.final.is_(True)))
        out = {}
        for i in ids:
            m = metric or runs[i]["primary_metric"]
            t = tasks[tasks.run_id == i] if len(tasks) else tasks
            e = ev[(ev.run_id == i) & (ev.metric == m)] if len(ev) else ev
            out[i] = build_matrix(t, e, m)
        return out

    def final_evaluations(self, run_ids: Iterable[int]) -> pd.DataFrame:
        ids = [int(i) for i in run_ids]
        return self._frame(select(Evaluation).where(Evaluation.run_id.in_(ids), Evaluation.final.is_(True)))

    def spectrum_index(self, run_id: int) -> pd.DataFrame:
        """Which (module, kind) series a run has, with their number of logged steps."""
        q = (select(Spectrum.module, Spectrum.kind, func.count().label("steps"), func.max(Spectrum.step).label("last"))
             .where(Spectrum.run_id == run_id).group_by(Spectrum.module, Spectrum.kind))
        return self._frame(q)

    def spectra_at(self, run_ids: Iterable[int], kind: str, step: int | None = None,
                   module: str | None = None) -> pd.DataFrame:
        """Each run's spectra of one kind at `step` (or at its last logged step), all or one module."""
        ids = [int(i) for i in run_ids]
        frames = []
        for rid in ids:
            q = select(func.max(Spectrum.step)).where(Spectrum.run_id == rid, Spectrum.kind == kind)
            if step is not None:
                q = q.where(Spectrum.step <= step)
            with self.engine.connect() as conn:
                at = conn.execute(q).scalar()
            if at is None:
                continue
            df = self.spectra(rid, module=module, kind=kind, step=at)
            df.insert(0, "run_id", rid)
            frames.append(df)
        import pandas as pd  # deferred: only the readers make frames (see TYPE_CHECKING above)

        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def scalar_names(self, run_id: int) -> pd.DataFrame:
        """The scalar series a run has: name, whether per module, and the number of points."""
        q = (select(Scalar.name, (func.max(Scalar.module) != "").label("per_module"), func.count().label("points"))
             .where(Scalar.run_id == run_id).group_by(Scalar.name))
        return self._frame(q)

    # -- adversarial orders ------------------------------------------------------------------------
    def save_order(self, result: dict) -> int:
        """Store one `cldash.analysis.orders.measure` result; returns its id."""
        config = {k: result[k] for k in ("stream_options", "backbone_options", "targets", "modules", "batches",
                                         "batch_size", "seed") if k in result}
        with self._writing(), self.engine.begin() as conn:
            res = conn.execute(insert(OrderRow).values(
                stream=result["stream"], backbone=result["backbone"], config=_j(config), tasks=_j(result["tasks"]),
                matrix=_j(result["matrix"]), order=_j(result["order"]), cost=result["cost"],
                natural_cost=result["natural_cost"], ordered_options=_j(result["ordered_options"]),
                created_at=_now()))
            return res.inserted_primary_key[0]

    def orders(self) -> list[dict]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(OrderRow).order_by(OrderRow.id)).mappings().all()
        return [_order_dict(r) for r in rows]

    def get_order(self, order_id: int) -> dict:
        with self.engine.connect() as conn:
            row = conn.execute(select(OrderRow).where(OrderRow.id == order_id)).mappings().first()
        if row is None:
            raise UserError(f"there is no order {order_id} in {self.display}; `cldash order --list` shows them.")
        return _order_dict(row)

    # -- settings shared by the dashboard and the run processes ----------------------------------
    def get_setting(self, key: str, default: str | None = None) -> str | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(Meta.value).where(Meta.key == f"setting:{key}")).first()
        return row[0] if row else default

    def set_setting(self, key: str, value: str) -> None:
        with self._writing(), self.engine.begin() as conn:
            conn.execute(delete(Meta).where(Meta.key == f"setting:{key}"))
            conn.execute(insert(Meta).values(key=f"setting:{key}", value=str(value)))

    # -- Optuna's journal of the tuning searches (cldash.analysis.tuning) --------------------------
    def append_tuning_log(self, logs: list[dict]) -> None:
        """Append journal operations in one transaction (their ids keep the order they were written in)."""
        if logs:
            with self._writing(), self.engine.begin() as conn:
                conn.execute(insert(TuningLog), [{"log": json.dumps(entry)} for entry in logs])

    def tuning_log(self, since: int = 0) -> list[dict]:
        """The journal's operations from the `since`-th on (0-based), oldest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(TuningLog.log).order_by(TuningLog.id).offset(since)).all()
        return [json.loads(r[0]) for r in rows]

    def settings_with_prefix(self, prefix: str) -> dict[str, str]:
        """Every setting whose key starts with `prefix`, by key (the prefix kept)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(Meta.key, Meta.value).where(Meta.key.startswith(f"setting:{prefix}"))).all()
        return {k.removeprefix("setting:"): v for k, v in rows}

    def run_choices(self) -> list[tuple[int, int, str]]:
        """Every run's (id, seed, config as its JSON text), in id order: what a list of run labels needs, in one
        light query (the sidebar's, on every page) instead of every run row with its JSON parsed."""
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(select(Run.id, Run.seed, Run.config).order_by(Run.id)).all()]

    def status_counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(Run.status, func.count()).group_by(Run.status)).all()
        return {status: n for status, n in rows}

    def _frame(self, query) -> pd.DataFrame:
        import pandas as pd  # deferred: only the readers make frames (see TYPE_CHECKING above)

        with self.engine.connect() as conn:
            result = conn.execute(query)
            return pd.DataFrame(result.fetchall(), columns=list(result.keys()))

    def writer(self, run_id: int, flush_seconds: float | None = None) -> RunWriter:
        return RunWriter(self, run_id, FLUSH_SECONDS if flush_seconds is None else flush_seconds)

    # -- the dashboard at sweep scale (issue 13): groups, and matrices of runs already read ---------------
    def run_groups(self) -> list[tuple[str, int]]:
        """Every run group (runs.group_key: "sweep:NAME", "claims", a launch's key) with its number of runs,
        the group of the newest run first; one query, no run row read."""
        newest = func.max(Run.id)
        q = (select(Run.group_key, func.count(), newest).where(Run.group_key.is_not(None))
             .group_by(Run.group_key).order_by(newest.desc()))
        with self.engine.connect() as conn:
            return [(key, n) for key, n, _ in conn.execute(q).all()]

    def run_listing(self) -> list[dict]:
        """Every run as the Runs page lists it: the run row without its config and versions, the summary,
        weights and runtime parsed, and the config's preset as "regime" ("common" without one). Parsing each
        config's JSON for that one key was most of the cost of listing 1,000 runs; a config is parsed
        once per process (a run's config text does not change)."""
        cols = [c for c in Run.__table__.columns if c.name not in ("config", "versions")]
        with self.engine.connect() as conn:
            rows = conn.execute(select(*cols, Run.config).order_by(Run.id)).all()
        names = [c.name for c in cols]
        out = []
        for row in rows:
            d = dict(zip(names, row[:-1]))
            for key in ("summary", "weights", "runtime"):
                d[key] = json.loads(d[key]) if d[key] else None
            d["launcher_info"] = json.loads(d["launcher_info"]) if d["launcher_info"] else {}
            d["regime"] = Store._preset(row[-1])
            out.append(d)
        return out

    @staticmethod
    @functools.lru_cache(maxsize=8192)
    def _preset(config: str) -> str:
        return (json.loads(config) if config else {}).get("preset") or "common"

    def latest_run_ids(self, limit: int) -> list[int]:
        """The ids of the `limit` newest runs, in id order (without reading every run to keep a few)."""
        with self.engine.connect() as conn:
            return sorted(conn.execute(select(Run.id).order_by(Run.id.desc()).limit(limit)).scalars())

    def group_run_ids(self, group_key: str) -> list[int]:
        """The ids of a group's runs, in id order."""
        with self.engine.connect() as conn:
            return list(conn.execute(select(Run.id).where(Run.group_key == group_key).order_by(Run.id)).scalars())

    def accuracy_matrices_of(self, runs: list[dict], metric: str | None = None) -> dict[int, dict]:
        """`accuracy_matrices` of runs the caller has already read (their rows are not read again), built
        from plain rows: for a sweep's hundreds of runs, pandas' per-run filtering in `build_matrix` cost
        more than the queries (about 1.5 ms a run against 0.05 ms this way). Same result as `build_matrix`."""
        ids = [int(r["id"]) for r in runs]
        with self.engine.connect() as conn:
            task_rows = conn.execute(select(TaskRow.run_id, TaskRow.position, TaskRow.name, TaskRow.kind)
                                     .where(TaskRow.run_id.in_(ids))).all()
            eval_rows = conn.execute(select(Evaluation.run_id, Evaluation.trained_through, Evaluation.task,
                                            Evaluation.metric, Evaluation.value)
                                     .where(Evaluation.run_id.in_(ids), Evaluation.final.is_(True))).all()
        tasks_of: dict[int, list] = {}
        for row in task_rows:
            tasks_of.setdefault(row[0], []).append(row[1:])
        evals_of: dict[int, list] = {}
        for row in eval_rows:
            evals_of.setdefault(row[0], []).append(row[1:])
        out = {}
        for r in runs:
            m = metric or r["primary_metric"]
            tasks = tasks_of.get(r["id"], [])
            stream = sorted((p, name) for p, name, kind in tasks if kind == "stream")
            general = sorted(((p, name) for p, name, kind in tasks if kind == "general"), reverse=True)
            evals = [(tt, task, value) for tt, task, metric_, value in evals_of.get(r["id"], []) if metric_ == m]
            rows = sorted({int(tt) for tt, _, _ in evals})
            index = {row: i for i, row in enumerate(rows)}
            col = {p: j for j, (p, _) in enumerate(stream)}
            gname = dict(general)
            R = np.full((len(rows), len(stream)), np.nan)
            cols = {name: [np.nan] * len(rows) for _, name in general}
            for tt, task, value in evals:
                if task in col:
                    R[index[int(tt)], col[task]] = value
                elif task in gname:
                    cols[gname[task]][index[int(tt)]] = value
            out[r["id"]] = {"R": R, "general": cols, "rows": rows, "tasks": [name for _, name in stream], "metric": m}
        return out


def build_matrix(tasks: pd.DataFrame, evals: pd.DataFrame, metric: str) -> dict:
    """The accuracy matrix of one run from its task rows and its final evaluations of `metric`."""
    stream_tasks = tasks[tasks.kind == "stream"].sort_values("position") if len(tasks) else tasks
    general_tasks = tasks[tasks.kind == "general"].sort_values("position", ascending=False) if len(tasks) else tasks
    T = len(stream_tasks)
    rows = sorted(int(r) for r in evals.trained_through.unique()) if len(evals) else []
    index = {r: i for i, r in enumerate(rows)}
    R = np.full((len(rows), T), np.nan)
    general = {name: [np.nan] * len(rows) for name in (general_tasks.name if len(tasks) else [])}
    col = {p: i for i, p in enumerate(stream_tasks.position)} if len(tasks) else {}
    gname = dict(zip(general_tasks.position, general_tasks.name)) if len(tasks) else {}
    for tt, task, value in zip(evals.trained_through, evals.task, evals.value) if len(evals) else []:
        i = index[int(tt)]
        if task in col:
            R[i, col[task]] = value
        elif task in gname:
            general[gname[task]][i] = value
    names = stream_tasks.name.tolist() if len(tasks) else []
    return {"R": R, "general": general, "rows": rows, "tasks": names, "metric": metric}


def _order_dict(row) -> dict:
    d = dict(row)
    for key in ("config", "tasks", "matrix", "order", "ordered_options"):
        d[key] = json.loads(d[key])
    return d


def _run_dict(row) -> dict:
    d = dict(row)
    for key in ("config", "versions", "summary", "weights", "launcher_info", "runtime"):
        d[key] = json.loads(d[key]) if d.get(key) else ({} if key in ("config", "versions", "launcher_info") else None)
    return d


def count_rows(store: Store, run_id: int) -> dict[str, int]:
    """Rows per table for a run (used by tests and `cldash show`)."""
    out = {}
    with store.engine.connect() as conn:
        for table in (Evaluation, Scalar, Spectrum, TaskRow, ModuleRow):
            out[table.__tablename__] = conn.execute(
                select(func.count()).select_from(table).where(table.run_id == run_id)).scalar_one()
    return out
