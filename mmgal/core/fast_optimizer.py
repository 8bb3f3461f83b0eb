"""Build a PyTorch optimizer on its fastest implementation. Plain PyTorch."""
import inspect

from torch.optim import Optimizer


def fast_optimizer(klass: type, params: list, kwargs: dict) -> Optimizer:
    """``klass(params, **kwargs)``, on PyTorch's fused (else foreach)
    implementation where ``klass`` has one for these parameters and
    ``kwargs`` chose none: an update of a few kernels instead of a dozen per
    parameter, which reads no step count on the host.

    Args:
        klass (type): An optimizer class, e.g. ``torch.optim.Adam``.
        params (list): The parameters to optimize.
        kwargs (dict): The other constructor arguments (lr, betas, ...).
    """
    accepted = inspect.signature(klass.__init__).parameters
    if kwargs.get('fused') is None and kwargs.get('foreach') is None:
        for flag in ('fused', 'foreach'):
            if flag in accepted:
                try:
                    return klass(params, **dict(kwargs, **{flag: True}))
                except (RuntimeError, ValueError, TypeError):
                    continue  # not for this device or dtype
    return klass(params, **kwargs)
