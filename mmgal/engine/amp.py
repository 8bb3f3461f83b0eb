"""Mixed precision for :class:`~mmgal.engine.GALOptimWrapper`.

The wrapper steps through :class:`AmpOptimWrapper`'s own ``backward`` and
``step``. What mmengine forces: ``AmpOptimWrapper.__init__`` asserts a
GPU/NPU/MLU/MUSA device and always builds ``torch.cuda``'s GradScaler, and
its ``optim_context`` autocasts on CUDA whenever CUDA exists, so one
wrapper type that also trains with bf16 on the CPU builds its scaler here
and autocasts on the model's device.
"""
from typing import NamedTuple, Optional, Union

import torch
from mmengine.optim import AmpOptimWrapper

from mmgal.core import check_real, is_real


class Amp(NamedTuple):
    """What :class:`AmpOptimWrapper`'s methods read from the wrapper."""
    use_amp: bool
    loss_scaler: Optional[torch.amp.GradScaler]
    scale_update_param: Optional[float]
    cast_dtype: Optional[torch.dtype]


def build_amp(loss_scale: Union[None, float, str, dict],
              dtype: Union[None, str, torch.dtype]) -> Amp:
    """AMP's state for these settings (either given switches AMP on), or
    ``ValueError`` naming the bad one."""
    valid = AmpOptimWrapper.valid_dtypes
    if isinstance(dtype, str):
        if dtype not in valid:
            raise ValueError(f'dtype must be one of {valid}, got {dtype!r}')
        dtype = getattr(torch, dtype)
    if dtype is not None and not isinstance(dtype, torch.dtype):
        raise ValueError(f'dtype must be None, a torch.dtype or one of '
                         f'{valid}, got {dtype!r}')
    if dtype == torch.float16 and not torch.cuda.is_available():
        raise ValueError(
            "dtype='float16' needs a CUDA device: autocast on the CPU runs "
            "bfloat16 only; set dtype='bfloat16' (or leave dtype unset)")
    use_amp = loss_scale is not None or dtype is not None
    if use_amp and loss_scale is None and dtype in (None, torch.float16):
        loss_scale = 'dynamic'  # bf16 needs no loss scaling; fp16 does
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    update = None
    if loss_scale is None:
        scaler = None
    elif loss_scale == 'dynamic':
        scaler = torch.amp.GradScaler(device)
    elif is_real(loss_scale):
        update = check_real('loss_scale', loss_scale, strict=True)
        scaler = torch.amp.GradScaler(device, init_scale=update)
    elif isinstance(loss_scale, dict):
        if 'init_scale' in loss_scale:
            # inf or NaN: every step skipped as an overflow.
            check_real('loss_scale.init_scale', loss_scale['init_scale'],
                       strict=True)
        scaler = torch.amp.GradScaler(device, **loss_scale)
    else:
        raise ValueError("loss_scale must be 'dynamic', a finite number > 0 "
                         f'or a dict of GradScaler arguments, got '
                         f'{loss_scale!r}')
    return Amp(use_amp, scaler, update, dtype)
