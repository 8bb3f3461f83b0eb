"""mmengine glue: GAL's optimizer wrapper and hook."""
from .gal_hook import GALHook
from .gal_optim_wrapper import GALOptimWrapper
from .training_guard_hook import NonFiniteTrainingError, TrainingGuardHook

__all__ = [
    'TrainingGuardHook', 'NonFiniteTrainingError', 'GALHook',
    'GALOptimWrapper'
]
