"""Per-head adapters: where z is and how to re-evaluate the head's loss."""
from .base_adapter import (GAL_ADAPTERS, BaseGALAdapter, build_adapter,
                           supported_heads)
from .cls_head_adapter import ClsHeadAdapter
from .detr_head_adapter import DETRHeadAdapter

__all__ = [
    'GAL_ADAPTERS', 'BaseGALAdapter', 'build_adapter', 'supported_heads',
    'ClsHeadAdapter', 'DETRHeadAdapter'
]
