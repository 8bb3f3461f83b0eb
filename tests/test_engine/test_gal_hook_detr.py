"""GAL on MMDetection's DETR family through the Runner, on a tiny COCO set
the tests write, with CPU-sized models."""
import math
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mm_helpers import (cuda_ops_missing, read_scalars, shrink_detector,
                        stock_config)
from mmengine.config import Config
from mmengine.runner import Runner

import mmgal  # noqa: F401
from mmgal.adapters import DETRHeadAdapter

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DETR_DIR = osp.join(REPO, 'configs', 'mmdet', 'detr')
GAL_LINES = dict(
    custom_imports=dict(imports=['mmgal'], allow_failed_imports=False),
    default_hooks=dict(gal=dict(type='GALHook')))
GAL_KEYS = ('gal/remainder', 'gal/adopt_rate', 'gal/cos_sim',
            'gal/nonfinite')


def adjuster_moved(wrapper):
    fresh = type(wrapper)(torch.optim.SGD([torch.nn.Parameter(
        torch.ones(1))], lr=0.1), arch=wrapper.settings.arch)
    fresh.setup_adjuster(4)
    return any(not torch.equal(p.cpu(), q) for p, q in zip(
        wrapper.adjuster.parameters(), fresh.adjuster.parameters()))


@pytest.mark.slow
def test_detr_trains_with_gal_logs_and_evaluates(tiny_coco, tmp_path):
    root, ann = tiny_coco
    cfg = shrink_detector(
        Config.fromfile(osp.join(DETR_DIR, 'detr_r50_8xb2-150e-gal_coco.py')),
        root, ann, str(tmp_path), epochs=2)
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert adjuster_moved(runner.optim_wrapper)
    # GAL's eta is the head's lr (AdamW 1e-4), not the backbone group's
    # 0.1x.
    assert runner.optim_wrapper.base_lr() == pytest.approx(1e-4)
    rows = read_scalars(str(tmp_path))
    train_rows = [r for r in rows if 'loss' in r]
    assert len(train_rows) == 4  # 2 epochs x 2 iterations, interval 1
    for row in train_rows:
        for key in ('loss', 'loss_bbox', 'loss_iou', 'd0.loss_bbox'):
            assert math.isfinite(row[key]), key
        for key in GAL_KEYS:
            assert key in row, key
        assert row['gal/nonfinite'] == 0
    evals = [r for r in rows if 'coco/bbox_mAP' in r]
    assert len(evals) == 2
    for r in evals:  # CocoMetric ran over the validation set
        assert {'coco/bbox_mAP', 'coco/bbox_mAP_50',
                'coco/bbox_mAP_75'} <= set(r)
    assert not any('adjust' in k for k in runner.model.state_dict())
    assert 'loss_by_feat_single' not in vars(runner.model.bbox_head)


@pytest.mark.slow
def test_detr_gal_checkpoint_loads_in_the_plain_config_without_mmgal(
        tiny_coco, tmp_path):
    root, ann = tiny_coco
    cfg = shrink_detector(
        Config.fromfile(osp.join(DETR_DIR, 'detr_r50_8xb2-150e-gal_coco.py')),
        root, ann, str(tmp_path))
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    runner = Runner.from_cfg(cfg)
    runner.train()
    state = runner.model.state_dict()
    # The plain config, shrunk the same way here, read as a file there.
    plain_cfg = shrink_detector(
        Config.fromfile(osp.join(DETR_DIR, 'detr_r50_8xb2-150e_coco.py')),
        root, ann, str(tmp_path))
    plain_cfg.dump(str(tmp_path / 'plain_cfg.py'))
    code = f'''
import sys, torch
from mmengine.config import Config
from mmdet.registry import MODELS
from mmdet.utils import register_all_modules
register_all_modules()
cfg = Config.fromfile({str(tmp_path / 'plain_cfg.py')!r})
assert 'mmgal' not in str(cfg.to_dict())
model = MODELS.build(cfg.model)
ckpt = torch.load({str(tmp_path / 'epoch_1.pth')!r}, weights_only=False)
model.load_state_dict(ckpt['state_dict'], strict=True)
torch.save(model.state_dict(), {str(tmp_path / 'plain.pth')!r})
assert 'mmgal' not in sys.modules, 'mmgal was imported'
'''
    subprocess.run([sys.executable, '-c', code], check=True)
    plain = torch.load(str(tmp_path / 'plain.pth'))
    assert plain.keys() == state.keys()
    for k in plain:
        assert torch.equal(plain[k], state[k].cpu()), k


@pytest.mark.slow
@pytest.mark.parametrize('name, head', [
    ('mmdet::conditional_detr/conditional-detr_r50_8xb2-50e_coco.py',
     'ConditionalDETRHead'),
    ('mmdet::dab_detr/dab-detr_r50_8xb2-50e_coco.py', 'DABDETRHead'),
    ('mmdet::deformable_detr/deformable-detr_r50_16xb2-50e_coco.py',
     'DeformableDETRHead'),
    ('mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py', 'DINOHead'),
])
def test_one_gal_iteration_for_each_supported_head(tiny_coco, tmp_path,
                                                   name, head):
    if head in ('DeformableDETRHead', 'DINOHead') and cuda_ops_missing():
        pytest.skip(f'{head} needs mmcv CUDA ops (multi-scale deformable '
                    'attention, focal loss); the installed mmcv has none')
    root, ann = tiny_coco
    cfg = shrink_detector(stock_config(name), root, ann, str(tmp_path),
                          n_train=2)
    cfg.merge_from_dict(GAL_LINES)
    cfg.optim_wrapper.update(type='GALOptimWrapper', sigma=0.01, gamma=1.0,
                             arch=(64, 16))
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    runner = Runner.from_cfg(cfg)
    assert type(runner.model.bbox_head).__name__ == head
    calls = []
    orig = DETRHeadAdapter.install

    def counting_install(self, gal_forward):
        def counting(z, fn, grouped=False):
            calls.append((z.shape, grouped))
            return gal_forward(z, fn, grouped=grouped)

        return orig(self, counting)

    DETRHeadAdapter.install = counting_install
    try:
        runner.train()
    finally:
        DETRHeadAdapter.install = orig
    # One grouped GAL step per iteration over the decoder layers (6), plus
    # the encoder's proposals for two-stage heads (DINO).
    expected = 7 if head == 'DINOHead' else 6
    assert len(calls) == 1, calls
    (shape, grouped), = calls
    assert grouped and shape[0] == expected and shape[-1] == 4, calls
    assert runner.optim_wrapper.learner._micro_steps == 0  # stepped
    assert adjuster_moved(runner.optim_wrapper)
    hub = runner.message_hub
    assert math.isfinite(hub.get_scalar('train/loss').current())
    for key in GAL_KEYS:
        assert math.isfinite(hub.get_scalar(f'train/{key}').current()), key
