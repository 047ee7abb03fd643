"""A grid of option values, as `cldash sweep --grid` and the Launch page's sweep section read it.

One entry names an option and its values: ``rank=4,8,16``, or a JSON list for values that hold commas
(``angles=[[45,90],[90,180]]``). The name's dashes read as underscores. The values stay as typed (strings,
or what the JSON list holds): `cldash.runs.sweeps.plan` finds where each option lives and resolve checks
its values, naming the run they are in.

The CLI and the page differ in two ways, kept as they were: each says a name given twice in its own words
(`twice`), and the page reads the values unchecked (`checked=False`), leaving an empty list of values to
the sweep's plan and a JSON list that does not parse to the JSON parser's own message.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from cldash.core.errors import UserError


def split_option(text: str) -> tuple[str, str]:
    """``rank=4,8,16`` -> ("rank", "4,8,16"), the name with dashes read as underscores."""
    name, sep, values = text.partition("=")
    name = name.strip().replace("-", "_")
    if not sep or not name or not values.strip():
        raise UserError(f"write an option as NAME=VALUE (a grid as NAME=V1,V2,...), e.g. rank=4,8,16 (got {text!r}).")
    return name, values.strip()


def grid_values(text: str, checked: bool = True) -> list:
    """A grid's values: ``4,8,16``, or a JSON list for values that hold commas (``[[45,90],[90,180]]``).

    Checked, an empty list or a JSON list that does not parse is one sentence; unchecked, the list may be
    empty and a JSON error is json's ValueError."""
    if text.startswith("["):
        if not checked:
            return json.loads(text)
        try:
            values = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"the grid values {text!r} are not a JSON list ({exc.msg}).") from None
        if not isinstance(values, list) or not values:
            raise UserError(f"the grid values {text!r} must be a non-empty JSON list.")
        return values
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values and checked:
        raise UserError(f"give the grid's values separated by commas, e.g. rank=4,8,16 (got {text!r}).")
    return values


def parse_grid(entries: Iterable[str], twice: str, checked: bool = True) -> dict[str, list]:
    """Option name -> its values, for each ``NAME=V1,V2`` entry in order; `twice` is the sentence for a name
    given twice (``{name}`` stands for it)."""
    grid: dict[str, list] = {}
    for entry in entries:
        name, values = split_option(entry)
        if name in grid:
            raise UserError(twice.format(name=name))
        grid[name] = grid_values(values, checked)
    return grid


def grid_lines(text: str) -> list[str]:
    """The entries of a grid written one a line (the Launch page's text area), blank lines left out."""
    return [line.strip() for line in text.splitlines() if line.strip()]
