"""The tuned regime: every method gets its best hyper-parameters from the same search budget, found on
validation data, and its verdicts are read from fresh seeds.

A *target* is one run configuration to tune (a claim's run on a setting, or `cldash tune --method M --stream
S`). Its search, fixed in advance and the same for every method:

- **what**: the learning rate, log-uniform over LR_RANGE (wide enough for the 1e-4 of a 7B recipe and the
  2e-2 of SD-LoRA's), its schedule {constant, cosine}, and at most two of the method's own options that the
  method names (``Method.search_space``: EBLoRA's energy, CoDyRA's kappa_max and dense fraction, LoRA-GA's
  and SLICE's init form and gamma, AdaLoRA's budget), less those the target fixes itself (a claim that
  compares at equal init form does not let the search change it); replay's buffer size where the run
  replays;
- **how**: Optuna's TPE sampler, seeded, `trials` full-length trials (default 16, the first half drawn at
  random, each trial from a sampler seeded by the search's seed and its number), asked BATCH at a time
  with the constant liar so that two run at once; no early stopping:
  forgetting shows only at the end;
- **on what**: each trial is an ordinary cldash run (tag ``tune:STUDY``, launched through the store's
  launcher, so a search runs on a Ray cluster unchanged) at seed TUNE_SEEDS[0] with ``validation``
  VALIDATION: 20 % of each task's training data held out and scored in place of the test sets, which a
  trial never reads (Stream.hold_out);
- **the objective**: validation ACC (final average accuracy). A method must not win by not learning, and a
  claim about forgetting must not be tuned into a method that forgets nothing because it learns nothing:
  so the best trial is the one with the highest ACC among the trials whose learning accuracy is within
  LA_WINDOW of the search's best LA. Forgetting and LA are recorded with every trial;
- **the spread**: the best configuration runs again at the other tuning seeds (still on validation), so
  the page shows how much its value moves with the seed.

The tuned regime's verdicts then run the best configuration at seeds 0.. on the test sets: fresh seeds,
never a trial's. The search lives in the run store (Optuna's journal in ``tuning_log``, the same URL:
SQLite or PostgreSQL), so a killed search resumes where it stopped; each ask draws from a sampler seeded
by the search's seed and the number of trials so far, so a search resumed after a crash asks what an
uninterrupted one would have. Its summary (trials, best, spread) is a store setting ``tuned:STUDY`` the
pages read without importing Optuna.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
import time
from collections.abc import Callable

from cldash.analysis.matching import match_key, resolved_config
from cldash.core.errors import UserError
from cldash.core.search import Param
from cldash.runs.launch import launch
from cldash.runs.queue import reconcile, schedule
from cldash.store import ENDED

TRIALS = 16
BATCH = 2                       # trials asked at once; part of a search's identity (TPE sees BATCH-1 fewer results)
TUNE_SEEDS = (100, 101, 102)    # the trials' seed, then the best configuration's spread; never a verdict's
VALIDATION = 0.2
LA_WINDOW = 0.03
LR_RANGE = (1e-4, 3e-2)
COMMON_SPACE = (Param("lr", "log", *LR_RANGE, where="run", source="1e-4 (7B recipes) to 3e-2 (above SD-LoRA's 2e-2)"),
                Param("lr_schedule", "choice", choices=("constant", "cosine"), where="run"))
REPLAY_SPACE = Param("replay", "choice", choices=(50, 200, 500), where="run", source="TRACE's replay preset: 200")
PREFIX = "tuned:"               # the store setting of a search's summary
SAMPLER = 2                     # how trials are drawn (_sampler); part of a search's name, so a change starts anew


def space(values: dict) -> tuple[Param, ...]:
    """What a search of this target varies: the common space, the method's own (less what the target fixes)
    and replay's buffer where the run replays."""
    from cldash.methods import get_method  # deferred: imports torch; the pages import this module at start-up

    fixed = set(values.get("method_options") or {})
    own = tuple(p for p in get_method(values.get("method", "lora")).search_space if p.name not in fixed)[:2]
    return COMMON_SPACE + own + ((REPLAY_SPACE,) if values.get("replay") else ())


def trial_values(values: dict, params: dict) -> dict:
    """The target with a trial's parameters set (method options inside method_options)."""
    out = {**values, "method_options": dict(values.get("method_options") or {})}
    for name, value in params.items():
        if name in {p.name for p in COMMON_SPACE} or name == REPLAY_SPACE.name:
            out[name] = value
        else:
            out["method_options"][name] = value
    return out


def study_name(values: dict, trials: int, seed: int) -> str:
    """A search's name: its target (as a claim matches runs: what changes what a run learns), budget and seed."""
    key = match_key(resolved_config({**values, "seed": 0}))
    return "tune-" + hashlib.sha1(f"{key}|{trials}|{seed}|{BATCH}|{SAMPLER}".encode()).hexdigest()[:12]


def summary(store, name: str) -> dict | None:
    """A search's summary as the store keeps it (None before its first trial ends)."""
    text = store.get_setting(PREFIX + name)
    return json.loads(text) if text else None


def best_params(store, values: dict, trials: int = TRIALS, seed: int = 0) -> dict | None:
    """The best parameters of this target's finished search, or None if it has not finished."""
    s = summary(store, study_name(values, trials, seed))
    return s["best"]["params"] if s and s.get("finished") and s.get("best") else None


def choose_best(trials: list[dict]) -> dict | None:
    """The highest validation ACC among the trials whose LA is within LA_WINDOW of the best LA (ties: the
    earlier trial)."""
    done = [t for t in trials if t["state"] == "complete" and math.isfinite(t["acc"])]
    if not done:
        return None
    top = max(t["la"] for t in done)
    eligible = [t for t in done if t["la"] >= top - LA_WINDOW]
    return max(eligible, key=lambda t: (t["acc"], -t["number"]))


def _suggest(trial, p: Param):
    if p.kind == "log":
        return trial.suggest_float(p.name, p.low, p.high, log=True)
    if p.kind == "float":
        return trial.suggest_float(p.name, p.low, p.high)
    if p.kind == "int":
        return trial.suggest_int(p.name, int(p.low), int(p.high))
    return trial.suggest_categorical(p.name, list(p.choices))


def _journal(store):
    """Optuna's JournalStorage over the store's tuning_log table."""
    from optuna.storages import JournalStorage  # deferred: optuna is needed only while a search runs
    from optuna.storages.journal import BaseJournalBackend  # deferred: as above

    class StoreJournal(BaseJournalBackend):
        """Optuna's journal operations as rows of the run store (one writer: the search's own process)."""

        def read_logs(self, log_number_from: int):
            return store.tuning_log(log_number_from)

        def append_logs(self, logs: list[dict]) -> None:
            store.append_tuning_log(logs)

    return JournalStorage(StoreJournal())


def _study(store, name: str):
    import optuna  # deferred: as above

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(study_name=name, storage=_journal(store), direction="maximize", load_if_exists=True)


def _sampler(seed: int, number: int, trials: int):
    """The sampler that asks trial `number`: TPE, its first half of the budget drawn at random, with the constant
    liar so that trials asked together differ. A fresh one per trial, seeded from (seed, number) through a hash:
    a resumed search asks what an uninterrupted one would have, and trials asked together do not share draws
    (one sampler asked twice in a batch drew two nearly equal learning rates, and consecutive small seeds
    start their streams close together)."""
    import optuna  # deferred: as above

    derived = int.from_bytes(hashlib.sha256(f"{seed}:{number}".encode()).digest()[:4], "little")
    return optuna.samplers.TPESampler(seed=derived, n_startup_trials=max(1, trials // 2), constant_liar=True)


def _wait(store, ids: list[int], poll: float, progress: Callable[[str], None]) -> list[dict]:
    """Pump the local queue until these runs have ended."""
    last = ""
    while True:
        reconcile(store)
        schedule(store)
        runs = store.runs(ids=ids)
        line = ", ".join(f"run {r['id']} {r['status']} {r['progress']:.0%}" for r in runs)
        if line != last:
            progress(line)
            last = line
        if all(r["status"] in ENDED for r in runs):
            return runs
        time.sleep(poll)


def _outcome(run: dict) -> tuple[str, dict]:
    """A trial's result from its run: complete (with ACC, LA, forgetting), diverged (ACC 0: a learning rate
    that diverges is a real outcome of the search) or failed (anything else: retried once)."""
    s = run.get("summary") or {}
    if run["status"] == "finished":
        return "complete", {k: float(s.get(k, float("nan"))) for k in ("acc", "la", "forgetting")}
    if run["status"] == "failed" and "the loss became" in (run.get("error") or ""):
        return "diverged", {"acc": 0.0, "la": 0.0, "forgetting": float("nan")}
    return "failed", {}


def _run_trials(store, name: str, values: dict, asked: list, seed_of_trials: int, poll: float, progress,
                launcher=None) -> list[tuple]:
    """Launch the asked trials as runs (idempotent launch keys: a resumed search finds its runs) and wait."""
    configs, keys = [], []
    for trial, attempt in asked:
        cfg = resolved_config({**trial_values(values, trial.params), "seed": seed_of_trials,
                               "validation": VALIDATION})
        cfg["name"] = f"tune {name} · trial {trial.number}"
        configs.append(cfg)
        keys.append(f"{name}:{trial.number}:{attempt}")
    ids = launch(store, configs, keys, group_key=f"tune:{name}", names=[c["name"] for c in configs],
                 launcher=launcher, priority="batch")
    runs = {r["id"]: r for r in _wait(store, ids, poll, progress)}
    return [(trial, attempt, runs[i]) for (trial, attempt), i in zip(asked, ids, strict=True)]


def _trial_row(trial, run: dict, state: str, result: dict) -> dict:
    return {"number": trial.number, "params": trial.params, "state": state, "run": run["id"],
            "acc": result.get("acc", float("nan")), "la": result.get("la", float("nan")),
            "forgetting": result.get("forgetting", float("nan"))}


def search(store, values: dict, trials: int = TRIALS, seed: int = 0, poll: float = 2.0,
           progress: Callable[[str], None] = lambda line: None, launcher=None) -> dict:
    """Run (or resume) the search of one target and return its summary (also kept in the store)."""
    if trials < 1:
        raise UserError(f"a search needs at least one trial (got {trials}).")
    import optuna  # deferred: as above

    name = study_name(values, trials, seed)
    params = space(values)
    rows = {t["number"]: t for t in (summary(store, name) or {}).get("trials", [])}
    while len(rows) < trials:
        study = _study(store, name)
        pending = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.RUNNING]
        asked = [(optuna.trial.Trial(study, t._trial_id), 0) for t in pending]
        while len(asked) < BATCH and len(study.trials) < trials:
            study.sampler = _sampler(seed, len(study.trials), trials)
            trial = study.ask()
            for p in params:
                _suggest(trial, p)
            asked.append((trial, 0))
        for trial, attempt, run in _run_trials(store, name, values, asked, TUNE_SEEDS[0], poll, progress, launcher):
            state, result = _outcome(run)
            if state == "failed" and attempt == 0:   # a killed or crashed run, not the configuration: once more
                (trial, attempt, run), = _run_trials(store, name, values, [(trial, 1)], TUNE_SEEDS[0], poll,
                                                     progress, launcher)
                state, result = _outcome(run)
            if state == "failed":
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
            else:
                trial.set_user_attr("la", result["la"])
                trial.set_user_attr("run", run["id"])
                study.tell(trial, result["acc"])
            rows[trial.number] = _trial_row(trial, run, state, result)
            _save(store, name, values, params, trials, seed, rows, finished=False)
    return _finish(store, name, values, params, trials, seed, rows, poll, progress, launcher)


def _finish(store, name, values, params, trials, seed, rows, poll, progress, launcher) -> dict:
    """The best trial, its spread over the other tuning seeds, and the summary marked finished."""
    best = choose_best(list(rows.values()))
    spread = {}
    if best is not None:
        spread[TUNE_SEEDS[0]] = best["acc"]
        cfgs = [resolved_config({**trial_values(values, best["params"]), "seed": s, "validation": VALIDATION})
                for s in TUNE_SEEDS[1:]]
        ids = launch(store, cfgs, [f"{name}:best:{s}" for s in TUNE_SEEDS[1:]], group_key=f"tune:{name}",
                     names=[f"tune {name} · best · seed {s}" for s in TUNE_SEEDS[1:]], launcher=launcher,
                     priority="batch")
        for s, run in zip(TUNE_SEEDS[1:], _wait(store, ids, poll, progress), strict=True):
            state, result = _outcome(run)
            spread[s] = result.get("acc", float("nan")) if state != "failed" else float("nan")
    return _save(store, name, values, params, trials, seed, rows, finished=True, best=best, spread=spread)


def _save(store, name, values, params, trials, seed, rows, finished, best=None, spread=None) -> dict:
    accs = [v for v in (spread or {}).values() if math.isfinite(v)]
    out = {"study": name, "target": values, "trials_budget": trials, "seed": seed, "batch": BATCH,
           "space": [p.text() for p in params], "validation": VALIDATION, "la_window": LA_WINDOW,
           "trials": [rows[k] for k in sorted(rows)], "finished": finished,
           "best": None if best is None else {"params": best["params"], "trial": best["number"], "acc": best["acc"],
                                              "la": best["la"], "forgetting": best["forgetting"]},
           "spread": {str(k): v for k, v in (spread or {}).items()},
           "spread_sd": statistics.stdev(accs) if len(accs) > 1 else None, "updated": time.time()}
    store.set_setting(PREFIX + name, json.dumps(out, default=str))
    return out


def searches(store) -> list[dict]:
    """Every search's summary in the store, newest first."""
    return sorted((json.loads(v) for v in store.settings_with_prefix(PREFIX).values()),
                  key=lambda s: -s.get("updated", 0))
