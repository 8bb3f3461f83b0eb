"""CompiledGALStep: the GAL step as one torch.compile-d graph gives what
the eager gal_step gives. Compiling takes seconds on a CPU: slow-marked."""
import pytest
import torch
import torch.nn.functional as F

from host_reads import count_host_reads

from mmgal.core import CompiledGALStep, GradientAdjuster, gal_step

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures('compile_enabled')]


def twin_adjusters(dim, arch=(16, 8)):
    torch.manual_seed(0)
    a = GradientAdjuster(dim, arch)
    b = GradientAdjuster(dim, arch)
    b.load_state_dict(a.state_dict())
    return a, b


def assert_same(compiled_out, eager_out, adj_c, adj_e):
    for field in compiled_out._fields:
        got, want = getattr(compiled_out, field), getattr(eager_out, field)
        assert got.shape == want.shape and got.dtype == want.dtype, field
        if want.dtype == torch.bool:
            assert torch.equal(got, want), field
        else:
            # Fused kernels sum in another order: float32 rounding.
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6,
                                       msg=field)
    for p, q in zip(adj_c.parameters(), adj_e.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-7)


def test_compiled_step_equals_the_eager_step_over_iterations():
    from torch._dynamo.utils import counters
    breaks = sum(counters['graph_break'].values())
    step = CompiledGALStep()
    adj_c, adj_e = twin_adjusters(10)
    gen = torch.Generator().manual_seed(1)
    for it in range(4):
        z = torch.randn(32, 10, generator=gen)
        y = torch.randint(0, 10, (32, ), generator=gen)
        lr = 0.05 * (it + 1)  # a scheduler: no recompilation, same result
        out_c = step(z, lambda t: F.cross_entropy(t, y), adj_c, lr, 0.3)
        out_e = gal_step(z, lambda t: F.cross_entropy(t, y), adj_e, lr, 0.3)
        assert_same(out_c, out_e, adj_c, adj_e)
    assert sum(counters['graph_break'].values()) == breaks  # one graph


def test_compiled_grouped_step_equals_the_eager_one():
    step = CompiledGALStep()
    adj_c, adj_e = twin_adjusters(4)
    gen = torch.Generator().manual_seed(2)
    z = torch.rand(6, 2, 10, 4, generator=gen)
    t = torch.rand(6, 2, 10, 4, generator=gen)
    w = (torch.rand(6, 2, 10, 1, generator=gen) > 0.5).float()

    def loss_fn(zz):
        return ((zz - t).abs() * w).flatten(1).sum(1) / 3.0

    out_c = step(z, loss_fn, adj_c, 0.5, 0.5, policy='lt', grouped=True)
    out_e = gal_step(z, loss_fn, adj_e, 0.5, 0.5, policy='lt', grouped=True)
    assert_same(out_c, out_e, adj_c, adj_e)
    assert out_c.adopted.shape == (6, )


def test_compiled_step_guards_non_finite_and_checks_its_inputs():
    step = CompiledGALStep()
    adj_c, adj_e = twin_adjusters(10)
    z = torch.randn(8, 10)
    y = torch.randint(0, 10, (8, ))
    step(z, lambda t: F.cross_entropy(t, y), adj_c, 0.1, 0.1)
    before = [p.grad.clone() for p in adj_c.parameters()]
    bad = torch.full((8, 10), float('nan'))
    out = step(z, lambda t: F.mse_loss(t, bad), adj_c, 0.1, 0.1)
    assert bool(out.nonfinite) and not bool(out.adopted)
    for p, b in zip(adj_c.parameters(), before):
        assert torch.equal(p.grad, b)  # nothing added
    with pytest.raises(ValueError, match=r'loss_fn\(z\) does not depend on '
                       'z'):
        step(torch.randn(5, 10), lambda t: torch.tensor(1.0), adj_c, 0.1,
             0.1)
    with pytest.raises(ValueError, match='lr must be a finite number'):
        step(z, lambda t: F.cross_entropy(t, y), adj_c, float('nan'), 0.1)


def test_a_compiled_call_reads_no_tensor_value_on_the_host(monkeypatch):
    """Patched before compiling (patching Tensor methods invalidates the
    compiled graph's guards, and compiling reads constants), then counted
    on a call of the cached graph."""
    from torch._dynamo.utils import counters
    reads = count_host_reads(monkeypatch)
    step = CompiledGALStep()
    adj, _ = twin_adjusters(10)
    z = torch.randn(16, 10)
    y = torch.randint(0, 10, (16, ))

    def ce(target):  # one code object, a new closure per call
        return lambda t: F.cross_entropy(t, target)

    for lr in (0.1, 0.2):  # compile, then the cached graph
        step(z, ce(y), adj, lr, 0.1)
    graphs = counters['stats']['unique_graphs']
    reads.clear()
    step(z, ce(y.flip(0)), adj, 0.3, 0.1)
    assert counters['stats']['unique_graphs'] == graphs  # no recompile
    monkeypatch.undo()
    assert reads == []


def test_a_compiled_call_with_the_adjusters_update_reads_nothing_on_host(
        monkeypatch):
    """The same with ``optimizer=``: once Adam has its state (its first,
    eager step reads its step count), a call of the graph, update
    included, reads no tensor value on the host."""
    from torch._dynamo.utils import counters
    reads = count_host_reads(monkeypatch)
    step = CompiledGALStep()
    adj, _ = twin_adjusters(1, (16, 4))
    opt = torch.optim.Adam(adj.parameters(), lr=1e-2)
    z, y = torch.randn(24, 1), torch.randn(24, 1)

    def mse(target):  # one code object, a new closure per call
        return lambda t: F.mse_loss(t, target)

    for _ in range(3):  # eager first step, compile, the cached graph
        step(z, mse(y), adj, 0.1, 0.1, optimizer=opt)
    graphs = counters['stats']['unique_graphs']
    steps_before = [float(st['step']) for st in opt.state.values()]
    reads.clear()
    step(z, mse(y.flip(0)), adj, 0.1, 0.1, optimizer=opt)
    assert counters['stats']['unique_graphs'] == graphs
    assert reads == []
    monkeypatch.undo()
    assert [float(st['step']) for st in opt.state.values()] == [
        s + 1 for s in steps_before]


def _adam_twins(kind, dim=1, **kwargs):
    adj_c, adj_e = twin_adjusters(dim, (16, 4))
    return (adj_c, kind(adj_c.parameters(), lr=1e-2, **kwargs), adj_e,
            kind(adj_e.parameters(), lr=1e-2, **kwargs))


@pytest.mark.parametrize('kind,kwargs', [
    (torch.optim.Adam, {}),
    (torch.optim.AdamW, dict(weight_decay=0.1)),
    (torch.optim.Adam, dict(amsgrad=True, weight_decay=0.01)),
])
def test_compiled_step_applies_the_adjusters_adam_update_in_its_graph(
        kind, kwargs):
    """With ``optimizer=``, the step ends as ``.grad = gradient;
    optimizer.step(); zero_grad()`` would: same parameters, same optimizer
    state, no ``.grad`` left, and after the first (eager) call the update
    is part of the one graph."""
    from torch._dynamo.utils import counters
    from mmgal.core import cross_entropy_loss
    breaks = sum(counters['graph_break'].values())
    # d = 4: the adjuster's gradient (and so Adam's update) is of order
    # one, far above the comparison's tolerance.
    adj_c, opt_c, adj_e, opt_e = _adam_twins(kind, dim=4, **kwargs)
    start = [p.detach().clone() for p in adj_c.parameters()]
    step = CompiledGALStep()
    gen = torch.Generator().manual_seed(3)

    def ce(target):  # one code object, a new closure per call
        return cross_entropy_loss(target)

    for it in range(4):
        z = torch.randn(40, 4, generator=gen)
        y = torch.randint(0, 4, (40, ), generator=gen)
        out_c = step(z, ce(y), adj_c, 1e-2, 0.1, optimizer=opt_c)
        out_e = gal_step(z, ce(y), adj_e, 1e-2, 0.1)
        opt_e.step()
        opt_e.zero_grad(set_to_none=True)
        torch.testing.assert_close(out_c.grad, out_e.grad)
        for p, q, p0 in zip(adj_c.parameters(), adj_e.parameters(), start):
            assert p.grad is None
            assert (q - p0).abs().max() > 1e-3  # Adam moved it
            # float32 bias corrections in the graph, float64 in eager Adam
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
            for key, value in opt_e.state[q].items():
                torch.testing.assert_close(opt_c.state[p][key], value,
                                           rtol=1e-5, atol=1e-8, msg=key)
    assert sum(counters['graph_break'].values()) == breaks


def test_compiled_step_steps_other_optimizers_and_pending_grads_eagerly():
    """An optimizer the graph does not apply (SGD), or a gradient already
    in ``.grad``, gets the same update through the optimizer's own step."""
    adj_c, adj_e = twin_adjusters(1, (16, 4))
    opt_c = torch.optim.SGD(adj_c.parameters(), lr=0.1, momentum=0.9)
    opt_e = torch.optim.SGD(adj_e.parameters(), lr=0.1, momentum=0.9)
    step = CompiledGALStep()
    z, y = torch.randn(30, 1), torch.randn(30, 1)
    for it in range(2):
        out_c = step(z, lambda t: F.mse_loss(t, y), adj_c, 0.1, 0.1,
                     optimizer=opt_c)
        gal_step(z, lambda t: F.mse_loss(t, y), adj_e, 0.1, 0.1)
        opt_e.step()
        opt_e.zero_grad(set_to_none=True)
    for p, q in zip(adj_c.parameters(), adj_e.parameters()):
        assert p.grad is None
        torch.testing.assert_close(p, q)
    # Adam whose step count lives on another device than its parameters
    # (here: faked): stepped eagerly, the same update.
    from mmgal.core.compiled_step import _adam_update
    adj, opt, _, _ = _adam_twins(torch.optim.Adam)
    step(z, lambda t: F.mse_loss(t, y), adj, 0.1, 0.1, optimizer=opt)
    params = dict(adj.named_parameters())
    assert _adam_update(opt, params) is not None
    first = next(iter(opt.state.values()))
    first['step'] = first['step'].to('meta')
    assert _adam_update(opt, params) is None
    # Adam with a pending .grad: that gradient is stepped with this one.
    adj_c, opt_c, adj_e, opt_e = _adam_twins(torch.optim.Adam)
    for p, q in zip(adj_c.parameters(), adj_e.parameters()):
        p.grad = torch.ones_like(p)
        q.grad = torch.ones_like(q)
    step(z, lambda t: F.mse_loss(t, y), adj_c, 0.1, 0.1, optimizer=opt_c)
    gal_step(z, lambda t: F.mse_loss(t, y), adj_e, 0.1, 0.1)
    opt_e.step()
    for p, q in zip(adj_c.parameters(), adj_e.parameters()):
        assert p.grad is None
        torch.testing.assert_close(p, q)
    assert out_c.adopted.dtype == torch.bool


def test_a_compiler_failure_says_which_setting_avoids_it():
    """Without ``on_fallback``, a machine where torch.compile cannot build
    the step (no C++ compiler, no Triton) gets an error naming the eager
    setting."""
    def broken_backend(gm, example_inputs):
        raise OSError('no working C++ compiler found')

    # Past the earlier tests' compilations the step's code is at dynamo's
    # recompile limit and would run uncompiled: start afresh.
    torch._dynamo.reset()
    step = CompiledGALStep(backend=broken_backend)
    adj, _ = twin_adjusters(3)
    z, y = torch.randn(7, 3), torch.randint(0, 3, (7, ))
    with pytest.raises(RuntimeError, match=r"could not build the GAL step "
                       r"\(.*no working C\+\+ compiler.*fast='eager'"):
        step(z, lambda t: F.cross_entropy(t, y), adj, 0.1, 0.1)

    # A damaged compile cache (a compile killed mid-write leaves an empty
    # .so behind, which then fails every later load) is named as such.
    def damaged_cache(gm, example_inputs):
        raise ImportError('/tmp/torchinductor_root/hp/c.main.so: file too '
                          'short')

    torch._dynamo.reset()
    with pytest.raises(RuntimeError, match=r"file too short\)\. It names "
                       r"a file in torch's compile cache.*delete that file, "
                       r"or set TORCHINDUCTOR_CACHE_DIR.*fast='eager'"):
        CompiledGALStep(backend=damaged_cache)(
            z, lambda t: F.cross_entropy(t, y), adj, 0.1, 0.1)
    # A loss that fails on its own is not reworded.
    with pytest.raises(ValueError, match='mine'):
        step(z, lambda t: (_ for _ in ()).throw(ValueError('mine')), adj,
             0.1, 0.1)


def test_a_compiler_failure_falls_back_to_the_eager_step_once():
    """With ``on_fallback`` the run goes on: told the reason once, every
    call then runs the eager step and gives what it gives."""
    def broken_backend(gm, example_inputs):
        raise OSError('no working C++ compiler found')

    torch._dynamo.reset()
    told = []
    step = CompiledGALStep(backend=broken_backend, on_fallback=told.append)
    adj_c, adj_e = twin_adjusters(3)
    gen = torch.Generator().manual_seed(3)
    for _ in range(3):
        z, y = torch.randn(7, 3, generator=gen), torch.randint(
            0, 3, (7, ), generator=gen)
        out_c = step(z, lambda t: F.cross_entropy(t, y), adj_c, 0.1, 0.1)
        out_e = gal_step(z, lambda t: F.cross_entropy(t, y), adj_e, 0.1,
                         0.1)
        for field in out_c._fields:
            assert torch.equal(getattr(out_c, field),
                               getattr(out_e, field)), field
    assert len(told) == 1 and 'no working C++ compiler' in told[0]
    assert step.failed == told[0]
    for p, q in zip(adj_c.parameters(), adj_e.parameters()):
        assert torch.equal(p.grad, q.grad)


def test_the_compile_time_is_reported_once_per_shape_and_graph():
    """Each graph's first call is reported: a new shape, and the graph
    with the adjuster's Adam update (compiled once its state exists)."""
    torch._dynamo.reset()
    seen = []
    step = CompiledGALStep(on_compile=lambda what, s: seen.append(
        (what, s)))
    adj, _ = twin_adjusters(3)
    for n in (8, 8, 5, 5):
        z, y = torch.randn(n, 3), torch.randint(0, 3, (n, ))
        step(z, lambda t: F.cross_entropy(t, y), adj, 0.1, 0.1)
    assert [what for what, _ in seen] == ['z of shape (8, 3)',
                                          'z of shape (5, 3)']
    adj.zero_grad(set_to_none=True)
    opt = torch.optim.Adam(adj.parameters(), lr=1e-3)
    for _ in range(3):  # the first call steps eagerly (Adam's state)
        z, y = torch.randn(8, 3), torch.randint(0, 3, (8, ))
        step(z, lambda t: F.cross_entropy(t, y), adj, 0.1, 0.1,
             optimizer=opt)
    assert [what for what, _ in seen][2:] == [
        "z of shape (8, 3) (with the adjuster's Adam update)"]
    assert all(s > 0 for _, s in seen)


def test_a_probe_in_the_compiled_step_equals_the_eager_probe():
    """The initial adjuster's |R| and the cosine of the two adjustments
    (GALOutput.stats' probe entries) are the eager step's."""
    import copy
    step = CompiledGALStep()
    adj_c, adj_e = twin_adjusters(10)
    initial = copy.deepcopy(adj_c).requires_grad_(False)
    with torch.no_grad():
        for p in list(adj_c.parameters()) + list(adj_e.parameters()):
            p.mul_(1.5)  # a trained adjuster: not the initial one
    z, y = torch.randn(16, 10), torch.randint(0, 10, (16, ))
    out_c = step(z, lambda t: F.cross_entropy(t, y), adj_c, 0.1, 0.3,
                 initial=initial)
    out_e = gal_step(z, lambda t: F.cross_entropy(t, y), adj_e, 0.1, 0.3,
                     initial=initial)
    assert_same(out_c, out_e, adj_c, adj_e)
    assert out_e.stats[-1] == 1 and out_e.stats[-4] > 0


def test_compiled_step_in_float64_equals_the_eager_one():
    step = CompiledGALStep()
    adj_c, adj_e = twin_adjusters(1, (16, 4))
    z, y = torch.randn(40, 1), torch.randn(40, 1)
    out_c = step(z, lambda t: F.mse_loss(t, y), adj_c, 1e-3, 0.1,
                 dtype=torch.float64)
    out_e = gal_step(z, lambda t: F.mse_loss(t, y), adj_e, 1e-3, 0.1,
                     dtype=torch.float64)
    assert out_c.remainder.dtype == torch.float64
    assert_same(out_c, out_e, adj_c, adj_e)
