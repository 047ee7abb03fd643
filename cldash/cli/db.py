"""`cldash db`: the store's schema (`db current` shows its revision against this cldash's, `db upgrade`
applies the pending Alembic revisions; any command applies them on opening the store), and its artifact location
(`db artifacts` shows where new runs keep their checkpoints and adapters, `db artifacts URL` sets it in the store,
for every process and machine that opens it)."""

from __future__ import annotations

from cldash import __version__
from cldash.core.errors import UserError
from cldash.store import Store, migrations
from cldash.store.artifacts import SETTING, check_location, default_roots


def add_db_arguments(p) -> None:
    p.add_argument("action", choices=("current", "upgrade", "artifacts"),
                   help="current: the store's revision against this cldash's; upgrade: apply the pending ones; "
                        "artifacts [URL]: where new runs keep their checkpoints and adapters (URL: set it)")
    p.add_argument("value", nargs="?", metavar="URL", help="with artifacts: a folder or an fsspec URL to set")


def cmd_db(args) -> int:
    """`db current`: the store's schema revision against this cldash's; `db upgrade`: apply what is pending;
    `db artifacts [URL]`: the store's artifact location, shown or set."""
    if args.action == "artifacts":
        return _artifacts(args)
    if args.value is not None:
        raise UserError(f"`cldash db {args.action}` takes no value (got {args.value!r}).")
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


def _artifacts(args) -> int:
    location = check_location(args.value) if args.value is not None else None   # a bad one: nothing opened or set
    store = Store(args.db)
    if location is not None:
        store.set_setting(SETTING, location)
        print(f"new runs in {store.display} keep their checkpoints and adapters at {location} (the store's setting; "
              "--artifacts and $CLDASH_ARTIFACTS still come first)")
        return 0
    location, source = store.artifact_location()
    where = "next to the store" if store.url.startswith("sqlite") else \
        "in this machine's cache; another machine will not find them"
    print(f"{location} ({source})" if location else f"{default_roots(store.url)[0].parent} (default: {where})")
    return 0
