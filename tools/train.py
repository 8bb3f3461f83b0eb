#!/usr/bin/env python
"""Train a model from an OpenMMLab config, with mmgal registered.

The same interface as MMPretrain's and MMDetection's tools/train.py:

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp]
        [--cfg-options key=value ...] [--launcher pytorch]

For an MMPretrain config (``default_scope='mmpretrain'``) it sets the
dataloader defaults MMPretrain's script sets (``default_collate``, pinned
memory, persistent workers); for an MMDetection config (or any other) it
leaves the dataloaders as the config has them, as MMDetection's script
does (its batches hold images of different sizes: mmengine's
``pseudo_collate``). Differences from the stock scripts: ``import mmgal``
registers GAL for any config, ``--amp`` on a GAL config switches on
GALOptimWrapper's own AMP instead of replacing the wrapper type (which
would silently drop GAL), and ``--launcher pytorch`` (tools/dist_train.sh)
also runs on CPU-only machines, with the gloo backend.
"""
import argparse
import logging
import os
import os.path as osp
import sys
from copy import deepcopy

HERE = osp.dirname(osp.abspath(__file__))
sys.path[:0] = [osp.dirname(HERE), HERE]  # mmgal, and the tools' helpers

_CACHE = os.environ.get('TORCHINDUCTOR_CACHE_DIR')
if _CACHE and osp.exists(_CACHE) and not osp.isdir(_CACHE):
    # torch makes this folder when torchvision imports torch._dynamo: a
    # bare FileExistsError from inside an import otherwise.
    raise SystemExit(
        f'tools/train.py: TORCHINDUCTOR_CACHE_DIR={_CACHE!r} is a file, not '
        "a folder: torch's compiler keeps its cache there and torch cannot "
        'be imported; point it at a folder, or unset it')

from mmengine.config import Config, ConfigDict, DictAction  # noqa: E402
from mmengine.logging import print_log  # noqa: E402
from mmengine.registry import RUNNERS  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

import mmgal  # noqa: E402,F401
from mmgal.utils import check_checkpoint_file  # noqa: E402
from mmgal.utils.file_backend import ATOMIC_BACKEND  # noqa: E402

from cpu_launcher import prepare_cpu_distributed  # noqa: E402 (tools/)
from data_check import check_image_folders  # noqa: E402 (tools/)

# Where the config sets no timeout for collectives: a stalled rank stops
# the others after this long instead of torch's 30 minutes.
DEFAULT_DIST_TIMEOUT = 600


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume from this checkpoint, or without a path from the '
        'latest checkpoint in the work directory')
    parser.add_argument(
        '--amp',
        action='store_true',
        help='enable automatic-mixed-precision training (GAL-aware)')
    parser.add_argument(
        '--no-validate',
        action='store_true',
        help='do not evaluate the checkpoints during training')
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='scale the lr by the actual batch size')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config, e.g. '
        'optim_wrapper.sigma=0.001 train_cfg.max_epochs=2')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    parser.add_argument(
        '--no-data-check',
        action='store_true',
        help='skip the check of image-folder datasets for class folders '
        'without images and empty image files')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def set_mmpretrain_loader_defaults(cfg: Config) -> None:
    """What MMPretrain's tools/train.py sets on every dataloader the config
    leaves unset (its batches are stacked: ``default_collate``)."""
    defaults = ConfigDict(
        pin_memory=True,
        persistent_workers=True,
        collate_fn=dict(type='default_collate'))
    for field in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        if cfg.get(field, None) is None:
            continue
        loader = deepcopy(defaults)
        loader.update(cfg[field])
        cfg[field] = loader


def enable_amp(cfg: Config, loss_scale='dynamic') -> Config:
    """What ``tools/train.py --amp`` does, without dropping GAL.

    The stock scripts set ``optim_wrapper.type = 'AmpOptimWrapper'``, which
    would silently replace ``GALOptimWrapper``. For a GAL config this turns
    on GAL's own AMP (``loss_scale``) and keeps the type; other configs get
    the stock behaviour.
    """
    wrapper = cfg.optim_wrapper
    wrapper_type = wrapper.get('type', 'OptimWrapper')
    if wrapper_type == 'GALOptimWrapper':
        wrapper.setdefault('loss_scale', loss_scale)
    elif wrapper_type == 'AmpOptimWrapper':
        print_log('AMP is already enabled in your config.', logger='current',
                  level=logging.WARNING)
    else:
        wrapper.type = 'AmpOptimWrapper'
        wrapper.setdefault('loss_scale', loss_scale)
    return cfg


def merge_args(cfg: Config, args) -> Config:
    """Merge the command line into the config."""
    if args.no_validate:
        cfg.val_cfg = None
        cfg.val_dataloader = None
        cfg.val_evaluator = None
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    if args.amp:
        enable_amp(cfg)
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    if args.auto_scale_lr:
        if not isinstance(cfg.get('auto_scale_lr'), dict) or \
                'base_batch_size' not in cfg.auto_scale_lr:
            raise SystemExit(
                '--auto-scale-lr needs auto_scale_lr = dict(base_batch_size='
                '...) in the config (the batch size its lr was set for)')
        cfg.auto_scale_lr.enable = True
    if cfg.get('default_scope') == 'mmpretrain':
        set_mmpretrain_loader_defaults(cfg)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    for field in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg.get(field, None)
        # torch refuses persistent workers without workers (also when
        # --cfg-options sets num_workers=0 on a config that had some).
        if loader is not None and loader.get('num_workers', 0) == 0 and \
                loader.get('persistent_workers', False):
            loader.persistent_workers = False
    return cfg


def add_safeguards(cfg: Config) -> Config:
    """What this script adds to any config: ``TrainingGuardHook`` (no code
    from checkpoints runs; a diverged run stops without losing its finite
    checkpoints) unless the config lists its own, whole-or-nothing
    checkpoint writes where the config names no file backend, and a
    collective timeout for distributed runs where the config sets none."""
    hooks = list(cfg.get('custom_hooks', None) or [])
    if not any(isinstance(h, dict) and h.get('type') == 'TrainingGuardHook'
               for h in hooks):
        cfg.custom_hooks = hooks + [dict(type='TrainingGuardHook')]
    ckpt = cfg.get('default_hooks', {}).get('checkpoint')
    if isinstance(ckpt, dict) and ckpt.get('backend_args') is None and \
            ckpt.get('file_client_args') is None and \
            '://' not in str(ckpt.get('out_dir', '')):
        ckpt['backend_args'] = dict(backend=ATOMIC_BACKEND)
    if cfg.get('launcher', 'none') != 'none':
        env_cfg = cfg.setdefault('env_cfg', {})
        dist_cfg = env_cfg.setdefault('dist_cfg', {})
        dist_cfg.setdefault('timeout', DEFAULT_DIST_TIMEOUT)
    return cfg


# The default hooks mmengine's Runner builds itself (and removes for None).
MMENGINE_DEFAULT_HOOKS = ('runtime_info', 'timer', 'sampler_seed', 'logger',
                          'param_scheduler', 'checkpoint')


def check_inputs(cfg: Config, args) -> None:
    """Name a bad checkpoint or image folder before the run starts
    (mmengine would fail later, with a bare EOFError or mid-epoch)."""
    path = cfg.get('load_from')
    if path is None and cfg.get('resume') is True:
        from mmengine.runner import find_latest_checkpoint
        path = find_latest_checkpoint(cfg.work_dir) if osp.isdir(
            cfg.work_dir) else None
    if path is not None:
        check_checkpoint_file(path, '--resume' if cfg.get('resume') else
                              'load_from')
    if not args.no_data_check:
        check_image_folders(cfg)
    for name, hook in (cfg.get('default_hooks') or {}).items():
        if hook is None and name not in MMENGINE_DEFAULT_HOOKS:
            # mmengine removes only its own default hooks this way; for
            # another it stops on a bare AssertionError.
            hint = (" To train without GAL, set optim_wrapper.enabled=False"
                    " (GAL's step is then skipped: training as with "
                    "OptimWrapper), or use the baseline config."
                    if name == 'gal' else '')
            raise ValueError(
                f'default_hooks.{name}=None: mmengine switches off only its '
                f'own default hooks ({", ".join(MMENGINE_DEFAULT_HOOKS)}) '
                f'by None.{hint}')


def main(argv=None):
    args = parse_args(argv)
    cfg = add_safeguards(merge_args(Config.fromfile(args.config), args))
    try:
        check_inputs(cfg, args)
    except ValueError as err:
        raise SystemExit(f'tools/train.py: {err}') from None
    prepare_cpu_distributed(cfg)  # gloo where there is no CUDA
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else \
        RUNNERS.build(cfg)
    runner.train()
    return runner


if __name__ == '__main__':
    main()
