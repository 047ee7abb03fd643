"""`cldash report`: one self-contained HTML handout of a comparison (runs named by id or range, or a
group's), that opens offline (cldash.dashboard.report)."""

from __future__ import annotations

from pathlib import Path

from cldash.cli.waiting import store_reconciled
from cldash.core.errors import UserError


def add_report_arguments(p) -> None:
    p.add_argument("runs", nargs="*", metavar="RUN", help="run ids or ranges: 3 5 or 3-6 or 3,5,9")
    p.add_argument("--group", metavar="KEY", help="every run of a group (a sweep:NAME, a demo's or a lesson's key)")
    p.add_argument("--out", metavar="FILE.html", help="where to write it (default: cldash-handout-runs-....html)")
    p.add_argument("--title", metavar="TEXT", help="the handout's title (default: the runs' ids)")


def cmd_report(args) -> int:
    """One self-contained HTML handout of these runs (or a group's), opened offline: cldash.dashboard.report."""
    from cldash.dashboard.report import (  # deferred: imports plotly
        handout_file_name,
        parse_run_ids,
        size_text,
        write_handout,
    )

    store = store_reconciled(args.db)
    group = store.group_run_ids(args.group) if args.group else []
    if args.group and not group:
        groups = ", ".join(key for key, _ in store.run_groups()) or "none in this store"
        raise UserError(f"there is no group {args.group!r} in {store.display}; the groups are: {groups}.")
    ids = parse_run_ids(args.runs) + group
    if not ids:
        raise UserError("name the runs to put in the handout, e.g. cldash report 3-6 --out handout.html "
                        "(or --group KEY); `cldash list` shows the runs.")
    out = Path(args.out or handout_file_name(ids))
    size = write_handout(store, ids, out, title=args.title)
    print(f"{out} ({size_text(size)}, {len(set(ids))} run{'s' * (len(set(ids)) != 1)})")
    return 0
