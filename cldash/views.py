"""What each dashboard page loads: functions from the store to plain data (no Streamlit).

Pages call these and hand the result to cldash.figures; tests and bench/dashboard_load.py call
them directly. Each loads only what its page draws (one module's spectra, the final rows of R,
rows newer than the last step seen), in a few batched queries.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from cldash import claims
from cldash.claims import Claim
from cldash.metrics import METRICS, summarize
from cldash.store import Store

# Fields that do not change what is being compared: runs differing only in these are seeds of one setting.
NOT_SETTING = ("seed", "name")


def setting_key(config: dict) -> str:
    """Runs with the same configuration apart from the seed share this key."""
    core = {k: v for k, v in config.items() if k not in NOT_SETTING}
    return hashlib.sha1(json.dumps(core, sort_keys=True, default=str).encode()).hexdigest()[:10]


def setting_label(config: dict) -> str:
    """'lora r=8 single · digits-rotate' (the run label without the seed)."""
    opts = config.get("method_options") or {}
    bits = [config["method"]]
    for key in ("rank", "init_r", "target_r"):
        if key in opts:
            bits.append(f"{key.replace('_', '')}={opts[key]}" if key != "rank" else f"r={opts[key]}")
            break
    if config.get("policy"):
        bits.append(str(config["policy"]))
    return f"{' '.join(bits)} · {config['stream']}"


def run_label(run: dict) -> str:
    return f"#{run['id']} {setting_label(run['config'])} · seed {run['seed']}"


def boundaries(run: dict) -> list[int]:
    """Global steps at which each task ended (for dotted lines on step axes)."""
    steps = run["config"]["steps_per_task"]
    return [steps * t for t in range(1, (run.get("num_tasks") or 0) + 1)]


# -- compare -------------------------------------------------------------------------------------
@dataclass
class CompareData:
    runs: list[dict]
    matrices: dict[int, dict]
    metrics: pd.DataFrame            # one row per run
    by_setting: pd.DataFrame         # mean and spread over seeds, one row per setting


def run_metrics(run: dict, matrix: dict) -> dict[str, float]:
    """The stored summary of a finished run; for an unfinished one, metrics of the rows so far
    (undefined ones NaN) so that a live comparison shows something honest."""
    if run.get("summary"):
        return run["summary"]
    R = matrix["R"]
    if R.shape[0] >= 2 and R.shape[0] == R.shape[1] + 1 and np.isfinite(R).all():
        return summarize(R, matrix["general"])
    return {m.key: math.nan for m in METRICS}


def compare_data(store: Store, run_ids: list[int]) -> CompareData:
    runs = store.runs(ids=run_ids)
    matrices = store.accuracy_matrices([r["id"] for r in runs]) if runs else {}
    rows = []
    for r in runs:
        m = run_metrics(r, matrices[r["id"]])
        rows.append({"id": r["id"], "label": run_label(r), "setting": setting_label(r["config"]),
                     "setting_key": setting_key(r["config"]), "method": r["method"], "seed": r["seed"],
                     "status": r["status"], **{k.key: m.get(k.key, math.nan) for k in METRICS}})
    metrics = pd.DataFrame(rows, columns=["id", "label", "setting", "setting_key", "method", "seed", "status",
                                          *[m.key for m in METRICS]])
    return CompareData(runs, matrices, metrics, seed_summary(metrics))


def seed_summary(metrics: pd.DataFrame) -> pd.DataFrame:
    """Mean, standard deviation and count over seeds of each setting."""
    keys = [m.key for m in METRICS]
    if metrics.empty:
        return pd.DataFrame(columns=["setting", "seeds", *keys, *[f"{k}_std" for k in keys]])
    g = metrics.groupby(["setting_key", "setting"], sort=False)
    mean = g[keys].mean()
    std = g[keys].std(ddof=1).add_suffix("_std")
    out = pd.concat([g.size().rename("seeds"), mean, std], axis=1).reset_index().drop(columns="setting_key")
    return out


# -- live ----------------------------------------------------------------------------------------
@dataclass
class LiveCache:
    """Rows of one run seen so far; `update` adds only the rows newer than the last seen step."""

    run_id: int
    loss: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["step", "value"]))
    evals: pd.DataFrame = field(default_factory=pd.DataFrame)
    last_loss_step: int = 0
    last_eval_step: int = -1
    queries: int = 0

    def update(self, store: Store) -> "LiveCache":
        new = store.scalars(self.run_id, names=["loss"], since_step=self.last_loss_step)
        if len(new):
            self.loss = pd.concat([self.loss, new[["step", "value"]]], ignore_index=True)
            self.last_loss_step = int(new.step.max())
        ev = store.evaluations(self.run_id, since_step=self.last_eval_step)
        if len(ev):
            self.evals = pd.concat([self.evals, ev], ignore_index=True) if len(self.evals) else ev
            self.last_eval_step = int(ev.step.max())
        self.queries += 2
        return self


# -- spectra -------------------------------------------------------------------------------------
def module_grid(modules: pd.DataFrame, spectra: pd.DataFrame) -> pd.DataFrame:
    """Spectra rows joined with their module's layer and type (for layer x module heatmaps)."""
    if spectra.empty or modules.empty:
        return pd.DataFrame(columns=[*spectra.columns, "layer", "module_type"])
    mods = modules[["name", "layer", "kind"]].rename(columns={"name": "module", "kind": "module_type"})
    return spectra.merge(mods, on="module", how="left")


# -- claims --------------------------------------------------------------------------------------
def claims_board(store: Store, regimes: tuple[str, ...]) -> tuple[list[dict], int]:
    """Every claim's verdict under these regimes and how many distinct runs are still to launch for all of
    them (claims share runs), from one read of the store's runs."""
    runs = store.runs()
    return claims.verdicts(store, regimes, runs), len(claims.to_launch(store, claims.CLAIMS, regimes, runs))


def claim_seeds(verdict: dict) -> int:
    """The seeds of cldash.claims.SEEDS at which every run of the claim has finished (the 'n' of 'n of 3 seeds')."""
    runs = verdict["runs"]
    return sum(1 for s in claims.SEEDS if runs and all(s in by_seed for by_seed in runs.values()))


def paper_is_common(claim: Claim) -> bool:
    """Whether a claim's paper regime runs every one of its runs in the common regime (none of its methods has a
    paper preset that applies), so that the same runs decide both regimes."""
    return all(claims.run_preset(claim, spec.method, "paper") == "common" for spec in claim.runs.values())


def claim_run_ids(verdict: dict) -> list[int]:
    """The finished runs a verdict rests on, in id order."""
    return sorted(i for by_seed in verdict["runs"].values() for i in by_seed.values())


def claim_values_table(claim: Claim, verdict: dict) -> pd.DataFrame:
    """The metric values behind a verdict: one row per metric and run label, one column per seed, the mean and
    standard deviation over the seeds that have a value, and the run ids (metrics in the order of the claim's
    checks, then the others)."""
    values, run_ids = verdict["values"], verdict["runs"]
    checked = list(dict.fromkeys(c.metric for c in claim.checks))
    metrics = checked + sorted({m for by_metric in values.values() for m in by_metric} - set(checked))
    seeds = sorted(set(claims.SEEDS) | {s for by_metric in values.values() for v in by_metric.values() for s in v})
    rows = []
    for metric in metrics:
        for label in claim.runs:
            by_seed = values.get(label, {}).get(metric, {})
            have = [by_seed[s] for s in seeds if s in by_seed and math.isfinite(by_seed[s])]
            mean = float(np.mean(have)) if have else math.nan
            sd = float(np.std(have, ddof=1)) if len(have) > 1 else math.nan
            rows.append({"metric": metric, "what": claims.METRICS[metric], "run": label,
                         **{f"seed {s}": by_seed.get(s, math.nan) for s in seeds},
                         "mean": mean, "sd": sd,
                         "mean ± sd": "" if not have else f"{mean:.3f}" if sd != sd else f"{mean:.3f} ± {sd:.3f}",
                         "run ids": ", ".join(f"#{i}" for i in run_ids.get(label, {}).values())})
    return pd.DataFrame(rows, columns=["metric", "what", "run", *[f"seed {s}" for s in seeds], "mean", "sd",
                                       "mean ± sd", "run ids"])
