"""``--launcher pytorch`` on machines without CUDA (gloo), for tools/train.py.

mmengine 0.10.7's pytorch launcher calls ``torch.cuda.set_device`` and
wraps the model in DDP with ``device_ids=[LOCAL_RANK]``; both fail on a
CPU-only machine. Where CUDA is available nothing changes (NCCL, one GPU
per process, as in MMPretrain's and MMDetection's scripts).
"""
import datetime
import logging
import os

import torch
import torch.distributed as torch_dist
from mmengine.config import Config
from mmengine.logging import print_log


def prepare_cpu_distributed(cfg: Config) -> bool:
    """Open a gloo process group and set up CPU DDP for ``cfg``.

    Call before building the ``Runner``. Does nothing (returns False) for
    ``launcher='none'``, when CUDA is available, or when a process group is
    already open. Otherwise it opens the group from torchrun's environment
    (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``) with the
    config's ``env_cfg.dist_cfg.timeout``, so the Runner skips mmengine's
    CUDA-only initialisation, and makes the DDP wrapper keep the model on
    the CPU (``device_ids=None``). Returns True when it did.
    """
    if cfg.get('launcher', 'none') == 'none' or torch.cuda.is_available() \
            or (torch_dist.is_available() and torch_dist.is_initialized()):
        return False
    if cfg.launcher != 'pytorch':
        raise ValueError(
            f'launcher={cfg.launcher!r} needs CUDA on this version of '
            "mmengine; on a CPU-only machine use --launcher pytorch "
            '(tools/dist_train.sh)')
    for var in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'):
        if var not in os.environ:
            raise RuntimeError(
                f'--launcher pytorch needs ${var} (set by torchrun); start '
                'training with tools/dist_train.sh CONFIG NPROC')
    env_cfg = cfg.setdefault('env_cfg', {})
    dist_cfg = env_cfg.setdefault('dist_cfg', {})
    if dist_cfg.get('backend', 'nccl') != 'gloo':
        print_log(f"no CUDA device: using the 'gloo' backend instead of "
                  f"{dist_cfg.get('backend', 'nccl')!r}",
                  logger='current', level=logging.WARNING)
    dist_cfg['backend'] = 'gloo'
    timeout = dist_cfg.get('timeout', 1800)
    torch_dist.init_process_group(
        backend='gloo', timeout=datetime.timedelta(seconds=timeout))
    wrapper_cfg = cfg.get('model_wrapper_cfg') or dict(
        type='MMDistributedDataParallel',
        broadcast_buffers=False,
        find_unused_parameters=cfg.get('find_unused_parameters', False))
    wrapper_cfg['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper_cfg
    return True
