"""A named benchmark's data fetched in the background (`cldash data fetch NAME` as a process of its own), for the
Launch page: start it, tell whether it is still going, and show the end of its log. One fetch per benchmark at a
time; its pid and log live in the cache, beside the images it writes."""

from __future__ import annotations

from pathlib import Path

from cldash.core.cache import cache_dir
from cldash.runs.launchers.local import tail_lines
from cldash.runs.processes import is_run_process, start_cldash


def fetch_log(name: str) -> Path:
    return cache_dir() / "logs" / f"data-fetch-{name}.log"


def _pid_file(name: str) -> Path:
    return cache_dir() / "logs" / f"data-fetch-{name}.pid"


def fetching(name: str) -> bool:
    """Whether a background fetch of benchmark `name` is running."""
    try:
        pid = int(_pid_file(name).read_text().strip())
    except (OSError, ValueError):
        return False
    return is_run_process(pid)


def start_fetch(store, name: str, size: int) -> int:
    """Start `cldash data fetch NAME --size SIZE` in the background (unless one is running); its pid."""
    if fetching(name):
        return int(_pid_file(name).read_text().strip())
    proc = start_cldash(store, ["data", "fetch", name, "--size", str(size)], fetch_log(name),
                        f"fetch the {name} data", mode="wb")
    _pid_file(name).write_text(str(proc.pid))
    return proc.pid


def fetch_tail(name: str, lines: int = 3) -> str:
    """The last lines of the latest fetch's log ("" before any)."""
    try:
        return tail_lines(fetch_log(name), lines).strip()
    except OSError:
        return ""
