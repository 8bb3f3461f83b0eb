"""Let mmengine's checkpoints load under ``torch.load(weights_only=True)``.

mmengine 0.10.7 calls ``torch.load`` without ``weights_only``; since torch
2.6 that means the safe unpickler, which refuses the few non-tensor objects
mmengine stores (its ``HistoryBuffer`` with numpy arrays and scalars, and
the buffer's statistics methods, pickled as ``getattr(HistoryBuffer,
'mean')``). Instead of switching the safe unpickler off for the process,
this allow-lists exactly those objects, and ``getattr`` only in the form
the buffer needs, so unpickling an untrusted checkpoint cannot run code.

Unpickling is not the only way: mmengine's ``Runner.resume`` executes a
checkpoint's ``meta['config']`` text as a Python config.
:func:`strip_executable_meta` removes it (``TrainingGuardHook`` and
``GALHook`` call it when a checkpoint is loaded, before ``resume`` reads
it), and :func:`check_checkpoint_file` names an empty or truncated file
before mmengine fails on it with a bare ``EOFError``.
"""
import logging
import os
import os.path as osp
import pickle
import zipfile

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


# Keys of a checkpoint's meta that mmengine executes as Python text
# (Runner.resume: Config.fromstring(meta['config'])).
EXECUTABLE_META_KEYS = ('config', )


def strip_executable_meta(checkpoint: dict) -> list:
    """Remove from ``checkpoint['meta']`` every entry mmengine would execute
    as Python text, and log what was ignored. Returns the removed keys.

    mmengine writes the config as ``meta['cfg']`` (read, never executed,
    when training); a ``meta['config']`` string comes from legacy or
    crafted checkpoints, and ``Runner.resume`` runs it with
    ``Config.fromstring``."""
    from mmengine.logging import print_log
    meta = checkpoint.get('meta') if isinstance(checkpoint, dict) else None
    if not isinstance(meta, dict):
        return []
    removed = [k for k in EXECUTABLE_META_KEYS if k in meta]
    for key in removed:
        value = meta.pop(key)
        size = len(value) if isinstance(value, (str, bytes)) else None
        print_log(
            f"mmgal: ignored the checkpoint's meta['{key}'] "
            f'({type(value).__name__}' +
            (f', {size} characters' if size is not None else '') +
            '): mmengine would execute it as Python code on resume. '
            'Training goes on with the config you gave.',
            logger='current', level=logging.WARNING)
    return removed


def check_checkpoint_file(path: str, field: str = 'load_from') -> None:
    """``ValueError`` naming ``field`` and ``path`` unless it is a
    readable, non-empty, complete (zip) checkpoint file. Remote paths
    (``scheme://``) are left to mmengine."""
    if '://' in str(path):
        return
    if not osp.exists(path):
        raise ValueError(f'{field}: checkpoint {path!r} does not exist')
    if osp.isdir(path):
        raise ValueError(f'{field}: {path!r} is a folder, not a checkpoint '
                         'file')
    size = os.path.getsize(path)
    if size == 0:
        raise ValueError(f'{field}: checkpoint {path!r} is empty (0 bytes),'
                         ' e.g. written when the disk was full: resume from '
                         'an earlier checkpoint')
    if not zipfile.is_zipfile(path):
        with open(path, 'rb') as f:
            head = f.read(2)
        if head != b'\x80\x02':  # torch's legacy (non-zip) format
            raise ValueError(
                f'{field}: checkpoint {path!r} ({size} bytes) is not a '
                'complete torch checkpoint (truncated, or another kind of '
                'file): resume from an earlier checkpoint')
