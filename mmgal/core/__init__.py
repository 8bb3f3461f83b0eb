"""GAL's algorithm in plain PyTorch (no framework imports)."""
from .adjuster_learner import AdjusterLearner, select_step
from .adjusters import (ADJUSTER_KINDS, CNNGradientAdjuster, GradientAdjuster,
                        NoiseGradientAdjuster, build_adjuster, check_arch,
                        warn_if_unlearnable)
from .compiled_step import CompiledGALStep, compile_unavailable
from .fast_optimizer import fast_optimizer
from .gal_step import (NORMALIZATIONS, OBJECTIVES, POLICIES, REMAINDERS,
                       STAT_NAMES, WORK_DTYPES, GALOutput, check_choice,
                       check_count, check_gal_args, check_real, gal_step,
                       is_real, native_dtype, resolve_normalize, work_dtype)
from .remainders import (ExactLoss, abs_remainder, cross_entropy_loss,
                         expm1mx, has_remainder, mlog1pmx, mse_loss,
                         softmax_remainder, softplus_remainder,
                         square_remainder)
from .settings import FAST_MODES, PRESETS, RETIRED, GALSettings

__all__ = [
    'AdjusterLearner', 'select_step', 'GALSettings', 'FAST_MODES', 'PRESETS',
    'RETIRED', 'ADJUSTER_KINDS', 'POLICIES', 'REMAINDERS', 'OBJECTIVES',
    'NORMALIZATIONS', 'check_choice', 'resolve_normalize', 'ExactLoss',
    'abs_remainder', 'cross_entropy_loss', 'expm1mx', 'has_remainder',
    'mlog1pmx', 'mse_loss', 'softmax_remainder', 'softplus_remainder',
    'square_remainder', 'GradientAdjuster', 'CNNGradientAdjuster',
    'NoiseGradientAdjuster', 'build_adjuster', 'check_arch',
    'warn_if_unlearnable', 'CompiledGALStep', 'compile_unavailable',
    'STAT_NAMES', 'fast_optimizer', 'GALOutput', 'check_gal_args',
    'check_count', 'check_real', 'gal_step', 'is_real', 'WORK_DTYPES',
    'work_dtype', 'native_dtype'
]
