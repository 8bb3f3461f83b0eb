"""Small datasets that mmgal's commands, tests and benchmarks make."""
from .digits import make_digits_images
from .tiny_coco import make_tiny_coco, tiny_detector_config

__all__ = ['make_digits_images', 'make_tiny_coco', 'tiny_detector_config']
