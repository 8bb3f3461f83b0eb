"""A local file backend that writes checkpoints whole or not at all."""
import os
import os.path as osp
import tempfile
from pathlib import Path
from typing import Union

from mmengine.fileio import LocalBackend, register_backend

ATOMIC_BACKEND = 'mmgal_atomic_local'


@register_backend(ATOMIC_BACKEND)
class AtomicLocalBackend(LocalBackend):
    """:class:`LocalBackend` whose ``put`` writes a temporary file and
    renames it over the target: a failed write leaves the old file.
    ``tools/train.py`` gives it to checkpoint hooks without a backend.

    Examples:
        >>> default_hooks = dict(checkpoint=dict(
        >>>     type='CheckpointHook',
        >>>     backend_args=dict(backend='mmgal_atomic_local')))
    """

    def put(self, obj: bytes, filepath: Union[str, Path]) -> None:
        filepath = str(filepath)
        folder = osp.dirname(filepath) or '.'
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix='.' + osp.basename(filepath),
                                   suffix='.tmp', dir=folder)
        try:
            # mkstemp's 0600, widened to what open() would give.
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
            with os.fdopen(fd, 'wb') as f:
                f.write(obj)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, filepath)
        except BaseException:
            if osp.exists(tmp):
                os.remove(tmp)
            raise
