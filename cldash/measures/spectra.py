"""Exact spectra of weight updates and the shape measures drawn from them.

Every adapter update is kept in factored form, ``dW = B @ A`` with ``B: (m, k)`` and
``A: (k, n)``. Its singular values are those of a small ``k x k`` core obtained after two thin
QRs (reference note baseline-methods.md, section 1)::

    B = Q_B R_B,  A^T = Q_A R_A   =>   dW = Q_B (R_B R_A^T) Q_A^T

which costs O((m + n) k^2) and never forms the ``m x n`` matrix. Sums and differences of
updates stay factored by concatenation: ``B1 A1 - B0 A0 = [B1 | -B0] [A1; A0]``. Dense updates
(full fine-tuning, DoRA's effective update) use ``torch.linalg.svdvals``, or a randomized
top-k (``torch.svd_lowrank``) when the layer is large.

Shape measures follow section 7 of the same note: effective rank (Roy & Vetterli, EUSIPCO
2007, L1-normalised), stable rank, top-1 energy share, condition number over the kept values,
Frobenius norm and numerical rank, where values below ``max(m, n) * eps * s_1`` are dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

# Past this size a dense update's spectrum is taken as a randomized top-k, not exactly.
EXACT_DENSE_LIMIT = 1024
# Number of singular values stored per update (the rest are summarised by the measures).
TOP_K = 64
FLOAT32_EPS = float(np.finfo(np.float32).eps)


@dataclass
class LowRank:
    """An update ``B @ A`` in factored form; ``B: (m, k)``, ``A: (k, n)``."""

    B: torch.Tensor
    A: torch.Tensor

    @property
    def shape(self) -> tuple[int, int]:
        return self.B.shape[0], self.A.shape[1]

    @property
    def inner(self) -> int:
        return self.B.shape[1]

    def dense(self) -> torch.Tensor:
        return self.B @ self.A

    def detach_clone(self) -> LowRank:
        return LowRank(self.B.detach().clone(), self.A.detach().clone())


@dataclass
class Dense:
    """An update held as the full ``(m, n)`` matrix."""

    M: torch.Tensor

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.M.shape)

    def dense(self) -> torch.Tensor:
        return self.M

    def detach_clone(self) -> Dense:
        return Dense(self.M.detach().clone())


Update = LowRank | Dense


def concat(parts: list[LowRank], signs: list[float] | None = None) -> LowRank:
    """The factored sum ``sum_i sign_i * B_i A_i`` as one LowRank."""
    signs = signs or [1.0] * len(parts)
    B = torch.cat([s * p.B for s, p in zip(signs, parts)], dim=1)
    A = torch.cat([p.A for p in parts], dim=0)
    return LowRank(B, A)


def difference(now: Update, before: Update) -> Update:
    """``now - before``, factored when both are factored."""
    if isinstance(now, LowRank) and isinstance(before, LowRank):
        if before.inner == 0:
            return now
        if now.inner == 0:
            return LowRank(-before.B, before.A)
        return concat([now, before], [1.0, -1.0])
    return Dense(now.dense() - before.dense())


def _work_dtype(t: torch.Tensor) -> torch.dtype:
    # float64 is cheap on the CPU for these sizes and makes tiny singular values trustworthy;
    # on a GPU float32 keeps the cost in line with a training step.
    return torch.float64 if t.device.type == "cpu" else torch.float32


def lowrank_singular_values(B: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """Singular values of ``B @ A`` from the QR core, descending. ``B: (m, k)``, ``A: (k, n)``."""
    dtype = _work_dtype(B)
    B = B.detach().to(dtype)
    A = A.detach().to(dtype)
    m, k = B.shape
    n = A.shape[1]
    if k == 0:
        return torch.zeros(0, dtype=dtype, device=B.device)
    if k >= min(m, n):  # the core would be no smaller than the matrix itself
        return torch.linalg.svdvals(B @ A)
    _, R_B = torch.linalg.qr(B)      # (k, k)
    _, R_A = torch.linalg.qr(A.T)    # (k, k)
    return torch.linalg.svdvals(R_B @ R_A.T)


def dense_singular_values(M: torch.Tensor, top_k: int = TOP_K) -> torch.Tensor:
    """Singular values of a dense matrix: exact up to EXACT_DENSE_LIMIT, else randomized top-k."""
    dtype = _work_dtype(M)
    M = M.detach().to(dtype)
    if min(M.shape) <= EXACT_DENSE_LIMIT:
        return torch.linalg.svdvals(M)
    q = min(top_k + 10, min(M.shape))
    _, S, _ = torch.svd_lowrank(M, q=q, niter=4)
    return S[:top_k]


def update_singular_values(update: Update) -> torch.Tensor:
    if isinstance(update, LowRank):
        return lowrank_singular_values(update.B, update.A)
    return dense_singular_values(update.M)


def kept_values(sigma, shape: tuple[int, int]) -> np.ndarray:
    """The singular values above the numerical tolerance ``max(m, n) * eps * s_1``."""
    sigma = np.asarray(sigma, dtype=np.float64)
    if sigma.size == 0 or sigma[0] <= 0.0:
        return sigma[:0]
    tol = max(shape) * FLOAT32_EPS * sigma[0]   # updates are trained in float32 at best
    return sigma[sigma > tol]


def shape_measures(sigma, shape: tuple[int, int]) -> dict[str, float]:
    """Spectrum-shape measures of an update with singular values `sigma` (descending).

    A zero update (LoRA at step 0) has no spectrum: its measures are NaN except the norm (0)
    and the numerical rank (0).
    """
    sigma = np.asarray(sigma.detach().cpu() if isinstance(sigma, torch.Tensor) else sigma, dtype=np.float64)
    frob = float(np.sqrt((sigma ** 2).sum())) if sigma.size else 0.0
    s = kept_values(sigma, shape)
    nan = float("nan")
    if s.size == 0:
        return {"erank": nan, "stable_rank": nan, "top1_energy": nan, "condition": nan,
                "frobenius": frob, "numerical_rank": 0, "entropy": nan}
    p = s / s.sum()
    entropy = float(-(p * np.log(p)).sum())
    energy = s ** 2
    return {
        "erank": math.exp(entropy),
        "stable_rank": float(energy.sum() / energy[0]),
        "top1_energy": float(energy[0] / energy.sum()),
        "condition": float(s[0] / s[-1]),
        "frobenius": frob,
        "numerical_rank": int(s.size),
        # normalised spectral entropy H / ln k, in [0, 1] (0 for a rank-1 update)
        "entropy": entropy / math.log(s.size) if s.size > 1 else 0.0,
    }


def energy_in_subspace(update: Update, U: torch.Tensor) -> float:
    """Share of the update's Frobenius energy inside the column space of orthonormal `U`.

    ``||U^T dW||_F^2 / ||dW||_F^2``; with `U` the top left singular vectors of the pre-trained
    weight this is the "stays in the pre-trained subspace" indicator (WeGeFT card, section 2.6).
    NaN for a zero update.
    """
    return analyze({0: update}, {0: U})[0].w0_energy


@dataclass
class Analysis:
    """The spectrum of one update and what is derived from it."""

    sigma: np.ndarray               # singular values, descending (float64)
    measures: dict[str, float]
    w0_energy: float                # share of energy in the given subspace (NaN without one)
    shape: tuple[int, int]


def _finish(sigma: np.ndarray, shape, inside: float | None) -> Analysis:
    measures = shape_measures(sigma, shape)
    total = measures["frobenius"] ** 2
    w0 = inside / total if inside is not None and total > 0 else float("nan")
    measures["w0_energy"] = w0
    return Analysis(sigma, measures, w0, shape)


def analyze(updates: dict, bases: dict | None = None) -> dict:
    """Spectra of many updates at once: {key: Analysis}.

    Factored updates of the same shapes are stacked and go through one batched thin QR pair and
    one batched ``svdvals`` (a model has a few distinct layer shapes, so this is a handful of
    calls however many layers there are). The QR of ``A^T`` is reused for the energy inside
    ``bases[key]`` (orthonormal columns): ``||U^T B A||_F = ||U^T B R_A^T||_F``.
    """
    bases = bases or {}
    out = {}
    groups: dict[tuple, list] = {}
    for key, u in updates.items():
        if isinstance(u, LowRank) and 0 < u.inner < min(u.shape):
            U = bases.get(key)
            gkey = (tuple(u.B.shape), tuple(u.A.shape), u.B.device, None if U is None else tuple(U.shape))
            groups.setdefault(gkey, []).append(key)
            continue
        dense = u.dense() if isinstance(u, LowRank) and u.inner else (u.M if isinstance(u, Dense) else None)
        if dense is None:   # an empty factorisation: the zero update
            out[key] = _finish(np.zeros(0), u.shape, None)
            continue
        sigma = dense_singular_values(dense)
        U = bases.get(key)
        inside = None
        if U is not None:
            d = dense.detach().to(_work_dtype(dense))
            inside = float((U.detach().to(d.dtype).T @ d).pow(2).sum())
        out[key] = _finish(sigma.cpu().numpy(), u.shape, inside)
    for (_, _, _device, ushape), keys in groups.items():
        dtype = _work_dtype(updates[keys[0]].B)
        B = torch.stack([updates[k].B.detach() for k in keys]).to(dtype)        # (g, m, k)
        A = torch.stack([updates[k].A.detach() for k in keys]).to(dtype)        # (g, k, n)
        _, R_B = torch.linalg.qr(B)                                              # (g, k, k)
        _, R_A = torch.linalg.qr(A.mT)                                           # (g, k, k)
        sigma = torch.linalg.svdvals(R_B @ R_A.mT).cpu().numpy()                 # (g, k)
        inside = [None] * len(keys)
        if ushape is not None:
            U = torch.stack([bases[k].detach() for k in keys]).to(dtype)        # (g, m, kU)
            inside = ((U.mT @ B) @ R_A.mT).pow(2).sum(dim=(1, 2)).cpu().tolist()
        for i, key in enumerate(keys):
            out[key] = _finish(sigma[i], updates[key].shape, inside[i])
    return out


def top_left_singular_vectors(W: torch.Tensor, k: int) -> torch.Tensor:
    """The top-k left singular vectors of W, ``(m, k)``."""
    U, _, _ = torch.linalg.svd(W.detach().to(_work_dtype(W)), full_matrices=False)
    return U[:, :k]


def principal_angle_cosines(Q1: torch.Tensor, Q2: torch.Tensor) -> torch.Tensor:
    """Cosines of the principal angles between the column spaces of orthonormal Q1 and Q2."""
    return torch.linalg.svdvals(Q1.T @ Q2).clamp(max=1.0)


def pack(values, top_k: int = TOP_K) -> bytes:
    """Singular values as a compact float32 blob (the top `top_k`)."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values[:top_k], dtype=np.float32).tobytes()


def unpack(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype=np.float32)
