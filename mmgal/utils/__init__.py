"""Helpers for the mm layer and the tools."""
from .checkpoint import allow_mmengine_checkpoints
from .config import enable_amp
from .launcher import prepare_cpu_distributed

__all__ = [
    'allow_mmengine_checkpoints', 'enable_amp', 'prepare_cpu_distributed'
]

allow_mmengine_checkpoints()
