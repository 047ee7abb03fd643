"""Shared fixtures: a project-local backbone cache and temporary stores seeded with real runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
# Pre-trained backbones are cached inside the checkout (git-ignored) unless the caller chose a place,
# so a test session pre-trains each backbone at most once and never touches the user's cache.
os.environ.setdefault("CLDASH_CACHE", str(ROOT / ".cldash-cache"))
# One intra-op thread (unless the caller chose): the tests' tensors are tiny, and on a small machine
# shared with other work two spinning OpenMP threads per process made the suite up to 15x slower
# (measured on 2 cores next to another test run); CLI subprocesses inherit the setting.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

# Short runs: enough steps for LoRA to learn each rotation, few enough for a fast suite.
SHORT = ["--steps-per-task", "40", "--eval-interval", "20", "--spectra-interval", "10",
         "--dense-spectra-interval", "20", "--quiet"]


@pytest.fixture
def db(tmp_path) -> str:
    return str(tmp_path / "runs.db")


@pytest.fixture(scope="session")
def seeded_store(tmp_path_factory):
    """A store with one short finished LoRA run and one full fine-tuning run on digits-rotate."""
    from cldash.cli import main
    from cldash.store import Store

    path = str(tmp_path_factory.mktemp("seeded") / "runs.db")
    for method in ("lora", "full"):
        assert main(["--db", path, "run", "--method", method, "--stream", "digits-rotate",
                     "--stream-angles", "45,90,135", *SHORT]) == 0
    return Store(path)


@pytest.fixture
def no_network(monkeypatch):
    """A machine without network: every name lookup fails at once and is counted (the Hub probe of
    cldash.hub makes one; a download attempt one per retry). HF_HUB_OFFLINE is unset, and the answers
    cached from earlier loads (the probe's, the Hugging Face configs and streams) are forgotten."""
    import socket
    import sys

    import huggingface_hub.constants

    from cldash.backbones.hf import auto_config
    from cldash.streams.hf import hf_stream

    lookups = []

    def lookup(host, *args, **kwargs):
        lookups.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", lookup)
    if "cldash.hub" in sys.modules:
        monkeypatch.setattr(sys.modules["cldash.hub"], "_probed", None)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    auto_config.cache_clear()
    hf_stream.cache_clear()
    return lookups
