"""The first-order Taylor remainder of common losses, in closed form.

GAL's remainder R = l(z + delta) - l(z) - <dl/dz(z), delta> (delta = z' - z)
is second order in the step, while l is of order one: as the difference of
two losses it cancels, in float32 below the loss's rounding on most tasks
(``docs/results/remainder_precision.md``). For the losses GAL meets most,
R has a form without that difference, accurate to a few units in the last
place of R itself, in any float dtype:

- softmax cross-entropy with any targets that sum to one per row (hard
  labels, label smoothing, Mixup/CutMix scores), any class and sample
  weights: each row's loss is c * logsumexp(z) plus a linear term, so
  ``R_row = c * log E_p[exp(u)]`` with p = softmax(z) and
  u = delta - <p, delta> (the targets cancel);
- sigmoid binary cross-entropy (multi-label, ``pos_weight``): each element
  is c * softplus(z) plus a linear term;
- squared error: ``R = c * delta^2``;
- absolute error: ``R = c * (|r + delta| - sign(r) * (r + delta))`` at the
  residual r = z - target, zero unless the residual changes sign.

:class:`ExactLoss` carries a loss together with its remainder; ``gal_step``
uses the remainder instead of evaluating l(z') when its loss_fn is one.
Plain PyTorch, no framework imports, no host reads.
"""
from typing import Callable, Optional

import torch
from torch import Tensor

# |u| below this: the power series (16 terms: < 1e-19 relative truncation
# error at the cut-off); above it: expm1(u) - u loses < 3 bits.
_SERIES_CUT = 0.5
_SERIES_TERMS = 16
# |q| below this: the series of q - log1p(q) (16 terms); above it the direct
# difference loses < 5 bits.
_LOG_CUT = 0.1


def expm1mx(u: Tensor) -> Tensor:
    """``exp(u) - 1 - u`` (>= 0) without cancellation, for any u."""
    small = u.abs() < _SERIES_CUT
    us = torch.where(small, u, torch.zeros_like(u))
    # u^2/2 * (1 + u/3 * (1 + u/4 * (... (1 + u/(n+2)))))
    acc = torch.ones_like(us)
    for k in range(_SERIES_TERMS + 1, 2, -1):
        acc = 1 + us / k * acc
    series = 0.5 * us * us * acc
    direct = torch.expm1(u) - u
    return torch.where(small, series, direct)


def mlog1pmx(q: Tensor) -> Tensor:
    """``q - log1p(q)`` (>= 0, q > -1) without cancellation."""
    small = q.abs() < _LOG_CUT
    qs = torch.where(small, q, torch.zeros_like(q))
    # sum_{k>=2} (-1)^k q^k / k = q^2 * (1/2 - q/3 + q^2/4 - ...)
    acc = torch.zeros_like(qs)
    for k in range(_SERIES_TERMS + 1, 1, -1):
        acc = (1.0 / k) - qs * acc
    series = qs * qs * acc
    direct = q - torch.log1p(q)
    return torch.where(small, series, direct)


def softmax_remainder(z: Tensor, delta: Tensor, coef: Tensor) -> Tensor:
    """sum_rows coef * R_row for c * logsumexp(z_row) plus anything linear.

    Args:
        z (Tensor): Logits (..., C).
        delta (Tensor): The step z' - z, shaped like z.
        coef (Tensor): Each row's c, shape ``z.shape[:-1]`` (or
            broadcastable to it), e.g. the loss weight over the batch size
            times the row's class and sample weights.

    Returns:
        Tensor: ``(coef * log E_p[exp(delta - E_p delta)]).sum()`` over the
        rows; each row's term is >= 0.
    """
    p = torch.softmax(z, dim=-1)
    u = delta - (p * delta).sum(-1, keepdim=True)
    # E_p[exp(u)] = 1 + E_p[u] + E_p[expm1mx(u)] and E_p[u] = 0 exactly.
    return (coef * torch.log1p((p * expm1mx(u)).sum(-1))).sum()


def softplus_remainder(z: Tensor, delta: Tensor, coef: Tensor) -> Tensor:
    """sum coef * (softplus(z + delta) - softplus(z) - sigmoid(z) * delta),
    elementwise: the remainder of sigmoid binary cross-entropy (each element
    c * softplus(z) plus a linear term)."""
    # softplus(z) = z + softplus(-z): the remainder at (z, delta) equals the
    # one at (-z, -delta), so take the side where sigmoid(z) <= 1/2.
    flip = z > 0
    zz = torch.where(flip, -z, z)
    dd = torch.where(flip, -delta, delta)
    s = torch.sigmoid(zz)
    # log1p(q) - s*delta with q = s*expm1(delta)
    #   = s*expm1mx(delta) - (q - log1p(q)), both >= 0, the second <= half
    #   the first.
    q = s * torch.expm1(dd)
    return (coef * (s * expm1mx(dd) - mlog1pmx(q))).sum()


def square_remainder(delta: Tensor, coef) -> Tensor:
    """sum coef * delta^2: the remainder of c * (z - target)^2."""
    return (coef * delta * delta).sum()


def abs_remainder(residual: Tensor, delta: Tensor, coef) -> Tensor:
    """sum coef * (|r + delta| - |r| - sign(r) * delta) at the residual
    r = z - target: zero where r + delta keeps r's sign, 2|r + delta| where
    it flips, |delta| where r = 0 (autograd's gradient of |x| at 0 is 0)."""
    x = residual + delta
    return (coef * (x.abs() - torch.sign(residual) * x)).sum()


class ExactLoss:
    """A task loss with its first-order Taylor remainder in closed form.

    :func:`mmgal.core.gal_step` calls it as its ``loss_fn`` (l(z), and its
    gradient g by autograd) and, with ``remainder='exact'`` (the default),
    takes R from :meth:`remainder` instead of evaluating l(z') and
    subtracting; l' - l, the update policy's test, is then
    ``R - eta * <g~, g>``.

    Examples:
        >>> import torch.nn.functional as F
        >>> y = torch.randint(0, 10, (32, ))
        >>> loss = ExactLoss(
        >>>     lambda z: F.cross_entropy(z, y),
        >>>     lambda z, d: softmax_remainder(z, d, 1.0 / z.shape[0]))

    Args:
        loss_fn (Callable): ``z -> loss``, as gal_step's ``loss_fn``.
        remainder_fn (Callable): ``(z, delta) -> R``, shaped like the loss,
            computed without the difference of two losses.
    """

    def __init__(self, loss_fn: Callable[[Tensor], Tensor],
                 remainder_fn: Callable[[Tensor, Tensor], Tensor]):
        self.loss_fn = loss_fn
        self.remainder_fn = remainder_fn

    def __call__(self, z: Tensor) -> Tensor:
        return self.loss_fn(z)

    def remainder(self, z: Tensor, delta: Tensor) -> Tensor:
        return self.remainder_fn(z, delta)


def has_remainder(loss_fn) -> bool:
    """Whether ``loss_fn`` gives its remainder in closed form."""
    return callable(getattr(loss_fn, 'remainder', None))


def cross_entropy_loss(target: Tensor,
                       weight: Optional[Tensor] = None) -> ExactLoss:
    """Mean softmax cross-entropy over the rows of (B, C) logits, as
    ``F.cross_entropy`` with hard labels (B, ) or probabilities (B, C),
    with its closed-form remainder (the targets do not enter it).

    Args:
        target (Tensor): Class indices or per-row probabilities.
        weight (Tensor, optional): Class weights (C, ), as F.cross_entropy's.
    """
    import torch.nn.functional as F

    def loss_fn(z: Tensor) -> Tensor:
        w = None if weight is None else weight.to(z.dtype)
        t = target if not target.is_floating_point() else target.to(z.dtype)
        return F.cross_entropy(z, t, weight=w)

    def remainder_fn(z: Tensor, delta: Tensor) -> Tensor:
        # Each row: c * logsumexp(z_row) - <linear, z_row>; c is the row's
        # weight over F.cross_entropy's normaliser.
        if weight is None:
            row = z.new_ones(z.shape[:-1])
        elif target.is_floating_point():
            row = (target.to(z.dtype) * weight.to(z.dtype)).sum(-1)
        else:
            row = weight.to(z.dtype)[target]
        if target.is_floating_point() and weight is not None:
            norm = z.new_tensor(float(z.shape[0]))
        else:
            norm = row.sum()
        return softmax_remainder(z, delta, row / norm)

    return ExactLoss(loss_fn, remainder_fn)


def mse_loss(target: Tensor) -> ExactLoss:
    """``F.mse_loss(z, target)`` (mean) with its remainder mean(delta^2)."""
    import torch.nn.functional as F

    return ExactLoss(
        lambda z: F.mse_loss(z, target.to(z.dtype)),
        lambda z, delta: square_remainder(delta, 1.0 / delta.numel()))
