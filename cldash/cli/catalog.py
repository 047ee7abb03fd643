"""What cldash offers, from its registries: `cldash methods` (every method and its options), `cldash
streams` (every task stream and its options) and `cldash presets` (each method's paper preset next to the
common regime, with the source of every value)."""

from __future__ import annotations

from cldash.config.presets import AIDS, regime_table
from cldash.core.errors import UserError
from cldash.core.options import describe


def cmd_methods(args) -> int:
    from cldash.methods import REGISTRY, marked_label  # deferred: imports torch

    for name, cls in sorted(REGISTRY.items()):
        print(f"{name:<10} {marked_label(cls)} — {cls.paper}")
        if cls.policies:
            print(f"{'':<10}   policies: {', '.join(cls.policies)} (default {cls.policies[0]}); "
                  f"default lr {cls.default_lr:g}")
            for policy, note in cls.policy_notes.items():
                print(f"{'':<10}     {policy}: {note}")
        for row in describe(cls.Config):
            print(f"{'':<10}   --{row['name'].replace('_', '-')} {row['default']!s:<10} {row['help']}")
    return 0


def cmd_streams(args) -> int:
    from cldash.streams import STREAMS  # deferred: imports torch

    for name, cls in sorted(STREAMS.items()):
        print(f"{name:<16} {cls.summary}")
        for row in describe(cls.Options):
            print(f"{'':<16}   --stream-{row['name'].replace('_', '-')} {row['default']!s:<12} {row['help']}")
    return 0


def add_presets_arguments(p) -> None:
    p.add_argument("--method", metavar="NAME", help="only this method")


def cmd_presets(args) -> int:
    """Each method's two regimes side by side: the common value, the authors', and where it comes from."""
    from cldash.methods import get_method, paper_presets  # deferred: imports torch

    PAPER = paper_presets()
    names = [args.method] if args.method else sorted(PAPER) + sorted(AIDS)
    for name in names:
        if name not in AIDS:
            get_method(name)   # an unknown name gets its one sentence
        if name not in PAPER and name not in AIDS:
            raise UserError(f"{name} has no paper preset; the methods with one are: {', '.join(sorted(PAPER))}.")
        if name in AIDS:
            _print_aid(name)
        else:
            _print_paper(name, PAPER[name])
    return 0


def _print_aid(name: str) -> None:
    """A continual-learning aid's preset (replay, EWC): each value and where it comes from."""
    preset = AIDS[name]
    print(f"{name}: --aid-preset {name}, from {preset.paper} (code: {preset.code})")
    for key, cited in preset.values.items():
        print(f"  {key:<22} {str(cited.value):>14}  {cited.source}")
    for note in preset.notes:
        print(f"  note: {note}")
    print()


def _print_benchmarks(preset) -> None:
    """The authors' values for each named benchmark, over the preset's own (epochs become steps per task)."""
    for stream, values in preset.benchmarks.items():
        print(f"  on --stream {stream}:")
        for key, cited in values.items():
            print(f"    {key:<20} {str(cited.value):>14}  {cited.source}")
            if cited.note:
                print(f"    {'':<20} {'':>14}  translated: {cited.note}")


def _print_paper(name: str, preset) -> None:
    """A method's paper preset next to the common regime, option by option, with each value's source."""
    print(f"{name}: --preset paper, from {preset.paper}" + (f" (code: {preset.code})" if preset.code else ""))
    print(f"  {'option':<22} {'common':>14} {'paper':>14}  source")
    for row in regime_table(name):
        print(f"  {row['option']:<22} {row['common'][:14]:>14} {row['paper'][:14]:>14}  {row['source']}")
        if row["note"]:
            print(f"  {'':<22} {'':>14} {'':>14}  translated: {row['note']}")
    _print_benchmarks(preset)
    for note in preset.notes:
        print(f"  note: {note}")
    print()
