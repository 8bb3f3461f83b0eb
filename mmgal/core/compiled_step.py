"""The GAL step as one compiled graph (``torch.compile`` of a functional
form), for hardware where the eager step is bound by issuing operators.

Plain PyTorch, no framework imports. Same maths as :func:`gal_step` (the
same helpers compute Eq. 4-5, the remainder and Algorithm 1's choice); the
two gradients come from ``torch.func.grad`` instead of
``torch.autograd.grad``, which ``torch.compile`` cannot trace, so the
whole step (both gradients, the adjuster's gradient with its non-finite
mask, the policy's choice and the logged cosine) is one graph; given the
adjuster's Adam (or AdamW), its update joins that graph too.
"""
import importlib
from typing import Callable, Dict, List, NamedTuple, Optional, Union

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.optim import Adam, AdamW, Optimizer

from .gal_step import (GALOutput, _cast, _decide, _finite, _remainder,
                       add_to_grads, check_step_args, gal_step,
                       loss_and_grad, native_dtype, resolve_normalize,
                       work_dtype)


# torch.optim.adam the module (torch.optim.adam is the function there).
_adam_functional = importlib.import_module('torch.optim.adam').adam


class _AdamUpdate(NamedTuple):
    """What the graph needs to apply torch.optim.Adam's update: the
    parameters' names in the optimizer's order, its state tensors (updated
    in place) and its settings."""
    names: tuple
    exp_avgs: List[Tensor]
    exp_avg_sqs: List[Tensor]
    max_exp_avg_sqs: List[Tensor]
    steps: List[Tensor]
    settings: dict


def _functional_step(params: Dict[str, Tensor], buffers: Dict[str, Tensor],
                     z: Tensor, lr: Tensor, loss_fn: Callable,
                     adjuster: nn.Module, adj_dtype: torch.dtype,
                     sigma: float, gamma: float, policy: str,
                     remainder: str, grouped: bool,
                     out_dtype: torch.dtype, normalize: str, objective: str,
                     z_native: Optional[Tensor] = None,
                     update: Optional[_AdamUpdate] = None):
    lr = lr.reshape(())
    with torch.autocast(device_type=z.device.type, enabled=False):

        def task_loss(zz):
            loss = loss_fn(zz).to(zz.dtype)
            return (loss.sum() if grouped else loss), loss

        g, loss = torch.func.grad(task_loss, has_aux=True)(z)
        native = None
        if z_native is not None:
            # The model's own gradient and loss, in its dtype (gal_step).
            g_n, loss_n = torch.func.grad(task_loss, has_aux=True)(z_native)
            native = (loss_n, g_n)

        def adjuster_objective(p):
            a = functional_call(adjuster, (p, buffers),
                                (z.to(adj_dtype), )).to(z.dtype)
            terms = _remainder(z, g, loss, a, loss_fn, lr, sigma, gamma,
                               remainder, grouped, normalize, objective)
            return terms.objective.sum(), (a, terms)

        grads, (a, terms) = torch.func.grad(
            adjuster_objective, has_aux=True)(params)
        finite = _finite(terms, lr)
        keep = finite.all() if grouped else finite
        grads = {k: torch.where(keep, v, torch.zeros_like(v))
                 for k, v in grads.items()}
        out = _decide(loss, terms, finite, g, a, policy, grouped, out_dtype,
                      native)
        if update is not None:
            # torch.optim.Adam's own single-tensor update, traced: the
            # parameters and the optimizer's state change in place.
            _adam_functional(
                [params[k] for k in update.names],
                [grads[k] for k in update.names], update.exp_avgs,
                update.exp_avg_sqs, update.max_exp_avg_sqs, update.steps,
                foreach=False, capturable=False, **update.settings)
            return out, None
    return out, grads


def _adam_update(optimizer: Optional[Optimizer],
                 params: Dict[str, nn.Parameter]) -> Optional[_AdamUpdate]:
    """The in-graph update for ``optimizer``, or None where the graph cannot
    apply it exactly as ``optimizer.step()`` would: not a torch.optim Adam
    or AdamW, another set of parameters, several param groups, no state
    yet (its first step makes it), a step count on another device than its
    parameter, or a gradient already pending in ``.grad``."""
    if type(optimizer) not in (Adam, AdamW) or \
            len(optimizer.param_groups) != 1:
        return None
    group = optimizer.param_groups[0]
    names = {id(p): k for k, p in params.items()}
    if group['differentiable'] or len(group['params']) != len(names) or \
            any(id(p) not in names or p.grad is not None
                for p in group['params']):
        return None
    states = [optimizer.state.get(p, {}) for p in group['params']]
    keys = ('step', 'exp_avg', 'exp_avg_sq') + (
        ('max_exp_avg_sq', ) if group['amsgrad'] else ())
    if any(k not in st for st in states for k in keys) or any(
            st['step'].device != p.device
            for st, p in zip(states, group['params'])):
        # A step count on the host (Adam without capturable/fused on a
        # GPU) would be copied to the device every step: stepped eagerly.
        return None
    beta1, beta2 = group['betas']
    return _AdamUpdate(
        names=tuple(names[id(p)] for p in group['params']),
        exp_avgs=[st['exp_avg'] for st in states],
        exp_avg_sqs=[st['exp_avg_sq'] for st in states],
        max_exp_avg_sqs=[st['max_exp_avg_sq'] for st in states]
        if group['amsgrad'] else [],
        steps=[st['step'] for st in states],
        settings=dict(
            amsgrad=group['amsgrad'], beta1=beta1, beta2=beta2,
            lr=group['lr'], weight_decay=group['weight_decay'],
            eps=group['eps'], maximize=group['maximize'],
            decoupled_weight_decay=group.get(
                'decoupled_weight_decay', type(optimizer) is AdamW)))


class CompiledGALStep:
    """:func:`gal_step` run as one ``torch.compile``-d graph.

    Call it like :func:`gal_step` (every argument); it returns the
    same :class:`GALOutput`
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

    Given ``optimizer``, the adjuster's optimizer, the step also applies
    this step's adjuster gradient at once, as ``.grad = gradient;
    optimizer.step(); optimizer.zero_grad(set_to_none=True)`` would (for a
    loop that updates the adjuster every step, with no gradient
    accumulation): for a ``torch.optim.Adam`` or ``AdamW`` with one param
    group over exactly the adjuster's trainable parameters, the update is
    PyTorch's own Adam function traced into the same graph (no optimizer
    call, no ``.grad``); its first call, other optimizers, or a gradient
    already pending in ``.grad`` run those three calls instead. The Adam's
    settings are compiled in as constants: changing its lr compiles anew.

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
                 remainder: str = 'exact',
                 grouped: bool = False,
                 optimizer: Optional[Optimizer] = None,
                 dtype: Optional[torch.dtype] = None,
                 objective: str = 'normalized',
                 normalize: str = 'auto') -> GALOutput:
        loss_shape = check_step_args(z, adjuster, lr, sigma, gamma, policy,
                                     remainder, grouped, dtype, objective,
                                     normalize)
        if adjuster is not self._adjuster:
            self._adjuster = adjuster
            self._params = {name: p for name, p in
                            adjuster.named_parameters() if p.requires_grad}
            self._buffers = dict(adjuster.named_buffers())
        params = {name: p.detach() for name, p in self._params.items()}
        update = _adam_update(optimizer, self._params)
        if not params or (optimizer is not None and update is None):
            # No parameters (noise adjusters), or an optimizer the graph
            # does not apply (its first step makes Adam's state): eagerly.
            out = gal_step(z, loss_fn, adjuster, lr, sigma, gamma, policy,
                           remainder, grouped, dtype, objective, normalize)
            if optimizer is not None:
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            return out
        work = work_dtype(z.dtype, dtype, remainder, loss_fn)
        own = native_dtype(z.dtype)
        z0 = _cast(z.detach(), work)
        z_native = _cast(z.detach(), own) if own != work else None
        key = (tuple(z.shape), z.dtype, work, grouped)
        if key not in self._checked:
            # What gal_step refuses, checked eagerly once per shape:
            # torch.func would give a zero gradient for a loss that does
            # not depend on z.
            with torch.enable_grad():
                loss_and_grad(z0.detach().requires_grad_(True), loss_fn,
                              loss_shape, grouped)
            self._checked.add(key)
        if not isinstance(lr, Tensor):
            # One element, not 0-dim: dynamo guards a 0-dim float64 CPU
            # tensor by its value (a host read per call).
            lr = torch.full((1, ), float(lr), dtype=work, device=z.device)
        adj_dtype = next(iter(params.values())).dtype
        try:
            out, grads = self._fn(params, self._buffers, z0, lr, loss_fn,
                                  adjuster, adj_dtype, float(sigma),
                                  float(gamma), policy, remainder, grouped,
                                  z.dtype,
                                  resolve_normalize(normalize, z.shape[-1]),
                                  objective, z_native, update)
        except Exception as err:
            if not type(err).__module__.startswith(
                    ('torch._dynamo', 'torch._inductor')):
                raise
            cause = getattr(err, 'inner_exception', None) or err
            first = (str(cause).strip().splitlines() or [''])[0]
            hint = ''
            if 'torchinductor' in first or 'TORCHINDUCTOR' in first:
                # e.g. a compile killed mid-write leaves an empty .so there
                hint = (". It names a file in torch's compile cache, "
                        'which may be damaged (a compile killed while '
                        'writing it): delete that file, or set '
                        'TORCHINDUCTOR_CACHE_DIR to an empty folder')
            raise RuntimeError(
                'CompiledGALStep: torch.compile could not build the GAL '
                f'step ({type(cause).__name__}: {first}){hint}. The eager '
                "step gives the same update: set fast='auto' "
                "(GALOptimWrapper) or fast='eager' (GALSettings)") from err
        if grads is not None:
            # Accumulated: the wrapper sums over micro-batches and groups.
            add_to_grads([self._params[k] for k in grads],
                         list(grads.values()))
        return out
