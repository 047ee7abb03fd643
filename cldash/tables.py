"""Tables for the dashboard and exports: pure functions from store rows to pandas frames."""

from __future__ import annotations

import math

import pandas as pd

KEY_METRICS = {"acc": "final acc", "bwt": "BWT", "forgetting": "forgetting", "general_retention": "general kept"}


def runs_table(runs: list[dict]) -> pd.DataFrame:
    """One row per run: id, status, progress, what ran, and the key metrics once finished."""
    rows = []
    for r in runs:
        s = r.get("summary") or {}
        row = {"id": r["id"], "status": r["status"], "progress": float(r.get("progress") or 0.0),
               "method": r["method"], "policy": r.get("policy") or "", "stream": r["stream"], "seed": r["seed"],
               "name": r.get("name") or ""}
        for key, label in KEY_METRICS.items():
            v = s.get(key)
            row[label] = None if v is None or (isinstance(v, float) and math.isnan(v)) else v
        row["error"] = (r.get("error") or "").split("\n", 1)[0]
        rows.append(row)
    columns = ["id", "status", "progress", "method", "policy", "stream", "seed", "name", *KEY_METRICS.values(),
               "error"]
    return pd.DataFrame(rows, columns=columns)
