"""Shared helpers for the tests that run MMPretrain through the Runner."""
import copy
import glob
import json
import os.path as osp

from mmengine.config import Config

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DIGITS_BASELINE = osp.join(REPO, 'configs', 'mmpretrain', 'digits',
                           'resnet18_1xb32_digits.py')
DIGITS_GAL = osp.join(REPO, 'configs', 'mmpretrain', 'digits',
                      'resnet18_gal_1xb32_digits.py')

# A deterministic pipeline (no random crop): resume must be bit-exact.
PLAIN_PIPELINE = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(16, 16), interpolation='bilinear'),
    dict(type='PackInputs'),
]


def digits_cfg(data_root: str,
               work_dir: str,
               gal: bool = True,
               n_train: int = 128,
               epochs: int = 1,
               width: int = 8,
               batch_size: int = 32,
               **gal_kwargs) -> Config:
    """The repo's digits config, shrunk to seconds on a CPU."""
    cfg = Config.fromfile(DIGITS_GAL if gal else DIGITS_BASELINE)
    cfg.work_dir = work_dir
    cfg.model.backbone.base_channels = width
    cfg.model.head.in_channels = width * 8
    for name, n in (('train_dataloader', n_train), ('val_dataloader', 64)):
        loader = cfg[name]
        loader.batch_size = batch_size
        loader.dataset.data_root = data_root
        loader.dataset.indices = n
        loader.dataset.pipeline = copy.deepcopy(PLAIN_PIPELINE)
    cfg.test_dataloader = cfg.val_dataloader
    cfg.train_cfg.max_epochs = epochs
    cfg.default_hooks.logger.interval = 2
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1)
    cfg.log_level = 'WARNING'
    if gal:
        cfg.optim_wrapper.update(gal_kwargs)
    elif gal_kwargs:
        raise ValueError('GAL settings given for a baseline config')
    return cfg


def read_scalars(work_dir: str) -> list:
    """The json scalars mmengine's visualizer wrote (one dict per line)."""
    paths = glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))
    assert len(paths) == 1, paths
    with open(paths[0]) as f:
        return [json.loads(line) for line in f]
