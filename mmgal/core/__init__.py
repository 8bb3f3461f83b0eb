"""GAL's algorithm in plain PyTorch (no framework imports)."""
from .adjusters import (ADJUSTER_KINDS, CNNGradientAdjuster, GradientAdjuster,
                        NoiseGradientAdjuster, build_adjuster,
                        check_arch)
from .compiled_step import CompiledGALStep
from .fast_optimizer import fast_optimizer
from .gal_step import (POLICIES, REMAINDERS, WORK_DTYPES, GALOutput,
                       check_gal_args, dtype_from_name,
                       check_count, check_real, check_step_args,
                       gal_step, is_real, work_dtype)

__all__ = [
    'ADJUSTER_KINDS', 'POLICIES', 'REMAINDERS', 'GradientAdjuster',
    'CNNGradientAdjuster', 'NoiseGradientAdjuster', 'build_adjuster',
    'check_arch', 'CompiledGALStep', 'fast_optimizer', 'GALOutput',
    'check_gal_args', 'check_count', 'check_real', 'check_step_args',
    'gal_step', 'is_real', 'WORK_DTYPES', 'dtype_from_name',
    'work_dtype'
]
