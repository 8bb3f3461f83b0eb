import copy
import logging
import math

import pytest
import torch
import torch.nn.functional as F
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS
from torch import nn

import mmgal  # noqa: F401
from mmgal.core import cross_entropy_loss, gal_step
from mmgal.engine import GALOptimWrapper


def make(model=None, **kwargs):
    torch.manual_seed(0)
    model = model or nn.Linear(6, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    wrapper = GALOptimWrapper(opt, **kwargs)
    return model, wrapper


def batch(seed):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(5, 6, generator=gen), torch.randint(0, 4, (5, ),
                                                           generator=gen)


def run_steps(model, wrapper, n):
    """n GAL updates with cross-entropy on batches 0..n-1."""
    for seed in range(n):
        x, y = batch(seed)
        wrapper.update_params(
            wrapper.gal_forward(model(x), lambda t: F.cross_entropy(t, y)))


def test_registered_in_mmengine_root_and_resolves_from_child_scopes():
    from mmdet.registry import OPTIM_WRAPPERS as DET
    from mmpretrain.registry import OPTIM_WRAPPERS as PRE
    assert OPTIM_WRAPPERS.get('GALOptimWrapper') is GALOptimWrapper
    assert PRE.get('GALOptimWrapper') is GALOptimWrapper
    assert DET.get('GALOptimWrapper') is GALOptimWrapper


@pytest.mark.parametrize('exact', [False, True])
def test_gal_forward_returns_the_exact_loss_and_injects_the_chosen_grad(
        exact):
    """The loss value is the model's own (float32 even where GAL's maths
    run in float64) and z's gradient is GAL's g~ = g + the adjustment,
    with g exactly the gradient the model gets without GAL."""
    model, wrapper = make(sigma=0.3, arch=(8, ), policy='always')
    wrapper.setup_adjuster(4)
    x, y = batch(0)
    z = model(x)

    def loss_fn():
        return cross_entropy_loss(y) if exact else (
            lambda t: F.cross_entropy(t, y))

    loss = wrapper.gal_forward(z, loss_fn())
    assert loss.dtype == torch.float32
    assert torch.equal(loss, F.cross_entropy(z.detach(), y))
    zz = z.detach().requires_grad_(True)
    (gz, ) = torch.autograd.grad(wrapper.gal_forward(zz, loss_fn()), zz)
    ref = gal_step(z, loss_fn(), wrapper.adjuster, 0.1, 0.3,
                   policy='always')
    assert torch.equal(gz, ref.grad)
    z0 = z.detach().requires_grad_(True)
    (g_plain, ) = torch.autograd.grad(F.cross_entropy(z0, y), z0)
    assert torch.equal(ref.vanilla_grad, g_plain)
    # g~ - g is the adjustment: sigma |g| in each row.
    torch.testing.assert_close((gz - g_plain).norm(dim=1),
                               0.3 * g_plain.norm(dim=1))


def test_gal_with_sigma_zero_updates_exactly_like_optim_wrapper():
    base_model, _ = make()
    plain = OptimWrapper(torch.optim.SGD(base_model.parameters(), lr=0.1))
    gal_model, wrapper = make(sigma=0.0, arch=(8, ))
    wrapper.setup_adjuster(4)
    for seed in range(3):
        x, y = batch(seed)
        plain.update_params(F.cross_entropy(base_model(x), y))
        z = gal_model(x)
        wrapper.update_params(
            wrapper.gal_forward(z, lambda t: F.cross_entropy(t, y)))
    for a, b in zip(base_model.parameters(), gal_model.parameters()):
        assert torch.equal(a, b)


def test_accumulative_counts_step_model_and_adjuster_on_the_same_boundary():
    model, wrapper = make(sigma=0.2, arch=(8, ), accumulative_counts=2,
                          adjuster_optimizer='model')
    wrapper.setup_adjuster(4)
    adj0 = copy.deepcopy(wrapper.adjuster)
    w0 = model.weight.detach().clone()
    grads = []
    for seed in range(2):
        x, y = batch(seed)
        z = model(x)
        # What gal_step gives this micro-batch on the initial adjuster.
        probe = copy.deepcopy(adj0)
        gal_step(z, lambda t: F.cross_entropy(t, y), probe, 0.1, 0.2)
        grads.append([p.grad for p in probe.parameters()])
        wrapper.update_params(
            wrapper.gal_forward(z, lambda t: F.cross_entropy(t, y)))
        if seed == 0:
            assert torch.equal(model.weight, w0)
            for p, q in zip(wrapper.adjuster.parameters(),
                            adj0.parameters()):
                assert torch.equal(p, q)
    assert not torch.equal(model.weight, w0)
    # Adjuster optimizer = the model's (SGD, lr 0.1): p - lr * mean grad,
    # an update far above the comparison's tolerance.
    for p, q, g1, g2 in zip(wrapper.adjuster.parameters(), adj0.parameters(),
                            *grads):
        update = 0.1 * (g1 + g2) / 2
        assert update.abs().max() > 1e-4
        torch.testing.assert_close(p, q - update, rtol=1e-5, atol=1e-7)


def test_tentative_and_adjuster_lr_follow_the_heads_param_group():
    """eta is the lr the head's parameters get (their group's lr, after
    paramwise multipliers and schedulers), not mmengine's base lr."""
    model = nn.Sequential(nn.Linear(6, 6), nn.Linear(6, 4))
    opt = torch.optim.SGD([
        dict(params=model[0].parameters(), lr=0.01),
        dict(params=model[1].parameters(), lr=0.1)
    ], lr=0.1)
    wrapper = GALOptimWrapper(opt, adjuster_optimizer='model', arch=(8, ))
    # Before the head is known: mmengine's base lr.
    assert wrapper.base_lr() == 0.1
    wrapper.setup_adjuster(4, head_params=list(model[1].parameters()))
    assert wrapper.base_lr() == 0.1
    opt.param_groups[1]['lr'] = 0.02  # a scheduler or auto_scale_lr
    wrapper.base_param_settings['lr'] = 7.0  # what mmengine reports
    assert wrapper.base_lr() == 0.02
    x, y = batch(0)
    seen = []
    real = wrapper.learner.step_fn
    wrapper.learner.step_fn = lambda *a, **kw: seen.append(kw['lr']) or real(
        *a, **kw)
    wrapper.update_params(
        wrapper.gal_forward(model(x), lambda t: F.cross_entropy(t, y)))
    assert seen == [0.02]
    assert wrapper.adjuster_optimizer.param_groups[0]['lr'] == 0.02
    fixed = GALOptimWrapper(opt, tentative_lr=0.5)
    assert fixed.base_lr() == 0.5


def test_adjuster_lives_outside_the_model_optimizer():
    model, wrapper = make(arch=(8, ))
    wrapper.setup_adjuster(4)
    model_params = {id(p) for g in wrapper.param_groups for p in g['params']
                    if isinstance(p, nn.Parameter)}
    assert not model_params & {id(p) for p in wrapper.adjuster.parameters()}
    assert len(wrapper.optimizer.param_groups) == 1
    # The default: Adam, lr 1e-3, no weight decay (none inherited).
    assert type(wrapper.adjuster_optimizer) is torch.optim.Adam
    group = wrapper.adjuster_optimizer.param_groups[0]
    assert group['lr'] == 1e-3 and group['weight_decay'] == 0


def test_adjuster_optimizer_model_inherits_type_and_settings():
    model = nn.Linear(6, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9,
                          weight_decay=5e-4)
    wrapper = GALOptimWrapper(opt, adjuster_optimizer='model', arch=(8, ))
    wrapper.setup_adjuster(4)
    group = wrapper.adjuster_optimizer.param_groups[0]
    assert type(wrapper.adjuster_optimizer) is torch.optim.SGD
    assert (group['lr'], group['momentum'], group['weight_decay']) == (
        0.1, 0.9, 5e-4)


def test_an_lr_inside_adjuster_optimizer_is_kept():
    model, wrapper = make(arch=(8, ), adjuster_optimizer=dict(type='SGD',
                                                              lr=0.003))
    wrapper.setup_adjuster(4)
    run_steps(model, wrapper, 2)
    assert wrapper.adjuster_optimizer.param_groups[0]['lr'] == 0.003


def test_adjuster_optimizer_without_lr_follows_the_head_lr():
    _, wrapper = make(arch=(8, ), adjuster_optimizer=dict(type='Adam'))
    wrapper.setup_adjuster(4)
    assert type(wrapper.adjuster_optimizer) is torch.optim.Adam
    assert wrapper.adjuster_optimizer.param_groups[0]['lr'] == \
        pytest.approx(0.1)


def test_adjuster_init_does_not_consume_the_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    wrapper = GALOptimWrapper(
        torch.optim.SGD([nn.Parameter(torch.ones(1))], lr=0.1), arch=(8, ))
    wrapper.setup_adjuster(4)
    assert torch.equal(torch.rand(3), expected)
    # ... and the adjuster is the same for the same seed.
    other = GALOptimWrapper(torch.optim.SGD([nn.Parameter(torch.ones(1))],
                                            lr=0.1), arch=(8, ))
    other.setup_adjuster(4)
    for p, q in zip(wrapper.adjuster.parameters(),
                    other.adjuster.parameters()):
        assert torch.equal(p, q)


def test_state_dict_round_trip_keeps_gal_under_its_own_key():
    model, wrapper = make(arch=(8, ), sigma=0.2)
    wrapper.setup_adjuster(4)
    x, y = batch(0)
    wrapper.update_params(
        wrapper.gal_forward(model(x), lambda t: F.cross_entropy(t, y)))
    state = wrapper.state_dict()
    assert set(state['gal']) == {'adjuster', 'dim', 'adjuster_kind', 'arch',
                                 'optimizer', 'optimizer_type'}
    assert 'gal' not in model.state_dict()
    # Loaded before the hook builds the adjuster: applied when it does.
    _, fresh = make(arch=(8, ), sigma=0.2)
    fresh.load_state_dict(copy.deepcopy(state))
    fresh.setup_adjuster(4)
    for p, q in zip(wrapper.adjuster.parameters(),
                    fresh.adjuster.parameters()):
        assert torch.equal(p, q)
    # Loaded after.
    _, late = make(arch=(8, ), sigma=0.2)
    late.setup_adjuster(4)
    late.load_state_dict(copy.deepcopy(state))
    for p, q in zip(wrapper.adjuster.parameters(),
                    late.adjuster.parameters()):
        assert torch.equal(p, q)


def test_loading_a_checkpoint_without_gal_state_warns(monkeypatch):
    import mmgal.engine.gal_optim_wrapper as module
    logged = []
    monkeypatch.setattr(module, 'print_log',
                        lambda msg, **kw: logged.append((msg, kw)))
    plain_model = nn.Linear(6, 4)
    plain = OptimWrapper(torch.optim.SGD(plain_model.parameters(), lr=0.1))
    _, wrapper = make(arch=(8, ))
    wrapper.setup_adjuster(4)
    wrapper.load_state_dict(plain.state_dict())
    assert len(logged) == 1
    msg, kw = logged[0]
    assert "the checkpoint has no GAL state ('gal')" in msg
    assert kw['level'] == logging.WARNING


def test_loading_an_adjuster_of_another_dim_is_refused():
    _, wrapper = make(arch=(8, ))
    wrapper.setup_adjuster(4)
    state = wrapper.state_dict()
    _, other = make(arch=(8, ))
    other.setup_adjuster(5)
    with pytest.raises(ValueError, match="adjuster has dim 4, the head's "
                       'output has 5'):
        other.load_state_dict(state)


def test_enabled_wrapper_without_hook_is_a_clear_error():
    model, wrapper = make()
    x, y = batch(0)
    with pytest.raises(RuntimeError, match="no GALHook has set up its "
                       r"adjuster: add default_hooks = dict\(gal=dict\("
                       r"type='GALHook'\)\)"):
        wrapper.update_params(F.cross_entropy(model(x), y))


def test_disabled_wrapper_is_a_plain_optim_wrapper():
    base_model, _ = make()
    plain = OptimWrapper(torch.optim.SGD(base_model.parameters(), lr=0.1))
    model, wrapper = make(enabled=False)
    x, y = batch(0)
    plain.update_params(F.cross_entropy(base_model(x), y))
    wrapper.update_params(F.cross_entropy(model(x), y))
    for a, b in zip(base_model.parameters(), model.parameters()):
        assert torch.equal(a, b)


def test_stats_average_the_steps_of_the_interval():
    """Each logged value is the average over the interval's steps of what
    gal_step returned (recorded independently here)."""
    model, wrapper = make(arch=(8, ), sigma=0.1)
    wrapper.setup_adjuster(4)
    assert wrapper.pop_gal_stats() == {}
    outs = []
    real = wrapper.learner.step_fn
    wrapper.learner.step_fn = lambda *a, **kw: outs.append(real(*a, **kw)) or \
        outs[-1]
    for seed in range(4):
        x, y = batch(seed)
        wrapper.update_params(
            wrapper.gal_forward(model(x), lambda t: F.cross_entropy(t, y)))
    stats = wrapper.pop_gal_stats()
    # The first call has no earlier weights for adjuster_update.
    assert set(stats) == {'remainder', 'log10_remainder', 'adopt_rate',
                          'cos_sim', 'nonfinite', 'tentative_gain',
                          'adjuster_drift'}

    def mean(key):
        return sum(float(getattr(o, key)) for o in outs) / len(outs)

    assert stats['remainder'] == pytest.approx(mean('scaled_remainder'))
    assert stats['log10_remainder'] == pytest.approx(
        math.log10(sum(float(o.remainder.abs()) for o in outs) / 4))
    assert stats['adopt_rate'] == pytest.approx(mean('adopted'))
    assert stats['cos_sim'] == pytest.approx(mean('cos_sim'))
    assert stats['tentative_gain'] == pytest.approx(-mean('loss_change'))
    assert stats['nonfinite'] == 0
    assert wrapper.pop_gal_stats() == {}


def test_adjuster_update_is_its_change_beyond_a_common_rescaling():
    model, wrapper = make(arch=(8, ), sigma=0.1)
    wrapper.setup_adjuster(4)
    run_steps(model, wrapper, 1)
    assert 'adjuster_update' not in wrapper.pop_gal_stats()  # first call
    w0 = torch.cat([p.detach().flatten() for p in
                    wrapper.adjuster.parameters()])
    with torch.no_grad():
        for p in wrapper.adjuster.parameters():
            p.mul_(0.5)  # a common rescaling: no update beyond it
    run_steps(model, wrapper, 0)
    wrapper.learner.stats = torch.zeros(11)
    wrapper.learner.stats[6] = 1
    assert wrapper.pop_gal_stats()['adjuster_update'] == pytest.approx(
        0, abs=1e-6)
    run_steps(model, wrapper, 3)
    w1 = torch.cat([p.detach().flatten() for p in
                    wrapper.adjuster.parameters()])
    cos = float(F.cosine_similarity(w1.double(), 0.5 * w0.double(), dim=0))
    stats = wrapper.pop_gal_stats()
    update = stats['adjuster_update']
    assert update > 1e-4
    assert update == pytest.approx(math.sqrt(1 - cos**2), rel=1e-4)
    # Drift: against the initial weights (the rescaling does not count).
    init = torch.cat([p.flatten() for p in
                      wrapper.learner.initial.parameters()])
    cos0 = float(F.cosine_similarity(w1.double(), init.double(), dim=0))
    assert stats['adjuster_drift'] == pytest.approx(math.sqrt(1 - cos0**2),
                                                    rel=1e-3)


def test_a_probed_step_compares_the_learned_and_the_initial_adjuster():
    model, wrapper = make(arch=(8, ), sigma=0.5)
    wrapper.setup_adjuster(4)
    run_steps(model, wrapper, 5)
    wrapper.pop_gal_stats()
    initial = copy.deepcopy(wrapper.learner.initial)
    current = copy.deepcopy(wrapper.adjuster)
    x, y = batch(9)
    z = model(x)
    wrapper.probe = True
    wrapper.gal_forward(z, lambda t: F.cross_entropy(t, y))
    stats = wrapper.pop_gal_stats()
    kw = dict(lr=0.1, sigma=0.5)
    r_now = gal_step(z, lambda t: F.cross_entropy(t, y), current, **kw)
    r_init = gal_step(z, lambda t: F.cross_entropy(t, y), initial, **kw)
    assert stats['remainder_ratio'] == pytest.approx(
        float(r_now.remainder.abs() / r_init.remainder.abs()), rel=1e-5)
    a, b = current(z.detach()), initial(z.detach())
    assert stats['cos_init'] == pytest.approx(
        float(F.cosine_similarity(a, b, dim=-1).mean()), rel=1e-5)
    assert stats['cos_init'] < 1 - 1e-4  # it has learned something


@pytest.mark.parametrize('kwargs, match', [
    (dict(sigma=-1), 'sigma must be a finite number >= 0'),
    (dict(gamma=0), 'gamma must be a finite number > 0'),
    (dict(policy='sometimes'), 'policy must be one of'),
    (dict(remainder='closed'), 'remainder must be one of'),
    (dict(objective='mse'), 'objective must be one of'),
    (dict(normalize='layer'), 'normalize must be one of'),
    (dict(adjuster='rnn'), r"adjuster must be one of \('mlp', 'cnn', "
     r"'uniform', 'normal'\), got 'rnn'"),
    (dict(arch=()), 'arch must be a non-empty sequence'),
    (dict(adjuster_lr_ratio=0.5), "adjuster_lr_ratio was retired: an "
     "adjuster_optimizer without 'lr'"),
    (dict(remainder='taylor'), "remainder='taylor' was retired: use "
     "remainder='exact'"),
    (dict(sigam=0.1), r"unknown setting 'sigam'; GAL takes \['sigma'"),
    (dict(preset='paper'), r"preset must be one of \('default', "
     r"'release'\)"),
    (dict(adjuster_optimizer=dict(type='Adam', params=[])),
     'adjuster_optimizer must not name params'),
    (dict(tentative_lr='auto'), 'tentative_lr must be None'),
    (dict(tentative_lr=0), 'tentative_lr must be a finite number > 0, got '
     '0'),
    (dict(tentative_lr=float('inf')), 'tentative_lr must be a finite number '
     '> 0, got inf'),
    (dict(tentative_lr=float('nan')), 'tentative_lr must be a finite number '
     '> 0, got nan'),
    (dict(seed=2**70), r'seed must be an int in \[-2\*\*63, 2\*\*64\)'),
    (dict(loss_scale=0), 'loss_scale must be a finite number > 0, got 0'),
    (dict(loss_scale=-1.), 'loss_scale must be a finite number > 0, got '
     '-1.0'),
    (dict(loss_scale=float('nan')), 'loss_scale must be a finite number'),
    (dict(loss_scale=dict(init_scale=float('inf'))),
     'loss_scale.init_scale must be a finite number > 0, got inf'),
    (dict(loss_scale=dict(init_scale=float('nan'))),
     'loss_scale.init_scale must be a finite number > 0, got nan'),
    (dict(enabled='False'), r"enabled must be a bool, got 'False' \(str\)"),
    (dict(enabled=1), r'enabled must be a bool, got 1 \(int\)'),
    (dict(seed=1.5), r'seed must be a int, got 1\.5'),
    (dict(sigma=float('nan')), 'sigma must be a finite number >= 0, got '
     'nan'),
    (dict(adjuster_optimizer='Adam'), "adjuster_optimizer must be None "
     r"\(the preset's\), 'model'"),
    (dict(dtype='float8'), r"dtype must be one of \('float16', 'bfloat16'"),
    (dict(loss_scale='static'), "loss_scale must be 'dynamic', a finite "
     'number > 0 or a dict'),
    (dict(use_fsdp=True), 'use_fsdp=True is not supported'),
    (dict(gal_dtype='float64'), 'gal_dtype was retired'),
])
def test_bad_settings_raise_naming_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make(**kwargs)


def test_bf16_autocast_on_cpu_runs_gal_in_fp32():
    model, wrapper = make(arch=(8, ), sigma=0.1, dtype='bfloat16')
    assert wrapper.use_amp and wrapper.loss_scaler is None
    wrapper.setup_adjuster(4)
    x, y = batch(0)
    w0 = model.weight.detach().clone()
    with wrapper.optim_context(model):
        z = model(x)
        assert z.dtype == torch.bfloat16
        loss = wrapper.gal_forward(z, lambda t: F.cross_entropy(t, y))
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    wrapper.update_params(loss)
    assert not torch.equal(model.weight, w0)
    assert torch.isfinite(model.weight).all()


def test_fp16_loss_scaling_unscales_before_the_step():
    ref_model, ref = make(arch=(8, ), sigma=0.1)
    model, wrapper = make(arch=(8, ), sigma=0.1, loss_scale=1024.)
    assert wrapper.loss_scaler is not None
    for w in (ref, wrapper):
        w.setup_adjuster(4)
    x, y = batch(0)
    for m, w in ((ref_model, ref), (model, wrapper)):
        w.update_params(
            w.gal_forward(m(x), lambda t: F.cross_entropy(t, y)))
    torch.testing.assert_close(model.weight, ref_model.weight)
    state = wrapper.state_dict()
    assert state['loss_scaler']['scale'] == 1024.
    _, again = make(arch=(8, ), sigma=0.1, loss_scale='dynamic')
    again.setup_adjuster(4)
    again.load_state_dict(state)
    assert again.loss_scaler.get_scale() == 1024.


def test_setup_again_keeps_the_trained_adjuster():
    model, wrapper = make(arch=(8, ), sigma=0.2)
    first = wrapper.setup_adjuster(4)
    x, y = batch(0)
    wrapper.update_params(
        wrapper.gal_forward(model(x), lambda t: F.cross_entropy(t, y)))
    trained = [p.detach().clone() for p in first.parameters()]
    assert wrapper.setup_adjuster(4) is first
    for p, q in zip(first.parameters(), trained):
        assert torch.equal(p, q)
    with pytest.raises(ValueError, match='already built for dim 4, now '
                       'asked for 5'):
        wrapper.setup_adjuster(5)


@pytest.mark.skipif(torch.cuda.is_available(), reason='a machine without '
                    'CUDA, where fp16 autocast cannot run')
def test_fp16_without_cuda_is_refused_when_the_wrapper_is_built():
    """Before: an AssertionError from mmengine's autocast at iteration 1."""
    with pytest.raises(ValueError, match=r"dtype='float16' needs a CUDA "
                       r"device.*set dtype='bfloat16'"):
        make(dtype='float16')


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason='needs a CUDA device (fp16 autocast with '
                    'GradScaler)')
def test_cuda_fp16_amp_with_grad_scaler_trains_and_keeps_gal_in_fp32():
    model, wrapper = make(arch=(8, ), sigma=0.1, loss_scale='dynamic')
    model.cuda()
    wrapper.setup_adjuster(4, 'cuda')
    assert wrapper.loss_scaler is not None
    w0 = model.weight.detach().clone()
    for seed in range(3):
        x, y = (t.cuda() for t in batch(seed))
        with wrapper.optim_context(model):
            z = model(x)
            assert z.dtype == torch.float16
            loss = wrapper.gal_forward(z, lambda t: F.cross_entropy(t, y))
        assert loss.dtype == torch.float32
        wrapper.update_params(loss)
    assert torch.isfinite(model.weight).all()
    assert not torch.equal(model.weight, w0)
    stats = wrapper.pop_gal_stats()
    assert stats['nonfinite'] == 0 and 0 <= stats['adopt_rate'] <= 1


def test_numpy_settings_are_numbers():
    np = pytest.importorskip('numpy')
    _, wrapper = make(sigma=np.float32(0.01), tentative_lr=np.float64(0.1),
                      adjuster_optimizer=dict(type='SGD',
                                              lr=np.float32(0.5)))
    assert wrapper.settings.sigma == pytest.approx(0.01)
    assert wrapper.base_lr() == pytest.approx(0.1)


def capture_log(monkeypatch):
    import mmgal.engine.gal_optim_wrapper as module
    logged = []
    monkeypatch.setattr(module, 'print_log',
                        lambda msg, **kw: logged.append(msg))
    return logged


def test_a_large_sigma_warns_with_the_papers_range(monkeypatch):
    logged = capture_log(monkeypatch)
    make(sigma=0.9)
    assert len(logged) == 1
    assert "far above the paper's range (0.001-0.01" in logged[0]
    make(sigma=0.01)
    assert len(logged) == 1


def trained_state(**kwargs):
    model, wrapper = make(arch=(8, ), sigma=0.1, **kwargs)
    wrapper.setup_adjuster(4)
    x, y = batch(0)
    wrapper.update_params(
        wrapper.gal_forward(model(x), lambda t: F.cross_entropy(t, y)))
    return wrapper.state_dict()


def test_resume_with_another_adjuster_optimizer_warns_and_keeps_weights(
        monkeypatch):
    logged = capture_log(monkeypatch)
    state = trained_state(adjuster_optimizer=dict(type='SGD',
                                                  momentum=0.9))
    assert state['gal']['optimizer_type'] == 'SGD'
    old = copy.deepcopy(state)
    del old['gal']['optimizer_type']  # a checkpoint from before it was kept
    for ckpt in (state, old):
        model, wrapper = make(arch=(8, ), sigma=0.1,
                              adjuster_optimizer=dict(type='Adam'))
        wrapper.setup_adjuster(4)
        logged.clear()
        wrapper.load_state_dict(copy.deepcopy(ckpt))
        assert len(logged) == 1
        assert "the config's is Adam; its state is not loaded" in logged[0]
        for k, v in ckpt['gal']['adjuster'].items():
            assert torch.equal(wrapper.adjuster.state_dict()[k], v)
        # Training goes on (before: KeyError: 'step' in Adam's step).
        x, y = batch(1)
        wrapper.update_params(
            wrapper.gal_forward(model(x), lambda t: F.cross_entropy(t, y)))


def test_resume_with_another_adjuster_lr_uses_the_configs_and_warns(
        monkeypatch):
    """The same optimizer type with another lr (1e-3 saved, 0.05 in the
    config): the config's lr is used, the checkpoint's moments kept, and
    the change is said (before: the checkpoint's lr, silently)."""
    logged = capture_log(monkeypatch)
    state = trained_state(adjuster_optimizer=dict(type='Adam', lr=1e-3))
    _, wrapper = make(arch=(8, ), sigma=0.1,
                      adjuster_optimizer=dict(type='Adam', lr=0.05))
    wrapper.setup_adjuster(4)
    logged.clear()
    wrapper.load_state_dict(copy.deepcopy(state))
    opt = wrapper.adjuster_optimizer
    assert opt.param_groups[0]['lr'] == 0.05
    saved = state['gal']['optimizer']['state']
    for i, p in enumerate(wrapper.adjuster.parameters()):
        assert torch.equal(opt.state[p]['exp_avg'], saved[i]['exp_avg'])
    assert len(logged) == 1 and 'lr: 0.001 -> 0.05' in logged[0]
    # The same settings: loaded without a word.
    logged.clear()
    _, same = make(arch=(8, ), sigma=0.1,
                   adjuster_optimizer=dict(type='Adam', lr=1e-3))
    same.setup_adjuster(4)
    same.load_state_dict(copy.deepcopy(state))
    assert logged == []


def test_resume_with_another_arch_names_the_change():
    state = trained_state()
    _, wrapper = make(arch=(16, ), sigma=0.1)
    wrapper.setup_adjuster(4)
    with pytest.raises(ValueError, match=r"the checkpoint's adjuster has "
                       r'arch=\[8\], the config asks for \[16\]: set '
                       r'optim_wrapper\.arch=\[8\]'):
        wrapper.load_state_dict(state)


def test_gal_state_without_dim_is_a_clear_error():
    state = trained_state()
    del state['gal']['dim']
    _, wrapper = make(arch=(8, ), sigma=0.1)
    wrapper.setup_adjuster(4)
    with pytest.raises(ValueError, match=r"lacks \['dim'\]: it was not "
                       'written by GAL '):
        wrapper.load_state_dict(state)


@pytest.mark.parametrize('adjuster_optimizer', [
    None, dict(type='Adam'), dict(type='AdamW', weight_decay=0.01),
    dict(type='RMSprop', alpha=0.9)])
def test_fast_adjuster_optimizer_matches_the_eager_one(adjuster_optimizer):
    results = {}
    for fast in ('auto', 'eager'):
        model, wrapper = make(arch=(8, ), sigma=0.1, fast=fast,
                              adjuster_optimizer=adjuster_optimizer)
        wrapper.setup_adjuster(4)
        run_steps(model, wrapper, 3)
        results[fast] = (wrapper, [p.detach().clone()
                                   for p in wrapper.adjuster.parameters()])
    fast_opt, eager_opt = (results[k][0].adjuster_optimizer
                           for k in ('auto', 'eager'))
    flags = fast_opt.defaults
    assert flags.get('fused') or flags.get('foreach')
    assert not eager_opt.defaults.get('fused') and \
        not eager_opt.defaults.get('foreach')
    for p, q in zip(results['auto'][1], results['eager'][1]):
        torch.testing.assert_close(p, q)


def test_fast_is_checked():
    with pytest.raises(ValueError, match=r"fast must be one of \('auto', "
                       r"'compile', 'eager'\), got 'graph'"):
        make(fast='graph')


@pytest.mark.slow
def test_the_default_compiles_the_step_and_updates_like_eager(
        compile_enabled):
    """fast='auto' (the default) compiles the step where torch.compile
    works, and updates the model and the adjuster as fast='eager'."""
    from mmgal.core import CompiledGALStep
    results = {}
    for fast in ('eager', 'auto'):
        model, wrapper = make(arch=(8, ), sigma=0.1, fast=fast)
        wrapper.setup_adjuster(4)
        run_steps(model, wrapper, 5)
        results[fast] = (model, wrapper)
    (m_e, w_e), (m_c, w_c) = results['eager'], results['auto']
    assert isinstance(w_c.learner.step_fn, CompiledGALStep)
    assert w_c.learner.step_fn.failed is None
    # From the second update on, the adjuster's Adam runs in the graph.
    assert w_c.learner._in_graph and not w_e.learner._in_graph
    assert all(p.grad is None for p in w_c.adjuster.parameters())
    assert not isinstance(w_e.learner.step_fn, CompiledGALStep)
    for p, q in zip(m_e.parameters(), m_c.parameters()):
        torch.testing.assert_close(p, q)
    for p, q in zip(w_e.adjuster.parameters(), w_c.adjuster.parameters()):
        torch.testing.assert_close(p, q)
    se, sc = w_e.pop_gal_stats(), w_c.pop_gal_stats()
    for k in se:
        assert sc[k] == pytest.approx(se[k], rel=1e-3, abs=1e-7), k


def grouped_steps(wrapper, model, n, groups=3, calls=1):
    """n updates of a grouped GAL step (G problems, each its own mean
    cross-entropy), ``calls`` GAL calls per update."""
    for seed in range(n):
        x, y = batch(seed)
        loss = 0
        for c in range(calls):
            z = torch.stack([model(x) * (i + 1 + c) for i in range(groups)])

            def loss_fn(t, y=y):
                return F.cross_entropy(t.flatten(0, 1), y.repeat(groups),
                                       reduction='none').view(groups,
                                                              -1).mean(1)

            loss = loss + wrapper.gal_forward(z, loss_fn, grouped=True)
        wrapper.update_params(loss)


@pytest.mark.slow
@pytest.mark.parametrize('calls', [1, 2])
def test_the_in_graph_adjuster_update_averages_as_the_eager_one(
        compile_enabled, calls):
    """A grouped step's G gradients averaged (1 / G) before the in-graph
    Adam, as the eager update averages its micro-steps; two GAL calls per
    update switch the in-graph update off (their average is taken again):
    the adjuster ends where the eager wrapper's does."""
    results = {}
    for fast in ('eager', 'auto'):
        model, wrapper = make(arch=(8, ), sigma=0.3, fast=fast)
        wrapper.setup_adjuster(4)
        grouped_steps(wrapper, model, 4, calls=calls)
        results[fast] = wrapper
    assert results['auto'].learner._in_graph == (calls == 1)
    for p, q in zip(results['eager'].adjuster.parameters(),
                    results['auto'].adjuster.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)
    state_e = results['eager'].adjuster_optimizer.state_dict()['state']
    state_c = results['auto'].adjuster_optimizer.state_dict()['state']
    for k in state_e:
        assert float(state_c[k]['step']) == float(state_e[k]['step']) == 4
        torch.testing.assert_close(state_c[k]['exp_avg_sq'],
                                   state_e[k]['exp_avg_sq'], rtol=1e-3,
                                   atol=1e-12)


def test_the_default_runs_eagerly_and_says_why_where_compile_cannot(
        monkeypatch, compile_enabled):
    """No C++ compiler (or compiling switched off): fast='auto' logs the
    reason once and runs the eager step; a compile that fails later logs
    one warning and goes on eagerly with the same update."""
    import mmgal.core.adjuster_learner as al
    import mmgal.engine.gal_optim_wrapper as gw
    from mmgal.core import CompiledGALStep, gal_step as eager_step
    logged = []
    monkeypatch.setattr(gw, 'print_log',
                        lambda msg, **kw: logged.append(msg))
    monkeypatch.setattr(al, 'compile_unavailable',
                        lambda device: 'no working C++ compiler (test)')
    model, wrapper = make(arch=(8, ), sigma=0.1)
    wrapper.setup_adjuster(4)
    assert wrapper.learner.step_fn is eager_step
    assert logged == ['GAL: the step runs eagerly: no working C++ '
                      'compiler (test).']
    # A compile that fails at its first call (a broken backend here).
    logged.clear()
    monkeypatch.setattr(al, 'compile_unavailable', lambda device: None)
    model_c, wrapper_c = make(arch=(8, ), sigma=0.1)
    model_e, wrapper_e = make(arch=(8, ), sigma=0.1, fast='eager')
    for w in (wrapper_c, wrapper_e):
        w.setup_adjuster(4)

    def broken(gm, example_inputs):
        raise OSError('no working C++ compiler found')

    step = wrapper_c.learner.step_fn
    assert isinstance(step, CompiledGALStep)
    step._fn = torch.compile(step._fn._torchdynamo_orig_callable,
                             backend=broken)
    torch._dynamo.reset()
    run_steps(model_c, wrapper_c, 3)
    run_steps(model_e, wrapper_e, 3)
    assert len(logged) == 1 and 'could not build the step' in logged[0] \
        and 'no working C++ compiler found' in logged[0]
    for p, q in zip(model_c.parameters(), model_e.parameters()):
        assert torch.equal(p, q)
    for p, q in zip(wrapper_c.adjuster.parameters(),
                    wrapper_e.adjuster.parameters()):
        torch.testing.assert_close(p, q)


def test_a_plain_losss_exact_remainder_runs_in_float64_the_model_in_float32():
    """Without a closed form the step runs in float64 (its remainder is
    float64's) while the model's gradient and the logged loss keep the
    model's float32."""
    model, wrapper = make(arch=(8, ), sigma=0.1)
    wrapper.setup_adjuster(4)
    x, y = batch(0)
    z = model(x)
    loss = wrapper.gal_forward(z, lambda t: F.cross_entropy(t, y))
    assert loss.dtype == torch.float32
    ref = gal_step(z, lambda t: F.cross_entropy(t, y), wrapper.adjuster, 0.1,
                   0.1, dtype=torch.float64)
    assert ref.remainder.dtype == torch.float64
    torch.testing.assert_close(
        wrapper.pop_gal_stats()['log10_remainder'],
        math.log10(float(ref.remainder.abs())))
    wrapper.update_params(loss)
    assert all(p.dtype == torch.float32 for p in model.parameters())


@pytest.mark.parametrize('optimizer', [
    dict(type='SGD', lr=0.05, momentum=0.9, weight_decay=5e-4),
    dict(type='Lookahead', base_optimizer='SGD', lr=0.05, momentum=0.9,
         k=5, alpha=0.8),
    dict(type='AdaBound', lr=1e-3, final_lr=0.1),
    dict(type='RMSprop', lr=0.016, eps=1e-3, weight_decay=1e-5),
    dict(type='AdamW', lr=1e-4, weight_decay=1e-4),
    dict(type='Lamb', lr=1e-3)],
    ids=lambda c: c['type'])
def test_the_default_adjuster_learns_under_every_model_optimizer(
        optimizer):
    """The default (Adam, normalised objective) turns the adjuster's
    weights away from their initial direction whatever trains the model,
    and no weight decay is inherited; under the paper's setting with SGD
    they do not turn."""
    from mmengine.optim import build_optim_wrapper
    if optimizer['type'] == 'Lamb':
        pytest.importorskip('pytorch_optimizer')
        from mmengine.registry import OPTIMIZERS
        if OPTIMIZERS.get('Lamb') is None:
            from pytorch_optimizer import Lamb
            OPTIMIZERS.register_module(module=Lamb)

    def drift(**kwargs):
        torch.manual_seed(0)
        model = nn.Linear(6, 4)
        wrapper = build_optim_wrapper(model, dict(
            type='GALOptimWrapper', optimizer=dict(optimizer), sigma=0.1,
            arch=(8, ), **kwargs))
        wrapper.setup_adjuster(4)
        w0 = torch.cat([p.detach().flatten()
                        for p in wrapper.adjuster.parameters()])
        assert wrapper.adjuster_optimizer.param_groups[0].get(
            'weight_decay', 0) == (0 if not kwargs else
                                   optimizer.get('weight_decay', 0))
        run_steps(model, wrapper, 20)
        w1 = torch.cat([p.detach().flatten()
                        for p in wrapper.adjuster.parameters()])
        cos = float(F.cosine_similarity(w0.double(), w1.double(), dim=0))
        return math.sqrt(max(0.0, 1 - cos**2))

    default = drift()
    assert default > 1e-3
    if optimizer['type'] == 'SGD':
        paper = drift(adjuster_optimizer='model', objective='abs',
                      remainder='reference')
        assert default > 10 * paper, (default, paper)
