"""What a run logs of its method every spectra interval: the spectra of every adapted module's update, and
the method's own scalars.

Each module's cumulative update (against the pre-trained weight W0), the current task's own update (the
cumulative one minus the one at the task's start) and the method's extra updates are analysed in one
batched pass (cldash.measures.spectra); the energy in W0's top left singular directions is the "stays in
the pre-trained subspace" indicator.

Whatever the run's precision, spectra are computed in float32 or finer: the read-outs run outside autocast,
and every factor is cast up to at least float32 here (a bf16 factor, from a backbone loaded in bf16 or a
method's own buffer, has 8 bits of mantissa: its small singular values would be noise), before the
difference of two updates and before any SVD (which cldash.measures.spectra then runs in float64 on the CPU).
"""

from __future__ import annotations

import torch

from cldash.measures import spectra
from cldash.measures.spectra import TOP_K, Dense, LowRank, Update, analyze, difference, pack
from cldash.methods import Method


def at_least_float32(update: Update) -> Update:
    """`update` with every factor in float32 or finer (float64 stays float64)."""
    def up(t: torch.Tensor) -> torch.Tensor:
        return t if t.dtype in (torch.float32, torch.float64) else t.float()
    if isinstance(update, LowRank):
        return LowRank(up(update.B), up(update.A))
    return Dense(up(update.M))


class Readouts:
    """The spectra and scalars of one method, written to a run's writer."""

    def __init__(self, method: Method, writer):
        self.method = method
        self.writer = writer
        # W0's top left singular vectors: the "stays in the pre-trained subspace" indicator.
        self.w0_basis = {name: spectra.top_left_singular_vectors(layer.w0.float(), max(1, min(layer.w0.shape) // 8))
                         for name, layer in method.layers.items()}

    def snapshot(self) -> dict[str, Update]:
        """Each module's cumulative update at the start of a task (zero updates left out, so the
        task's own update is then logged as the cumulative one without a second analysis)."""
        ups = {name: at_least_float32(u.detach_clone()) for name, u in self.method.updates().items()}
        norms = analyze(ups)
        return {name: u for name, u in ups.items() if norms[name].measures["frobenius"] > 0}

    @torch.no_grad()
    def log(self, step: int, task_index: int, start: dict[str, Update]) -> None:
        """Spectra of every module's cumulative update (against W0), this task's update and the
        method's extra updates, analysed in one batched pass, plus the method's scalars."""
        if not self.writer:
            return
        updates, same = self._updates(start)
        weight_kinds = ("cumulative", "task", *self.method.weight_space_kinds)
        # energy in W0's top directions only for updates of the module's own weight (not, e.g.,
        # a tensor-train bond's unfolding, whose shape is unrelated)
        bases = {key: self.w0_basis.get(key[0]) if key[1] in weight_kinds else None for key in updates}
        results = analyze(updates, bases)
        for name in same:
            results[(name, "task")] = results[(name, "cumulative")]
        for (name, kind), a in results.items():
            self.writer.spectrum(step, task_index, name, kind, pack(a.sigma), min(len(a.sigma), TOP_K), a.measures)
        for key, value in self.method.scalars().items():
            self.writer.scalar(step, key, value)
        for key, per_module in self.method.module_scalars().items():
            for module, value in per_module.items():
                self.writer.scalar(step, key, value, module)

    def _updates(self, start: dict[str, Update]) -> tuple[dict[tuple[str, str], Update], list[str]]:
        """The updates to analyse by (module, kind), and the modules whose task update is their cumulative one
        (nothing before this task)."""
        updates, same = {}, []
        for name, update in self.method.updates().items():
            update = at_least_float32(update)
            updates[(name, "cumulative")] = update
            before = start.get(name)
            if before is None or (isinstance(before, LowRank) and before.inner == 0):
                same.append(name)    # nothing before this task: its update is the cumulative one
            else:
                updates[(name, "task")] = difference(update, before)
        updates.update({key: at_least_float32(u) for key, u in self.method.extra_updates().items()})
        return updates, same
