"""Helpers for the mm layer and the tools."""
from .checkpoint import allow_mmengine_checkpoints
from .config import enable_amp

__all__ = ['allow_mmengine_checkpoints', 'enable_amp']

allow_mmengine_checkpoints()
