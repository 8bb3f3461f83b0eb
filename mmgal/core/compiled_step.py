"""The GAL step as one compiled graph (``torch.compile`` of a functional
form), for hardware where the eager step is bound by issuing operators.

Plain PyTorch, no framework imports. Same maths as :func:`gal_step` (the
same helpers compute Eq. 4-5, the remainder and Algorithm 1's choice); the
two gradients come from ``torch.func.grad`` instead of
``torch.autograd.grad``, which ``torch.compile`` cannot trace, so the
whole step (both gradients, the adjuster's gradient with its non-finite
mask, the policy's choice and the logged cosine) is one graph.
"""
from typing import Callable, Dict, Optional, Union

import torch
from torch import Tensor, nn
from torch.func import functional_call

from .gal_step import (GALOutput, _cast, _decide, _finite, _remainder,
                       add_to_grads, check_step_args, gal_step,
                       loss_and_grad)


def _functional_step(params: Dict[str, Tensor], buffers: Dict[str, Tensor],
                     z: Tensor, lr: Tensor, loss_fn: Callable,
                     adjuster: nn.Module, adj_dtype: torch.dtype,
                     sigma: float, gamma: float, policy: str,
                     remainder: str, grouped: bool,
                     out_dtype: torch.dtype):
    with torch.autocast(device_type=z.device.type, enabled=False):

        def task_loss(zz):
            loss = loss_fn(zz).to(z.dtype)
            return (loss.sum() if grouped else loss), loss

        g, loss = torch.func.grad(task_loss, has_aux=True)(z)

        def abs_remainder(p):
            a = functional_call(adjuster, (p, buffers),
                                (z.to(adj_dtype), )).to(z.dtype)
            g_adj, tentative, rem, g_norm, a_norm = _remainder(
                z, g, loss, a, loss_fn, lr, sigma, gamma, remainder, grouped)
            objective = rem.abs().sum() if grouped else rem.abs()
            return objective, (a, g_adj, tentative.to(z.dtype), rem, g_norm,
                               a_norm)

        grads, (a, g_adj, tentative, rem, g_norm, a_norm) = torch.func.grad(
            abs_remainder, has_aux=True)(params)
        finite = _finite(rem, lr)
        keep = finite.all() if grouped else finite
        grads = {k: torch.where(keep, v, torch.zeros_like(v))
                 for k, v in grads.items()}
        out = _decide(loss, tentative, rem, finite, g, g_adj, a, g_norm,
                      a_norm, policy, grouped, out_dtype)
    return out, grads


class CompiledGALStep:
    """:func:`gal_step` run as one ``torch.compile``-d graph.

    Call it like :func:`gal_step`; it returns the same :class:`GALOutput`
    and accumulates the same adjuster gradient into ``.grad`` (equal up to
    float rounding). The first call per input shape compiles (seconds to a
    minute); later calls with the same shapes, any targets and any lr reuse
    the graph (lr is passed as a tensor, so schedulers do not recompile),
    and a new shape (the last, smaller batch) compiles once more, after
    which torch.compile's automatic dynamic shapes take over. Adjusters
    without parameters (the noise ablations) run the eager step.

    ``loss_fn`` must be traceable by ``torch.compile`` (plain tensor maths
    and Python on shapes and constants). A new closure of the same function
    per call (new targets) reuses the graph; a different function (another
    code object) compiles anew, and past torch.compile's cache limit (8 per
    process) the step runs uncompiled, with the same results. Its inputs
    are checked eagerly once per z shape, so a loss that does not depend on
    z is still refused with a clear error.

    Args:
        backend (str): ``torch.compile`` backend. Defaults to
            ``'inductor'``.
        mode (str, optional): ``torch.compile`` mode, e.g.
            ``'reduce-overhead'`` (CUDA graphs) on GPUs. Defaults to None.
        dynamic (bool, optional): ``torch.compile``'s ``dynamic``.
            Defaults to None (automatic).
    """

    def __init__(self,
                 backend: str = 'inductor',
                 mode: Optional[str] = None,
                 dynamic: Optional[bool] = None):
        self._fn = torch.compile(
            _functional_step, backend=backend, mode=mode, dynamic=dynamic)
        self._checked = set()
        # The adjuster last seen and its trainable parameters and buffers
        # (walking its modules every call costs more than the step's math).
        self._adjuster: Optional[nn.Module] = None
        self._params: Dict[str, nn.Parameter] = {}
        self._buffers: Dict[str, Tensor] = {}

    def __call__(self,
                 z: Tensor,
                 loss_fn: Callable[[Tensor], Tensor],
                 adjuster: nn.Module,
                 lr: Union[float, Tensor],
                 sigma: float,
                 gamma: float = 1.0,
                 policy: str = 'le',
                 remainder: str = 'taylor',
                 grouped: bool = False) -> GALOutput:
        loss_shape = check_step_args(z, adjuster, lr, sigma, gamma, policy,
                                     remainder, grouped)
        if adjuster is not self._adjuster:
            self._adjuster = adjuster
            self._params = {name: p for name, p in
                            adjuster.named_parameters() if p.requires_grad}
            self._buffers = dict(adjuster.named_buffers())
        params = {name: p.detach() for name, p in self._params.items()}
        if not params:
            return gal_step(z, loss_fn, adjuster, lr, sigma, gamma, policy,
                            remainder, grouped)
        work_dtype = torch.promote_types(z.dtype, torch.float32)
        z0 = _cast(z.detach(), work_dtype)
        key = (tuple(z.shape), z.dtype, grouped)
        if key not in self._checked:
            # What gal_step refuses, checked eagerly once per shape:
            # torch.func would give a zero gradient for a loss that does
            # not depend on z.
            with torch.enable_grad():
                loss_and_grad(z0.detach().requires_grad_(True), loss_fn,
                              loss_shape, grouped)
            self._checked.add(key)
        if not isinstance(lr, Tensor):
            lr = torch.full((), float(lr), dtype=work_dtype, device=z.device)
        adj_dtype = next(iter(params.values())).dtype
        out, grads = self._fn(params, self._buffers, z0,
                              lr, loss_fn, adjuster, adj_dtype, float(sigma),
                              float(gamma), policy, remainder, grouped,
                              z.dtype)
        # Accumulated: the wrapper sums over micro-batches and groups.
        add_to_grads([self._params[k] for k in grads], list(grads.values()))
        return out
