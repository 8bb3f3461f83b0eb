"""Optimizers of the paper's recipes, registered in mmengine's OPTIMIZERS."""
from .adabound import AdaBound
from .lookahead import Lookahead

__all__ = ['AdaBound', 'Lookahead']
