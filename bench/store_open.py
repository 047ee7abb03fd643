"""Opening a store at the head revision (`Store(path)`), before and after Alembic migrations.

The dashboard and every run process open the store, so the check on opening must stay cheap.
Both versions of cldash.store run side by side in one process, in alternating rounds, each on
its own copy of the same at-head store (tests/fixtures/store-rev1.db, upgraded): ``before`` is
cldash.store at commit BEFORE (``create_all`` and a meta query on the first open in a process),
``after`` is the working tree's (one query on alembic_version). Two cases:

- ``first``: the first open of that store in a process (the per-process cache emptied);
- ``again``: every later open (the cache says the store was already checked).

    python bench/store_open.py [--rounds 50] [--before 63c1a17]
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved, median, save  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def store_module_at(commit: str):
    """cldash/store.py as it was at `commit`, imported as a module of its own."""
    source = subprocess.check_output(["git", "-C", str(ROOT), "show", f"{commit}:cldash/store.py"], text=True)
    spec = importlib.util.spec_from_loader(f"store_{commit}", loader=None)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module   # SQLAlchemy resolves the models' annotations through it
    exec(compile(source, f"store.py@{commit}", "exec"), module.__dict__)
    return module


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=50)
    p.add_argument("--before", default="63c1a17", help="the commit before migrations")
    args = p.parse_args()

    from cldash import store as after

    before = store_module_at(args.before)
    folder = Path(tempfile.mkdtemp())
    paths = {name: str(folder / f"{name}.db") for name in ("before", "after")}
    for path in paths.values():
        shutil.copy(ROOT / "tests" / "fixtures" / "store-rev1.db", path)
        after.Store(path).engine.dispose()   # upgraded to the head: both versions read it
    modules = {"before": before, "after": after}
    for name, module in modules.items():   # engines made, first connections opened
        module.Store(paths[name]).runs()

    def first(name):
        def run():
            modules[name]._READY.clear()
            modules[name].Store(paths[name])
        return run

    def again(name):
        return lambda: modules[name].Store(paths[name])

    times = interleaved({f"{case.__name__} {name}": case(name) for case in (first, again) for name in modules},
                        args.rounds)
    ms = {k: round(1e3 * median(v), 4) for k, v in times.items()}
    save("store_open", {
        "command": f"python bench/store_open.py --rounds {args.rounds} --before {args.before}",
        "median_ms": ms,
        "after_over_before": {case: round(ms[f"{case} after"] / ms[f"{case} before"], 3)
                              for case in ("first", "again")},
    })
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
