"""engine/gal_statistics: the logged statistics from the steps' sums."""
import math

import pytest
import torch
from torch import nn

from mmgal.core import STAT_NAMES
from mmgal.engine.gal_statistics import read_stats, summarize


def sums(**values):
    vec = torch.zeros(len(STAT_NAMES))
    for key, value in values.items():
        vec[STAT_NAMES.index(key)] = value
    return vec


def test_means_are_over_the_finite_steps_and_the_probe_over_probed_ones():
    res = summarize(sums(abs_remainder=3.0, remainder=0.3, adopt_rate=2,
                         cos_sim=0.6, nonfinite=1, tentative_gain=0.9,
                         steps=4, probe_learned=1.0, probe_initial=2.0,
                         cos_init=0.8, probes=1).tolist())
    # Sums of float32 values.
    assert res['remainder'] == pytest.approx(0.1, rel=1e-6)
    assert res['cos_sim'] == pytest.approx(0.2, rel=1e-6)
    assert math.isclose(res['log10_remainder'], math.log10(1.0))
    assert res['adopt_rate'] == 0.5 and res['nonfinite'] == 1
    assert res['remainder_ratio'] == 0.5
    assert res['cos_init'] == pytest.approx(0.8, rel=1e-6)
    assert summarize(sums().tolist()) == {}


def test_the_weights_motion_is_measured_against_the_last_read_and_the_start():
    torch.manual_seed(0)
    initial = nn.Linear(3, 2).requires_grad_(False)
    adjuster = nn.Linear(3, 2)
    adjuster.load_state_dict(initial.state_dict())
    res, first = read_stats(sums(steps=1), adjuster, initial, None)
    assert res['adjuster_drift'] == 0 and 'adjuster_update' not in res
    with torch.no_grad():
        adjuster.weight.mul_(2.0)  # a common rescaling of part of it
        adjuster.bias.add_(1.0)
    res, second = read_stats(sums(steps=1), adjuster, initial, first)
    assert res['adjuster_update'] > 0 and res['adjuster_drift'] > 0
    assert torch.equal(second, torch.cat([adjuster.weight.reshape(-1),
                                          adjuster.bias.reshape(-1)]))
    # No step since the last read: nothing logged, the weights kept.
    res, kept = read_stats(None, adjuster, initial, second)
    assert res == {} and kept is second
