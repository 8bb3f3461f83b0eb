"""Every config under configs/ loads, its components build from the
registries, and each GAL config differs from its baseline twin only in the
lines that add GAL."""
import copy
import dataclasses
import glob
import os.path as osp

import pytest
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import (DATASETS, HOOKS, MODELS, PARAM_SCHEDULERS,
                               init_default_scope)

import mmgal  # noqa: F401
from mmgal.core import GALSettings
from mmgal.engine import GALOptimWrapper

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = sorted(
    osp.relpath(p, REPO)
    for p in glob.glob(osp.join(REPO, 'configs', '**', '*.py'),
                       recursive=True))
GAL_CONFIGS = [c for c in CONFIGS if 'gal' in osp.basename(c)]
GAL_KEYS = {f.name for f in dataclasses.fields(GALSettings)} | {'type'}


def twin_of(path):
    """The baseline config a GAL config names as its _base_."""
    cfg_text = open(osp.join(REPO, path)).read()
    base = cfg_text.split("_base_ = '")[1].split("'")[0]
    return osp.normpath(osp.join(osp.dirname(path), base))


def test_there_are_configs_for_every_paper_setting():
    names = {osp.basename(c) for c in CONFIGS}
    for model in ('efficientnet-b1_1xb320', 'resnet18_8xb16'):
        for opt in ('sgd', 'lookahead', 'adabound'):
            for ds in ('cifar10', 'cifar100'):
                assert f'{model}-{opt}_{ds}.py' in names
                assert f'{model}-{opt}-gal_{ds}.py' in names
    for model in ('resnet50', 'efficientnet-b2'):
        assert f'{model}_8xb100-rmsprop_in1k.py' in names
        assert f'{model}_8xb100-rmsprop-gal_in1k.py' in names


@pytest.mark.parametrize('path', CONFIGS)
def test_config_loads_and_builds(path):
    cfg = Config.fromfile(osp.join(REPO, path))
    scope = cfg.get('default_scope', 'mmpretrain')
    init_default_scope(scope)
    model = MODELS.build(copy.deepcopy(cfg.model))
    wrapper = build_optim_wrapper(model, copy.deepcopy(cfg.optim_wrapper))
    scheds = cfg.get('param_scheduler', [])
    for sched in scheds if isinstance(scheds, list) else [scheds]:
        sched = dict(sched)
        sched.pop('convert_to_iter_based', None)
        PARAM_SCHEDULERS.build(dict(sched, optimizer=wrapper))
    gal_hook = cfg.get('default_hooks', {}).get('gal')
    for hook in cfg.get('custom_hooks', []) + [gal_hook] * bool(gal_hook):
        HOOKS.build(copy.deepcopy(hook))
    for loader in ('train_dataloader', 'val_dataloader'):
        dataset = cfg[loader].dataset.type
        assert DATASETS.get(f'{scope}.{dataset}') is not None, dataset
    if path in GAL_CONFIGS:
        assert isinstance(wrapper, GALOptimWrapper)
        assert cfg.default_hooks.gal == dict(type='GALHook')
        assert 'mmgal' in cfg.custom_imports.imports


def flat(cfg_dict, prefix=''):
    out = {}
    for k, v in cfg_dict.items():
        if isinstance(v, dict):
            out.update(flat(v, f'{prefix}{k}.'))
        else:
            out[f'{prefix}{k}'] = v
    return out


@pytest.mark.parametrize('path', GAL_CONFIGS)
def test_gal_config_changes_only_what_gal_needs(path):
    gal = flat(Config.fromfile(osp.join(REPO, path)).to_dict())
    base = flat(Config.fromfile(osp.join(REPO, twin_of(path))).to_dict())
    changed = {k for k in gal.keys() | base.keys()
               if gal.get(k, '<missing>') != base.get(k, '<missing>')}
    allowed = {'custom_imports.imports', 'custom_imports.'
               'allow_failed_imports', 'default_hooks.gal.type'}
    allowed |= {f'optim_wrapper.{k}' for k in GAL_KEYS}
    assert changed <= allowed, changed - allowed
    # The stock optimizer, paramwise_cfg and clip_grad stay.
    for key in base:
        if key.startswith('optim_wrapper.optimizer'):
            assert gal[key] == base[key]
    assert gal['optim_wrapper.type'] == 'GALOptimWrapper'
    # The base's custom_hooks (EMAHook) stay, untouched.
    assert gal.get('custom_hooks') == base.get('custom_hooks')
