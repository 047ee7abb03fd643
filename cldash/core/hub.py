"""Asking the Hugging Face Hub only when it can answer.

A name that is not a local folder (``hf:gpt2``, ``--stream hf:user/data``) is fetched by transformers or
datasets from the Hub, and on a machine without network they retry for about 25 s before failing. So
before a Hub name is handed to them, cldash decides whether the Hub may be asked: not when
HF_HUB_OFFLINE is set, and not when its host does not accept a connection within a second (checked at
most once a minute). Then only the local Hugging Face cache is read (huggingface_hub's offline mode,
for the loading calls only), and a name that is not there is one sentence at once.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

PROBE_SECONDS = 1.0     # a reachable Hub accepts a connection in well under this
PROBE_KEPT_SECONDS = 60.0
_probed: tuple[float, bool] | None = None    # (when, reachable)


def _endpoint() -> str:
    from huggingface_hub import constants  # deferred: huggingface_hub, only for a Hub name

    return constants.ENDPOINT


def env_offline() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub reads it (at its import) or as the environment has it now."""
    from huggingface_hub import constants  # deferred: huggingface_hub, only for a Hub name

    return bool(constants.HF_HUB_OFFLINE) or \
        os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


def _probe_address() -> tuple[str, int]:
    """Where a download would connect first: the HTTPS proxy when one is set, else the Hub's host."""
    proxy = next((os.environ[k] for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
                  if os.environ.get(k)), None)
    url = urlsplit(proxy if proxy and "://" in proxy else f"http://{proxy}" if proxy else _endpoint())
    return url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)


def probe(address: tuple[str, int], timeout: float = PROBE_SECONDS) -> bool:
    """Whether `address` accepts a TCP connection within `timeout` seconds, name lookup included (it runs
    in a thread, since a resolver without network can take longer than any socket timeout)."""
    answer: list[bool] = []

    def connect():
        try:
            socket.create_connection(address, timeout=timeout).close()
            answer.append(True)
        except OSError:
            answer.append(False)

    thread = threading.Thread(target=connect, name="cldash-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(answer and answer[0])


def reachable() -> bool:
    """Whether the Hub (or the proxy in front of it) answers, probed at most once a minute."""
    global _probed
    now = time.monotonic()
    if _probed is None or now - _probed[0] > PROBE_KEPT_SECONDS:
        _probed = (now, probe(_probe_address()))
    return _probed[1]


@contextlib.contextmanager
def cache_only_unless_reachable(name: str):
    """Yields why `name` is not fetched from the Hub (None: it may be). When it is not, huggingface_hub is in
    its offline mode meanwhile: transformers then reads only the local cache (local_files_only), and nothing
    reaches for the network, not even huggingface_hub's own one-off lookups made while building request
    headers."""
    from huggingface_hub import constants  # deferred: huggingface_hub, only for a Hub name

    offline = why_not(name)
    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = before or offline is not None
    try:
        yield offline
    finally:
        constants.HF_HUB_OFFLINE = before


def why_not(name: str) -> str | None:
    """Why `name` must not be fetched from the Hub ("HF_HUB_OFFLINE is set", "cldash cannot reach the
    Hugging Face Hub (huggingface.co) from here"), or None when it is a local folder or the Hub answers."""
    if Path(name).is_dir():
        return None
    if env_offline():
        return "HF_HUB_OFFLINE is set"
    if not reachable():
        return f"cldash cannot reach the Hugging Face Hub ({urlsplit(_endpoint()).hostname}) from here"
    return None
