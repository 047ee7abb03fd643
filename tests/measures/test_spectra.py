"""Spectra: the QR-core singular values equal a dense SVD; shape measures on known spectra."""

import math

import pytest
import torch

from cldash.measures import spectra as S


@pytest.mark.parametrize("m,n,k", [(64, 64, 8), (300, 200, 8), (48, 128, 3), (16, 16, 20), (30, 40, 0)])
def test_qr_core_equals_dense_svdvals(m, n, k):
    g = torch.Generator().manual_seed(m * n + k)
    B, A = torch.randn(m, k, generator=g), torch.randn(k, n, generator=g)
    got = S.lowrank_singular_values(B, A)
    want = torch.linalg.svdvals(B.double() @ A.double())
    assert len(got) == min(k, m, n)
    torch.testing.assert_close(got, want[: len(got)], rtol=1e-10, atol=1e-10)
    assert (want[len(got):] < 1e-9).all()   # the dense matrix has no further spectrum


def test_difference_of_factored_updates_is_exact():
    g = torch.Generator().manual_seed(0)
    now = S.LowRank(torch.randn(50, 4, generator=g), torch.randn(4, 70, generator=g))
    before = S.LowRank(torch.randn(50, 4, generator=g), torch.randn(4, 70, generator=g))
    diff = S.difference(now, before)
    assert isinstance(diff, S.LowRank) and diff.inner == 8
    torch.testing.assert_close(diff.dense(), now.dense() - before.dense())
    dense = torch.linalg.svdvals(torch.cat([now.B, -before.B], 1).double() @ torch.cat([now.A, before.A]).double())
    torch.testing.assert_close(S.update_singular_values(diff), dense[:8], rtol=1e-10, atol=1e-10)


def test_dense_and_mixed_updates():
    g = torch.Generator().manual_seed(1)
    M = torch.randn(20, 30, generator=g)
    torch.testing.assert_close(S.update_singular_values(S.Dense(M)), torch.linalg.svdvals(M.double()))
    low = S.LowRank(torch.randn(20, 2, generator=g), torch.randn(2, 30, generator=g))
    mixed = S.difference(S.Dense(M), low)
    assert isinstance(mixed, S.Dense)
    torch.testing.assert_close(mixed.M, M - low.dense())


def test_shape_measures_of_a_known_spectrum():
    sigma = torch.tensor([4.0, 2.0, 2.0, 0.0], dtype=torch.float64)
    m = S.shape_measures(sigma, (10, 10))
    p = torch.tensor([0.5, 0.25, 0.25])
    assert m["erank"] == pytest.approx(math.exp(-(p * p.log()).sum().item()))
    assert m["stable_rank"] == pytest.approx((16 + 4 + 4) / 16)
    assert m["top1_energy"] == pytest.approx(16 / 24)
    assert m["condition"] == pytest.approx(2.0)
    assert m["frobenius"] == pytest.approx(math.sqrt(24))
    assert m["numerical_rank"] == 3


def test_flat_spectrum_has_full_effective_rank():
    m = S.shape_measures(torch.ones(8, dtype=torch.float64), (64, 64))
    assert m["erank"] == pytest.approx(8.0)
    assert m["stable_rank"] == pytest.approx(8.0)
    assert m["top1_energy"] == pytest.approx(1 / 8)
    assert m["entropy"] == pytest.approx(1.0)
    assert m["condition"] == pytest.approx(1.0)


def test_zero_update_has_no_spectrum():
    z = S.LowRank(torch.zeros(10, 4), torch.randn(4, 12))
    m = S.shape_measures(S.update_singular_values(z), z.shape)
    assert m["frobenius"] == 0.0 and m["numerical_rank"] == 0
    assert math.isnan(m["erank"]) and math.isnan(m["top1_energy"])


def test_energy_in_subspace_factored_matches_dense():
    g = torch.Generator().manual_seed(2)
    W0 = torch.randn(40, 30, generator=g)
    U = S.top_left_singular_vectors(W0, 5)
    low = S.LowRank(torch.randn(40, 3, generator=g), torch.randn(3, 30, generator=g))
    assert S.energy_in_subspace(low, U) == pytest.approx(S.energy_in_subspace(S.Dense(low.dense()), U), rel=1e-6)
    inside = S.LowRank(U[:, :2].float() @ torch.randn(2, 3, generator=g), torch.randn(3, 30, generator=g))
    assert S.energy_in_subspace(inside, U) == pytest.approx(1.0)


def test_pack_round_trip_keeps_top_values():
    sigma = torch.linspace(100, 1, 100, dtype=torch.float64)
    values = S.unpack(S.pack(sigma))
    assert len(values) == S.TOP_K
    assert values[0] == pytest.approx(100.0) and values[-1] == pytest.approx(float(sigma[S.TOP_K - 1]))
