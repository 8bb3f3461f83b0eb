import pytest
import torch
from mmengine.optim import build_optim_wrapper
from mmengine.optim.scheduler import MultiStepLR
from pytorch_optimizer import AdaBound as PTOAdaBound
from torch import nn

import mmgal  # noqa: F401
from mmgal.optimizers import AdaBound, Lookahead


def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(),
                         nn.LazyLinear(2))


def step(m, wrapper):
    x = torch.randn(2, 3, 5, 5)
    wrapper.update_params(m(x).pow(2).mean())


def test_lookahead_builds_from_config_with_paramwise_groups():
    m = model()
    m(torch.randn(1, 3, 5, 5))
    wrapper = build_optim_wrapper(
        m,
        dict(
            type='GALOptimWrapper',
            optimizer=dict(
                type='Lookahead',
                base_optimizer=dict(type='SGD'),
                lr=0.05,
                momentum=0.9,
                weight_decay=1e-5,
                k=5,
                alpha=0.8),
            adjuster_optimizer='model',
            paramwise_cfg=dict(norm_decay_mult=0.0)))
    opt = wrapper.optimizer
    assert isinstance(opt, Lookahead)
    assert isinstance(opt.optimizer, torch.optim.SGD)
    assert opt.k == 5 and opt.alpha == 0.8
    # One list object: what a scheduler writes is what SGD reads.
    assert opt.param_groups is opt.optimizer.param_groups
    assert any(g['weight_decay'] == 0.0 for g in opt.param_groups)
    # With the model's optimizer (the paper's setting) the adjuster gets
    # SGD (the base), not Lookahead.
    wrapper.setup_adjuster(2)
    assert type(wrapper.adjuster_optimizer) is torch.optim.SGD


def test_schedulers_drive_lookahead():
    m = model()
    m(torch.randn(1, 3, 5, 5))
    wrapper = build_optim_wrapper(
        m,
        dict(optimizer=dict(type='Lookahead', lr=0.1, momentum=0.9, k=2,
                            alpha=0.5)))
    sched = MultiStepLR(wrapper, milestones=[1], gamma=0.1)
    step(m, wrapper)
    sched.step()
    assert wrapper.optimizer.optimizer.param_groups[0]['lr'] == \
        pytest.approx(0.01)


def test_lookahead_interpolates_every_k_steps():
    p = nn.Parameter(torch.zeros(1))
    opt = Lookahead([p], base_optimizer='SGD', lr=1.0, k=2, alpha=0.5)
    for _ in range(2):
        p.grad = torch.ones(1)
        opt.step()
    # fast: 0 -> -1 -> -2; slow: 0 + 0.5 * (-2 - 0) = -1.
    assert p.item() == pytest.approx(-1.0)


def test_adabound_defaults_to_coupled_weight_decay():
    p = nn.Parameter(torch.ones(3))
    opt = AdaBound([p], lr=1e-3, final_lr=0.1, gamma=1e-3, weight_decay=5e-4)
    assert isinstance(opt, PTOAdaBound)
    assert opt.param_groups[0]['weight_decouple'] is False
    m = model()
    m(torch.randn(1, 3, 5, 5))
    wrapper = build_optim_wrapper(
        m, dict(optimizer=dict(type='AdaBound', lr=1e-3, final_lr=0.1)))
    before = [q.detach().clone() for q in m.parameters()]
    step(m, wrapper)
    assert any(not torch.equal(a, b) for a, b in zip(before, m.parameters()))
