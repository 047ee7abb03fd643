"""Tables for the dashboard and exports: pure functions from store rows to pandas frames."""

from __future__ import annotations

import math

import pandas as pd

from cldash.core.options import describe
from cldash.core.text import printable
from cldash.dashboard.labels import group_label, launcher_label, lineage_label, weights_label
from cldash.dashboard.views import run_regime
from cldash.measures.metrics import METRICS
from cldash.runs.priority import priority_name

KEY_METRICS = {"acc": "final acc", "bwt": "BWT", "forgetting": "forgetting", "general_retention": "general kept"}


def runs_table(runs: list[dict]) -> pd.DataFrame:
    """One row per run: id, status, progress, what ran, its group, where it comes from (a fork's parent and
    fork point, how often it was resumed), the key metrics once finished, where it ran and which launcher
    started it."""
    rows = []
    for r in runs:
        s = r.get("summary") or {}
        row = {"id": r["id"], "status": r["status"], "progress": float(r.get("progress") or 0.0),
               "method": r["method"], "policy": r.get("policy") or "",
               "regime": run_regime(r), "stream": r["stream"], "seed": r["seed"],
               "group": printable(group_label(r.get("group_key"))),
               "name": printable(r.get("name")),   # escaped: a store written by an older cldash may hold controls
               "lineage": lineage_label(r)}
        for key, label in KEY_METRICS.items():
            v = s.get(key)
            row[label] = None if v is None or (isinstance(v, float) and math.isnan(v)) else v
        row["weights"] = weights_label(r.get("weights"), short=True)
        # where it ran: "vm · cpu", "node-3 · cuda:0 · ray" (a cluster's run names its launcher: ray, slurm)
        cluster = r.get("launcher") if r.get("launcher") not in (None, "local", "cli") else ""
        row["where"] = printable(" · ".join(x for x in (r.get("host"), r.get("device"), cluster) if x))
        row["launcher"] = printable(launcher_label(r))   # cli, local, ray ...: what the Runs page filters by
        row["priority"] = priority_name(r)   # interactive runs start before batch ones in the local queue
        row["error"] = printable((r.get("error") or "").split("\n", 1)[0])
        rows.append(row)
    # the key metrics right after what ran, so that they are on screen without scrolling the table sideways
    columns = ["id", "status", "progress", "method", "seed", *KEY_METRICS.values(), "policy", "regime", "stream",
               "group", "name", "lineage", "weights", "where", "launcher", "priority", "error"]
    return pd.DataFrame(rows, columns=columns)


def spectra_table(series: pd.DataFrame) -> pd.DataFrame:
    """Spectra rows for CSV export: each step's singular values as one text cell ("3.2 1.1 0.02")."""
    return series.assign(values=[" ".join(f"{v:.6g}" for v in vals) for vals in series["values"]])


def metric_help() -> dict[str, str]:
    """For each metric key: its formula and the cells of R it reads (shown on hover)."""
    return {m.key: f"{m.formula} — uses {m.cells}" + ("" if m.higher_is_better else " (lower is better)")
            for m in METRICS}


def matrix_table(m: dict) -> pd.DataFrame:
    """An accuracy matrix as a table for CSV export: one row per trained-through index."""
    df = pd.DataFrame(m["R"], columns=m["tasks"])
    for name, col in m["general"].items():
        df[name] = col
    df.insert(0, "trained_through", m["rows"])
    return df


def matrices_table(items: list[dict]) -> pd.DataFrame:
    """Several accuracy matrices in one table for CSV export (views.matrix_items: one per run or per
    setting): `matrix_table`'s rows with the matrix's title and run ids in front. Built from plain rows
    (a frame per matrix cost 1 ms each: a second for a sweep of 868 runs)."""
    rows = []
    for item in items:
        m, runs = item["matrix"], " ".join(f"#{i}" for i in item["ids"])
        for i, trained_through in enumerate(m["rows"]):
            row = {"matrix": item["title"], "runs": runs, "trained_through": trained_through}
            row.update(zip(m["tasks"], (float(v) for v in m["R"][i])))
            row.update((name, float(col[i])) for name, col in m["general"].items())
            rows.append(row)
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=["matrix", "runs", "trained_through"])


def order_table(order: dict) -> pd.DataFrame:
    """A measured order (Store.orders) as a table: each position's task and its cosine with the next one."""
    o = order
    return pd.DataFrame({"position": range(1, len(o["order"]) + 1),
                         "task": [f"T{i + 1}: {o['tasks'][i]}" for i in o["order"]],
                         "cosine with the next": [o["matrix"][a][b] for a, b in zip(o["order"][:-1], o["order"][1:])]
                         + [float("nan")]})


def conflict_table(order: dict) -> pd.DataFrame:
    """The gradient-conflict matrix of a measured order, its rows and columns named T1, T2 ... (CSV export)."""
    names = [f"T{i + 1}" for i in range(len(order["tasks"]))]
    return pd.DataFrame(order["matrix"], index=names, columns=names)


def options_table(options_class) -> pd.DataFrame:
    """A method's options (its Config dataclass, cldash.core.options.describe) for its card: default, what it
    does, where the default comes from; indexed by the option's name."""
    rows = [{"option": r["name"], "default": str(r["default"]), "what it does": r["help"],
             "default from": r.get("source") or ""} for r in describe(options_class)]
    return pd.DataFrame(rows, columns=["option", "default", "what it does", "default from"]).set_index("option")
