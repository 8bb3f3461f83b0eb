"""Let mmengine's checkpoints load under ``torch.load(weights_only=True)``.

mmengine 0.10.7 calls ``torch.load`` without ``weights_only``; since torch
2.6 that means the safe unpickler, which refuses the few non-tensor objects
mmengine stores (its ``HistoryBuffer`` with numpy arrays and scalars, and
the buffer's statistics methods, pickled as ``getattr(HistoryBuffer,
'mean')``). Instead of switching the safe unpickler off for the process,
this allow-lists exactly those objects, and ``getattr`` only in the form
the buffer needs, so an untrusted checkpoint still cannot run code on load.
"""
import pickle

import numpy as np
import torch

_STATISTICS = ('min', 'max', 'current', 'mean')
_registered = False


def _history_buffer_getattr(obj, name: str):
    """The only ``getattr`` a checkpoint may call: a statistics method of
    mmengine's HistoryBuffer."""
    from mmengine.logging import HistoryBuffer
    if obj is HistoryBuffer and name in _STATISTICS:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'checkpoint asks for getattr({obj!r}, {name!r}); mmgal allows only '
        f'HistoryBuffer.{{{", ".join(_STATISTICS)}}} when loading with '
        'weights_only=True')


def _numpy_globals() -> list:
    try:
        core = np._core.multiarray
    except AttributeError:  # numpy < 2
        core = np.core.multiarray
    dtypes = {
        type(np.dtype(code))
        for code in ('f2', 'f4', 'f8', 'i1', 'i2', 'i4', 'i8', 'u1', 'u2',
                     'u4', 'u8', 'b1')
    }
    return [core._reconstruct, core.scalar, np.ndarray, np.dtype,
            *sorted(dtypes, key=str)]


def allow_mmengine_checkpoints() -> None:
    """Allow-list what mmengine's checkpoints hold (idempotent)."""
    global _registered
    if _registered or not hasattr(torch.serialization, 'add_safe_globals'):
        return
    from mmengine.logging import HistoryBuffer
    torch.serialization.add_safe_globals([
        HistoryBuffer,
        *_numpy_globals(),
        (_history_buffer_getattr, 'builtins.getattr'),
    ])
    _registered = True
