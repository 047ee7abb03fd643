"""Sweeps: the cross product of methods x presets x seeds x option lists, queued as one group.

A `Sweep` names its methods, presets (regimes), seeds, a grid of option lists (``rank=4,8,16``) and fixed
options (``steps_per_task=100``). An option name is looked up where it lives, for each method: a run
option (lr, steps_per_task, replay...), else the method's own option (rank, alpha...), else the stream's.
A method without a grid option does not vary with it (full fine-tuning has no rank: its runs collapse
into one per seed and preset); a name that no method, run or stream has is refused. A paper preset that
a method does not have is skipped for that method, and the plan says so.

`plan` resolves every combination (one sentence for any bad value, before anything is stored) and says
how many runs the sweep has, how many of them the store already holds and how many it would queue:
every run's launch key is the sweep's name and a hash of its resolved configuration, so repeating a
sweep queues nothing that is already there, and widening its grid queues only the new combinations.
The runs share the group ``sweep:NAME``, which the Runs and Compare pages filter and aggregate by.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field

from cldash.config import RunConfig, describe_run, resolve
from cldash.config.presets import get_preset
from cldash.core.errors import ConfigError, UserError
from cldash.runs.launch import launch

GROUP_PREFIX = "sweep:"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,47}$")
MAX_RUNS = 10_000


@dataclass
class Sweep:
    methods: list[str]
    seeds: list[int] = field(default_factory=lambda: [0])
    presets: list[str] = field(default_factory=lambda: ["common"])
    grid: dict[str, list] = field(default_factory=dict)    # option name -> values, crossed
    fixed: dict[str, object] = field(default_factory=dict)  # option name -> one value, for every run
    stream: str = "digits-rotate"
    backbone: str = ""
    name: str = ""
    base: dict = field(default_factory=dict)   # a partial run configuration under every run (the launch form's)
    method_options: dict[str, dict] = field(default_factory=dict)   # method -> its own options, under the grid

    def key(self) -> str:
        """The sweep's name: the one given, else a short hash of what it sweeps (the same command, the same
        sweep, so repeating it is a no-op)."""
        if self.name:
            return self.name
        spec = {k: v for k, v in dataclasses.asdict(self).items() if k != "name"}
        return "sweep-" + hashlib.sha1(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:8]

    @property
    def group(self) -> str:
        return GROUP_PREFIX + self.key()


@dataclass
class Plan:
    sweep: Sweep
    configs: list[dict]          # resolved, one per distinct run
    keys: list[str]              # their launch keys
    existing: dict[str, int]     # launch key -> run id already in the store
    notes: list[str]             # what was skipped or collapsed, in words

    @property
    def new(self) -> list[int]:
        return [i for i, k in enumerate(self.keys) if k not in self.existing]

    def summary(self) -> str:
        s = self.sweep
        factors = [f"{len(s.methods)} method{'s' * (len(s.methods) != 1)}",
                   f"{len(s.presets)} preset{'s' * (len(s.presets) != 1)}",
                   f"{len(s.seeds)} seed{'s' * (len(s.seeds) != 1)}"]
        factors += [f"{len(v)} {k}" for k, v in s.grid.items()]
        text = (f"sweep {s.key()}: {' x '.join(factors)} = {len(self.configs)} run{'s' * (len(self.configs) != 1)}; "
                f"{len(self.existing)} already in the store, {len(self.new)} to queue")
        return text + "".join(f"\n  {n}" for n in self.notes)


def parse_seeds(text: str) -> list[int]:
    """``0-4`` or ``0,1,2`` or ``0-2,7`` -> the seeds, in order, each once."""
    seeds: list[int] = []
    for part in [p.strip() for p in str(text).split(",") if p.strip()]:
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m or (m.group(2) is not None and int(m.group(2)) < int(m.group(1))):
            raise UserError(f"seeds must be whole numbers or ranges such as 0-4 or 0,1,2 (got {text!r}).")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi - lo >= MAX_RUNS:
            raise UserError(f"the seed range {part} has more than {MAX_RUNS} seeds.")
        seeds += [s for s in range(lo, hi + 1) if s not in seeds]
    if not seeds:
        raise UserError("give at least one seed, e.g. 0-4 or 0,1,2.")
    return seeds


def parse_list(text: str, what: str) -> list[str]:
    items = [i.strip() for i in str(text).split(",") if i.strip()]
    if not items:
        raise UserError(f"give at least one {what}.")
    return list(dict.fromkeys(items))


def _where(name: str, method: str, stream: str) -> str | None:
    """Where option `name` lives for `method` on `stream`: "run", "method", "stream", or None."""
    from cldash.methods import get_method  # deferred: imports torch
    from cldash.streams import get_stream  # deferred: imports torch

    if name in {f.name for f in dataclasses.fields(RunConfig)} - {"method", "stream", "backbone", "seed", "preset",
                                                                   "method_options", "stream_options",
                                                                   "backbone_options", "regime", "name"}:
        return "run"
    if name in {f.name for f in dataclasses.fields(get_method(method).Config)}:
        return "method"
    if name in {f.name for f in dataclasses.fields(get_stream(stream).Options)}:
        return "stream"
    return None


def _values(sweep: Sweep, method: str, options: dict) -> dict:
    base = copy.deepcopy(sweep.base)
    values = {**base, "method": method, "stream": sweep.stream, "backbone": sweep.backbone,
              "method_options": dict(sweep.method_options.get(method, {})),
              "stream_options": dict(base.get("stream_options") or {})}
    for name, value in options.items():
        where = _where(name, method, sweep.stream)
        if where == "run":
            values[name] = value
        elif where:
            values[f"{where}_options"][name] = value
    return values


def _launch_key(group: str, cfg: dict) -> str:
    text = json.dumps({k: v for k, v in cfg.items() if k != "name"}, sort_keys=True, default=str)
    return f"{group}:{hashlib.sha1(text.encode()).hexdigest()[:16]}"


def _label(cfg: dict, options: dict) -> str:
    bits = [f"{k}={v}" for k, v in options.items() if k != "rank"]
    return describe_run(RunConfig(**cfg)) + (f" · {' '.join(bits)}" if bits else "")


def plan(store, sweep: Sweep) -> Plan:
    """Every run of the sweep, resolved, and which of them the store already holds (none looked up with no
    store). Raises one sentence for a bad name, method, preset, option or value (naming the combination),
    before anything is stored."""
    _check_names(sweep)
    options = {**{k: [v] for k, v in sweep.fixed.items()}, **sweep.grid}
    for key in sorted(set(sweep.grid) & set(sweep.fixed)):
        raise UserError(f"option {key} is both in the grid and fixed; give it once.")
    notes = _option_notes(sweep, options)
    _check_size(sweep)
    configs, keys, skipped = _resolve_runs(sweep, options)
    for preset, methods in skipped.items():
        notes.append(f"{', '.join(methods)} {'has' if len(methods) == 1 else 'have'} no {preset} preset: skipped "
                     f"under {preset}")
    if not configs:
        raise UserError("the sweep has no runs: no method has the presets asked for.")
    existing = store.run_ids_for_launch_keys(keys) if store is not None else {}
    return Plan(sweep, configs, keys, existing, notes)


def _check_names(sweep: Sweep) -> None:
    """The sweep's own name, its methods and its stream exist (each problem one sentence)."""
    from cldash.methods import get_method  # deferred: imports torch
    from cldash.streams import get_stream  # deferred: imports torch

    name = sweep.key()
    if not NAME_PATTERN.match(name):
        raise UserError(f"a sweep's name is letters, digits, '.', '_' and '-', at most 48, starting with a letter "
                        f"or digit (got {name!r}).")
    if not sweep.methods:
        raise UserError("give at least one method, e.g. --methods lora,codyra.")
    for m in sweep.methods:
        get_method(m)
    get_stream(sweep.stream)


def _option_notes(sweep: Sweep, options: dict) -> list[str]:
    """Refuses an option that no method, run or stream has; notes the methods a grid option does not vary."""
    notes = []
    for key in options:
        homes = {m: _where(key, m, sweep.stream) for m in sweep.methods}
        if not any(homes.values()):
            raise UserError(f"no run, method ({', '.join(sweep.methods)}) or stream ({sweep.stream}) option is "
                            f"called {key!r}; `cldash run --method {sweep.methods[0]} --help` lists them.")
        lacking = sorted(m for m, h in homes.items() if h is None)
        if lacking and key in sweep.grid:
            notes.append(f"{', '.join(lacking)} {'has' if len(lacking) == 1 else 'have'} no option {key}: "
                         f"{'its' if len(lacking) == 1 else 'their'} runs do not vary with it")
    return notes


def _check_size(sweep: Sweep) -> None:
    total = len(sweep.methods) * len(sweep.presets) * len(sweep.seeds)
    for values in sweep.grid.values():
        total *= len(values)
    if total > MAX_RUNS:
        raise UserError(f"the sweep has {total} combinations, more than {MAX_RUNS}; sweep fewer values at once.")


def _resolve_runs(sweep: Sweep, options: dict) -> tuple[list[dict], list[str], dict[str, list[str]]]:
    """Each distinct run's resolved configuration and launch key, in order, and the methods skipped under
    each paper preset they lack. Combinations that resolve alike (a method without a grid option) are one run."""
    configs, keys, seen = [], [], set()
    skipped: dict[str, list[str]] = {}
    names, grids = list(options), [options[k] for k in options]
    for method, preset in itertools.product(sweep.methods, sweep.presets):
        if preset.startswith("paper"):
            try:
                get_preset(preset, method)
            except ConfigError:
                skipped.setdefault(preset, []).append(method)
                continue
        for combo in itertools.product(*grids):
            chosen = dict(zip(names, combo))
            for seed in sweep.seeds:
                cfg = _resolve_run(sweep, method, preset, seed, chosen)
                key = _launch_key(sweep.group, cfg)
                if key in seen:
                    continue
                seen.add(key)
                cfg["name"] = _label(cfg, {k: v for k, v in chosen.items() if k in sweep.grid
                                           and _where(k, method, sweep.stream)})
                configs.append(cfg)
                keys.append(key)
    return configs, keys, skipped


def _resolve_run(sweep: Sweep, method: str, preset: str, seed: int, chosen: dict) -> dict:
    """One combination's resolved configuration; a bad value is one sentence naming the combination."""
    values = {**_values(sweep, method, chosen), "preset": preset, "seed": seed}
    try:
        return resolve(values).to_dict()
    except ConfigError as exc:
        where = ", ".join(f"{k}={v}" for k, v in chosen.items())
        # named as the grid and the fixed options name them: 'rank', not 'lora.rank'; 'prompt_column', not
        # 'hf:data.csv.prompt_column'
        said = str(exc).rstrip(".")
        for owner in (method, sweep.stream):
            said = re.sub(rf"(?<![\w.\-]){re.escape(owner)}\.(\w+)", r"\1", said)
        raise UserError(f"{said} (in the sweep's run {method}, preset {preset}"
                        + (f", {where}" if where else "") + ").") from None


def launch_sweep(store, sweep: Sweep | Plan, launcher=None, resources=None,
                 priority: str = "batch") -> tuple[Plan, list[int]]:
    """Queue the sweep's runs that the store does not hold yet (with `launcher`, cldash.runs.launchers; default the
    local one); returns the plan and the ids of the runs queued now. A sweep is a batch (cldash.runs.priority)
    unless a person launched it to watch it (the Launch page says interactive)."""
    p = sweep if isinstance(sweep, Plan) else plan(store, sweep)
    new = p.new
    if not new:
        return p, []
    ids = launch(store, [p.configs[i] for i in new], [p.keys[i] for i in new], group_key=p.sweep.group,
                 names=[p.configs[i]["name"] for i in new], launcher=launcher, resources=resources,
                 priority=priority)
    return p, ids


def groups(runs: list[dict]) -> list[str]:
    """The sweeps among the runs' groups, by name, in the order first seen."""
    return list(dict.fromkeys(r["group_key"][len(GROUP_PREFIX):] for r in runs
                              if (r.get("group_key") or "").startswith(GROUP_PREFIX)))
