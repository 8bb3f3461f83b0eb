import warnings

import pytest
import torch

from mmgal.core import (CNNGradientAdjuster, GradientAdjuster,
                        NoiseGradientAdjuster, build_adjuster, gal_step,
                        warn_if_unlearnable)


def test_mlp_layout_is_dim_arch_dim_without_final_activation():
    adj = GradientAdjuster(100, (256, 64, 32))
    linears = [m for m in adj.net if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (100, 256), (256, 64), (64, 32), (32, 100)
    ]
    assert isinstance(adj.net[-1], torch.nn.Linear)
    # The paper's DETR adjuster (4 -> 64 -> 16 -> 4) has 1,412 weights; the
    # paper's "+1344" counts the weight matrices without biases.
    detr = GradientAdjuster(4, (64, 16))
    n_weights = sum(m.weight.numel() for m in detr.net
                    if isinstance(m, torch.nn.Linear))
    assert n_weights == 4 * 64 + 64 * 16 + 16 * 4 == 1344


def test_mlp_output_can_be_negative():
    torch.manual_seed(0)
    out = GradientAdjuster(8, (16, ))(torch.randn(64, 8))
    assert (out < 0).any() and (out > 0).any()


@pytest.mark.parametrize('kind', ['mlp', 'cnn', 'uniform', 'normal'])
def test_every_kind_keeps_z_shape(kind):
    adj = build_adjuster(kind, 10, (8, 4))
    z = torch.randn(2, 3, 10)
    assert adj(z).shape == z.shape
    assert adj.dim == 10


def test_cnn_adjuster_gets_the_gradient_of_its_objective():
    """gal_step's gradient for a CNN adjuster equals autograd of
    |R| / (eta |g~|)^2 (denominator detached) written out in float64."""
    import copy
    F = torch.nn.functional
    torch.manual_seed(0)
    adj = CNNGradientAdjuster(10, (4, 4)).double()
    ref = copy.deepcopy(adj)
    z = torch.randn(6, 10, dtype=torch.float64)
    labels = torch.randint(0, 10, (6, ))
    gal_step(z, lambda zz: F.cross_entropy(zz, labels), adj, 0.1, 0.1)
    zr = z.clone().requires_grad_(True)
    loss = F.cross_entropy(zr, labels)
    g, = torch.autograd.grad(loss, zr)
    a = ref(z)
    g_adj = g + 0.1 * a / a.norm(dim=1, keepdim=True) * g.norm(
        dim=1, keepdim=True)
    delta = -0.1 * g_adj
    rem = F.cross_entropy(z + delta, labels) - loss.detach() - (g *
                                                                delta).sum()
    (rem.abs() / (delta.detach()**2).sum()).backward()
    for p, q in zip(adj.parameters(), ref.parameters()):
        assert q.grad.abs().max() > 1e-6
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize('kind', ['uniform', 'normal'])
def test_noise_adjusters_are_normalised_by_eq4(kind):
    torch.manual_seed(0)
    adj = build_adjuster(kind, 5)
    assert isinstance(adj, NoiseGradientAdjuster)
    assert list(adj.parameters()) == []
    z = torch.randn(7, 5)
    t = torch.randn(7, 5)
    out = gal_step(z, lambda zz: ((zz - t)**2).sum(), adj, 0.01, 0.3,
                   policy='always')
    diff = out.grad - out.vanilla_grad
    torch.testing.assert_close(diff.norm(dim=1),
                               0.3 * out.vanilla_grad.norm(dim=1))


def test_uniform_noise_is_zero_mean():
    torch.manual_seed(0)
    x = build_adjuster('uniform', 4)(torch.empty(20000, 4))
    assert x.min() >= -1 and x.max() <= 1
    assert abs(float(x.mean())) < 0.02


@pytest.mark.parametrize('arch', [(), [], (0, ), (4, -1), (2.5, ), None, 'ab'])
def test_bad_arch_raises_naming_it(arch):
    with pytest.raises(ValueError, match='arch must be a non-empty sequence '
                       'of positive ints'):
        GradientAdjuster(4, arch)
    with pytest.raises(ValueError, match='arch must be'):
        build_adjuster('cnn', 4, arch)


def test_bad_kind_and_dim_raise():
    with pytest.raises(ValueError, match=r"adjuster kind must be one of "
                       r"\('mlp', 'cnn', 'uniform', 'normal'\), got 'rnn'"):
        build_adjuster('rnn', 4)
    with pytest.raises(ValueError, match='dim must be a positive int'):
        GradientAdjuster(0, (4, ))
    with pytest.raises(ValueError, match='kernel_size must be a positive odd'):
        CNNGradientAdjuster(4, (4, ), kernel_size=2)


def test_row_normalisation_gives_a_one_feature_adjuster_no_gradient():
    """d = 1 with Eq. 4 per row: a/|a| = sign(a) has a zero derivative; the
    warning says so, and a GAL step indeed leaves the adjuster no
    gradient."""
    import torch.nn.functional as F
    with pytest.warns(UserWarning, match="d = 1 with normalize='row' gets "
                      'no gradient'):
        assert warn_if_unlearnable('mlp', 1, 'row')
    adj = build_adjuster('mlp', 1, (16, 4))
    z, y = torch.randn(50, 1), torch.randn(50, 1)
    gal_step(z, lambda t: F.mse_loss(t, y), adj, 0.1, 0.1,
             dtype=torch.float64, normalize='row')
    assert max(float(p.grad.abs().max()) for p in adj.parameters()) < 1e-15
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        for args in (('mlp', 2, 'row'), ('normal', 1, 'row'),
                     ('mlp', 1, 'batch'), ('mlp', 1, 'auto')):
            assert not warn_if_unlearnable(*args)


@pytest.mark.parametrize('normalize', ['auto', 'batch'])
def test_batch_normalisation_gives_a_one_feature_adjuster_a_gradient(
        normalize):
    """The deviation from Eq. 4 for d = 1: one norm over the batch, so the
    adjustment's per-sample profile depends on the adjuster; its gradient
    is that of |R| / (eta |g~|)^2 (checked against a float64 finite
    difference) and large against float32's resolution."""
    from mmgal.core import mse_loss
    torch.manual_seed(0)
    adj = build_adjuster('mlp', 1, (16, 4)).double()
    z, y = torch.randn(50, 1).double(), torch.randn(50, 1).double()
    lr, sigma = 1e-3, 0.1
    gal_step(z, mse_loss(y), adj, lr, sigma, normalize=normalize)
    grad = adj.net[-1].weight.grad.clone()
    assert grad.abs().max() > 1e-4

    def step(a):
        g = 2 * (z - y) / z.numel()
        return -lr * (g + sigma * a * g.norm() / a.norm())

    with torch.no_grad():
        # The denominator (eta |g~|)^2 is detached: fixed at phi.
        denom = (step(adj(z))**2).sum()

    def objective(a):
        # MSE: R = mean(delta^2).
        return (step(a)**2).mean() / denom

    w = adj.net[-1].weight
    eps = 1e-6
    with torch.no_grad():
        for i in range(w.shape[1]):
            w[0, i] += eps
            up = objective(adj(z))
            w[0, i] -= 2 * eps
            down = objective(adj(z))
            w[0, i] += eps
            numeric = (up - down) / (2 * eps)
            torch.testing.assert_close(grad[0, i], numeric, rtol=1e-5,
                                       atol=1e-12)
