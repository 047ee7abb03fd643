"""The method options the authors' regimes need, each shown changing what it should.

- LoRA-GA's ``init_form = authors`` (Outsider565/LoRA-GA ``lora_ga_init``): A0 and B0 are the
  gradient's unit singular vectors times ``d_out^(1/4) / sqrt(gamma)``, the base is offset so the
  function is unchanged, and SLICE uses this form by default;
- EBLoRA's ``basis_gradient = task_start`` (haodotgu/EBLoRA ``train_all.sh``): F grows from the
  gradient that initialised the task's V, not from one taken after training; ``step_scale_dim``
  sets the Riemannian step's rescale;
- CoDyRA's ``kappa_per_lr`` (Artificer-AI-Lab/CoDyRA ``runner_codyra.sh``: 0.005 / 5e-4): the
  threshold staircase follows the run's learning rate.
Tiny ViT with random weights, real digits, a few steps each.
"""

from __future__ import annotations

import math

import pytest
import torch

from cldash.methods import StepContext
from cldash.methods.eblora import grow_basis
from cldash.methods.loraga import estimate_gradients, loraga_factors

from test_cl_methods_orthogonal import context, net_and_method, train

# -- LoRA-GA: the authors' form ------------------------------------------------------------------

def known_gradient(d_out=16, d_in=12, spectrum=(8.0, 4.0, 2.0, 1.0)):
    """A gradient of rank 4 with known singular vectors (the randomized SVD recovers them exactly)."""
    g = torch.Generator().manual_seed(5)
    U, _ = torch.linalg.qr(torch.randn(d_out, len(spectrum), generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(d_in, len(spectrum), generator=g, dtype=torch.float64))
    return (U @ torch.diag(torch.tensor(spectrum, dtype=torch.float64)) @ V.T).float(), U, V


@pytest.mark.parametrize("form", ["peft", "authors"])
def test_loraga_authors_form_is_the_unit_singular_vectors_both_scaled_by_the_stable_factor(form):
    grad, U, V = known_gradient()
    rank, gamma = 2, 16.0
    factor = 16 ** 0.25 / gamma ** 0.5                    # d_out^(1/4) / sqrt(gamma) = 0.5
    torch.manual_seed(0)
    B0, A0 = loraga_factors(grad, torch.randn(16, 12), rank, 2.0, "ArB2r", "stable", gamma, form)
    # ArB2r: A0 on the top-r right singular vectors, B0 on the next r left ones (signs are free)
    a_coords = (A0.double() @ V).abs()                    # (r, 4): A0's rows in the basis of V
    b_coords = (U.T @ B0.double()).abs()                  # (4, r): B0's columns in the basis of U
    a_norms, b_norms = A0.double().norm(dim=1), B0.double().norm(dim=0)
    if form == "authors":
        torch.testing.assert_close(a_coords[:, :2], factor * torch.eye(2, dtype=torch.float64), atol=1e-6, rtol=0)
        torch.testing.assert_close(b_coords[2:, :], factor * torch.eye(2, dtype=torch.float64), atol=1e-6, rtol=0)
        torch.testing.assert_close(a_norms, torch.full((2,), factor, dtype=torch.float64), atol=1e-6, rtol=0)
        torch.testing.assert_close(b_norms, torch.full((2,), factor, dtype=torch.float64), atol=1e-6, rtol=0)
    else:   # PEFT: A0 unit rows, B0 columns carry S[r:2r] = (2, 1) times the factor
        torch.testing.assert_close(a_norms, torch.ones(2, dtype=torch.float64), atol=1e-6, rtol=0)
        torch.testing.assert_close(b_norms, factor * torch.tensor([2.0, 1.0], dtype=torch.float64),
                                   atol=1e-6, rtol=0)


@pytest.mark.parametrize("scale", ["unit", "gd_scale", "weight_svd"])
def test_loraga_authors_form_scales_both_factors_by_one_number(scale):
    grad, _, _ = known_gradient()
    weight = torch.randn(16, 12, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    B0, A0 = loraga_factors(grad, weight, 2, 2.0, "ArB2r", scale, 16.0, "authors")
    # unit: 1; gd: 1 / s; weightS: the mean of sqrt(S_W[:r] / s) (s = 2 here)
    expected = {"unit": 1.0, "gd_scale": 0.5,
                "weight_svd": float((torch.linalg.svdvals(weight)[:2] / 2.0).sqrt().mean())}[scale]
    for norms in (A0.norm(dim=1), B0.norm(dim=0)):
        assert norms.tolist() == pytest.approx([expected] * 2, rel=1e-3 if scale == "weight_svd" else 1e-5)


@pytest.mark.parametrize("form", ["peft", "authors"])
def test_loraga_random_direction_draws_disjoint_halves_in_the_authors_form(form):
    grad, U, V = known_gradient()
    torch.manual_seed(3)
    B0, A0 = loraga_factors(grad, torch.randn(16, 12), 2, 2.0, "random", "unit", 16.0, form)
    a_idx = set((A0.double() @ V).abs().argmax(dim=1).tolist())      # which singular direction each row is
    b_idx = set((U.T @ B0.double()).abs().argmax(dim=0).tolist())
    assert len(a_idx) == len(b_idx) == 2
    assert (a_idx.isdisjoint(b_idx) if form == "authors" else a_idx == b_idx), (a_idx, b_idx)


def test_loraga_authors_form_on_the_vit_keeps_the_function_and_has_the_data_free_norms():
    results = {}
    for form in ("peft", "authors"):
        net, method = net_and_method("loraga", {"init_form": form})
        x = next(context(net, 1, 0.0).batches(1, 8))[0]
        net.eval()
        before = net(pixel_values=x).logits.detach()
        method.before_task(context(net, 1, 0.0))
        net.eval()
        torch.testing.assert_close(net(pixel_values=x).logits.detach(), before, atol=1e-5, rtol=1e-5)
        r, gamma = method.config.rank, method.config.stable_gamma
        b_norms = {}
        for name, layer in method.layers.items():
            branch = layer.branches[-1]
            factor = layer.out_features ** 0.25 / gamma ** 0.5
            b_norms[name] = float(branch.lora_B.detach().norm())
            if form == "authors":    # every row of A0 and column of B0 has norm d_out^(1/4) / sqrt(gamma)
                torch.testing.assert_close(branch.lora_A.detach().norm(dim=1), torch.full((r,), factor),
                                           atol=1e-5, rtol=0)
                torch.testing.assert_close(branch.lora_B.detach().norm(dim=0), torch.full((r,), factor),
                                           atol=1e-5, rtol=0)
            # the base is offset by s B0 A0 (s = alpha / r), so the update against W0 starts at zero
            offset = layer.offset[-1].dense()
            torch.testing.assert_close(offset, -branch.scaling * branch.lora_B.detach() @ branch.lora_A.detach())
            assert float(layer.update().dense().norm()) < 1e-5 * float(offset.norm())
        results[form] = sum(b_norms.values()) / len(b_norms)
    # sqrt(8) 64^(1/4) / 4 = 2.0 on the 64-wide layers, 2.38 on the 128-wide fc1; PEFT's follows the gradient
    assert results["authors"] == pytest.approx((10 * 2.0 + 2 * 8 ** 0.5 * 128 ** 0.25 / 4) / 12, rel=1e-5)
    assert results["peft"] < 0.05


def test_slice_defaults_to_the_authors_form_and_is_that_lora_ga_on_the_first_task():
    from cldash.core.options import build
    from cldash.methods.loraga import LoRAGAConfig
    from cldash.methods.slice import SLICEConfig

    assert build(LoRAGAConfig, {}, "loraga").init_form == "peft"     # the PEFT parity tests hold
    assert build(SLICEConfig, {}, "slice").init_form == "authors"
    net_s, slice_ = net_and_method("slice")
    net_g, loraga = net_and_method("loraga", {"init_form": "authors"})
    for net, method in ((net_s, slice_), (net_g, loraga)):
        method.before_task(context(net, 1, 0.0))
    for name, layer in slice_.layers.items():
        a, b = layer.branches[-1], loraga.layers[name].branches[-1]
        assert torch.equal(a.lora_A, b.lora_A) and torch.equal(a.lora_B, b.lora_B)
        factor = layer.out_features ** 0.25 / 4.0
        assert float(a.lora_B.detach().norm()) == pytest.approx(math.sqrt(8) * factor, rel=1e-5)


# -- EBLoRA: the gradient F grows from, and the step rescale --------------------------------------

def eblora_after_one_task(basis_gradient):
    net, method = net_and_method("eblora", {"rank": 4, "init_a": 0.01, "basis_gradient": basis_gradient})
    c = method.config
    # the gradient at task start, on the batches before_task will draw (the same seeded context)
    start = estimate_gradients(net, method.layers, context(net, 1, 0.0), c.grad_batches, c.grad_batch_size)
    ctx = context(net, 1, 0.0, steps=30)
    method.before_task(ctx)
    train(method, ctx, steps=30)
    method.after_task(ctx)
    return method, start


def test_eblora_task_start_grows_F_from_the_gradient_that_initialised_V():
    task_start, start = eblora_after_one_task("task_start")
    merged, _ = eblora_after_one_task("merged")
    cap = 64 - 4
    differs = 0
    for name, layer in task_start.layers.items():
        expected = grow_basis(None, start[name].T, task_start.config.energy, layer.in_features - 4)
        torch.testing.assert_close(task_start.bases[name], expected, atol=1e-6, rtol=0)
        F_t, F_m = task_start.bases[name].double(), merged.bases[name].double()
        assert 0 < F_m.shape[1] <= cap
        if F_t.shape != F_m.shape or float((F_t @ F_t.T - F_m @ F_m.T).norm()) > 1e-3:
            differs += 1
    assert differs == len(task_start.layers)       # trained, merged weights give other directions everywhere
    assert task_start.start_gradients == {}          # the kept gradient is dropped at the boundary


def test_eblora_step_scale_dim_sets_the_riemannian_step():
    """D = 0 means the layer's input size (64 here): the step is sqrt(64 / 4) = 4 times Adam's; the
    authors' D = 4096 makes it sqrt(4096 / 4) = 32 times, 8 times larger (a small step, where the
    polar retraction is the identity to first order)."""
    steps = {}
    for d in (0, 4096):
        net, method = net_and_method("eblora", {"rank": 4, "init_a": 0.01, "step_scale_dim": d})
        ctx = context(net, 1, 0.0)
        method.before_task(ctx)
        opt = method.make_optimizer(method.trainable_parameters(), 1e-6, 0.0)
        layer = method.layers["vit.layers.0.attention.q_proj"]
        U0 = layer.branches[-1].lora_B.detach().clone()
        assert opt.manifold[layer.branches[-1].lora_B][2] == pytest.approx(math.sqrt((d or 64) / 4))
        loss = ctx.loss_fn(next(ctx.batches(1, 32)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps[d] = float((layer.branches[-1].lora_B.detach() - U0).norm())
    assert steps[0] > 0
    assert steps[4096] / steps[0] == pytest.approx(8.0, rel=1e-2)


# -- CoDyRA: the threshold relative to the learning rate ------------------------------------------

def codyra_staircase(lr, options, steps=100):
    """The kappas of one task's steps without training (the gates only shrink), the gates at start
    and at the end."""
    net, method = net_and_method("codyra", options)
    ctx = context(net, 1, 0.0, steps=steps)
    method.before_task(ctx)
    method.make_optimizer(method.trainable_parameters(), lr, 0.0)
    start = torch.cat([layer.branches[-1].gate.detach().clone() for layer in method.layers.values()])
    kappas = []
    for s in range(1, steps + 1):
        method.after_step(StepContext(s, s, ctx))
        kappas.append(method.kappa)
    end = torch.cat([layer.branches[-1].gate.detach() for layer in method.layers.values()])
    return kappas, start, end


@pytest.mark.parametrize("lr,top", [(5e-4, 5e-3), (5e-3, 5e-2)])
def test_codyra_kappa_per_lr_scales_the_staircase_with_the_learning_rate(lr, top):
    kappas, _, _ = codyra_staircase(lr, {"kappa_per_lr": 10.0})
    assert all(k == 0.0 for k in kappas[:50])                      # the dense phase
    assert kappas[-1] == pytest.approx(top, rel=1e-12)
    torch.testing.assert_close(torch.tensor(sorted(set(kappas)), dtype=torch.float64),
                               torch.linspace(0, top, 50, dtype=torch.float64), atol=1e-15, rtol=1e-12)
    absolute, _, _ = codyra_staircase(lr, {})                      # kappa_per_lr = 0: kappa_max as it is
    assert absolute[-1] == pytest.approx(0.005, rel=1e-12)


def test_codyra_kappa_per_lr_at_a_larger_learning_rate_zeroes_more_gates():
    zeroed = {}
    for lr in (5e-4, 5e-3):
        kappas, start, end = codyra_staircase(lr, {"kappa_per_lr": 10.0})
        shrink = sum(kappas)                                       # total soft-threshold over the task
        assert shrink == pytest.approx(26 * 10.0 * lr)             # levels 1..49 once, then the top twice
        # without training, a gate ends at max(|w0| - shrink, 0): zeroed exactly if it started below
        dead = end == 0
        assert bool((start[dead].abs() <= shrink + 1e-6).all())
        torch.testing.assert_close(end[~dead].abs(), start[~dead].abs() - shrink, atol=1e-5, rtol=0)
        zeroed[lr] = int(dead.sum())
    # 0.13 at lr 5e-4, 1.3 at 5e-3, on N(0, 1) gates (12 modules x 16)
    assert zeroed[5e-4] < 0.2 * 192 and zeroed[5e-3] > 0.6 * 192, zeroed


def test_codyra_kappa_per_lr_learns_the_run_learning_rate(tmp_path):
    from cldash.config import resolve
    from cldash.engine.loop import ContinualRun
    from cldash.store import Store

    store = Store(str(tmp_path / "s.db"))
    resolved = resolve({"method": "codyra", "lr": 5e-4, "steps_per_task": 6, "eval_interval": 0,
                        "spectra_interval": 0, "method_options": {"kappa_per_lr": 10.0},
                        "stream_options": {"angles": [0, 90]}})
    run_id = store.create_run(resolved.to_dict())
    crun = ContinualRun(resolved, writer=store.writer(run_id))
    crun.run()
    crun.writer.flush()
    kappa = store.scalars(run_id, ["codyra_threshold"])["value"]
    assert len(kappa) > 0 and float(kappa.max()) == pytest.approx(5e-3, rel=1e-9)
