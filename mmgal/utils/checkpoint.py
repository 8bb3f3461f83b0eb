"""What a checkpoint may make a run do.

- Load under torch's safe unpickler: mmengine's ``HistoryBuffer`` (numpy
  arrays, scalars, ``getattr(HistoryBuffer, 'mean')``) is allow-listed,
  ``getattr`` only in that form, so no code runs.
- :func:`strip_executable_meta`: ``Runner.resume`` would execute
  ``meta['config']`` as a Python config; removed on load.
- :func:`confine_runtime_info`: only file paths the run could have written
  itself, and the run's own config text.
- :func:`check_checkpoint_file`: an empty or truncated file named before
  mmengine's bare ``EOFError``.
"""
import logging
import os
import os.path as osp
import pickle
import zipfile
from typing import Optional

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
    """Remove (and log) the ``checkpoint['meta']`` entries mmengine would
    execute (``Runner.resume`` runs ``meta['config']`` with
    ``Config.fromstring``); returns their keys."""
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
    """``ValueError`` naming ``field`` and ``path`` unless a complete local
    checkpoint file (remote paths are left to mmengine)."""
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


def _inside(path, folder: str) -> bool:
    """``path`` is a string naming a file inside ``folder``."""
    if not isinstance(path, str) or not path or '://' in path:
        return False
    path, folder = osp.realpath(path), osp.realpath(folder)
    return osp.commonpath([path, folder]) == folder and path != folder


def checkpoint_hook(runner):
    """The runner's mmengine ``CheckpointHook``, or None."""
    return next((h for h in runner.hooks
                 if type(h).__name__ == 'CheckpointHook'), None)


def _bad_path(key: str, path, folder: str) -> Optional[str]:
    """Why runtime_info's path under ``key`` is not this run's, or None."""
    name = osp.basename(str(path))
    if key == 'best_ckpt' or key.startswith('best_ckpt_'):
        if not (_inside(path, folder) and name.startswith('best_')
                and name.endswith('.pth')):
            return ("not a best_*.pth file in this run's checkpoint folder "
                    f'{folder} (mmengine would delete it)')
    elif key == 'last_ckpt':
        if not (_inside(path, folder) and name.startswith(
                ('epoch_', 'iter_')) and name.endswith('.pth')):
            return f'not a checkpoint of this run in {folder}'
    return None


def _kept_ids(ids, progress) -> Optional[list]:
    """The ints in (0, progress] of ``ids``, sorted (None if malformed)."""
    if not isinstance(progress, int) or isinstance(ids, (str, bytes)) or \
            not hasattr(ids, '__iter__'):
        return None
    return sorted({i for i in ids if isinstance(i, int)
                   and not isinstance(i, bool) and 0 < i <= progress})


def confine_runtime_info(checkpoint: dict, runner) -> list:
    """Keep in the checkpoint's ``runtime_info`` only what the resuming run
    would have written itself; returns the keys dropped or replaced (each
    logged). mmengine's ``CheckpointHook`` deletes the files ``best_ckpt*``
    and ``keep_ckpt_ids`` name, and a resumed run copies ``cfg`` (text
    that inferencers execute) into its checkpoints. So the paths must be
    this run's ``best_*.pth`` / ``epoch_*`` / ``iter_*`` files, the ids no
    later than the checkpoint's progress, ``cfg`` the run's own and
    ``meta['seed']`` one numpy takes."""
    from mmengine.logging import print_log
    hub = checkpoint.get('message_hub') if isinstance(checkpoint,
                                                      dict) else None
    info = hub.get('runtime_info') if isinstance(hub, dict) else None
    if not isinstance(info, dict):
        return []
    hook = checkpoint_hook(runner)
    folder = getattr(hook, 'out_dir', None) or runner.work_dir
    if not osp.isdir(str(folder)):
        folder = runner.work_dir
    meta = checkpoint.get('meta') if isinstance(checkpoint.get('meta'),
                                                dict) else {}
    by_epoch = getattr(hook, 'by_epoch', True)
    progress = meta.get('epoch' if by_epoch else 'iter')
    changed = []

    def drop(key, why):
        value = info.pop(key)
        changed.append(key)
        print_log(f"mmgal: ignored the checkpoint's runtime_info['{key}'] "
                  f'({str(value)[:80]!r}): {why}.', logger='current',
                  level=logging.WARNING)

    for key in list(info):
        why = _bad_path(key, info[key], folder)
        if why:
            drop(key, why)
    ids = info.get('keep_ckpt_ids')
    kept = None if ids is None else _kept_ids(ids, progress)
    if ids is not None and (kept is None or kept != list(ids)):
        kept = info['keep_ckpt_ids'] = kept or []
        changed.append('keep_ckpt_ids')
        print_log(
            "mmgal: the checkpoint's runtime_info['keep_ckpt_ids'] "
            f'({str(ids)[:80]}) named checkpoints this run has not '
            f'written (it is at {"epoch" if by_epoch else "iteration"} '
            f'{progress}); kept {kept}: mmengine deletes the files of '
            'the ids it rotates out.', logger='current',
            level=logging.WARNING)
    seed = meta.get('seed')
    if seed is not None and not (isinstance(seed, int) and not isinstance(
            seed, bool) and 0 <= seed < 2**32):
        # Runner.resume re-seeds numpy with it: numpy's own error else.
        meta.pop('seed')
        changed.append("meta['seed']")
        print_log(f"mmgal: ignored the checkpoint's meta['seed'] "
                  f'({str(seed)[:40]}): not a seed in [0, 2**32); the run '
                  'keeps its own seed.', logger='current',
                  level=logging.WARNING)
    own = runner.cfg.pretty_text
    for table, where in ((info, "runtime_info['cfg']"), (meta, "meta['cfg']")):
        if 'cfg' in table and table['cfg'] != own:
            table['cfg'] = own
            changed.append(where)
            print_log(f"mmgal: the checkpoint's {where} is replaced by this "
                      "run's config (a resumed run saves its own).",
                      logger='current', level=logging.INFO)
    return changed
