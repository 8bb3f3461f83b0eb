"""Small datasets that mmgal's commands and tests make themselves."""
from .digits import make_digits_images

__all__ = ['make_digits_images']
