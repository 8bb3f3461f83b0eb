"""One GAL step on output features z, in plain PyTorch.

Given z (treated as a constant) and ``loss_fn`` (the z-dependent part of
the task loss), this computes the vanilla gradient g = dl/dz, the adjusted
gradient g~ = g + sigma * a / |a| * |g| with a = h_phi(z) (Eq. 4-5), the
tentative loss l' = l(z - gamma * lr * g~), the first-order Taylor
remainder R = l' - l + gamma * lr * <g~, g>, accumulates d|R|/dphi into the
adjuster's ``.grad`` and picks g~ or g by the update policy (Algorithm 1,
lines 7-10).

Everything is tensor maths: no host copies of tensor values and no Python
branch on a tensor value, so the step adds no host-device synchronisation.
"""
import math
import numbers
from typing import Callable, NamedTuple, Optional, Union

import torch
from torch import Tensor, nn

POLICIES = ('le', 'lt', 'always', 'never')
REMAINDERS = ('taylor', 'reference')
_EPS = 1e-12


class GALOutput(NamedTuple):
    """What :func:`gal_step` returns. All scalars are 0-dim tensors.

    Attributes:
        grad: The gradient to back-propagate into the model (g~ when
            adopted, else g), shaped and typed like z.
        vanilla_grad: g = dl/dz, in z's dtype.
        loss: l(z), in the working dtype (fp32, or fp64 for fp64 z).
        tentative_loss: l(z') with z' = z - gamma * lr * g~.
        remainder: R (signed); the adjuster minimises |R|.
        adopted: bool, whether ``grad`` is g~.
        nonfinite: bool, True when g, the adjustment, l' or R was not
            finite; then ``grad`` is g and the adjuster got no gradient.
        cos_sim: mean row-wise cosine similarity between g and the
            adjustment.
    """
    grad: Tensor
    vanilla_grad: Tensor
    loss: Tensor
    tentative_loss: Tensor
    remainder: Tensor
    adopted: Tensor
    nonfinite: Tensor
    cos_sim: Tensor


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


def check_gal_args(sigma: float, gamma: float, policy: str,
                   remainder: str) -> None:
    """Raise ``ValueError`` naming the first bad GAL setting."""
    check_real('sigma', sigma)
    check_real('gamma', gamma, strict=True)
    if policy not in POLICIES:
        raise ValueError(f'policy must be one of {POLICIES} (Algorithm 1: '
                         f"'le' line 7 with <=, 'lt' line 7 with <, "
                         f"'always' line 8, 'never' line 10), got "
                         f'{policy!r}')
    if remainder not in REMAINDERS:
        raise ValueError(f'remainder must be one of {REMAINDERS}, got '
                         f'{remainder!r}')


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


# The work dtypes a step takes (None: z's, at least float32) and their
# names in settings.
WORK_DTYPE_NAMES = (None, 'float32', 'float64')
WORK_DTYPES = tuple(n and getattr(torch, n) for n in WORK_DTYPE_NAMES)


def dtype_from_name(field: str, name: Optional[str]) -> Optional[torch.dtype]:
    """The work dtype a setting names (one of ``WORK_DTYPE_NAMES``), or
    ``ValueError`` naming ``field``."""
    if name not in WORK_DTYPE_NAMES:
        raise ValueError(f'{field} must be one of {WORK_DTYPE_NAMES}, got '
                         f'{name!r}')
    return WORK_DTYPES[WORK_DTYPE_NAMES.index(name)]


def work_dtype(z_dtype: torch.dtype, dtype=None) -> torch.dtype:
    """The dtype GAL's maths run in: ``dtype`` when given, else z's dtype
    and at least float32 (fp16/bf16 features neither overflow nor lose the
    small tentative differences)."""
    return dtype or torch.promote_types(z_dtype, torch.float32)


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


def _accumulate(params: list, grads: tuple, keep: Tensor) -> None:
    """Add ``grads`` to the parameters' ``.grad`` where ``keep`` (a bool
    tensor) is true, else add nothing: one masked copy over all of them
    (a NaN gradient must not reach ``.grad``, so no multiply-by-0)."""
    pairs = [(p, gp) for p, gp in zip(params, grads) if gp is not None]
    if not pairs:
        return
    flat = torch.cat([gp.reshape(-1) for _, gp in pairs])
    flat = torch.where(keep, flat, flat.new_zeros(()))
    parts = flat.split([p.numel() for p, _ in pairs])
    add_to_grads([p for p, _ in pairs],
                 [part.view_as(p) for (p, _), part in zip(pairs, parts)])


def _rownorm(x: Tensor) -> Tensor:
    return torch.linalg.vector_norm(x, dim=-1, keepdim=True)


def _per_group(x: Tensor, grouped: bool, mean: bool = False) -> Tensor:
    """Sum (or mean) of per-row values x over each group's rows (over all
    rows when not grouped)."""
    if grouped:
        x = x.flatten(1)
        return x.mean(1) if mean else x.sum(1)
    return x.mean() if mean else x.sum()


def _remainder(zc: Tensor, g: Tensor, loss: Tensor, a: Tensor, loss_fn,
               lr, sigma: float, gamma: float, remainder: str,
               grouped: bool):
    """Eq. 4-5 and the remainder: (g~, l', R), differentiable w.r.t. the
    adjuster's output a, and the row norms of g and a (for the cosine)."""
    g_norm = _rownorm(g)
    a_norm = _rownorm(a)
    g_adj = g + a * (sigma * g_norm / a_norm.clamp_min(_EPS))
    eta = lr * gamma
    tentative = loss_fn(zc - eta * g_adj)
    first = _per_group((g_adj * g).sum(-1), grouped,
                       mean=remainder == 'reference')
    rem = tentative.to(loss.dtype) - loss + eta * first
    return g_adj, tentative, rem, g_norm, a_norm


def _finite(rem: Tensor, lr) -> Tensor:
    # R is finite exactly when g, the adjustment and l' all are: a NaN or
    # inf in any row of g or of the adjustment reaches <g~, g> (inf times
    # 0 or minus inf is NaN), and l' enters R directly.
    finite = torch.isfinite(rem)
    if isinstance(lr, Tensor):
        # A device tensor is not read up front (that would sync): a NaN,
        # inf or negative lr makes the step non-finite instead (vanilla
        # gradient, counted).
        finite = finite & torch.isfinite(lr) & (lr >= 0)
    return finite


def _decide(loss: Tensor, tentative: Tensor, rem: Tensor, finite: Tensor,
            g: Tensor, g_adj: Tensor, a: Tensor, g_norm: Tensor,
            a_norm: Tensor, policy: str, grouped: bool,
            out_dtype: torch.dtype) -> GALOutput:
    """Algorithm 1, lines 7-10, per group, and the logged cosine."""
    if policy == 'le':
        adopt = tentative <= loss
    elif policy == 'lt':
        adopt = tentative < loss
    else:
        adopt = torch.full(loss.shape, policy == 'always', device=g.device)
    adopt = adopt & finite
    rows_adopt = adopt.reshape(adopt.shape + (1, ) * (g.dim() - adopt.dim()))
    grad = torch.where(rows_adopt, g_adj, g)
    cos = (g * a).sum(-1) / (g_norm * a_norm).squeeze(-1).clamp_min(_EPS)
    return GALOutput(
        grad=_cast(grad, out_dtype),
        vanilla_grad=_cast(g, out_dtype),
        loss=loss,
        tentative_loss=tentative,
        remainder=rem,
        adopted=adopt,
        nonfinite=~finite,
        cos_sim=_per_group(cos, grouped, mean=True))


def loss_and_grad(z0: Tensor, loss_fn, loss_shape: tuple, grouped: bool):
    """``loss_fn(z0)`` and its gradient g w.r.t. ``z0`` (which requires
    grad), or ``ValueError`` when the loss has the wrong shape or does not
    depend on z."""
    loss = loss_fn(z0)
    if not isinstance(loss, Tensor) or tuple(loss.shape) != loss_shape:
        raise ValueError(
            'loss_fn must return ' +
            (f'a ({loss_shape[0]}, ) tensor (one loss per group)'
             if grouped else 'a 0-dim tensor (the scalar loss)') +
            f', got {getattr(loss, "shape", type(loss))}')
    if not loss.requires_grad:
        raise ValueError('loss_fn(z) does not depend on z (its result has '
                         'no gradient w.r.t. z): pass the loss computed from '
                         'the z it is given')
    loss = _cast(loss, z0.dtype)
    # Groups do not share rows, so the gradient of the sum is each group's
    # own gradient.
    g, = torch.autograd.grad(loss.sum() if grouped else loss, z0,
                             allow_unused=True)
    if g is None:
        raise ValueError('loss_fn(z) does not depend on z (z is not in its '
                         'graph): pass the loss computed from the z it is '
                         'given')
    return loss, g


def check_step_args(z: Tensor, adjuster: nn.Module, lr, sigma: float,
                    gamma: float, policy: str, remainder: str,
                    grouped: bool, dtype=None) -> tuple:
    """``ValueError`` naming the first bad argument of a GAL step; returns
    the shape the loss must have (``(G, )`` grouped, else ``()``)."""
    check_gal_args(sigma, gamma, policy, remainder)
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
    if dim == 1 and sigma >= 1:
        raise ValueError(
            f'sigma must be < 1 when z has a single feature (d = 1), got '
            f'{sigma!r}: with d = 1 the adjustment is +-sigma*|g| and can '
            f'cancel the gradient exactly, so training stalls')
    return tuple(z.shape[:1]) if grouped else ()


def gal_step(z: Tensor,
             loss_fn: Callable[[Tensor], Tensor],
             adjuster: nn.Module,
             lr: Union[float, Tensor],
             sigma: float,
             gamma: float = 1.0,
             policy: str = 'le',
             remainder: str = 'taylor',
             grouped: bool = False,
             dtype: Optional[torch.dtype] = None) -> GALOutput:
    """Run one gradient-adjustment step.

    Args:
        z (Tensor): Output features, shape ``(..., d)``; detached here, so
            it is a constant. Row norms are taken over the last dimension.
        loss_fn (Callable): Maps a tensor shaped like z to the scalar
            z-dependent part of the task loss (with ``grouped``: to the
            ``(G, )`` vector of each group's loss). Called twice (at z and
            z').
        adjuster (nn.Module): h_phi with attribute ``dim == d``. Its
            parameters' ``.grad`` receive d|R|/dphi (accumulated).
        lr (float | Tensor): The model's learning rate eta; the tentative
            step uses gamma * lr.
        sigma (float): Relative strength of the adjustment (>= 0).
        gamma (float): Scale of the tentative learning rate (> 0).
        policy (str): ``'le'``, ``'lt'``, ``'always'`` or ``'never'``.
        remainder (str): ``'taylor'`` (exact first-order remainder) or
            ``'reference'`` (the authors' release: the first-order term is
            averaged over the rows of z instead of summed).
        grouped (bool): z's first dimension indexes G independent GAL
            problems (e.g. the decoder layers of DETR, shape (G, ..., d))
            solved in one step: each group has its own loss, remainder and
            adoption decision, and the adjuster's gradient is the sum of
            the groups' d|R_g|/dphi, as G separate steps would give (only
            a non-finite group then withholds every group's adjuster
            gradient, not only its own). Every field of the output is then
            per group, shape (G, ).

        dtype (torch.dtype, optional): The dtype of GAL's maths: the loss
            at z and z', the remainder and the choice (the adjuster keeps
            its own). Defaults to None: z's dtype, at least float32.
            ``torch.float64`` resolves the remainder where float32 cannot:
            R is second order in lr and, as a difference of two losses,
            can fall below float32's rounding of the loss
            (``benchmarks/remainder_precision.py``). ``grad`` keeps z's
            dtype either way.

    Returns:
        GALOutput: see its docstring.
    """
    loss_shape = check_step_args(z, adjuster, lr, sigma, gamma, policy,
                                 remainder, grouped, dtype)
    out_dtype = z.dtype
    # Outside autocast, in work_dtype (see work_dtype()).
    work = work_dtype(z.dtype, dtype)
    adj_dtype = next((p.dtype for p in adjuster.parameters()), work)
    with torch.autocast(device_type=z.device.type, enabled=False), \
            torch.enable_grad():
        z0 = _cast(z.detach(), work).requires_grad_(True)
        loss, g = loss_and_grad(z0, loss_fn, loss_shape, grouped)
        zc = z0.detach()
        loss = loss.detach()
        a = _cast(adjuster(_cast(zc, adj_dtype)), work)
        g_adj, tentative, rem, g_norm, a_norm = _remainder(
            zc, g, loss, a, loss_fn, lr, sigma, gamma, remainder, grouped)
        finite = _finite(rem, lr)
        params = [p for p in adjuster.parameters() if p.requires_grad]
        if params and rem.requires_grad:
            objective = rem.abs().sum() if grouped else rem.abs()
            grads = torch.autograd.grad(objective, params,
                                        allow_unused=True)
            _accumulate(params, grads, finite.all() if grouped else finite)
    return _decide(loss, _cast(tentative.detach(), work), rem.detach(),
                   finite, g, g_adj.detach(), a.detach(), g_norm,
                   a_norm.detach(), policy, grouped, out_dtype)
