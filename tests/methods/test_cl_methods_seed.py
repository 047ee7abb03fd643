"""Defining properties of the seed papers' methods: CoDyRA, EBLoRA and SLICE (reconstruction).

CoDyRA's proximal step zeroes exactly the gates at or below the threshold, its threshold follows
the dense-then-staircase schedule, and its active rank falls during the sparse phase; EBLoRA's U
and V stay orthonormal and V orthogonal to the protected basis F over many Riemannian steps, its
task update's spectrum is flat, and F grows only as far as the energy threshold asks; SLICE's
reconciled gradient never points against the replay gradient, and without a buffer SLICE is LoRA-GA
(in the authors' form).
Tiny ViT with random weights, real digits, a few steps each.
"""

from __future__ import annotations

import pytest
import torch

from cldash.methods import StepContext
from cldash.methods.codyra import GatedBranch, threshold
from cldash.methods.eblora import grow_basis
from cldash.methods.slice import reconcile

from test_cl_methods_orthogonal import context, net_and_method, train

# -- CoDyRA ------------------------------------------------------------------------------------------

def test_codyra_proximal_step_zeroes_exactly_the_gates_below_the_threshold():
    branch = GatedBranch(4, 3, 6)
    with torch.no_grad():
        branch.gate.copy_(torch.tensor([-0.3, 0.004, -0.005, 0.0051, 1.0, -0.0049]))
    branch.proximal(0.005)
    gate = branch.gate.detach()
    assert gate.tolist()[1:3] == [0.0, 0.0] and gate[5] == 0.0
    assert (gate != 0).tolist() == [True, False, False, True, True, False]
    torch.testing.assert_close(gate[[0, 3, 4]], torch.tensor([-0.295, 0.0001, 0.995]))
    assert int(branch.active().sum()) == 3


def test_codyra_threshold_is_zero_in_the_dense_phase_then_a_staircase_to_kappa_max():
    T, kappa = 500, 0.005
    ks = [threshold(s, T, kappa, 0.5, 50) for s in range(1, T + 1)]
    assert all(k == 0.0 for k in ks[:250])
    assert ks == sorted(ks) and ks[-1] == pytest.approx(kappa)
    levels = sorted(set(ks))
    assert len(levels) == 50                       # linspace(0, kappa_max, 50)
    torch.testing.assert_close(torch.tensor(levels), torch.linspace(0, kappa, 50, dtype=torch.float64).float())
    # one level every (T - T/2) / 50 = 5 steps
    runs = [sum(1 for k in ks[250:] if k == level) for level in levels]
    assert all(4 <= n <= 6 for n in runs), runs


def test_codyra_rank_falls_in_the_sparse_phase_and_the_boundary_merges_only_survivors():
    net, method = net_and_method("codyra", {"rank": 8, "kappa_max": 0.3})
    ctx = context(net, 1, 30.0, steps=40)
    method.before_task(ctx)
    opt = method.make_optimizer(method.trainable_parameters(), 5e-3, 0.0)
    ranks = []
    for s, batch in enumerate(ctx.batches(40, 32), start=1):
        loss = ctx.loss_fn(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        method.after_step(StepContext(s, s, ctx))
        ranks.append(sum(method.module_scalars()["active_rank"].values()))
    full = 8 * len(method.layers)
    assert ranks[19] == full                       # dense phase: every component alive
    assert ranks[-1] < 0.7 * full, ranks           # the rising threshold prunes
    assert method.scalars()["codyra_threshold"] == pytest.approx(0.3)
    survivors = {n: int(layer.branches[-1].active().sum()) for n, layer in method.layers.items()}
    before = {n: layer.effective_weight().detach().clone() for n, layer in method.layers.items()}
    method.after_task(ctx)
    for name, layer in method.layers.items():
        assert len(layer.branches) == 0
        torch.testing.assert_close(layer.weight, before[name])          # merged, function kept
        assert layer.update().inner == survivors[name]                   # zeroed components dropped
    ctx2 = context(net, 2, 60.0)
    method.before_task(ctx2)                                             # a fresh full-rank adapter
    assert all(int(layer.branches[-1].active().sum()) == 8 for layer in method.layers.values())


# -- EBLoRA ------------------------------------------------------------------------------------------

def test_eblora_grows_its_basis_only_to_the_energy_threshold():
    torch.manual_seed(0)
    Q1, _ = torch.linalg.qr(torch.randn(20, 20, dtype=torch.float64))
    Q2, _ = torch.linalg.qr(torch.randn(12, 12, dtype=torch.float64))
    energy = torch.tensor([0.6, 0.25, 0.1, 0.04, 0.01], dtype=torch.float64)
    M = Q1[:, :5] @ torch.diag(energy.sqrt()) @ Q2[:, :5].T       # in x out, energies known
    F = grow_basis(None, M, 0.9, cap=20)
    assert F.shape[1] == 3                                          # 0.6 + 0.25 + 0.1 >= 0.9 > 0.85
    assert grow_basis(None, M, 0.5, cap=20).shape[1] == 1
    assert grow_basis(None, M, 0.9, cap=2).shape[1] == 2           # the cap wins
    # a second matrix whose energy F already holds adds nothing; a new direction is added once
    assert grow_basis(F, M, 0.9, cap=20).shape[1] == 3
    M2 = M + 3.0 * Q1[:, 7:8] @ Q2[:, 6:7].T
    F2 = grow_basis(F, M2, 0.9, cap=20)
    assert F2.shape[1] == 4
    torch.testing.assert_close(F2.double().T @ F2.double(), torch.eye(4, dtype=torch.float64), atol=1e-6, rtol=0)
    share = float(((F2.double().T @ M2) ** 2).sum() / (M2 ** 2).sum())
    assert share >= 0.9


def test_eblora_stays_on_its_manifolds_with_a_flat_spectrum_over_many_steps():
    net, method = net_and_method("eblora", {"rank": 4, "init_a": 0.01})
    ctx1 = context(net, 1, 0.0, steps=30)
    method.before_task(ctx1)
    train(method, ctx1, steps=30)
    method.after_task(ctx1)
    ranks = {n: method.bases[n].shape[1] for n in method.layers}
    assert all(0 < k <= 64 - 4 for k in ranks.values()), ranks
    ctx2 = context(net, 2, 90.0, steps=60)
    method.before_task(ctx2)
    opt = method.make_optimizer(method.trainable_parameters(), 5e-3, 0.0)
    for s, batch in enumerate(ctx2.batches(60, 32), start=1):
        loss = ctx2.loss_fn(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if s % 10 == 0:
            scal = method.module_scalars()
            for name in method.layers:
                assert scal["U_orthogonality_error"][name] < 1e-5, (s, name)
                assert scal["V_orthogonality_error"][name] < 1e-5, (s, name)
                assert scal["F_leakage"][name] < 1e-5, (s, name)
                assert scal["spectrum_flatness"][name] == pytest.approx(1.0, abs=1e-4), (s, name)
    # the adapter did move: U and V turned away from their init, the magnitude grew
    assert all(abs(v) > 0.01 for v in method.module_scalars()["magnitude"].values())
    method.after_task(ctx2)
    assert all(len(h) == 2 and h[1] >= h[0] for h in method.basis_history.values())


# -- SLICE -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("surgery", ["current", "symmetric"])
@pytest.mark.parametrize("combine", ["sum", "current"])
def test_slice_reconciled_gradient_never_points_against_the_replay_gradient(surgery, combine):
    gen = torch.Generator().manual_seed(3)
    conflicts = 0
    for _ in range(200):
        g_cur, g_rep = torch.randn(6, 5, generator=gen), torch.randn(6, 5, generator=gen)
        conflicts += float((g_cur * g_rep).sum()) < 0
        g = reconcile(g_cur, g_rep, surgery, combine)
        assert float((g * g_rep.double() if g.dtype == torch.float64 else g * g_rep).sum()) >= -1e-5
    assert conflicts > 50
    # without conflict the gradients pass untouched
    a = torch.ones(3, 3)
    torch.testing.assert_close(reconcile(a, 2 * a, surgery, combine), 3 * a if combine == "sum" else a)


def test_slice_without_surgery_keeps_the_conflict():
    g_cur, g_rep = torch.tensor([[1.0, 0.0]]), torch.tensor([[-1.0, 1.0]])
    assert float((reconcile(g_cur, g_rep, "none", "current") * g_rep).sum()) < 0
    torch.testing.assert_close(reconcile(g_cur, g_rep, "current", "current"), torch.tensor([[0.5, 0.5]]))


def test_slice_is_lora_ga_without_a_buffer_and_logs_the_conflict_with_one():
    net_s, slice_ = net_and_method("slice")
    net_g, loraga = net_and_method("loraga", {"init_form": "authors"})   # SLICE's default form
    for net, method in ((net_s, slice_), (net_g, loraga)):
        method.before_task(context(net, 1, 0.0))
    for name in slice_.layers:
        a, b = slice_.layers[name].branches[-1], loraga.layers[name].branches[-1]
        assert torch.equal(a.lora_A, b.lora_A) and torch.equal(a.lora_B, b.lora_B)
    ctx = context(net_s, 1, 0.0)
    train(slice_, ctx, steps=5)
    slice_.after_task(ctx)
    ctx2 = context(net_s, 2, 120.0)
    ctx2.extras["replay"] = context(net_s, 1, 0.0)
    slice_.before_task(ctx2)
    cos = slice_.module_scalars()["gradient_conflict_cos"]
    assert set(cos) == set(slice_.layers)
    assert all(-1.0 <= c <= 1.0 for c in cos.values())


def test_slice_gets_a_buffer_from_the_engine_without_run_replay(tmp_path, few_test_digits):
    from cldash.config import resolve
    from cldash.engine.loop import ContinualRun
    from cldash.store import Store

    store = Store(str(tmp_path / "s.db"))
    resolved = resolve({"method": "slice", "steps_per_task": 6, "eval_interval": 0, "spectra_interval": 3,
                        "method_options": {"memory": 60}, "stream_options": {"angles": [0, 90, 180]}})
    run_id = store.create_run(resolved.to_dict())
    crun = ContinualRun(resolved, writer=store.writer(run_id))
    crun.run()
    crun.writer.flush()
    assert crun.replay is not None and not crun.train_replay and len(crun.replay) == 60
    names = set(store.scalar_names(run_id)["name"])
    assert "gradient_conflict_cos" in names and "replay_loss" not in names
    conflict = store.scalars(run_id, ["gradient_conflict_cos"])
    assert conflict["value"].between(-1, 1).all() and len(conflict) > 0
