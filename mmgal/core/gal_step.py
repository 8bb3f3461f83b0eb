"""One GAL step on output features z, in plain PyTorch.

Given z (treated as a constant) and ``loss_fn`` (the z-dependent part of
the task loss), this computes the vanilla gradient g = dl/dz, the adjusted
gradient g~ = g + sigma * a / |a| * |g| with a = h_phi(z) (Eq. 4-5), the
tentative loss l' = l(z - gamma * lr * g~), the first-order Taylor
remainder R = l' - l + gamma * lr * <g~, g>, accumulates the gradient of
the adjuster's objective (|R|, by default scaled by a detached
1 / (eta |g~|)^2) into the adjuster's ``.grad`` and picks g~ or g by the
update policy (Algorithm 1, lines 7-10).

R is second order in the step and l is of order one, so R as the difference
l' - l + ... cancels (in float32 below the loss's rounding on most tasks).
By default (``remainder='exact'``) R comes from the loss's closed form when
``loss_fn`` is an :class:`~mmgal.core.remainders.ExactLoss`, and otherwise
from the difference evaluated in float64; l' - l, the policy's test, is
``R - eta <g~, g>`` from the same terms.

Everything is tensor maths: no host copies of tensor values and no Python
branch on a tensor value, so the step adds no host-device synchronisation.
"""
import math
import numbers
from typing import Callable, Dict, NamedTuple, Optional, Union

import torch
from torch import Tensor, nn
from torch.func import functional_call

from .remainders import has_remainder

POLICIES = ('le', 'lt', 'always', 'never')
# 'exact': closed form (ExactLoss) or the difference in float64 (unless
# the step's dtype says otherwise); 'reference': the authors' release (the
# difference in the work dtype, the first-order term averaged over rows).
REMAINDERS = ('exact', 'reference')
# The adjuster's objective: 'normalized' |R| / (eta |g~|)^2 with a detached
# denominator (the same minimiser per step, a gradient of order one);
# 'abs': |R| (the paper; its gradient is O(eta^2)).
OBJECTIVES = ('normalized', 'abs')
# Eq. 4's norms: 'row' (the paper: per row of z), 'batch' (one norm over
# all rows, so a one-feature adjuster gets a gradient), 'auto' (row for
# d > 1, batch for d = 1).
NORMALIZATIONS = ('auto', 'row', 'batch')
_EPS = 1e-12
# GALOutput.stats, in order: sums over the step's finite groups of |R|,
# |R| / (eta |g~|)^2, the cosine of g and the adjustment and l - l'; the
# adopted and the non-finite groups, the groups; with a probe (an initial
# adjuster given to the step), |R| with the current and with the initial
# adjuster, the mean cosine of their adjustments and 1 (else zeros).
STAT_NAMES = ('abs_remainder', 'remainder', 'adopt_rate', 'cos_sim',
              'nonfinite', 'tentative_gain', 'steps', 'probe_learned',
              'probe_initial', 'cos_init', 'probes')


class GALOutput(NamedTuple):
    """What :func:`gal_step` returns. All scalars are 0-dim tensors.

    Attributes:
        grad: The gradient to back-propagate into the model (g~ when
            adopted, else g), shaped and typed like z.
        vanilla_grad: g = dl/dz, in z's dtype, computed as without GAL.
        loss: l(z), in z's dtype (at least float32), as without GAL.
        tentative_loss: l(z') with z' = z - gamma * lr * g~, in the work
            dtype (with an exact remainder: l + (l' - l), rounded once).
        remainder: R (signed); the adjuster minimises |R|.
        adopted: bool, whether ``grad`` is g~.
        nonfinite: bool, True when g, the adjustment, l' or R was not
            finite; then ``grad`` is g and the adjuster got no gradient.
        cos_sim: mean row-wise cosine similarity between g and the
            adjustment.
        loss_change: l' - l, what the policy tests (with an exact
            remainder: R - eta <g~, g>, not a difference of two losses).
        scaled_remainder: |R| / (eta |g~|)^2 (0 where the step is 0): the
            curvature along the step, of order one whatever eta.
        stats: float32 vector of this step's sums named by
            :data:`STAT_NAMES` (over its groups), for logging: the front
            ends add these vectors up on the device between reads.
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
    """``value`` as a float, or ``ValueError`` naming ``name`` unless it is
    a finite real number (Python or NumPy; not bool) ``>= low`` (``> low``
    with ``strict``). NaN and inf are refused, so no setting can switch GAL
    off by failing every later comparison."""
    op = '>' if strict else '>='
    if not is_real(value) or not math.isfinite(value) or (
            value <= low if strict else value < low):
        raise ValueError(f'{name} must be a finite number {op} {low:g}, got '
                         f'{value!r}')
    return float(value)


def check_count(name: str, value) -> int:
    """``value`` as an int, or ``ValueError`` naming ``name`` unless it is
    an integer (Python or NumPy; not bool) >= 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) \
            or value < 1:
        raise ValueError(f'{name} must be an int >= 1, got {value!r}')
    return int(value)


def check_choice(name: str, value, choices: tuple, what: str = '') -> None:
    """``ValueError`` naming ``name``, the allowed values and ``value``
    unless it is one of ``choices``."""
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
    """'row' or 'batch' for outputs of ``dim`` features ('auto': Eq. 4's
    rows where d > 1; the batch for d = 1, where a/|a| per row is sign(a)
    and gives a learned adjuster no gradient)."""
    if normalize == 'auto':
        return 'row' if dim > 1 else 'batch'
    return normalize


def is_real(x) -> bool:
    """A real number (int, float, NumPy scalar), not a bool."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _check_lr(lr) -> None:
    """A Python or NumPy number, or a CPU tensor, is checked here (no device
    sync); a device tensor's value is guarded inside the step instead."""
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
    """The dtype of the model's own loss and gradient: z's, at least
    float32 (fp16/bf16 logits' losses run in float32 under autocast)."""
    return torch.promote_types(z_dtype, torch.float32)


def work_dtype(z_dtype: torch.dtype, dtype=None, remainder: str = 'reference',
               loss_fn=None) -> torch.dtype:
    """The dtype GAL's maths run in: ``dtype`` when given; float64 for an
    exact remainder of a loss without a closed form (R is then a difference
    of two losses, which float32 cannot resolve); else z's dtype and at
    least float32 (fp16/bf16 features neither overflow nor lose the small
    tentative differences)."""
    if dtype is not None:
        return dtype
    if remainder == 'exact' and not has_remainder(loss_fn):
        return torch.float64
    return native_dtype(z_dtype)


def _cast(x: Tensor, dtype: torch.dtype) -> Tensor:
    return x if x.dtype == dtype else x.to(dtype)


def add_to_grads(params: list, grads: list) -> None:
    """Accumulate ``grads`` into the parameters' ``.grad`` (one foreach
    add); a parameter without a gradient takes its new one as it is."""
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
    """Eq. 4's norm of x, broadcastable to x: per row, or one over all rows
    (of each group when grouped)."""
    if normalize == 'row':
        return _rownorm(x)
    if grouped:
        dims = tuple(range(1, x.dim()))
        return torch.linalg.vector_norm(x, dim=dims, keepdim=True)
    return torch.linalg.vector_norm(x).reshape((1, ) * x.dim())


def _per_group(x: Tensor, grouped: bool, mean: bool = False) -> Tensor:
    """Sum (or mean) of per-row values x over each group's rows (over all
    rows when not grouped)."""
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
    scaled = rem.detach().abs() / step2.clamp_min(torch.finfo(
        step2.dtype).tiny)
    if objective == 'normalized':
        obj = rem.abs() / step2.clamp_min(torch.finfo(step2.dtype).tiny)
    else:
        obj = rem.abs()
    return _Terms(adj, g_adj, tentative, rem, change, obj, scaled)


def _finite(terms: _Terms, lr) -> Tensor:
    # R and l' - l are finite exactly when g, the adjustment and l' (or the
    # closed form) all are: a NaN or inf in any row of g or of the
    # adjustment reaches <g~, g> (inf times 0 or minus inf is NaN).
    finite = torch.isfinite(terms.rem) & torch.isfinite(terms.change)
    if isinstance(lr, Tensor):
        # A device tensor is not read up front (that would sync): a NaN,
        # inf or negative lr makes the step non-finite instead (vanilla
        # gradient, counted).
        finite = finite & torch.isfinite(lr) & (lr >= 0)
    return finite


def _unit_rows(x: Tensor) -> Tensor:
    """x's rows scaled to unit length, through its largest entry first:
    |x|^2 (and |g| * |a|) can overflow float32 where the direction is
    fine."""
    tiny = torch.finfo(x.dtype).tiny
    x = x / x.abs().amax(-1, keepdim=True).clamp_min(tiny)
    return x / _rownorm(x).clamp_min(_EPS)


def _cosine(g: Tensor, a: Tensor) -> Tensor:
    """Row-wise cosine of g and a, overflow-free (see _unit_rows)."""
    return (_unit_rows(g) * _unit_rows(a)).sum(-1)


def _step_stats(terms: _Terms, finite: Tensor, adopt: Tensor,
                cos: Tensor, probe: Optional[Tensor]) -> Tensor:
    """GALOutput.stats (see :data:`STAT_NAMES`): non-finite groups add 0
    to the sums of |R|, cos and l - l'."""
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
    """Algorithm 1, lines 7-10, per group (on l' - l), the logged cosine
    and the step's statistics. ``native``: (loss, g) in the output's own
    dtype where GAL's maths ran in another; the model gets that g and logs
    that loss, as without GAL."""
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
    """``z -> (what to differentiate, the loss)`` in z's dtype: the sum of
    the groups' losses (groups do not share rows, so its gradient is each
    group's own), the loss's shape checked unless ``loss_shape`` is None."""

    def task_loss(zz):
        loss = loss_fn(zz)
        if loss_shape is not None:
            _check_loss(loss, loss_shape, grouped)
        loss = _cast(loss, zz.dtype)
        return (loss.sum() if grouped else loss), loss

    return task_loss


class EagerGrads:
    """How the eager step takes its two gradients: ``torch.autograd.grad``
    behind ``torch.func.grad``'s contract (``grad(fn)(x)`` returns the
    gradient of ``fn(x)[0]`` w.r.t. x, and ``fn(x)[1]``), and the adjuster
    called as the module it is. One backward each: functorch's transform
    would dispatch every operator through its own layers, at twice the
    host time."""

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
    """How the compiled step takes them: ``torch.func.grad`` and the
    adjuster as a function of its parameters, which ``torch.compile``
    traces into one graph (it cannot trace ``torch.autograd.grad``)."""

    @staticmethod
    def grad(fn: Callable) -> Callable:
        return torch.func.grad(fn, has_aux=True)

    @staticmethod
    def call(adjuster: nn.Module, params: Dict[str, Tensor],
             buffers: Dict[str, Tensor], x: Tensor) -> Tensor:
        return functional_call(adjuster, (params, buffers), (x, ))


class StepSpec(NamedTuple):
    """A step's settings, resolved and checked (constants of its graph).
    ``loss_shape``: the shape ``loss_fn`` must return, checked in the step
    (None: checked before it, as the compiled step does once per shape)."""
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
    """The GAL step, written once: eagerly with ``grads=EagerGrads``, and
    as it is under ``torch.compile`` with ``FunctionalGrads``.

    z is the constant output features in the work dtype (``z_native``: in
    the model's own dtype where that differs). g and l at z (Eq. 1), the
    adjuster's output at z, Eq. 4-5, R and l' - l (:func:`_remainder`),
    the adjuster's gradient (zero for a non-finite step), Algorithm 1's
    choice and the statistics. ``initial``: a frozen copy of the adjuster
    at its initial weights (a probe on logging iterations: its |R| on this
    batch and the cosine of the two adjustments join the statistics).

    Returns (GALOutput, the adjuster's gradient per parameter name).
    """
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
    """``loss_fn(z0)`` and its gradient g w.r.t. ``z0``, or ``ValueError``
    when the loss has the wrong shape or does not depend on z."""
    g, loss = EagerGrads.grad(_task_loss(loss_fn, loss_shape, grouped))(z0)
    return loss, g


def check_step_args(z: Tensor, adjuster: nn.Module, lr, sigma: float,
                    gamma: float, policy: str, remainder: str,
                    grouped: bool, dtype=None, objective: str = 'normalized',
                    normalize: str = 'auto') -> tuple:
    """``ValueError`` naming the first bad argument of a GAL step; returns
    the shape the loss must have (``(G, )`` grouped, else ``()``)."""
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
    return tuple(z.shape[:1]) if grouped else ()


def prepare_step(z: Tensor, loss_fn, adjuster: nn.Module, lr,
                 sigma: float, gamma: float = 1.0, policy: str = 'le',
                 remainder: str = 'exact', grouped: bool = False,
                 dtype: Optional[torch.dtype] = None,
                 objective: str = 'normalized', normalize: str = 'auto'):
    """Check a step's arguments and resolve what :func:`run_step` takes:
    (spec, z in the work dtype, z in the model's dtype or None). Outside
    autocast, the model's loss and gradient are in z's dtype, at least
    float32 (as without GAL); GAL's maths in :func:`work_dtype`."""
    loss_shape = check_step_args(z, adjuster, lr, sigma, gamma, policy,
                                 remainder, grouped, dtype, objective,
                                 normalize)
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
    """Run one gradient-adjustment step (eagerly; :class:`CompiledGALStep`
    runs the same :func:`run_step` as one compiled graph).

    Args:
        z (Tensor): Output features, shape ``(..., d)``; detached here, so
            it is a constant. Row norms are taken over the last dimension.
        loss_fn (Callable): Maps a tensor shaped like z to the scalar
            z-dependent part of the task loss (with ``grouped``: to the
            ``(G, )`` vector of each group's loss). An
            :class:`~mmgal.core.remainders.ExactLoss` also gives its
            remainder in closed form, which ``remainder='exact'`` uses.
        adjuster (nn.Module): h_phi with attribute ``dim == d``. Its
            parameters' ``.grad`` receive the objective's gradient
            (accumulated).
        lr (float | Tensor): The model's learning rate eta; the tentative
            step uses gamma * lr.
        sigma, gamma, policy, remainder, objective, normalize: GAL's
            settings, as :class:`~mmgal.core.GALSettings` documents them
            (``remainder='exact'`` with a plain loss: the difference of the
            losses in float64, or in ``dtype`` when given).
        grouped (bool): z's first dimension indexes G independent GAL
            problems (e.g. the decoder layers of DETR, shape (G, ..., d))
            solved in one step: each group has its own loss, remainder and
            adoption decision, and the adjuster's gradient is the sum of
            the groups' objective gradients, as G separate steps would give
            (only a non-finite group then withholds every group's adjuster
            gradient, not only its own). Every field of the output is then
            per group, shape (G, ).
        dtype (torch.dtype, optional): The dtype of GAL's maths: the loss
            at z and z', the remainder and the choice (the adjuster keeps
            its own). Defaults to None: float64 for an exact remainder
            without a closed form, else z's dtype, at least float32.
            ``grad`` keeps z's dtype either way.
        initial (nn.Module, optional): The adjuster at its initial weights
            (frozen): probes this batch's |R| with it (``stats``).

    Returns:
        GALOutput: see its docstring.
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
