"""One GAL step on output features z, in plain PyTorch.

With g = dl/dz and a = h_phi(z): g~ = g + sigma * a / |a| * |g| (Eq. 4-5),
the tentative loss l' = l(z - eta g~) (eta = gamma * lr), the remainder
R = l' - l + eta <g~, g>; the adjuster's objective |R| (by default over a
detached (eta |g~|)^2) goes into its ``.grad``, and the policy picks g~ or
g (Algorithm 1, lines 7-10). R is second order, so the difference l' - l
cancels in float32: ``remainder='exact'`` takes an
:class:`~mmgal.core.remainders.ExactLoss`'s closed form, else the
difference in float64. Tensor maths only: no host-device sync.
"""
import math
import numbers
from typing import Callable, Dict, NamedTuple, Optional, Union

import torch
from torch import Tensor, nn
from torch.func import functional_call

from .remainders import has_remainder

# The settings' choices (GALSettings documents each).
POLICIES = ('le', 'lt', 'always', 'never')
REMAINDERS = ('exact', 'reference')
OBJECTIVES = ('normalized', 'abs')
NORMALIZATIONS = ('auto', 'row', 'batch')
_EPS = 1e-12
# GALOutput.stats: sums over the finite groups (|R|, |R| / (eta |g~|)^2,
# adopted, cos(g, a), non-finite, l - l', groups), then the probe's (|R|
# with the current and the initial adjuster, their cosine, 1) or zeros.
STAT_NAMES = ('abs_remainder', 'remainder', 'adopt_rate', 'cos_sim',
              'nonfinite', 'tentative_gain', 'steps', 'probe_learned',
              'probe_initial', 'cos_init', 'probes')


class GALOutput(NamedTuple):
    """What :func:`gal_step` returns: 0-dim tensors (per group: ``(G, )``).

    Attributes:
        grad: What the model back-propagates (g~ if adopted, else g), like z.
        vanilla_grad: g = dl/dz in z's dtype, as without GAL.
        loss: l(z) in z's dtype (at least float32), as without GAL.
        tentative_loss: l(z - eta g~) in the work dtype.
        remainder: R (signed); the adjuster minimises |R|.
        adopted: whether ``grad`` is g~.
        nonfinite: g, the adjustment, l' or R was not finite (then
            ``grad`` is g and the adjuster gets no gradient).
        cos_sim: mean row-wise cosine of g and the adjustment.
        loss_change: l' - l, what the policy tests.
        scaled_remainder: |R| / (eta |g~|)^2, of order one whatever eta.
        stats: float32 sums named by :data:`STAT_NAMES`, for logging.
    """
    grad: Tensor
    vanilla_grad: Tensor
    loss: Tensor
    tentative_loss: Tensor
    remainder: Tensor
    adopted: Tensor
    nonfinite: Tensor
    cos_sim: Tensor
    loss_change: Tensor
    scaled_remainder: Tensor
    stats: Tensor


def check_real(name: str, value, low: float = 0.0,
               strict: bool = False) -> float:
    """``value`` as a float; ``ValueError`` naming ``name`` unless it is a
    finite real (not bool) ``>= low`` (``> low`` with ``strict``)."""
    op = '>' if strict else '>='
    if not is_real(value) or not math.isfinite(value) or (
            value <= low if strict else value < low):
        raise ValueError(f'{name} must be a finite number {op} {low:g}, got '
                         f'{value!r}')
    return float(value)


def check_count(name: str, value) -> int:
    """``value`` as an int; ``ValueError`` unless an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) \
            or value < 1:
        raise ValueError(f'{name} must be an int >= 1, got {value!r}')
    return int(value)


def check_choice(name: str, value, choices: tuple, what: str = '') -> None:
    """``ValueError`` naming ``name`` and ``choices`` unless ``value`` is
    one of them."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f'{name} must be one of {choices}{what}, got '
                         f'{value!r}')


def check_gal_args(sigma: float, gamma: float, policy: str,
                   remainder: str, objective: str = 'normalized',
                   normalize: str = 'auto') -> None:
    """Raise ``ValueError`` naming the first bad GAL setting."""
    check_real('sigma', sigma)
    check_real('gamma', gamma, strict=True)
    check_choice('policy', policy, POLICIES,
                 " (Algorithm 1: 'le' line 7 with <=, 'lt' line 7 with <, "
                 "'always' line 8, 'never' line 10)")
    check_choice('remainder', remainder, REMAINDERS,
                 " ('exact': closed form or float64; 'reference': the "
                 "authors' release)")
    check_choice('objective', objective, OBJECTIVES)
    check_choice('normalize', normalize, NORMALIZATIONS)


def resolve_normalize(normalize: str, dim: int) -> str:
    """'auto' as 'row' for d > 1, 'batch' for d = 1 (where a/|a| per row is
    sign(a), which gives the adjuster no gradient)."""
    if normalize == 'auto':
        return 'row' if dim > 1 else 'batch'
    return normalize


def is_real(x) -> bool:
    """A real number (int, float, NumPy scalar), not a bool."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _check_lr(lr) -> None:
    """A number or a CPU tensor is checked here; a device tensor's value
    inside the step (no sync)."""
    if isinstance(lr, Tensor):
        if lr.numel() != 1 or not lr.is_floating_point():
            raise ValueError('lr must be a number or a one-element floating '
                             f'tensor, got a {lr.dtype} tensor of shape '
                             f'{tuple(lr.shape)}')
        if lr.device.type == 'cpu':
            check_real('lr', float(lr))  # a CPU read, no device sync
        return
    check_real('lr', lr)


# The work dtypes a step takes (None: z's, at least float32).
WORK_DTYPES = (None, torch.float32, torch.float64)


def native_dtype(z_dtype: torch.dtype) -> torch.dtype:
    """The model's own loss dtype: z's, at least float32."""
    return torch.promote_types(z_dtype, torch.float32)


def work_dtype(z_dtype: torch.dtype, dtype=None, remainder: str = 'reference',
               loss_fn=None) -> torch.dtype:
    """GAL's dtype: ``dtype`` if given; float64 for an exact remainder
    without a closed form (a difference of two losses); else
    :func:`native_dtype`."""
    if dtype is not None:
        return dtype
    if remainder == 'exact' and not has_remainder(loss_fn):
        return torch.float64
    return native_dtype(z_dtype)


def _cast(x: Tensor, dtype: torch.dtype) -> Tensor:
    return x if x.dtype == dtype else x.to(dtype)


def add_to_grads(params: list, grads: list) -> None:
    """Accumulate ``grads`` into ``.grad`` (one foreach add)."""
    acc = []
    for p, gp in zip(params, grads):
        if p.grad is None:
            p.grad = gp
        else:
            acc.append((p.grad, gp))
    if acc:
        torch._foreach_add_([a for a, _ in acc], [b for _, b in acc])


def _rownorm(x: Tensor) -> Tensor:
    return torch.linalg.vector_norm(x, dim=-1, keepdim=True)


def _norms(x: Tensor, normalize: str, grouped: bool) -> Tensor:
    """Eq. 4's norm of x: per row, or over all rows (of each group)."""
    if normalize == 'row':
        return _rownorm(x)
    if grouped:
        dims = tuple(range(1, x.dim()))
        return torch.linalg.vector_norm(x, dim=dims, keepdim=True)
    return torch.linalg.vector_norm(x).reshape((1, ) * x.dim())


def _per_group(x: Tensor, grouped: bool, mean: bool = False) -> Tensor:
    """Sum (or mean) of per-row x over each group's rows (or all rows)."""
    if grouped:
        x = x.flatten(1)
        return x.mean(1) if mean else x.sum(1)
    return x.mean() if mean else x.sum()


class _Terms(NamedTuple):
    """What the remainder step computes, differentiable w.r.t. a."""
    adj: Tensor  # the adjustment, g~ - g
    g_adj: Tensor
    tentative: Tensor
    rem: Tensor
    change: Tensor  # l' - l
    objective: Tensor  # per group (or 0-dim), what the adjuster minimises
    scaled: Tensor  # |R| / (eta |g~|)^2, detached


def _remainder(zc: Tensor, g: Tensor, loss: Tensor, a: Tensor, loss_fn,
               lr, sigma: float, gamma: float, remainder: str,
               grouped: bool, normalize: str = 'row',
               objective: str = 'abs') -> _Terms:
    """Eq. 4-5, the remainder R, l' - l and the adjuster's objective."""
    adj = a * (sigma * _norms(g, normalize, grouped) /
               _norms(a, normalize, grouped).clamp_min(_EPS))
    g_adj = g + adj
    eta = lr * gamma
    delta = -eta * g_adj
    first = _per_group((g_adj * g).sum(-1), grouped,
                       mean=remainder == 'reference')
    if remainder == 'exact' and has_remainder(loss_fn):
        rem = loss_fn.remainder(zc, delta).to(loss.dtype)
        change = rem - eta * first
        tentative = loss + change
    else:
        tentative = loss_fn(zc + delta).to(loss.dtype)
        change = tentative - loss
        rem = change + eta * first
    # (eta |g~|)^2 = |delta|^2 per group, detached: the same minimiser.
    step2 = _per_group((delta.detach()**2).sum(-1), grouped)
    step2 = step2.clamp_min(torch.finfo(step2.dtype).tiny)
    scaled = rem.detach().abs() / step2
    obj = rem.abs() / step2 if objective == 'normalized' else rem.abs()
    return _Terms(adj, g_adj, tentative, rem, change, obj, scaled)


def _finite(terms: _Terms, lr) -> Tensor:
    # A NaN or inf in g, the adjustment or l' reaches R or l' - l.
    finite = torch.isfinite(terms.rem) & torch.isfinite(terms.change)
    if isinstance(lr, Tensor):
        # A bad device lr makes the step non-finite (not read: no sync).
        finite = finite & torch.isfinite(lr) & (lr >= 0)
    return finite


def _unit_rows(x: Tensor) -> Tensor:
    """x's rows at unit length, scaled by their largest entry first (no
    float32 overflow)."""
    tiny = torch.finfo(x.dtype).tiny
    x = x / x.abs().amax(-1, keepdim=True).clamp_min(tiny)
    return x / _rownorm(x).clamp_min(_EPS)


def _cosine(g: Tensor, a: Tensor) -> Tensor:
    """Row-wise cosine of g and a, overflow-free (see _unit_rows)."""
    return (_unit_rows(g) * _unit_rows(a)).sum(-1)


def _step_stats(terms: _Terms, finite: Tensor, adopt: Tensor,
                cos: Tensor, probe: Optional[Tensor]) -> Tensor:
    """GALOutput.stats (:data:`STAT_NAMES`); non-finite groups add 0."""
    zero = terms.rem.new_zeros(())

    def finite_sum(x):
        return torch.where(finite, x, zero).sum().float()

    vec = torch.stack([
        finite_sum(terms.rem.detach().abs()),
        finite_sum(terms.scaled),
        adopt.sum().float(),
        finite_sum(cos),
        (~finite).sum().float(),
        finite_sum(-terms.change.detach()),
        torch.full((), adopt.numel(), dtype=torch.float32,
                   device=zero.device)
    ])
    return torch.cat([vec, probe if probe is not None else vec.new_zeros(4)])


def _decide(loss: Tensor, terms: _Terms, finite: Tensor, g: Tensor,
            a: Tensor, policy: str, grouped: bool, out_dtype: torch.dtype,
            native: Optional[tuple] = None,
            probe: Optional[Tensor] = None) -> GALOutput:
    """Algorithm 1, lines 7-10, per group, and the statistics. ``native``:
    the model's own (loss, g) where GAL ran in another dtype."""
    if policy == 'le':
        adopt = terms.change <= 0
    elif policy == 'lt':
        adopt = terms.change < 0
    else:
        adopt = torch.full(terms.change.shape, policy == 'always',
                           device=g.device)
    adopt = adopt & finite
    rows_adopt = adopt.reshape(adopt.shape + (1, ) * (g.dim() - adopt.dim()))
    if native is None:
        loss_out, g_out = loss, _cast(g, out_dtype)
        g_adj = _cast(terms.g_adj.detach(), out_dtype)
    else:
        # g~ for the model: its own g plus the adjustment (so sigma = 0
        # gives it exactly the gradient it gets without GAL).
        loss_out, g_out = native[0], _cast(native[1], out_dtype)
        g_adj = g_out + _cast(terms.adj.detach(), out_dtype)
    grad = torch.where(rows_adopt, g_adj, g_out)
    cos = _per_group(_cosine(g, a), grouped, mean=True)
    return GALOutput(
        grad=grad,
        vanilla_grad=g_out,
        loss=loss_out,
        tentative_loss=terms.tentative.detach(),
        remainder=terms.rem.detach(),
        adopted=adopt,
        nonfinite=~finite,
        cos_sim=cos,
        loss_change=terms.change.detach(),
        scaled_remainder=terms.scaled,
        stats=_step_stats(terms, finite, adopt, cos, probe))


def _check_loss(loss, loss_shape: tuple, grouped: bool) -> None:
    if not isinstance(loss, Tensor) or tuple(loss.shape) != loss_shape:
        raise ValueError(
            'loss_fn must return ' +
            (f'a ({loss_shape[0]}, ) tensor (one loss per group)'
             if grouped else 'a 0-dim tensor (the scalar loss)') +
            f', got {getattr(loss, "shape", type(loss))}')


_NO_Z = ('loss_fn(z) does not depend on z ({}): pass the loss computed '
         'from the z it is given')


def _task_loss(loss_fn, loss_shape: Optional[tuple], grouped: bool):
    """``z -> (what to differentiate, the loss)``: grouped, the sum of the
    groups' losses (each group's gradient is its own); the shape checked
    unless ``loss_shape`` is None."""

    def task_loss(zz):
        loss = loss_fn(zz)
        if loss_shape is not None:
            _check_loss(loss, loss_shape, grouped)
        loss = _cast(loss, zz.dtype)
        return (loss.sum() if grouped else loss), loss

    return task_loss


class EagerGrads:
    """The eager step's gradients: ``torch.autograd.grad`` behind
    ``torch.func.grad(fn, has_aux=True)``'s contract (functorch's layers
    would double the host time), the adjuster called as a module."""

    @staticmethod
    def grad(fn: Callable) -> Callable:

        def run(x):
            with torch.enable_grad():
                if isinstance(x, dict):  # the adjuster's own parameters
                    out, aux = fn(x)
                    if not out.requires_grad:  # e.g. R = 0 for any step
                        return dict.fromkeys(x), aux
                    grads = torch.autograd.grad(out, list(x.values()),
                                                allow_unused=True)
                    return dict(zip(x, grads)), aux
                leaf = x.detach().requires_grad_(True)
                out, aux = fn(leaf)
                if not out.requires_grad:
                    raise ValueError(_NO_Z.format(
                        'its result has no gradient w.r.t. z'))
                g, = torch.autograd.grad(out, leaf, allow_unused=True)
            if g is None:
                raise ValueError(_NO_Z.format('z is not in its graph'))
            return g, aux

        return run

    @staticmethod
    def call(adjuster: nn.Module, params: Dict[str, Tensor],
             buffers: Dict[str, Tensor], x: Tensor) -> Tensor:
        return adjuster(x)


class FunctionalGrads:
    """The compiled step's: ``torch.func.grad`` and ``functional_call``,
    which ``torch.compile`` traces (it cannot trace autograd.grad)."""

    @staticmethod
    def grad(fn: Callable) -> Callable:
        return torch.func.grad(fn, has_aux=True)

    @staticmethod
    def call(adjuster: nn.Module, params: Dict[str, Tensor],
             buffers: Dict[str, Tensor], x: Tensor) -> Tensor:
        return functional_call(adjuster, (params, buffers), (x, ))


class StepSpec(NamedTuple):
    """A step's checked settings (its graph's constants); ``loss_shape``
    None: checked before the step."""
    sigma: float
    gamma: float
    policy: str
    remainder: str
    grouped: bool
    normalize: str
    objective: str
    out_dtype: torch.dtype
    adj_dtype: torch.dtype
    loss_shape: Optional[tuple]


def run_step(grads, adjuster: nn.Module, params: Dict[str, Tensor],
             buffers: Dict[str, Tensor], z: Tensor,
             z_native: Optional[Tensor], lr, loss_fn, spec: StepSpec,
             initial: Optional[nn.Module] = None,
             initial_params: Optional[Dict[str, Tensor]] = None):
    """The GAL step, written once: eager with ``EagerGrads``, compiled as
    it is with ``FunctionalGrads``. z in the work dtype (``z_native``: in
    the model's, where they differ); ``initial``: the frozen initial
    adjuster, probed for the statistics. Returns (GALOutput, the adjuster's
    gradient per parameter name)."""
    with torch.autocast(device_type=z.device.type, enabled=False):

        task_loss = _task_loss(loss_fn, spec.loss_shape, spec.grouped)
        g, loss = grads.grad(task_loss)(z)
        loss = loss.detach()
        native = None
        if z_native is not None:
            g_n, loss_n = grads.grad(task_loss)(z_native)
            native = (loss_n.detach(), g_n)
        x = _cast(z, spec.adj_dtype)

        def objective(p):
            a = _cast(grads.call(adjuster, p, buffers, x), z.dtype)
            terms = _remainder(z, g, loss, a, loss_fn, lr, spec.sigma,
                               spec.gamma, spec.remainder, spec.grouped,
                               spec.normalize, spec.objective)
            return terms.objective.sum(), (a.detach(), terms)

        if params:
            adj_grads, (a, terms) = grads.grad(objective)(params)
        else:  # no trainable parameters (the noise adjusters)
            adj_grads, (a, terms) = {}, objective(params)[1]
        finite = _finite(terms, lr)
        keep = finite.all() if spec.grouped else finite
        # A masked copy, not a multiply by 0: a NaN must not reach .grad.
        adj_grads = {k: torch.where(keep, v, v.new_zeros(()))
                     for k, v in adj_grads.items() if v is not None}
        probe = None
        if initial is not None:
            a0 = _cast(grads.call(initial, initial_params, buffers, x),
                       z.dtype).detach()
            rem0 = _remainder(z, g, loss, a0, loss_fn, lr, spec.sigma,
                              spec.gamma, spec.remainder, spec.grouped,
                              spec.normalize, spec.objective).rem.detach()
            cos = _cosine(a, a0).mean()
            probe = torch.stack([
                terms.rem.detach().abs().sum(),
                rem0.abs().sum(), cos, torch.ones_like(cos)
            ]).float()
        out = _decide(loss, terms, finite, g, a, spec.policy, spec.grouped,
                      spec.out_dtype, native, probe)
    return out, adj_grads


def loss_and_grad(z0: Tensor, loss_fn, loss_shape: tuple, grouped: bool):
    """``loss_fn(z0)`` and g; ``ValueError`` for a wrong shape or no z."""
    g, loss = EagerGrads.grad(_task_loss(loss_fn, loss_shape, grouped))(z0)
    return loss, g


def prepare_step(z: Tensor, loss_fn, adjuster: nn.Module, lr,
                 sigma: float, gamma: float = 1.0, policy: str = 'le',
                 remainder: str = 'exact', grouped: bool = False,
                 dtype: Optional[torch.dtype] = None,
                 objective: str = 'normalized', normalize: str = 'auto'):
    """``ValueError`` naming the first bad argument of a step; else (spec,
    z in the work dtype, z in the model's dtype or None) for
    :func:`run_step`."""
    check_gal_args(sigma, gamma, policy, remainder, objective, normalize)
    if dtype not in WORK_DTYPES:
        raise ValueError(f'dtype must be one of {WORK_DTYPES}, got '
                         f'{dtype!r}')
    _check_lr(lr)
    if not isinstance(z, Tensor) or not z.is_floating_point():
        raise ValueError('z must be a floating-point tensor (the gradient '
                         'w.r.t. integer features is not defined), got '
                         f'{getattr(z, "dtype", type(z))}')
    dim = getattr(adjuster, 'dim', None)
    if z.dim() < 1 + grouped or z.shape[-1] != dim:
        raise ValueError(f"z's last dimension must equal the adjuster's dim "
                         f'({dim}), got z of shape {tuple(z.shape)}' +
                         (' (grouped: (G, ..., d))' if grouped else ''))
    if dim == 1 and sigma >= 1 and resolve_normalize(normalize,
                                                     dim) == 'row':
        raise ValueError(
            f'sigma must be < 1 when z has a single feature (d = 1) and '
            f"normalize='row', got {sigma!r}: the adjustment is then "
            f'+-sigma*|g| and can cancel the gradient exactly, so training '
            f'stalls')
    loss_shape = tuple(z.shape[:1]) if grouped else ()
    own = native_dtype(z.dtype)
    work = work_dtype(z.dtype, dtype, remainder, loss_fn)
    adj_dtype = next((p.dtype for p in adjuster.parameters()), work)
    spec = StepSpec(float(sigma), float(gamma), policy, remainder, grouped,
                    resolve_normalize(normalize, z.shape[-1]), objective,
                    z.dtype, adj_dtype, loss_shape)
    z0 = _cast(z.detach(), work)
    z_native = _cast(z.detach(), own) if own != work else None
    return spec, z0, z_native


def gal_step(z: Tensor,
             loss_fn: Callable[[Tensor], Tensor],
             adjuster: nn.Module,
             lr: Union[float, Tensor],
             sigma: float,
             gamma: float = 1.0,
             policy: str = 'le',
             remainder: str = 'exact',
             grouped: bool = False,
             dtype: Optional[torch.dtype] = None,
             objective: str = 'normalized',
             normalize: str = 'auto',
             initial: Optional[nn.Module] = None) -> GALOutput:
    """Run one gradient-adjustment step eagerly (:class:`CompiledGALStep`
    compiles the same :func:`run_step`).

    Args:
        z (Tensor): Output features ``(..., d)``, taken as a constant.
        loss_fn (Callable): z -> the scalar z-dependent part of the loss
            (grouped: the ``(G, )`` losses). An
            :class:`~mmgal.core.remainders.ExactLoss` gives R in closed form.
        adjuster (nn.Module): h_phi with ``dim == d``; its ``.grad``
            accumulates the objective's gradient.
        lr (float | Tensor): The model's lr; the tentative step is
            gamma * lr.
        sigma, gamma, policy, remainder, objective, normalize: as
            :class:`~mmgal.core.GALSettings` documents them.
        grouped (bool): z's first dimension indexes G independent problems
            (DETR's decoder layers), each with its own loss, R and choice;
            the adjuster gets the sum of their gradients (none if any group
            is non-finite).
        dtype (torch.dtype, optional): GAL's dtype (:func:`work_dtype`);
            ``grad`` keeps z's.
        initial (nn.Module, optional): The frozen initial adjuster, probed
            for ``stats``.
    """
    spec, z0, z_native = prepare_step(
        z, loss_fn, adjuster, lr, sigma, gamma, policy, remainder, grouped,
        dtype, objective, normalize)
    params = {k: p for k, p in adjuster.named_parameters()
              if p.requires_grad}
    out, grads = run_step(EagerGrads, adjuster, params, {}, z0, z_native,
                          lr, loss_fn, spec, initial,
                          None if initial is None else {})
    add_to_grads([params[k] for k in grads], list(grads.values()))
    return out
