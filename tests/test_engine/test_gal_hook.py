"""GALHook + GALOptimWrapper through mmengine's Runner on MMPretrain's
stock ResNet-18 CIFAR config (shrunk), on the digits image folder."""
import math
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mm_helpers import digits_cfg, read_scalars
from mmengine.runner import Runner

import mmgal  # noqa: F401

GAL_KEYS = ('gal/remainder', 'gal/adopt_rate', 'gal/cos_sim',
            'gal/nonfinite', 'gal/tentative_gain')


def train(cfg):
    runner = Runner.from_cfg(cfg)
    runner.train()
    return runner


def model_params(runner):
    return {k: v.detach().clone()
            for k, v in runner.model.state_dict().items()}


def test_gal_trains_logs_and_cleans_up(digits_root, tmp_path):
    cfg = digits_cfg(digits_root, str(tmp_path), epochs=2, sigma=0.05)
    cfg.log_level = 'INFO'
    runner = Runner.from_cfg(cfg)
    runner.train()
    wrapper = runner.optim_wrapper
    init = type(wrapper)(torch.optim.SGD([torch.nn.Parameter(torch.ones(1))],
                                         lr=0.1), arch=wrapper.settings.arch)
    init.setup_adjuster(10)
    assert any(not torch.equal(p.cpu(), q) for p, q in zip(
        wrapper.adjuster.parameters(), init.adjuster.parameters()))
    scalars = read_scalars(str(tmp_path))
    train_rows = [r for r in scalars if 'loss' in r]
    assert len(train_rows) == 4 * 2 // 2  # 4 iters/epoch, interval 2
    for row in train_rows:
        assert math.isfinite(row['loss'])
        for key in GAL_KEYS:
            assert key in row, key
        assert row['gal/nonfinite'] == 0
        # The exact remainder of the mean cross-entropy over a batch of
        # B = 32 rows is in (0, |delta|^2 / (4B)] (see
        # test_softmax_remainder_is_at_most_a_quarter_of_the_step_squared),
        # so the logged |R| / (eta |g~|)^2 is in (0, 1 / 128]; this run
        # logs 9e-5 to 4e-3, while |R| itself (log10_remainder) is 1e-7 to
        # 1e-13: above 1e-6 it is the scaled value, readable in the log.
        assert 1e-6 < row['gal/remainder'] <= 1 / (4 * 32)
        assert -20 < row['gal/log10_remainder'] < -2
    # It learns: its weights turn away from the initial ones.
    assert train_rows[-1]['gal/adjuster_drift'] > 1e-3
    assert any('accuracy/top1' in r for r in scalars)
    # The tap is removed after the run and the model holds no GAL state.
    assert not runner.model.head.loss_module._forward_hooks
    assert not any('adjust' in k for k in runner.model.state_dict())
    log = open(osp.join(str(tmp_path), runner.timestamp,
                        f'{runner.timestamp}.log')).read()
    assert 'gal/remainder' in log and 'gal/adopt_rate' in log


@pytest.mark.parametrize('gal_kwargs', [dict(sigma=0.0),
                                        dict(policy='never', sigma=0.5)])
def test_gal_switched_off_is_bit_identical_to_optim_wrapper(
        digits_root, tmp_path, gal_kwargs):
    base = train(digits_cfg(digits_root, str(tmp_path / 'base'), gal=False,
                            epochs=2))
    gal = train(digits_cfg(digits_root, str(tmp_path / 'gal'), epochs=2,
                           **gal_kwargs))
    a, b = model_params(base), model_params(gal)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_gal_changes_training(digits_root, tmp_path):
    base = train(digits_cfg(digits_root, str(tmp_path / 'base'), gal=False))
    gal = train(digits_cfg(digits_root, str(tmp_path / 'gal'), sigma=0.5,
                           policy='always'))
    w = 'head.fc.weight'
    assert not torch.equal(model_params(base)[w], model_params(gal)[w])


OPTIMIZERS = {
    'SGD': None,
    'Lookahead': dict(type='Lookahead', base_optimizer='SGD', lr=0.05,
                      momentum=0.9, k=3, alpha=0.8),
    'AdaBound': dict(type='AdaBound', lr=1e-3, final_lr=0.1),
}


@pytest.mark.parametrize('optimizer', list(OPTIMIZERS))
def test_resume_is_bit_identical_for_a_deterministic_pipeline(
        digits_root, tmp_path, optimizer):
    """The README's promise, exactly: with a pipeline without random
    augmentation (digits_cfg's) and randomness=dict(seed=...,
    deterministic=True), resuming from epoch 1 gives the same model and
    adjuster as training straight through."""

    def cfg_for(name, epochs):
        cfg = digits_cfg(digits_root, str(tmp_path / name), epochs=epochs,
                         sigma=0.1)
        if OPTIMIZERS[optimizer] is not None:
            cfg.optim_wrapper.optimizer = OPTIMIZERS[optimizer]
        return cfg

    full = train(cfg_for('full', 2))
    train(cfg_for('part', 1))
    cfg = cfg_for('resumed', 2)
    cfg.resume = True
    cfg.load_from = str(tmp_path / 'part' / 'epoch_1.pth')
    resumed = train(cfg)
    a, b = model_params(full), model_params(resumed)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    for p, q in zip(full.optim_wrapper.adjuster.parameters(),
                    resumed.optim_wrapper.adjuster.parameters()):
        assert torch.equal(p, q)
    ck = torch.load(str(tmp_path / 'resumed' / 'epoch_2.pth'))
    assert set(ck['optimizer']['gal']) == {
        'adjuster', 'dim', 'adjuster_kind', 'arch', 'optimizer',
        'optimizer_type'}


def test_accumulative_counts_train(digits_root, tmp_path):
    cfg = digits_cfg(digits_root, str(tmp_path), sigma=0.1,
                     accumulative_counts=2)
    runner = train(cfg)
    assert runner.optim_wrapper._accumulative_counts == 2
    # Stepped on the boundary.
    assert runner.optim_wrapper.learner._micro_steps == 0
    rows = [r for r in read_scalars(str(tmp_path)) if 'loss' in r]
    assert rows and all(math.isfinite(r['gal/remainder']) for r in rows)


def test_gal_checkpoint_loads_in_the_plain_config(digits_root, tmp_path):
    """What the README tells users: the model weights need no mmgal; on
    torch >= 2.6 mmengine's load_checkpoint (weights-only loading) needs
    mmengine's own objects allow-listed, which ``import mmgal`` does."""
    runner = train(digits_cfg(digits_root, str(tmp_path), sigma=0.1))
    ckpt = str(tmp_path / 'epoch_1.pth')
    x = torch.rand(2, 3, 16, 16) * 255
    torch.save(x, str(tmp_path / 'x.pt'))
    runner.model.cpu().eval()  # compared with a CPU model below
    with torch.no_grad():
        expected = runner.model(runner.model.data_preprocessor(
            dict(inputs=list(x)))['inputs'], mode='tensor')
    build = f'''
import sys, torch
from mmengine.config import Config
from mmpretrain.registry import MODELS
from mmpretrain.utils import register_all_modules
register_all_modules()
cfg = Config.fromfile({digits_cfg.__globals__['DIGITS_BASELINE']!r})
cfg.model.backbone.base_channels = 8
cfg.model.head.in_channels = 64
cfg.model.data_preprocessor = cfg.data_preprocessor
model = MODELS.build(cfg.model)
'''
    # 1. Without mmgal, weights-only loading refuses mmengine's objects;
    # 2. the model weights alone need nothing from mmgal (same process);
    # 3. mmengine's load_checkpoint after `import mmgal` (the README's way).
    refuse = f'''
import pickle
try:
    torch.load({ckpt!r})
except pickle.UnpicklingError as err:
    assert 'weights_only' in str(err), err
    print('refused')
'''
    for load, printed in (
            (refuse + f"model.load_state_dict(torch.load({ckpt!r}, "
             "weights_only=False)['state_dict'], strict=True)\n"
             "assert 'mmgal' not in sys.modules, 'mmgal was imported'",
             'refused'),
            ('import mmgal\nfrom mmengine.runner import load_checkpoint\n'
             f'load_checkpoint(model, {ckpt!r}, strict=True)', None)):
        code = build + load + f'''
model.eval()
x = torch.load({str(tmp_path / 'x.pt')!r})
with torch.no_grad():
    out = model(model.data_preprocessor(dict(inputs=list(x)))['inputs'],
                mode='tensor')
torch.save(out, {str(tmp_path / 'out.pt')!r})
'''
        res = subprocess.run([sys.executable, '-c', code],
                             capture_output=True, text=True)
        assert res.returncode == 0, res.stderr[-2000:]
        if printed is not None:
            assert res.stdout.strip() == printed, res.stdout
        assert torch.equal(torch.load(str(tmp_path / 'out.pt')), expected)


def test_hook_without_gal_wrapper_is_a_clear_error(digits_root, tmp_path):
    cfg = digits_cfg(digits_root, str(tmp_path))
    cfg.optim_wrapper = dict(type='OptimWrapper',
                             optimizer=cfg.optim_wrapper.optimizer)
    with pytest.raises(TypeError, match="GALHook needs optim_wrapper.type="
                       "'GALOptimWrapper', got OptimWrapper"):
        train(cfg)


def test_wrapper_without_hook_is_a_clear_error(digits_root, tmp_path):
    cfg = digits_cfg(digits_root, str(tmp_path))
    cfg.default_hooks.pop('gal')
    with pytest.raises(RuntimeError, match='no GALHook has set up its '
                       r"adjuster: add default_hooks = dict\(gal="):
        train(cfg)


def test_unsupported_head_lists_the_supported_ones(digits_root, tmp_path):
    cfg = digits_cfg(digits_root, str(tmp_path))
    cfg.default_hooks.gal = dict(type='GALHook', head='neck')
    with pytest.raises(ValueError, match=r'no GAL adapter supports the head '
                       r'GlobalAveragePooling; supported heads: ClsHead '
                       r'\(and subclasses\), LinearClsHead'):
        train(cfg)


def test_missing_head_path_is_a_clear_error(digits_root, tmp_path):
    cfg = digits_cfg(digits_root, str(tmp_path))
    cfg.default_hooks.gal = dict(type='GALHook', head='head.classifier')
    with pytest.raises(ValueError, match="has no 'head.classifier' \\(no "
                       "attribute 'classifier'\\)"):
        train(cfg)


def test_dim_mismatch_is_a_clear_error(digits_root, tmp_path):
    cfg = digits_cfg(digits_root, str(tmp_path))
    cfg.default_hooks.gal = dict(type='GALHook', dim=7)
    with pytest.raises(ValueError, match=r"z's last dimension must equal the "
                       r"adjuster's dim \(7\), got z of shape \(32, 10\)"):
        train(cfg)


@pytest.mark.parametrize('kwargs, match', [
    (dict(head=''), r'head must be None \(found by its class\) or a dotted '
     'attribute path'),
    (dict(adapter=3), 'adapter must be None, a registered adapter name'),
    (dict(dim=0), 'dim must be None or a positive int, got 0'),
    (dict(interval=-2), 'interval must be None or a positive int'),
])
def test_hook_settings_are_checked_in_init(kwargs, match):
    from mmgal.engine import GALHook
    with pytest.raises(ValueError, match=match):
        GALHook(**kwargs)


@pytest.mark.parametrize('resume_in', ['baseline', 'disabled'])
def test_a_run_without_gal_steps_logs_no_gal_scalars_after_resume(
        digits_root, tmp_path, resume_in):
    train(digits_cfg(digits_root, str(tmp_path / 'gal'), sigma=0.1))
    ckpt = torch.load(str(tmp_path / 'gal' / 'epoch_1.pth'))
    assert not any(k.startswith('train/gal/')
                   for k in ckpt['message_hub']['log_scalars'])
    # A checkpoint from before GAL scalars were kept out of checkpoints.
    hub = ckpt['message_hub']
    hub['log_scalars']['train/gal/adopt_rate'] = \
        hub['log_scalars']['train/lr']
    hub['resumed_keys']['train/gal/adopt_rate'] = True
    old = str(tmp_path / 'old.pth')
    torch.save(ckpt, old)
    for name, path in (('new', str(tmp_path / 'gal' / 'epoch_1.pth')),
                       ('old', old)):
        if resume_in == 'baseline' and name == 'old':
            continue  # no GALHook to clean it: only new checkpoints
        work_dir = str(tmp_path / f'{resume_in}_{name}')
        if resume_in == 'baseline':
            cfg = digits_cfg(digits_root, work_dir, gal=False, epochs=2)
        else:
            cfg = digits_cfg(digits_root, work_dir, epochs=2, enabled=False)
        cfg.resume, cfg.load_from = True, path
        train(cfg)
        rows = [r for r in read_scalars(work_dir) if 'loss' in r]
        assert rows
        assert not any(k.startswith('gal/') for r in rows for k in r), name


def test_galhook_listed_twice_is_refused(digits_root, tmp_path):
    cfg = digits_cfg(digits_root, str(tmp_path))
    # The config has it in default_hooks; once more in custom_hooks.
    cfg.custom_hooks = [dict(type='GALHook')]
    with pytest.raises(ValueError, match='GALHook is registered 2 times'):
        train(cfg)


def test_a_head_without_num_classes_gets_an_adjuster_sized_to_its_output(
        digits_root, tmp_path):
    """ClsHead declares no num_classes: the adjuster is built on the first
    GAL step, for the logits' size (here the 64 pooled features that
    ClsHead reads as logits)."""
    cfg = digits_cfg(digits_root, str(tmp_path))
    cfg.model.head = dict(type='ClsHead',
                          loss=dict(type='CrossEntropyLoss', loss_weight=1.0))
    runner = train(cfg)
    wrapper = runner.optim_wrapper
    assert wrapper.adjuster.dim == 64
    initial = wrapper.learner.initial.state_dict()
    assert any(not torch.equal(v, initial[k])
               for k, v in wrapper.adjuster.state_dict().items())
    ckpt = torch.load(str(tmp_path / 'epoch_1.pth'))
    assert ckpt['optimizer']['gal']['dim'] == 64


def test_a_galhook_below_the_logger_is_refused(digits_root, tmp_path):
    cfg = digits_cfg(digits_root, str(tmp_path))
    cfg.default_hooks.gal = dict(type='GALHook', priority='LOW')
    with pytest.raises(ValueError, match=r"GALHook: priority='LOW' runs "
                       r"after the LoggerHook \('BELOW_NORMAL'\)"):
        train(cfg)


@pytest.mark.slow
def test_the_compiled_default_trains_like_eager_through_the_runner(
        digits_root, tmp_path, compile_enabled):
    # One iteration: the compiled step's float rounding differs from the
    # eager one's (fused sums), and a deep network amplifies such
    # differences over iterations (4 iterations: 1e-4 in some conv weights,
    # 2e-7 in the head), so one update is compared tightly.
    from torch._dynamo.utils import counters
    breaks = sum(counters['graph_break'].values())
    runs = {
        fast: train(digits_cfg(digits_root, str(tmp_path / fast), sigma=0.1,
                               n_train=32, fast=fast))
        for fast in ('eager', 'auto')
    }
    # MMPretrain's CrossEntropyLoss traces into the one graph.
    assert sum(counters['graph_break'].values()) == breaks
    assert runs['auto'].iter == 1
    assert type(runs['auto'].optim_wrapper.learner.step_fn).__name__ == \
        'CompiledGALStep'
    a, b = (model_params(runs[k]) for k in ('eager', 'auto'))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6)
    for p, q in zip(runs['eager'].optim_wrapper.adjuster.parameters(),
                    runs['auto'].optim_wrapper.adjuster.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)
