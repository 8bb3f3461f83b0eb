"""RegressionStep and GALSettings.fast: every fast mode trains as the eager
reference does; the eager mode is the reference loop, bit for bit."""
import pytest
import torch

from mmgal.core import build_adjuster, gal_step, mse_loss
from sklearn.datasets import load_diabetes

from mmgal.regression import (GALSettings, MLPRegressor, RegressionStep,
                              fit_regressor)


def test_eager_mode_is_the_reference_loop_bit_for_bit():
    gal = GALSettings(sigma=0.1, arch=(8, 4), fast='eager', seed=3,
                      adjuster_optimizer=dict(type='Adam'))
    torch.manual_seed(0)
    step = RegressionStep(MLPRegressor(10, (16, )), 1e-2, gal=gal)
    # The loop the published tables come from, written out (the adjuster
    # from its own seed, the adjuster's Adam at the model's lr).
    torch.manual_seed(0)
    model = MLPRegressor(10, (16, ))
    with torch.random.fork_rng():
        torch.manual_seed(3)
        adjuster = build_adjuster('mlp', 1, (8, 4))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    adj_opt = torch.optim.Adam(adjuster.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        x = torch.randn(32, 10, generator=gen)
        y = torch.randn(32, 1, generator=gen)
        loss, out = step(x, y)
        pred = model(x)
        opt.zero_grad(set_to_none=True)
        ref = gal_step(pred, mse_loss(y), adjuster, 1e-2, 0.1)
        pred.backward(ref.grad)
        adj_opt.step()
        adj_opt.zero_grad(set_to_none=True)
        opt.step()
        assert torch.equal(loss, ref.loss)
        assert torch.equal(out.adopted, ref.adopted)
    for got, want in ((step.model, model), (step.adjuster, adjuster)):
        for p, q in zip(got.parameters(), want.parameters()):
            assert torch.equal(p, q)


def test_the_shared_settings_check_fast_and_refuse_retired_fields():
    with pytest.raises(ValueError, match=r"fast must be one of \('auto', "
                       r"'compile', 'eager'\), got 'fused'"):
        GALSettings(fast='fused')
    with pytest.raises(ValueError, match='lr_ratio was retired: an '
                       "adjuster_optimizer without 'lr' follows"):
        GALSettings.from_dict(dict(lr_ratio=2.0))


def test_the_remainder_of_a_loss_without_closed_form_is_float64():
    torch.manual_seed(0)
    step = RegressionStep(MLPRegressor(10, (16, )), 1e-3,
                          gal=GALSettings(arch=(8, 4)))
    x, y = torch.randn(32, 10), torch.randn(32, 1)
    loss, out = step(x, y)
    assert out.remainder.dtype == torch.float32  # MSE's closed form
    assert float(out.remainder) > 0  # MSE: lr^2 mean(g~^2)
    plain = step.learner.step(step.model(x),
                              lambda t: ((t - y)**2).mean(), 1e-3)
    assert plain.remainder.dtype == torch.float64
    assert all(p.dtype == torch.float32 for p in step.model.parameters())


def _fit(fast):
    X, y = load_diabetes(return_X_y=True)
    # 160 rows in batches of 50: the last batch (10 rows) has another shape.
    return fit_regressor(X[:160], y[:160], (16, ), epochs=3, batch_size=50,
                         lr=1e-2, seed=0,
                         gal=GALSettings(sigma=0.1, arch=(8, 4), fast=fast))


def _assert_same_training(got, want):
    assert got.history['adopt_rate'] == want.history['adopt_rate']
    assert got.history['train_loss'] == pytest.approx(
        want.history['train_loss'], rel=1e-4)
    # R = l' - l + eta <g~, g> cancels: float32 rounding of l (here ~2e4,
    # raw targets) bounds its accuracy, not R's size.
    scale = max(want.history['train_loss'])
    assert got.history['remainder'] == pytest.approx(
        want.history['remainder'], abs=1e-6 * scale)
    for p, q in zip(got.model.parameters(), want.model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)


def test_auto_mode_trains_as_the_eager_reference():
    """Where torch.compile is off (as in this suite): the eager step with
    a fused Adam."""
    _assert_same_training(_fit('auto'), _fit('eager'))


def test_the_default_compiles_where_torch_compile_works(compile_enabled,
                                                        monkeypatch):
    import mmgal.core.adjuster_learner as al
    model = MLPRegressor(3, (4, ))
    assert GALSettings().fast == 'auto'
    step = RegressionStep(model, 1e-2, gal=GALSettings())
    assert isinstance(step.learner.step_fn, al.CompiledGALStep)
    monkeypatch.setattr(al, 'compile_unavailable',
                        lambda device: 'no working C++ compiler (test)')
    with pytest.warns(UserWarning, match='the step runs eagerly'):
        step = RegressionStep(model, 1e-2, gal=GALSettings())
    assert step.learner.step_fn is al.gal_step
    assert step.learner.optimizer.defaults['fused']


@pytest.mark.slow
def test_compile_mode_trains_as_the_eager_reference(compile_enabled):
    """The step and the adjuster's Adam update compiled (its first step
    eager, then one graph per batch shape) train as the eager loop."""
    _assert_same_training(_fit('compile'), _fit('eager'))


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason='needs a CUDA device')
def test_compile_mode_on_cuda_trains_as_the_eager_reference(
        compile_enabled):
    """On a GPU the adjuster's Adam keeps its step count on the device
    (capturable), so its update is in the compiled graph; the training is
    the eager one's."""
    steps = {}
    for fast in ('eager', 'compile'):
        torch.manual_seed(0)
        steps[fast] = RegressionStep(
            MLPRegressor(10, (16, )).cuda(), 1e-2,
            gal=GALSettings(sigma=0.1, arch=(8, 4), fast=fast))
    gen = torch.Generator().manual_seed(1)
    for _ in range(6):
        x = torch.randn(32, 10, generator=gen).cuda()
        y = torch.randn(32, 1, generator=gen).cuda()
        (loss_c, out_c), (loss_e, out_e) = (steps[f](x, y)
                                            for f in ('compile', 'eager'))
        torch.testing.assert_close(loss_c, loss_e)
        assert torch.equal(out_c.adopted, out_e.adopted)
    state = steps['compile'].learner.optimizer.state
    assert all(st['step'].is_cuda for st in state.values())
    for p, q in zip(steps['compile'].model.parameters(),
                    steps['eager'].model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)
