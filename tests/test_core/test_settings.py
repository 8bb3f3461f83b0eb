"""GALSettings: one frozen object, validated once, with the two presets."""
import dataclasses

import pytest
import torch

from mmgal.core import PRESETS, GALSettings


def test_the_default_preset_fills_this_projects_choices():
    s = GALSettings()
    assert (s.remainder, s.objective, s.normalize) == ('exact', 'normalized',
                                                       'auto')
    assert s.adjuster_optimizer == dict(type='Adam', lr=1e-3)


def test_the_release_preset_is_the_authors_release_in_one_field():
    s = GALSettings(preset='release')
    assert (s.remainder, s.objective, s.normalize,
            s.adjuster_optimizer) == ('reference', 'abs', 'row', 'model')
    # A field given explicitly wins over the preset.
    assert GALSettings(preset='release', objective='normalized').objective \
        == 'normalized'


def test_settings_are_frozen_and_normalised_once():
    s = GALSettings(sigma=1, arch=[8, 4])
    assert s.sigma == 1.0 and isinstance(s.sigma, float)
    assert s.arch == (8, 4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.sigma = 0.5


@pytest.mark.parametrize('cfg, match', [
    (dict(gal_dtype='float64'), 'gal_dtype was retired'),
    (dict(adjuster_lr_ratio=2), "adjuster_lr_ratio was retired: an "
     "adjuster_optimizer without 'lr' \\(or 'model'\\) follows"),
    (dict(kind='mlp'), "kind was retired: renamed 'adjuster'"),
    (dict(remainder='taylor'), "remainder='taylor' was retired: use "
     "remainder='exact'"),
    (dict(sigmaa=0.1), r"unknown setting 'sigmaa'; GAL takes \['sigma', "
     r"'gamma'"),
    (dict(preset='paper'), r"preset must be one of \('default', "
     r"'release'\), got 'paper'"),
    (dict(fast='jit'), r"fast must be one of \('auto', 'compile', "
     r"'eager'\)"),
    (dict(adjuster_optimizer=dict(lr=1e-3)), "adjuster_optimizer must be "
     r"None \(the preset's\), 'model'"),
    (dict(adjuster_optimizer=dict(type='Adam', lr=-1)),
     'adjuster_optimizer.lr must be a finite number >= 0'),
])
def test_a_bad_or_retired_field_names_itself_and_its_replacement(cfg, match):
    with pytest.raises(ValueError, match=match):
        GALSettings.from_dict(cfg)


def test_the_wrapper_and_the_regression_module_share_the_one_object():
    from mmgal.engine import GALOptimWrapper
    from mmgal.regression import GALSettings as RegressionSettings
    assert RegressionSettings is GALSettings
    wrapper = GALOptimWrapper(
        torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=0.1),
        preset='release', sigma=0.002)
    assert wrapper.settings == GALSettings(preset='release', sigma=0.002)


def test_every_preset_sets_the_same_fields():
    keys = {frozenset(p) for p in PRESETS.values()}
    assert len(keys) == 1
