import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from host_reads import count_host_reads

from mmgal.core import GradientAdjuster, cross_entropy_loss, gal_step


class LinearAdjuster(nn.Module):
    """a = z @ W + b; small enough to differentiate by hand in tests."""

    def __init__(self, dim, dtype=torch.float64, seed=0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.dim = dim
        self.weight = nn.Parameter(torch.randn(dim, dim, generator=gen,
                                               dtype=dtype))
        self.bias = nn.Parameter(torch.randn(dim, generator=gen, dtype=dtype))

    def forward(self, z):
        return z @ self.weight + self.bias


class FixedAdjuster(nn.Module):
    """Returns a fixed adjustment direction for every row."""

    def __init__(self, direction):
        super().__init__()
        self.dim = direction.shape[-1]
        self.register_buffer('direction', direction)

    def forward(self, z):
        return self.direction.expand_as(z).to(z.dtype)


def quadratic(target):
    """l(z) = 1/(2B) * sum |z - t|^2, so g = (z - t) / B."""
    return lambda z: 0.5 * ((z - target)**2).sum() / z.shape[0]


def cross_entropy(labels):
    return lambda z: nn.functional.cross_entropy(z, labels)


def make_batch(b=8, d=5, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(b, d, generator=gen, dtype=dtype)
    t = torch.randn(b, d, generator=gen, dtype=dtype)
    return z, t


def reference_step(z, loss_fn, adjuster, lr, sigma, gamma, remainder,
                   objective='abs'):
    """Independent, unoptimised restatement of NOTES.md steps 1-6, in
    float64, R as the difference of two losses; returns the adjuster's
    objective too (|R|, or |R| over the detached |eta g~|^2)."""
    z = z.detach().double()
    zr = z.clone().requires_grad_(True)
    loss = loss_fn(zr)
    g, = torch.autograd.grad(loss, zr)
    a = adjuster(z)
    adj = torch.stack([
        sigma * a[i] / a[i].norm() * g[i].norm() for i in range(len(a))
    ])
    g_adj = g + adj
    eta = gamma * lr
    z_new = z - eta * g_adj
    tentative = loss_fn(z_new)
    dots = torch.stack([(g_adj[i] * g[i]).sum() for i in range(len(g))])
    first = dots.mean() if remainder == 'reference' else dots.sum()
    rem = tentative - loss.detach() + eta * first
    obj = rem.abs()
    if objective == 'normalized':
        obj = obj / (eta**2 * (g_adj.detach()**2).sum())
    return g, g_adj, loss.detach(), tentative, rem, obj


def test_quadratic_remainder_matches_closed_form():
    z, t = make_batch()
    direction = torch.tensor([1., -2., 0.5, 0., 3.], dtype=torch.float64)
    lr, sigma, gamma = 0.3, 0.2, 2.0
    out = gal_step(z, quadratic(t), FixedAdjuster(direction), lr, sigma,
                   gamma)
    b = z.shape[0]
    g = (z - t) / b
    adj = sigma * direction / direction.norm() * g.norm(dim=1, keepdim=True)
    g_adj = g + adj
    eta = gamma * lr
    # l(z - eta g~) = l - eta <g, g~> + eta^2 |g~|^2 / (2B), so
    # R = eta^2 |g~|^2 / (2B) exactly.
    expected_r = eta**2 * (g_adj**2).sum() / (2 * b)
    torch.testing.assert_close(out.vanilla_grad, g)
    torch.testing.assert_close(out.remainder, expected_r)
    torch.testing.assert_close(out.tentative_loss,
                               out.loss - eta * (g * g_adj).sum() + expected_r)
    assert out.remainder.dim() == 0 and out.loss.dim() == 0
    assert out.adopted.dtype == torch.bool and out.adopted.dim() == 0


@pytest.mark.parametrize('objective', ['normalized', 'abs'])
@pytest.mark.parametrize('remainder', ['exact', 'reference'])
def test_matches_independent_reference_and_adjuster_grads(remainder,
                                                          objective):
    z, t = make_batch(b=6, d=4, seed=1)
    labels = torch.tensor([0, 1, 2, 3, 1, 0])
    for loss_fn in (quadratic(t), cross_entropy(labels),
                    cross_entropy_loss(labels)):
        adj = LinearAdjuster(4)
        out = gal_step(z, loss_fn, adj, 0.5, 0.1, 3.0, remainder=remainder,
                       objective=objective)
        ref_adj = LinearAdjuster(4)
        g, g_adj, loss, tent, rem, obj = reference_step(
            z, loss_fn, ref_adj, 0.5, 0.1, 3.0, remainder, objective)
        torch.testing.assert_close(out.vanilla_grad, g)
        torch.testing.assert_close(out.loss, loss)
        torch.testing.assert_close(out.tentative_loss, tent)
        torch.testing.assert_close(out.remainder, rem)
        torch.testing.assert_close(out.loss_change, tent - loss)
        obj.backward()
        # The adjuster's gradient is large against the tolerance.
        assert ref_adj.weight.grad.abs().max() > 1e-5
        torch.testing.assert_close(adj.weight.grad, ref_adj.weight.grad,
                                   rtol=1e-6, atol=1e-12)
        torch.testing.assert_close(adj.bias.grad, ref_adj.bias.grad,
                                   rtol=1e-6, atol=1e-12)
        expect = g_adj if bool(tent <= loss) else g
        torch.testing.assert_close(out.grad, expect)


def test_sigma_zero_returns_exactly_the_vanilla_gradient():
    torch.manual_seed(0)
    z = torch.randn(16, 10)
    labels = torch.randint(0, 10, (16, ))
    out = gal_step(z, cross_entropy(labels), GradientAdjuster(10, (8, )),
                   lr=0.1, sigma=0.0, policy='always')
    zr = z.clone().requires_grad_(True)
    nn.functional.cross_entropy(zr, labels).backward()
    assert torch.equal(out.vanilla_grad, zr.grad)
    assert torch.equal(out.grad, zr.grad)
    assert bool(out.adopted)


def test_policies_follow_algorithm_1():
    z, t = make_batch()
    direction = torch.ones(5, dtype=torch.float64)

    def run(policy, lr):
        return gal_step(z, quadratic(t), FixedAdjuster(direction), lr, 0.5,
                        policy=policy)

    # Small step: the adjusted step descends, so le/lt/always adopt g~.
    for policy in ('le', 'lt', 'always'):
        out = run(policy, 0.1)
        assert bool(out.tentative_loss < out.loss)
        assert bool(out.adopted)
        assert not torch.equal(out.grad, out.vanilla_grad)
    out = run('never', 0.1)
    assert not bool(out.adopted)
    assert torch.equal(out.grad, out.vanilla_grad)
    # Huge step: overshoots, l' > l: only 'always' adopts.
    for policy, adopted in (('le', False), ('lt', False), ('always', True),
                            ('never', False)):
        out = run(policy, 1e4)
        assert bool(out.tentative_loss > out.loss)
        assert bool(out.adopted) is adopted
        assert torch.equal(out.grad, out.vanilla_grad) is not adopted


def test_le_and_lt_differ_only_on_ties():
    # A loss that is flat in z gives l' == l: 'le' adopts, 'lt' does not.
    z = torch.randn(4, 3)
    flat = lambda z: (z * 0).sum()  # noqa: E731
    adj = GradientAdjuster(3, (4, ))
    assert bool(gal_step(z, flat, adj, 0.1, 0.1, policy='le').adopted)
    assert not bool(gal_step(z, flat, adj, 0.1, 0.1, policy='lt').adopted)


def test_the_difference_and_reference_differ_by_the_row_average():
    z, t = make_batch(b=7, d=3, seed=2)
    lr, sigma, gamma = 0.2, 0.3, 1.5
    # 'exact' of a plain loss: the difference of the losses.
    outs = {
        r: gal_step(z, quadratic(t), LinearAdjuster(3), lr, sigma, gamma,
                    remainder=r)
        for r in ('exact', 'reference')
    }
    g = outs['exact'].vanilla_grad
    adj = LinearAdjuster(3)(z).detach()
    g_adj = g + sigma * adj / adj.norm(dim=1, keepdim=True) * g.norm(
        dim=1, keepdim=True)
    dot = (g_adj * g).sum()
    diff = outs['exact'].remainder - outs['reference'].remainder
    # exact: + eta <g~, g>; reference: + eta <g~, g> / B.
    torch.testing.assert_close(diff, gamma * lr * dot * (1 - 1 / 7))
    torch.testing.assert_close(outs['exact'].tentative_loss,
                               outs['reference'].tentative_loss)


def test_only_the_adjuster_receives_gradients():
    torch.manual_seed(0)
    model = nn.Linear(6, 4)
    x = torch.randn(10, 6)
    z = model(x)  # z is part of the model's graph
    labels = torch.randint(0, 4, (10, ))
    scale = nn.Parameter(torch.ones(()))  # a parameter inside loss_fn
    adj = GradientAdjuster(4, (8, 8))
    gal_step(z, lambda zz: scale * nn.functional.cross_entropy(zz, labels),
             adj, 0.1, 0.05)
    assert all(p.grad is None for p in model.parameters())
    assert scale.grad is None
    assert all(p.grad is not None for p in adj.parameters())
    assert any(p.grad.abs().sum() > 0 for p in adj.parameters())


def test_adjuster_grads_accumulate():
    z, t = make_batch(b=5, d=4, seed=3)
    adj = LinearAdjuster(4)
    gal_step(z, quadratic(t), adj, 0.3, 0.2)
    first = adj.weight.grad.clone()
    gal_step(z, quadratic(t), adj, 0.3, 0.2)
    torch.testing.assert_close(adj.weight.grad, 2 * first)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_half_precision_inputs_use_fp32_maths(dtype):
    torch.manual_seed(0)
    z32 = torch.randn(12, 10) * 3
    labels = torch.randint(0, 10, (12, ))
    adj = GradientAdjuster(10, (16, ))
    loss_fn = cross_entropy_loss(labels)
    out = gal_step(z32.to(dtype), loss_fn, adj, 0.1, 0.01)
    assert out.grad.dtype == dtype and out.vanilla_grad.dtype == dtype
    assert out.loss.dtype == torch.float32
    assert out.remainder.dtype == torch.float32
    # Same maths as fp32 on the rounded input.
    ref = gal_step(z32.to(dtype).float(), loss_fn, adj, 0.1, 0.01)
    torch.testing.assert_close(out.loss, ref.loss)
    torch.testing.assert_close(out.remainder, ref.remainder)
    torch.testing.assert_close(out.grad, ref.grad.to(dtype))


def test_runs_under_autocast_in_fp32():
    torch.manual_seed(0)
    z = torch.randn(8, 6)
    labels = torch.randint(0, 6, (8, ))
    adj = GradientAdjuster(6, (8, ))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = gal_step(z, cross_entropy(labels), adj, 0.1, 0.01)
    ref = gal_step(z, cross_entropy(labels), adj, 0.1, 0.01)
    assert torch.equal(out.remainder, ref.remainder)
    assert adj.net[0].weight.grad.dtype == torch.float32


def test_leading_dims_are_rows():
    # (layers, queries, 4) like DETR boxes: norms over the last dim only.
    z, t = make_batch(b=6, d=4, seed=4)
    adj = LinearAdjuster(4)
    loss_fn = lambda zz: ((zz - t.reshape(zz.shape))**2).mean()  # noqa
    flat = gal_step(z, loss_fn, adj, 0.2, 0.3)
    shaped = gal_step(z.reshape(2, 3, 4), loss_fn, adj, 0.2, 0.3)
    torch.testing.assert_close(shaped.grad.reshape(6, 4), flat.grad)
    torch.testing.assert_close(shaped.remainder, flat.remainder)


class NaNAdjuster(LinearAdjuster):

    def forward(self, z):
        return super().forward(z) * float('nan')


@pytest.mark.parametrize('where', ['adjustment', 'tentative', 'loss'])
def test_nonfinite_guard_returns_vanilla_and_spares_the_adjuster(where):
    z, t = make_batch(b=4, d=3, seed=5)
    adj = NaNAdjuster(3) if where == 'adjustment' else LinearAdjuster(3)
    calls = []

    def loss_fn(zz):
        calls.append(1)
        loss = quadratic(t)(zz)
        if where == 'tentative' and len(calls) == 2:
            return loss * float('inf')
        if where == 'loss':
            return loss * float('nan')
        return loss

    before = [torch.full_like(p, 0.5) for p in adj.parameters()]
    for p, b in zip(adj.parameters(), before):
        p.grad = b.clone()
    out = gal_step(z, loss_fn, adj, 0.1, 0.2, policy='always')
    assert bool(out.nonfinite)
    assert not bool(out.adopted)
    if where == 'loss':
        # GAL adds nothing; the model's own loss was already non-finite.
        assert torch.equal(out.grad.isnan(), out.vanilla_grad.isnan())
    else:
        assert torch.isfinite(out.grad).all()
        torch.testing.assert_close(out.grad, (z - t) / 4)
    for p, b in zip(adj.parameters(), before):
        assert torch.equal(p.grad, b)


def test_finite_step_reports_nonfinite_false_and_the_mean_row_cosine():
    z, t = make_batch()
    adj = LinearAdjuster(5)
    out = gal_step(z, quadratic(t), adj, 0.1, 0.1)
    assert not bool(out.nonfinite)
    g, a = (z - t) / z.shape[0], adj(z).detach()
    expected = F.cosine_similarity(g, a, dim=-1).mean()
    torch.testing.assert_close(out.cos_sim, expected)


def test_cos_sim_of_a_gradient_aligned_adjuster_is_one():
    z, t = make_batch(b=3, d=2, seed=6)

    class Aligned(nn.Module):
        dim = 2

        def forward(self, zz):
            return (zz - t) * 7.0  # parallel to g = (z - t) / B

    out = gal_step(z, quadratic(t), Aligned(), 0.1, 0.5)
    torch.testing.assert_close(out.cos_sim,
                               torch.tensor(1.0, dtype=torch.float64))


@pytest.mark.parametrize('exact', [False, True])
def test_no_host_read_in_the_step(monkeypatch, exact):
    """On CPU there is no device sync to observe; every way a tensor's
    value reaches Python (the host reads a CUDA step would sync on) is
    trapped, for the float64 path and the closed form."""
    z, t = make_batch(dtype=torch.float32)
    labels = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])
    loss_fn = cross_entropy_loss(labels) if exact else cross_entropy(labels)
    adj = LinearAdjuster(5, torch.float32)
    seen = count_host_reads(monkeypatch)
    gal_step(z, loss_fn, adj, 0.1, 0.1)
    monkeypatch.undo()
    assert seen == []


@pytest.mark.parametrize('kwargs, match', [
    (dict(sigma=-0.1), r'sigma must be a finite number >= 0.*-0\.1'),
    (dict(sigma=float('nan')), 'sigma must be'),
    (dict(gamma=0.0), r'gamma must be a finite number > 0.*0\.0'),
    (dict(gamma=-1), 'gamma must be'),
    (dict(policy='ge'), r"policy must be one of \('le', 'lt', 'always', "
     r"'never'\).*'ge'"),
    (dict(remainder='closed'),
     r"remainder must be one of \('exact', 'reference'\).*"
     r"'closed'"),
    (dict(objective='square'),
     r"objective must be one of \('normalized', 'abs'\), got 'square'"),
    (dict(normalize='group'), r"normalize must be one of \('auto', 'row', "
     r"'batch'\), got 'group'"),
    (dict(lr=-1.0), r'lr must be a finite number >= 0, got -1\.0'),
    (dict(lr=float('inf')), r'lr must be a finite number >= 0, got inf'),
    (dict(lr=torch.tensor(-0.1)), r'lr must be a finite number >= 0, got '
     r'-0\.1'),
    (dict(lr=torch.tensor(float('nan'))), 'lr must be a finite number'),
    (dict(lr=torch.tensor([0.1, 0.2])), r'lr must be a number or a '
     r'one-element floating tensor, got a torch\.float32 tensor of shape '
     r'\(2,\)'),
    (dict(sigma=float('inf')), 'sigma must be a finite number'),
    (dict(sigma=True), 'sigma must be a finite number >= 0, got True'),
])
def test_bad_arguments_raise_value_error_naming_them(kwargs, match):
    z, t = make_batch()
    args = dict(lr=0.1, sigma=0.1, gamma=1.0, policy='le',
                remainder='exact')
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        gal_step(z, quadratic(t), LinearAdjuster(5), **args)


def test_dim_mismatch_raises():
    z, t = make_batch(d=5)
    with pytest.raises(ValueError,
                       match=r"adjuster's dim \(4\), got z of shape \(8, 5\)"):
        gal_step(z, quadratic(t), LinearAdjuster(4), 0.1, 0.1)


def test_non_scalar_loss_raises():
    z, t = make_batch()
    with pytest.raises(ValueError, match='loss_fn must return a 0-dim'):
        gal_step(z, lambda zz: (zz - t)**2, LinearAdjuster(5), 0.1, 0.1)


def test_single_feature_with_sigma_one_is_refused_under_row_norms():
    z = torch.randn(8, 1)
    with pytest.raises(ValueError, match=r'sigma must be < 1 when z has a '
                       r"single feature \(d = 1\) and normalize='row'"):
        gal_step(z, lambda zz: (zz**2).mean(), GradientAdjuster(1, (4, )),
                 0.1, 1.0, normalize='row')
    # One norm over the batch cannot cancel every row's gradient.
    out = gal_step(z, lambda zz: (zz**2).mean(), GradientAdjuster(1, (4, )),
                   0.1, 1.0)
    assert math.isfinite(float(out.remainder))
    out = gal_step(z, lambda zz: (zz**2).mean(), GradientAdjuster(1, (4, )),
                   0.1, 0.5)
    assert math.isfinite(float(out.remainder))


def test_numpy_scalars_are_numbers():
    np = pytest.importorskip('numpy')
    z, t = make_batch()
    out = gal_step(z, quadratic(t), LinearAdjuster(5), np.float64(0.1),
                   np.float32(0.01), gamma=np.int64(1))
    assert torch.isfinite(out.remainder)


def test_integer_z_is_refused_instead_of_a_truncated_gradient():
    z = torch.arange(10).reshape(2, 5)
    with pytest.raises(ValueError, match=r'z must be a floating-point tensor'
                       r'.*got torch\.int64'):
        gal_step(z, lambda zz: (zz**2).sum(), LinearAdjuster(5), 0.1, 0.1)


@pytest.mark.parametrize('loss_fn', [
    lambda zz: torch.tensor(1.0),
    lambda zz: (LOOSE_PARAM**2).sum(),
])
def test_a_loss_that_does_not_depend_on_z_is_a_clear_error(loss_fn):
    z, _ = make_batch()
    with pytest.raises(ValueError, match=r'loss_fn\(z\) does not depend on '
                       r'z'):
        gal_step(z, loss_fn, LinearAdjuster(5), 0.1, 0.1)


LOOSE_PARAM = nn.Parameter(torch.ones(3))


@pytest.mark.parametrize('bad', [float('nan'), float('inf'), -0.1])
def test_a_bad_lr_in_a_device_tensor_is_guarded_without_a_sync(
        monkeypatch, bad):
    """A CUDA lr tensor cannot be read without a host sync, so it is not
    checked up front: a bad value makes the step non-finite (vanilla
    gradient, counted) instead. On the CPU the up-front check is switched
    off to reach the guard."""
    import importlib
    module = importlib.import_module('mmgal.core.gal_step')
    monkeypatch.setattr(module, '_check_lr', lambda lr: None)
    z, t = make_batch()
    out = gal_step(z, quadratic(t), LinearAdjuster(5),
                   torch.tensor(bad, dtype=z.dtype), 0.5)
    assert bool(out.nonfinite) and not bool(out.adopted)
    assert torch.equal(out.grad, out.vanilla_grad)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_a_nan_lr_in_a_cuda_tensor_is_guarded():
    z, t = make_batch()
    z, t = z.cuda(), t.cuda()
    out = gal_step(z, quadratic(t), LinearAdjuster(5).cuda(),
                   torch.tensor(float('nan'), dtype=z.dtype, device='cuda'),
                   0.5)
    assert bool(out.nonfinite) and not bool(out.adopted)


@pytest.mark.parametrize('policy', ['le', 'always'])
@pytest.mark.parametrize('remainder', ['exact', 'reference'])
def test_a_grouped_step_equals_one_step_per_group(policy, remainder):
    """G problems in one step: per-group outputs and the summed adjuster
    gradient of G separate steps (DETR's decoder layers)."""
    gen = torch.Generator().manual_seed(3)
    G, B, Q, d = 3, 2, 5, 4
    z = torch.randn(G, B, Q, d, generator=gen, dtype=torch.float64)
    t = torch.randn(G, B, Q, d, generator=gen, dtype=torch.float64)
    w = torch.rand(G, B, Q, 1, generator=gen, dtype=torch.float64)

    def group_loss(zz, k):
        return ((zz - t[k]).abs() * w[k]).sum() / (k + 1.5)

    grouped_adj = GradientAdjuster(d, (8, 6)).double()
    single_adj = GradientAdjuster(d, (8, 6)).double()
    single_adj.load_state_dict(grouped_adj.state_dict())
    out = gal_step(z, lambda zz: torch.stack(
        [group_loss(zz[k], k) for k in range(G)]), grouped_adj, 0.3, 0.4,
                   policy=policy, remainder=remainder, grouped=True)
    singles = [gal_step(z[k], lambda zz, k=k: group_loss(zz, k), single_adj,
                        0.3, 0.4, policy=policy, remainder=remainder)
               for k in range(G)]
    for field in ('loss', 'tentative_loss', 'remainder', 'adopted',
                  'nonfinite', 'cos_sim'):
        expected = torch.stack([getattr(o, field) for o in singles])
        got = getattr(out, field)
        assert got.shape == (G, ), field
        if expected.dtype == torch.bool:
            assert torch.equal(got, expected), field
        else:
            torch.testing.assert_close(got, expected, msg=field)
    torch.testing.assert_close(out.grad,
                               torch.stack([o.grad for o in singles]))
    for p, q in zip(grouped_adj.parameters(), single_adj.parameters()):
        torch.testing.assert_close(p.grad, q.grad)


def test_grouped_adoption_is_decided_per_group():
    # Group 0: a quadratic away from its minimum (the tentative step
    # descends: adopted); group 1: |z - 1| at its minimum (g = 0, the
    # tentative loss cannot go lower: 'lt' does not adopt).
    z = torch.full((2, 3, 2), 1.0, dtype=torch.float64)

    def loss_fn(zz):
        return torch.stack([(zz[0]**2).sum(), (zz[1] - 1).abs().sum()])

    out = gal_step(z, loss_fn, FixedAdjuster(torch.tensor(
        [1.0, -1.0], dtype=torch.float64)), 0.1, 0.5, policy='lt',
                   grouped=True)
    assert out.adopted.tolist() == [True, False]
    torch.testing.assert_close(out.grad[1], out.vanilla_grad[1])
    assert not torch.equal(out.grad[0], out.vanilla_grad[0])


def test_grouped_loss_shape_is_checked():
    z = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match=r'loss_fn must return a \(2, \) '
                       r'tensor \(one loss per group\)'):
        gal_step(z, lambda zz: zz.sum(), LinearAdjuster(4, torch.float32),
                 0.1, 0.1, grouped=True)


@pytest.mark.parametrize('normalize', ['row', 'batch'])
def test_float64_difference_and_the_exact_form_give_the_mse_remainder(
        normalize):
    """For MSE the remainder is exactly lr^2 * mean(g~^2) (> 0). The
    closed form (mse_loss) gives it in float32; a plain loss_fn with
    remainder='exact' runs in float64 and gets it to ~6 digits (l' - l
    cancels to ~1e-10 of l); float32's difference does not."""
    from mmgal.core import mse_loss
    torch.manual_seed(0)
    adj = GradientAdjuster(1, (16, 4))
    gen = torch.Generator().manual_seed(5)
    f32_errors = []
    for _ in range(10):
        z = torch.randn(200, 1, generator=gen)
        y = torch.randn(200, 1, generator=gen)
        plain = gal_step(z, lambda t: F.mse_loss(t, y), adj, 1e-3, 0.1,
                         normalize=normalize)
        closed = gal_step(z, mse_loss(y), adj, 1e-3, 0.1,
                          normalize=normalize)
        f32 = gal_step(z, lambda t: F.mse_loss(t, y), adj, 1e-3, 0.1,
                       normalize=normalize, dtype=torch.float32)
        assert plain.grad.dtype == torch.float32
        assert plain.remainder.dtype == torch.float64
        assert closed.remainder.dtype == torch.float32
        z64, y64 = z.double(), y.double()
        g = 2 * (z64 - y64) / z.numel()
        a = adj(z).detach().double()
        if normalize == 'row':
            adjustment = 0.1 * a / a.abs() * g.abs()
        else:
            adjustment = 0.1 * a / a.norm() * g.norm()
        exact = 1e-6 * ((g + adjustment)**2).mean()
        torch.testing.assert_close(plain.remainder, exact, rtol=1e-4, atol=0)
        torch.testing.assert_close(closed.remainder.double(), exact,
                                   rtol=1e-5, atol=0)
        f32_errors.append(float((f32.remainder.double() - exact).abs() /
                                exact))
    assert min(f32_errors) > 0.01


def test_work_dtype_is_checked():
    adj = GradientAdjuster(2, (4, ))
    with pytest.raises(ValueError, match='dtype must be one of'):
        gal_step(torch.zeros(3, 2), lambda t: t.sum(), adj, 0.1, 0.1,
                 dtype=torch.float16)


def test_cosine_of_huge_rows_is_finite_where_their_product_overflows():
    """|g| * |a| overflows float32 (1e25 * 1e25); the rows' cosine is
    still exact (each row is normalised before the product)."""
    g = torch.tensor([[3e24, 4e24], [1e-30, 0.0]])
    a = torch.tensor([[3e24, 4e24], [0.0, 2e-30]])
    from mmgal.core.gal_step import _cosine
    cos = _cosine(g, a)
    assert torch.isfinite(cos).all()
    torch.testing.assert_close(cos, torch.tensor([1.0, 0.0]))
