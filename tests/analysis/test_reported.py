"""The papers' own numbers: every key is a claim, every row says where it was read, metric keys exist, values are
finite, and a claim with no row reads as ()."""

from __future__ import annotations

import math

import pytest

from cldash.analysis.claims import CLAIMS, METRICS
from cldash.analysis.reported import REPORTED, SETTING, SOURCE, Reported, paper_setting, reported

# the class-incremental claims the lead adds to CLAIMS; allowed here before they exist there
NEW = {"codyra-classil", "inflora-classil", "sdlora-classil"}
KEYS = {c.key for c in CLAIMS} | NEW
SOURCES = {"abstract", "project page", "code README", "003 paraphrase only"}
ROWS = [(key, row) for key, rows in REPORTED.items() for row in rows]


@pytest.mark.parametrize("table", [REPORTED, SETTING, SOURCE], ids=["REPORTED", "SETTING", "SOURCE"])
def test_keys_are_claims(table):
    assert set(table) <= KEYS, set(table) - KEYS


def test_every_claim_has_a_setting_and_a_source():
    assert set(SETTING) == set(SOURCE) == KEYS
    assert all(SETTING[k].strip() for k in KEYS)
    assert set(SOURCE.values()) <= SOURCES


@pytest.mark.parametrize("key,row", ROWS, ids=[f"{k}:{r.method}:{r.quantity}" for k, r in ROWS])
def test_row(key, row):
    assert isinstance(row, Reported)
    assert row.where.strip() and row.quantity.strip() and row.method.strip()
    assert math.isfinite(row.value)
    assert row.unit in ("%", "")
    assert not row.metric or row.metric in METRICS, row.metric


def test_reported_lookup():
    assert reported("codyra-rank") == REPORTED["codyra-rank"]
    assert reported("eblora-spectrum") == ()
    assert reported("no-such-claim") == ()


def test_seed_note_numbers():
    """The CoDyRA page's numbers the reference note quotes (seed-methods.md, section 3)."""
    rows = {(r.quantity, r.method): r.value for r in reported("codyra-rank")}
    assert rows[("forgetting (X-TAIL)", "CoDyRA")] == 1.87
    assert rows[("forgetting (X-TAIL)", "LoRA (r=16)")] == 14.86
    assert rows[("forgetting (X-TAIL)", "LoRA (r=4)")] == 13.94
    norms = [rows[("per-task update norm ||dW||_F", f"LoRA (r={r})")] for r in (1, 4, 8, 16)]
    assert norms == [4.21, 5.37, 6.25, 7.44]
    assert rows[("per-task update norm ||dW||_F", "CoDyRA")] == 3.22


@pytest.mark.parametrize("key", sorted(KEYS))
def test_the_papers_setting_line_names_the_setting_the_verdict_was_computed_on(key):
    """The line that says how the paper's setting differs names ours as computed (a 100-step study says 100),
    never a fixed length."""
    line = paper_setting(key, "digits-rotate, vit-tiny, 100 steps per task")
    assert "100 steps per task" in line and "300" not in line and "{" not in line
