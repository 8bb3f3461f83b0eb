"""Per-head adapters: where z is and how to re-evaluate the head's loss."""
from .base_adapter import (GAL_ADAPTERS, BaseGALAdapter, adapter_class_for,
                           build_adapter, find_supported_heads,
                           supported_heads)
from .cls_head_adapter import ClsHeadAdapter
from .detr_head_adapter import DETRHeadAdapter

__all__ = [
    'GAL_ADAPTERS', 'BaseGALAdapter', 'adapter_class_for', 'build_adapter',
    'find_supported_heads', 'supported_heads',
    'ClsHeadAdapter', 'DETRHeadAdapter'
]
