"""`cldash db`: the store's schema (`db current` shows its revision against this cldash's, `db upgrade`
applies the pending Alembic revisions; any command applies them on opening the store)."""

from __future__ import annotations

from cldash import __version__
from cldash.store import Store, migrations


def add_db_arguments(p) -> None:
    p.add_argument("action", choices=("current", "upgrade"),
                   help="current: the store's revision against this cldash's; upgrade: apply the pending ones")


def cmd_db(args) -> int:
    """`db current`: the store's schema revision against this cldash's; `db upgrade`: apply what is pending."""
    store = Store(args.db, migrate=False)
    if args.action == "upgrade":
        print(migrations.upgrade(store) or f"the run store {store.display} is at revision {migrations.HEAD}, "
              f"the head of this cldash {__version__}; nothing to upgrade.")
        return 0
    at = migrations.current(store)
    if not at["known"]:
        pending = "none: the store is newer than this cldash; upgrade cldash (pip install -U cldash) to open it"
    elif at["pending"]:
        pending = ", ".join(at["pending"]) + ": `cldash db upgrade` (or any command) applies " + \
            ("them" if len(at["pending"]) > 1 else "it") + (f", after copying the file to {at['backup']}"
                                                             if at["backup"] else "")
    else:
        pending = "none"
    print(f"store     {at['store']}")
    print(f"revision  {at['revision'] or 'none (an empty database)'}")
    print(f"head      {at['head']} (this cldash {__version__})")
    print(f"cldash    {at['cldash'] + ' last created or upgraded it' if at['cldash'] else 'not recorded'}")
    print(f"pending   {pending}")
    return 0
