"""The run store: where every run's configuration, progress and results are kept, and where the
dashboard reads them back.

SQLAlchemy 2 over SQLite by default (``runs.db`` in the working directory; ``--db`` or ``CLDASH_DB``
take a path or any SQLAlchemy URL, PostgreSQL included). SQLite runs in WAL mode with a busy timeout,
and a run writes in short batched transactions (`RunWriter.flush`), so several run processes can
write while the dashboard reads.

Modules, bottom to top (each imports only those above it in this list):

- ``urls``: a store's path or URL, its password masked in messages, the SQLite file behind it, and
  the engine (one per URL, SQLite pragmas included).
- ``schema``: the tables as SQLAlchemy models (`Run`, `TaskRow`, `Evaluation`, ...), run statuses
  (`ACTIVE`, `ENDED`) and the spectrum measures stored.
- ``artifacts``: where runs' checkpoints and saved adapters live (a folder or an fsspec URL such as
  s3://bucket/prefix: --artifacts, $CLDASH_ARTIFACTS, the store's setting, or next to a SQLite file), and
  their atomic writes.
- ``refusals``: why a store refused a write, in a few words (`write_failure`).
- ``migrations/``: the schema's Alembic revisions, applied as a store is opened.
- ``writer``: `RunWriter`, the buffered writer of a run's rows.
- ``store``: `Store`, one store opened, with its run-row writes and its readers; `count_rows`.

This module only gathers the names other packages use: ``from cldash.store import Store``.
Modules inside the package import each other directly, never through here.
"""

import cldash.store.migrations as migrations
from cldash.store.refusals import write_failure

# Private names that tests and bench/ reach for: the cached engine (to dispose of it), the JSON of a column,
# the stores found at the head revision (bench/store_open.py clears it).
from cldash.store.schema import (
                                 ACTIVE,
                                 ENDED,
                                 SPECTRUM_MEASURES,
                                 Base,
                                 Evaluation,
                                 Meta,
                                 ModuleRow,
                                 OrderRow,
                                 Run,
                                 Scalar,
                                 Spectrum,
                                 TaskRow,
                                 _j,  # noqa: F401
)
from cldash.store.store import (
                                 _READY,  # noqa: F401
                                 Store,
                                 build_matrix,
                                 count_rows,
)
from cldash.store.urls import (
                                 _engine,  # noqa: F401
                                 default_db,
                                 mask_url,
                                 sqlite_path,
                                 to_url,
)
from cldash.store.writer import FLUSH_SECONDS, RunWriter

__all__ = ["ACTIVE", "ENDED", "FLUSH_SECONDS", "SPECTRUM_MEASURES", "Base", "Evaluation", "Meta", "ModuleRow",
           "OrderRow", "Run", "RunWriter", "Scalar", "Spectrum", "Store", "TaskRow", "build_matrix", "count_rows",
           "default_db", "mask_url", "migrations", "sqlite_path", "to_url", "write_failure"]
