"""Helpers for the mm layer: what a checkpoint may make a run do, and an
atomic file backend for checkpoints."""
from .checkpoint import (allow_mmengine_checkpoints, check_checkpoint_file,
                         confine_runtime_info, strip_executable_meta)
from .file_backend import AtomicLocalBackend

__all__ = [
    'allow_mmengine_checkpoints', 'check_checkpoint_file',
    'confine_runtime_info', 'strip_executable_meta', 'AtomicLocalBackend'
]

allow_mmengine_checkpoints()
