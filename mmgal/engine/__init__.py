"""mmengine glue: GAL's optimizer wrapper and hook."""
from .gal_hook import GALHook
from .gal_optim_wrapper import GALOptimWrapper

__all__ = ['GALHook', 'GALOptimWrapper']
