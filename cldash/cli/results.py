"""A run's results as text, as `cldash run` prints them when it ends and `cldash show` prints them later:
the accuracy matrix R[i][j] and the metrics."""

from __future__ import annotations

import math

from cldash.measures.metrics import METRICS, fmt


def format_matrix(m: dict) -> str:
    """The accuracy matrix as a text table: rows 'before' and 'after task i', general tasks last."""
    names = [f"T{j + 1}" for j in range(len(m["tasks"]))] + [f"G{k}" for k in range(len(m["general"]))]
    lines = ["".ljust(16) + "".join(n.rjust(8) for n in names)]
    generals = list(m["general"].values())
    for i, row_id in enumerate(m["rows"]):
        label = "before" if row_id == 0 else f"after T{row_id}"
        cells = list(m["R"][i]) + [g[i] for g in generals]
        lines.append(label.ljust(16) + "".join(("  n/a" if math.isnan(v) else f"{v:.3f}").rjust(8) for v in cells))
    legend = [f"T{j + 1}: {n}" for j, n in enumerate(m["tasks"])] + [f"G{k}: {n}" for k, n in
                                                                       enumerate(m["general"])]
    return "\n".join(lines) + "\n" + "; ".join(legend)


def format_metrics(summary: dict | None) -> str:
    if not summary:
        return "(no metrics: the run did not finish)"
    lines = [f"  {info.label:<44} {fmt(summary.get(info.key, float('nan'))):>8}" for info in METRICS]
    for key, value in summary.items():     # each general task's own score and retention
        if key.startswith("general:") or key.startswith("general_retention:"):
            what, name = key.split(":", 1)
            label = ("retention of " if what == "general_retention" else "score of ") + name
            lines.append(f"    {label[:42]:<42} {fmt(value):>8}")
    return "\n".join(lines)
