"""Where a run's files outside the database live (its task-boundary checkpoints and its saved adapters), so
that a run that one machine ran can be resumed, forked and exported from another.

An artifact location is a local folder (a shared mount included) or any fsspec URL: ``s3://bucket/prefix``,
``gs://bucket/prefix``, ``file:///path``. The location of a new run is, first found:

1. ``--artifacts URL`` (the global CLI option; `given`),
2. ``$CLDASH_ARTIFACTS``,
3. the store's setting ``artifacts`` (`cldash db artifacts URL`), which every process that opens the store finds,
4. the default: next to a SQLite file (``runs.db`` -> ``runs.checkpoints/``, ``runs.adapters/``), or, for another
   store, this machine's $CLDASH_CACHE, which no other machine sees (`local_only_warning` says so, once).

A run records a location other than the default when it is created (``runs.artifacts``), so any process finds
its files whatever its own settings. Under a location the files are ``<name>.checkpoints/run-<id>/task-<k>.pt``
(with ``sha256.json``) and ``<name>.adapters/run-<id>.pt``, where ``<name>`` is the store's SQLite file stem or
its database's name: two stores can share one location.

Writes are atomic. Locally: a temporary file, fsynced, renamed into place. To an object store (S3, GCS, Azure):
the whole object in one PUT, which a reader sees whole or not at all; to another fsspec filesystem: a temporary
name, then a move. The caller writes a checksum file last (cldash.engine.checkpoints). fsspec and its drivers
are the ``artifacts`` extra, imported only for a URL.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from cldash.core.cache import cache_dir, sha256_file
from cldash.core.errors import UserError
from cldash.store.urls import _PLAIN_PATH, _URL, display_of, sqlite_path

ENV = "CLDASH_ARTIFACTS"
SETTING = "artifacts"
# Filesystems whose objects appear whole on one PUT (a multipart upload too, at its completion): no rename needed
OBJECT_STORES = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss"}
_LOCAL_PROTOCOLS = {"file", "local"}

_given: str | None = None   # --artifacts, for the command that runs in this process (`given`)


@contextlib.contextmanager
def given(location: str | None):
    """``with given(URL):`` the location `--artifacts` names, for the command inside (None: none given). Both it
    and $CLDASH_ARTIFACTS are checked first, so that a command refuses a bad one before it opens the store."""
    global _given
    if location is None and os.environ.get(ENV):
        try:
            check_location(os.environ[ENV])
        except UserError as exc:
            raise UserError(str(exc).replace("the artifact location", f"the artifact location in ${ENV}", 1)) from None
    before, _given = _given, (check_location(location) if location is not None else None)
    try:
        yield _given
    finally:
        _given = before


def chosen(setting: Callable[[], str | None]) -> tuple[str | None, str]:
    """The location for a new run and where it came from: --artifacts, $CLDASH_ARTIFACTS, the store's setting
    (`setting()` reads it, only if it is needed), or (None, "default")."""
    for value, source in ((lambda: _given, "--artifacts"), (lambda: os.environ.get(ENV), f"${ENV}"),
                          (setting, "the store's setting")):
        found = value()
        if found:
            return check_location(found), source
    return None, "default"


def check_location(location: str) -> str:
    """`location` as a run records it (a local path made absolute, a URL as given), or one sentence on what is
    wrong with it: an unknown protocol, a driver not installed, a mistyped URL."""
    text = str(location).strip()
    if not text:
        raise UserError("the artifact location is empty; give a folder or a URL such as s3://bucket/prefix.")
    protocol = _protocol(text)
    if protocol is None:
        if ":" in text and not _PLAIN_PATH.match(text):
            raise UserError(f"the artifact location {text!r} looks like a URL but is not one (a URL starts with its "
                            "protocol and ://, as in s3://bucket/prefix); for a folder of that name, write it as a "
                            f"path: ./{text}.")
        return str(Path(text).expanduser().resolve())
    if protocol in _LOCAL_PROTOCOLS:
        return str(Path(text.split("://", 1)[1]).expanduser().resolve())
    try:
        import fsspec  # deferred: only a URL needs it (the artifacts extra)
    except ImportError:
        raise UserError(f"the artifact location {text} needs fsspec, which is not installed; "
                        "pip install 'cldash[artifacts]'.") from None
    try:
        fsspec.get_filesystem_class(protocol)
    except ValueError:
        raise UserError(f"the artifact location {text} has a protocol fsspec does not know ({protocol}://); "
                        "give a folder, or a URL such as s3://bucket/prefix or gs://bucket/prefix.") from None
    except ImportError as exc:
        raise UserError(f"the artifact location {text} needs a package that is not installed "
                        f"({str(exc).strip().rstrip('.')}).") from None
    if not text.split("://", 1)[1].strip("/"):
        raise UserError(f"the artifact location {text} names no bucket or folder; give one, as in {protocol}://"
                        "bucket/prefix.")
    return text


def _protocol(text: str) -> str | None:
    return text.split("://", 1)[0].lower() if _URL.match(text) else None


def store_name(store_url: str) -> str:
    """The store's name in a location shared by several stores: its SQLite file's stem, else its database's name."""
    db = sqlite_path(store_url)
    if db is not None:
        return db.stem
    name = store_url.rsplit("/", 1)[-1].split("?", 1)[0]
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "store"


def local_only_warning(store_url: str, location: str | None) -> str | None:
    """The one line a run prints when its files stay where only this machine can read them: a store that is
    not a SQLite file (PostgreSQL: other machines run and read its runs) with no artifact location set."""
    if location is not None or store_url.startswith("sqlite"):
        return None
    return (f"cldash: the run store {display_of(store_url)} is shared, but no artifact location is set, so this "
            f"run's checkpoints and adapters stay in this machine's cache ({default_roots(store_url)[0].parent}): "
            f"resume, fork and export from another machine will not find them; set one with --artifacts URL, "
            f"${ENV} or `cldash db artifacts URL`.")


def default_roots(store_url: str) -> tuple[Path, Path]:
    """The default folders of checkpoints and adapters: next to a SQLite file, else in this machine's cache."""
    db = sqlite_path(store_url)
    if db is not None:
        return db.with_name(db.stem + ".checkpoints"), db.with_name(db.stem + ".adapters")
    key = hashlib.sha256(store_url.encode()).hexdigest()[:16]
    return cache_dir() / "checkpoints" / key, cache_dir() / "adapters" / key


def open_location(store_url: str, location: str | None) -> Artifacts:
    """The files of runs that record `location` (None: the store's default place)."""
    if location is None:
        return LocalArtifacts(*default_roots(store_url))
    location = check_location(location)
    name = store_name(store_url)
    if _protocol(location) is None:
        root = Path(location)
        return LocalArtifacts(root / f"{name}.checkpoints", root / f"{name}.adapters")
    return RemoteArtifacts(location, name)


class Artifacts:
    """One artifact location: the paths of a run's files in it, and the few operations on them that the
    checkpoints and the adapters need. Paths are strings; `where` names one in a message."""

    def checkpoint_dir(self, run_id: int) -> str:
        raise NotImplementedError

    def adapter_file(self, run_id: int) -> str:
        raise NotImplementedError

    def join(self, folder: str, name: str) -> str:
        raise NotImplementedError

    def write(self, path: str, fill: Callable[[BinaryIO], None]) -> str:
        """Write what `fill(file)` writes as the file at `path`, atomically; returns its SHA-256 (hex)."""
        raise NotImplementedError

    def read(self, path: str) -> bytes:
        """The file's bytes (FileNotFoundError if there is none)."""
        raise NotImplementedError

    def exists(self, path: str) -> bool:
        raise NotImplementedError

    def names(self, folder: str) -> list[str]:
        """The names of the files in `folder` (none if it does not exist)."""
        raise NotImplementedError

    def remove(self, path: str) -> None:
        """Remove a file if it is there."""
        raise NotImplementedError

    def remove_tree(self, folder: str) -> None:
        """Remove a folder and everything in it, if it is there."""
        raise NotImplementedError

    def where(self, path: str) -> str:
        return path


class LocalArtifacts(Artifacts):
    """A local folder (a shared mount is one too): pathlib, a temporary file renamed into place."""

    def __init__(self, checkpoints: Path, adapters: Path):
        self.checkpoints, self.adapters = Path(checkpoints), Path(adapters)

    def checkpoint_dir(self, run_id: int) -> str:
        return str(self.checkpoints / f"run-{run_id}")

    def adapter_file(self, run_id: int) -> str:
        return str(self.adapters / f"run-{run_id}.pt")

    def join(self, folder: str, name: str) -> str:
        return str(Path(folder) / name)

    def write(self, path: str, fill: Callable[[BinaryIO], None]) -> str:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
        try:
            with open(tmp, "wb") as fh:
                fill(fh)
                fh.flush()
                os.fsync(fh.fileno())   # on disk before the rename names it
            digest = sha256_file(tmp)
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return digest

    def read(self, path: str) -> bytes:
        return Path(path).read_bytes()

    def exists(self, path: str) -> bool:
        return Path(path).exists()

    def names(self, folder: str) -> list[str]:
        d = Path(folder)
        return sorted(p.name for p in d.iterdir() if p.is_file()) if d.is_dir() else []

    def remove(self, path: str) -> None:
        Path(path).unlink(missing_ok=True)

    def remove_tree(self, folder: str) -> None:
        shutil.rmtree(folder, ignore_errors=True)


class RemoteArtifacts(Artifacts):
    """An fsspec URL. Its filesystem takes its settings from the environment as its driver does: for S3,
    AWS_ENDPOINT_URL_S3 (or AWS_ENDPOINT_URL) for a server other than AWS's, and the usual AWS credentials, so
    a run process needs nothing of its own; fsspec's config files work too."""

    def __init__(self, location: str, name: str):
        import fsspec  # deferred: only a URL needs it (the artifacts extra)

        self.location = location.rstrip("/")
        self.protocol = _protocol(location)
        self.fs, root = fsspec.core.url_to_fs(self.location)
        self.root = root.rstrip("/")
        self.checkpoints = f"{self.root}/{name}.checkpoints"
        self.adapters = f"{self.root}/{name}.adapters"

    def checkpoint_dir(self, run_id: int) -> str:
        return f"{self.checkpoints}/run-{run_id}"

    def adapter_file(self, run_id: int) -> str:
        return f"{self.adapters}/run-{run_id}.pt"

    def join(self, folder: str, name: str) -> str:
        return f"{folder}/{name}"

    @contextlib.contextmanager
    def _reaching(self, path: str):
        """A driver's own errors (botocore's: no connection, no credentials) as OSError, which the callers
        handle, naming the place: FileNotFoundError and the other OSErrors pass as they are."""
        try:
            yield
        except OSError:
            raise
        except Exception as exc:  # noqa: BLE001 - each driver has its own exception classes
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise OSError(f"cannot reach {self.where(path)} ({detail})") from None

    def write(self, path: str, fill: Callable[[BinaryIO], None]) -> str:
        # Written whole to a local temporary file first: its checksum is of exactly the bytes that are sent,
        # and a `fill` that fails leaves nothing remote.
        with tempfile.TemporaryDirectory(prefix="cldash-artifact-") as tmpdir:
            local = Path(tmpdir) / "object"
            with open(local, "wb") as fh:
                fill(fh)
            digest = sha256_file(local)
            with self._reaching(path):
                if self.protocol in OBJECT_STORES:
                    self.fs.put_file(str(local), path)
                else:
                    tmp = f"{path}.tmp{os.getpid()}"
                    self.fs.put_file(str(local), tmp)
                    self.fs.mv(tmp, path)
        self.fs.invalidate_cache(path.rsplit("/", 1)[0])
        return digest

    def read(self, path: str) -> bytes:
        with self._reaching(path):
            return self.fs.cat_file(path)

    def exists(self, path: str) -> bool:
        self.fs.invalidate_cache(path)
        with self._reaching(path):
            return self.fs.exists(path)

    def names(self, folder: str) -> list[str]:
        self.fs.invalidate_cache(folder)   # another machine may have written since this process listed it
        try:
            with self._reaching(folder):
                entries = self.fs.ls(folder, detail=True)
        except FileNotFoundError:
            return []
        return sorted(e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries if e.get("type") == "file")

    def remove(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError), self._reaching(path):
            self.fs.rm_file(path)
        self.fs.invalidate_cache(path.rsplit("/", 1)[0])

    def remove_tree(self, folder: str) -> None:
        with contextlib.suppress(FileNotFoundError), self._reaching(folder):
            self.fs.rm(folder, recursive=True)
        self.fs.invalidate_cache(folder)

    def where(self, path: str) -> str:
        return f"{self.protocol}://{path}"

