"""Small datasets that mmgal's commands, tests and benchmarks make."""
from .digits import make_digits_images

__all__ = ['make_digits_images']
