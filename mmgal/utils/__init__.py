"""Helpers for the mm layer and the tools."""
from .checkpoint import (allow_mmengine_checkpoints, check_checkpoint_file,
                         confine_runtime_info, strip_executable_meta)
from .file_backend import AtomicLocalBackend
from .config import enable_amp

__all__ = [
    'allow_mmengine_checkpoints', 'check_checkpoint_file',
    'confine_runtime_info',
    'strip_executable_meta', 'AtomicLocalBackend', 'enable_amp'
]

allow_mmengine_checkpoints()
