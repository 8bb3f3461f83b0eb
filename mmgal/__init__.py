"""mmgal: Gradient Adjustment Learning for the OpenMMLab stack.

``import mmgal`` exposes the pure-PyTorch core and, when mmengine is
installed, registers mmgal's components in mmengine's registries, so a
config needs only ``custom_imports = dict(imports=['mmgal'])``.
"""
from .core import GALOutput, GradientAdjuster, build_adjuster, gal_step
from .version import __version__

__all__ = [
    '__version__', 'GALOutput', 'GradientAdjuster', 'build_adjuster',
    'gal_step'
]

# The core and mmgal.regression run without the mm stack; the mm layer is
# registered wherever mmengine is installed (errors inside it propagate).
try:
    import mmengine  # noqa: F401
except ModuleNotFoundError as err:
    if err.name != 'mmengine':
        raise
else:
    try:
        from . import adapters, engine, optimizers, utils  # noqa: F401
    except Exception as err:
        from ._compat import transformers_conflict
        reason = transformers_conflict()
        if reason is None:
            raise
        raise ImportError(f'import mmgal failed ({type(err).__name__}: '
                          f'{err}). {reason}') from err
