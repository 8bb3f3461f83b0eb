"""Real training through the project's tools and the stock scripts: DETR
batches of mixed sizes, the README's adoption lines over bases with and
without their own hooks, GAL's lr under auto_scale_lr, heads that do not
declare their output size."""
import os
import os.path as osp
import socket
import subprocess
import sys
import warnings

import pytest
import torch
from mm_helpers import (DIGITS_BASELINE, DIGITS_GAL, make_tiny_voc,
                        read_scalars, readme_snippet, with_base)
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

import mmgal  # noqa: F401
from tiny_coco import make_tiny_coco, tiny_detector_config

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
import train as train_tool  # noqa: E402

DETR_GAL = osp.join(REPO, 'configs', 'mmdet', 'detr',
                    'detr_r50_8xb2-150e-gal_coco.py')


def digits_options(root, n=96, epochs=1):
    return [f'{k}.dataset.data_root={root}' for k in (
        'train_dataloader', 'val_dataloader', 'test_dataloader')] + [
        f'train_dataloader.dataset.indices={n}',
        'val_dataloader.dataset.indices=32', f'train_cfg.max_epochs={epochs}',
        'model.backbone.base_channels=8', 'model.head.in_channels=64',
        'default_hooks.logger.interval=1']


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture(scope='module')
def mixed_coco(tmp_path_factory):
    """Tiny COCO whose images differ in height, width and aspect ratio."""
    root = str(tmp_path_factory.mktemp('mixed_coco'))
    return root, make_tiny_coco(root, num_images=6, vary_size=True)


def detr_config_file(tmp_path, coco, base=DETR_GAL, **extra):
    """The project's DETR GAL config with its *stock* train pipeline
    (multi-scale resize and crop, scaled to CPU size), dumped to a file
    for the tools."""
    root, ann = coco
    cfg = tiny_detector_config(Config.fromfile(base), root, ann,
                               str(tmp_path / 'work'), n_train=6,
                               stock_pipeline=True, pipeline_scale=0.1)
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    cfg.test_cfg = cfg.test_dataloader = cfg.test_evaluator = None
    cfg.train_cfg.pop('val_interval')
    cfg.merge_from_dict(extra)
    path = tmp_path / 'detr_gal_stock_pipeline.py'
    cfg.dump(str(path))
    return str(path)


def test_mmdet_configs_keep_their_collate_and_mmpretrain_gets_its_own():
    detr = train_tool.merge_args(Config.fromfile(DETR_GAL),
                                 train_tool.parse_args([DETR_GAL]))
    assert 'collate_fn' not in detr.train_dataloader  # pseudo_collate
    cls = train_tool.merge_args(Config.fromfile(DIGITS_GAL),
                                train_tool.parse_args([DIGITS_GAL]))
    assert cls.train_dataloader.collate_fn == dict(type='default_collate')


@pytest.mark.slow
def test_detr_with_its_stock_multiscale_pipeline_trains_through_train_py(
        mixed_coco, tmp_path):
    path = detr_config_file(
        tmp_path, mixed_coco,
        custom_hooks=[dict(type='BatchShapeProbe')])
    shapes = []
    BatchShapeProbe.seen = shapes
    runner = train_tool.main([path])
    # Images of different sizes met in one batch (padded by the model's
    # data preprocessor, not stacked by the loader).
    assert any(len(set(batch)) > 1 for batch in shapes), shapes
    assert runner.optim_wrapper.adjuster.dim == 4
    rows = read_scalars(str(tmp_path / 'work'))
    assert any('gal/adopt_rate' in r for r in rows)


@HOOKS.register_module(force=True)
class BatchShapeProbe(Hook):
    """Records the image shapes of each training batch."""
    seen: list = []

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.seen.append(tuple(tuple(img.shape[-2:])
                               for img in data_batch['inputs']))


@pytest.mark.slow
def test_detr_with_its_stock_pipeline_trains_through_dist_train_sh(
        mixed_coco, tmp_path):
    path = detr_config_file(tmp_path, mixed_coco)

    def dist_train():
        # PYTHONFAULTHANDLER: a rank that aborts prints its Python stack.
        env = dict(os.environ, PORT=str(free_port()), PYTHON=sys.executable,
                   CUDA_VISIBLE_DEVICES='', PYTHONFAULTHANDLER='1')
        return subprocess.run(
            ['bash', osp.join(REPO, 'tools', 'dist_train.sh'), path, '2'],
            capture_output=True, text=True, timeout=900, env=env,
            cwd=str(tmp_path))

    res = dist_train()
    if res.returncode != 0 and \
            'terminate called without an active exception' in res.stderr:
        # Seen once in ~100 runs (CI, 2026-12-06): a rank's C++ runtime
        # aborted mid-iteration, no Python error; not reproduced in 20
        # runs since. Run again once, and say so; a second failure fails.
        warnings.warn('dist_train.sh: a rank aborted (C++ terminate); '
                      'ran again. Its stderr:\n' + res.stderr[-6000:])
        res = dist_train()
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-6000:]
    ckpt = torch.load(str(tmp_path / 'work' / 'epoch_1.pth'))
    assert ckpt['optimizer']['gal']['dim'] == 4


def write_readme_config(tmp_path, base, name='adopted.py'):
    path = tmp_path / name
    path.write_text(with_base(readme_snippet(), base))
    return str(path)


def test_readme_lines_over_a_stock_config_with_ema_keep_its_hooks():
    """ConvNeXt's base has custom_hooks = [EMAHook]: the README's lines
    keep it and add GALHook beside the default hooks."""
    import tempfile
    tmp = tempfile.mkdtemp()
    stock = 'mmpretrain::convnext/convnext-tiny_32xb128_in1k.py'
    base = Config.fromfile(write_readme_config(
        __import__('pathlib').Path(tmp), stock, 'stock.py'))
    assert [h['type'] for h in base.custom_hooks] == ['EMAHook']
    assert base.default_hooks.gal == dict(type='GALHook')
    assert base.default_hooks.logger.type == 'LoggerHook'
    assert base.optim_wrapper.type == 'GALOptimWrapper'
    assert base.optim_wrapper.paramwise_cfg  # the stock one stays


@pytest.mark.slow
@pytest.mark.parametrize('base_has_hooks', [True, False])
def test_readme_lines_train_gal_and_keep_the_base_ema(digits_root, tmp_path,
                                                      base_has_hooks):
    base = DIGITS_BASELINE
    if base_has_hooks:
        ema_base = tmp_path / 'base_with_ema.py'
        ema_base.write_text(
            f'_base_ = {DIGITS_BASELINE!r}\n'
            "custom_hooks = [dict(type='EMAHook', momentum=0.1, "
            "priority='ABOVE_NORMAL')]\n")
        base = str(ema_base)
    path = write_readme_config(tmp_path, base)
    work = tmp_path / 'work'
    runner = train_tool.main([path, '--work-dir', str(work),
                              '--cfg-options'] + digits_options(digits_root))
    ckpt = torch.load(str(work / 'epoch_1.pth'))
    assert ('ema_state_dict' in ckpt) == base_has_hooks
    gal = ckpt['optimizer']['gal']
    assert gal['dim'] == 10
    initial = runner.optim_wrapper.learner.initial.state_dict()
    assert any(not torch.equal(v, initial[k])
               for k, v in gal['adjuster'].items())
    assert any('gal/remainder' in r for r in read_scalars(str(work)))


@HOOKS.register_module(force=True)
class LrProbe(Hook):
    """Records per iteration GAL's eta, the lr of the head's group,
    mmengine's (unscaled) base lr and the adjuster's lr, as the iteration
    used them (before ParamSchedulerHook, 'LOW', steps the lrs)."""
    priority = 'NORMAL'
    rows: list = []

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        w = runner.optim_wrapper
        head_w = runner.model.head.fc.weight
        group = next(g for g in w.optimizer.param_groups
                     if any(p is head_w for p in g['params']))
        self.rows.append(dict(
            eta=w.base_lr(), head=group['lr'],
            base=(w.base_param_settings or {}).get('lr'),
            adjuster=w.adjuster_optimizer.param_groups[0]['lr']))


@pytest.mark.slow
@pytest.mark.parametrize('paramwise', [True, False])
def test_gal_lr_is_the_heads_lr_after_auto_scale_lr_and_warmup(
        digits_root, tmp_path, paramwise):
    cfg = tmp_path / 'lr.py'
    cfg.write_text(
        f'_base_ = {DIGITS_GAL!r}\n'
        # batch 32 against 64: auto_scale_lr halves every lr.
        'auto_scale_lr = dict(base_batch_size=64)\n'
        "optim_wrapper = dict(adjuster_optimizer='model'" +
        (", paramwise_cfg=dict(custom_keys={'head': dict(lr_mult=3.0)})"
         if paramwise else '') + ')\n'
        "param_scheduler = [dict(type='LinearLR', start_factor=0.1, "
        'by_epoch=False, begin=0, end=4), '
        "dict(type='MultiStepLR', by_epoch=True, milestones=[1], "
        'gamma=0.1)]\n'
        "custom_hooks = [dict(type='LrProbe')]\n")
    LrProbe.rows = []
    train_tool.main([str(cfg), '--auto-scale-lr', '--work-dir',
                     str(tmp_path / 'work'), '--cfg-options'] +
                    digits_options(digits_root, n=192, epochs=2))
    rows = LrProbe.rows
    assert len(rows) == 12
    etas = [r['eta'] for r in rows]
    for r in rows:
        assert r['eta'] == r['head']
        assert r['adjuster'] == pytest.approx(r['head'])
    # Warm-up from 0.1x over 3 steps, then the decay at epoch 1; the peak
    # is 0.05 * 0.5 (auto_scale_lr) * 3 (the head's lr_mult).
    peak = 0.05 * 0.5 * (3.0 if paramwise else 1.0)
    assert etas[:4] == pytest.approx([0.1 * peak, 0.4 * peak, 0.7 * peak,
                                      peak])
    assert etas[5] == pytest.approx(peak)
    assert etas[6] == pytest.approx(peak * 0.1)
    if paramwise:
        # mmengine's base lr is not scaled: GAL used to take it (0.05).
        assert rows[5]['base'] == pytest.approx(0.05)


@pytest.mark.slow
def test_vgg_voc_multilabel_trains_with_the_readme_lines_alone(tmp_path):
    """The stock VGG-16 VOC config: MultiLabelClsHead declares no
    num_classes and has no parameters (the logits come from the
    backbone's classifier, whose group's lr is GAL's)."""
    voc = make_tiny_voc(str(tmp_path / 'voc'), num_images=4)
    path = write_readme_config(tmp_path,
                               'mmpretrain::vgg/vgg16_8xb16_voc.py')
    LrProbe.rows = []
    runner = train_tool.main([
        path, '--no-validate', '--work-dir', str(tmp_path / 'work'),
        '--cfg-options', 'model.backbone.init_cfg=None',
        f'train_dataloader.dataset.data_root={voc}',
        'train_dataloader.batch_size=2', 'train_dataloader.num_workers=0',
        'train_cfg.max_epochs=1', 'default_hooks.logger.interval=1'])
    wrapper = runner.optim_wrapper
    assert wrapper.adjuster.dim == 20
    classifier = runner.model.backbone.classifier[-1].weight
    group = next(g for g in wrapper.optimizer.param_groups
                 if any(p is classifier for p in g['params']))
    # (The stock key '.backbone.classifier' of its paramwise_cfg matches no
    # parameter name, so mmengine gives the classifier the base lr.)
    assert wrapper.base_lr() == group['lr']
    rows = read_scalars(str(tmp_path / 'work'))
    assert any('gal/remainder' in r for r in rows)


def stock_script(package):
    """The package's own tools/train.py, as installed with it."""
    import importlib
    mod = importlib.import_module(package)
    path = osp.join(osp.dirname(mod.__file__), '.mim', 'tools', 'train.py')
    assert osp.isfile(path), path
    return path


@pytest.mark.slow
def test_mmpretrains_own_train_script_trains_and_resumes_a_gal_config(
        digits_root, tmp_path):
    work = tmp_path / 'work'
    base = [sys.executable, stock_script('mmpretrain'), DIGITS_GAL,
            '--work-dir', str(work), '--cfg-options'] + digits_options(
                digits_root, n=64)
    run = subprocess.run(base, capture_output=True, text=True, timeout=600,
                         cwd=str(tmp_path))
    assert run.returncode == 0, run.stderr[-3000:]
    first = torch.load(str(work / 'epoch_1.pth'))
    resumed = subprocess.run(
        base[:-len(digits_options(digits_root, n=64))] +
        digits_options(digits_root, n=64, epochs=2) + ['--resume'],
        capture_output=True, text=True, timeout=600, cwd=str(tmp_path))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert 'resumed epoch: 1' in resumed.stdout + resumed.stderr
    second = torch.load(str(work / 'epoch_2.pth'))
    assert second['meta']['epoch'] == 2
    # The adjuster went on from the resumed one.
    assert any(not torch.equal(v, first['optimizer']['gal']['adjuster'][k])
               for k, v in second['optimizer']['gal']['adjuster'].items())


@pytest.mark.slow
def test_mmdetections_own_train_script_trains_a_gal_config(mixed_coco,
                                                           tmp_path):
    path = detr_config_file(tmp_path, mixed_coco)
    run = subprocess.run([sys.executable, stock_script('mmdet'), path],
                         capture_output=True, text=True, timeout=600,
                         cwd=str(tmp_path))
    assert run.returncode == 0, run.stderr[-3000:]
    ckpt = torch.load(str(tmp_path / 'work' / 'epoch_1.pth'))
    assert ckpt['optimizer']['gal']['dim'] == 4
