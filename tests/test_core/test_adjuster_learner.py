"""AdjusterLearner: the adjuster, its optimizer and its averaged update."""
import logging

import pytest
import torch
import torch.nn.functional as F

from mmgal.core import (AdjusterLearner, GALSettings, build_adjuster,
                        gal_step)


def batch(seed, n=8, d=4):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=gen), torch.randint(0, d, (n, ),
                                                           generator=gen)


def test_update_averages_the_steps_since_the_last_one():
    """Two GAL steps, one update: the adjuster moves by its optimizer's
    step on the mean of the two steps' gradients."""
    s = GALSettings(sigma=0.1, arch=(8, ), adjuster_optimizer=dict(
        type='SGD', lr=0.5), fast='eager')
    learner = AdjusterLearner(s, 4, lr=0.1)
    with torch.random.fork_rng():
        torch.manual_seed(s.seed)
        ref = build_adjuster('mlp', 4, (8, ))
    grads = []
    for seed in (0, 1):
        z, y = batch(seed)
        learner.step(z, lambda t, y=y: F.cross_entropy(t, y), 0.1)
        gal_step(z, lambda t, y=y: F.cross_entropy(t, y), ref, 0.1, 0.1)
        grads.append([p.grad.clone() for p in ref.parameters()])
        ref.zero_grad()
    assert learner.update() == 2
    for p, q, g1, g2 in zip(learner.adjuster.parameters(), ref.parameters(),
                            *grads):
        update = 0.5 * (g1 + g2) / 2
        assert update.abs().max() > 1e-6
        torch.testing.assert_close(p, q - update)
    assert learner.update() == 0  # nothing since


def test_an_optimizer_without_lr_follows_the_lr_each_step_is_given():
    learner = AdjusterLearner(GALSettings(arch=(8, ), adjuster_optimizer=dict(
        type='SGD')), 4, lr=0.1)
    assert learner.optimizer.param_groups[0]['lr'] == 0.1
    z, y = batch(0)
    learner.step(z, lambda t: F.cross_entropy(t, y), 0.03)
    assert learner.optimizer.param_groups[0]['lr'] == 0.03


def test_the_model_optimizer_preset_copies_its_type_and_settings():
    model_opt = torch.optim.SGD([torch.nn.Parameter(torch.ones(2))], lr=0.2,
                                momentum=0.9, weight_decay=1e-4)
    learner = AdjusterLearner(GALSettings(preset='release', arch=(8, )), 4,
                              lr=0.2, model_optimizer=model_opt)
    group = learner.optimizer.param_groups[0]
    assert type(learner.optimizer) is torch.optim.SGD
    assert (group['lr'], group['momentum'], group['weight_decay']) == (
        0.2, 0.9, 1e-4)
    with pytest.raises(ValueError, match="'model' needs the model's"):
        AdjusterLearner(GALSettings(preset='release', arch=(8, )), 4)


def test_an_unknown_optimizer_type_is_a_clear_error():
    with pytest.raises(ValueError, match=r"adjuster_optimizer.type='Adamm' "
                       'is not an optimizer class'):
        AdjusterLearner(GALSettings(adjuster_optimizer=dict(type='Adamm')),
                        4)


def test_the_initial_weights_come_from_the_seed_not_the_global_stream():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    a = AdjusterLearner(GALSettings(arch=(8, ), seed=7), 4)
    assert torch.equal(torch.rand(3), expected)
    b = AdjusterLearner(GALSettings(arch=(8, ), seed=7), 4)
    for p, q, p0 in zip(a.adjuster.parameters(), b.adjuster.parameters(),
                        a.initial.parameters()):
        assert torch.equal(p, q) and torch.equal(p, p0)
        assert not p0.requires_grad


def test_state_round_trips_and_refuses_another_adjuster():
    s = GALSettings(sigma=0.1, arch=(8, ), fast='eager')
    learner = AdjusterLearner(s, 4)
    z, y = batch(0)
    learner.step(z, lambda t: F.cross_entropy(t, y), 0.1)
    learner.update()
    state = learner.state_dict()
    other = AdjusterLearner(GALSettings(sigma=0.1, arch=(8, ), seed=1), 4)
    other.load_state_dict(state)
    for p, q in zip(learner.adjuster.parameters(),
                    other.adjuster.parameters()):
        assert torch.equal(p, q)
    assert other.optimizer.state_dict()['state'][0]['step'] == 1
    with pytest.raises(ValueError, match=r"has arch=\[8\], the config asks "
                       r'for \[16\]'):
        AdjusterLearner(GALSettings(arch=(16, )), 4).load_state_dict(state)


def test_a_changed_optimizer_setting_on_resume_is_logged():
    learner = AdjusterLearner(GALSettings(arch=(8, )), 4)
    state = learner.state_dict()
    logged = []
    other = AdjusterLearner(
        GALSettings(arch=(8, ), adjuster_optimizer=dict(type='Adam',
                                                        lr=1e-2)), 4,
        log=lambda msg, level=logging.WARNING: logged.append(msg))
    other.load_state_dict(state)
    assert other.optimizer.param_groups[0]['lr'] == 1e-2
    assert logged and 'lr: 0.001 -> 0.01' in logged[0]


def test_stats_add_up_until_popped():
    learner = AdjusterLearner(GALSettings(arch=(8, ), fast='eager'), 4)
    assert learner.pop_stats() is None
    for seed in (0, 1):
        z, y = batch(seed)
        learner.step(z, lambda t, y=y: F.cross_entropy(t, y), 0.1)
    stats = learner.pop_stats()
    assert stats[6] == 2  # steps
    assert learner.pop_stats() is None
