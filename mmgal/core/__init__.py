"""GAL's algorithm in plain PyTorch (no framework imports)."""
from .adjusters import (ADJUSTER_KINDS, CNNGradientAdjuster, GradientAdjuster,
                        NoiseGradientAdjuster, build_adjuster,
                        check_arch)
from .gal_step import (POLICIES, REMAINDERS, GALOutput, check_gal_args,
                       check_real, gal_step, is_real)

__all__ = [
    'ADJUSTER_KINDS', 'POLICIES', 'REMAINDERS', 'GradientAdjuster',
    'CNNGradientAdjuster', 'NoiseGradientAdjuster', 'build_adjuster', 'check_arch',
    'GALOutput', 'check_gal_args', 'check_real', 'gal_step', 'is_real'
]
