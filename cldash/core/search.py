"""A searched hyper-parameter: what a tuning search (cldash.analysis.tuning) may vary, and over what.

A method names at most two of its own options worth searching (``Method.search_space``); the search adds
the learning rate and its schedule for every method, so each gets the same kind of search and the same
number of trials. The ranges are wide on purpose: a method whose authors tune a rate ten times another's
must be able to find it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Param:
    """One searched value: `name` is a method option (where "method") or a run field (where "run"); kind is
    "log" (log-uniform float in [low, high]), "float" (uniform), "int" (uniform integer) or "choice"."""

    name: str
    kind: str
    low: float = 0.0
    high: float = 0.0
    choices: tuple = ()
    where: str = "method"
    source: str = ""          # why this range: the authors' values it spans

    def text(self) -> str:
        if self.kind == "choice":
            return f"{self.name} in {{{', '.join(str(c) for c in self.choices)}}}"
        scale = {"log": "log-uniform", "float": "uniform", "int": "integer"}[self.kind]
        return f"{self.name} {scale} {self.low:g}..{self.high:g}"
