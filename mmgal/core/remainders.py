"""The first-order Taylor remainder of common losses, in closed form.

R = l(z + delta) - l(z) - <dl/dz, delta> is second order while l is of
order one, so as a difference of losses it cancels in float32. Without
that difference, to a few ulps of R in any dtype:

- softmax cross-entropy, any targets summing to one per row and any
  weights: ``R_row = c * log E_p[exp(u)]``, p = softmax(z),
  u = delta - <p, delta> (the targets cancel);
- sigmoid binary cross-entropy: c * softplus(z) plus a linear term, per
  element;
- squared error: ``c * delta^2``; absolute error at the residual r:
  ``c * (|r + delta| - sign(r) * (r + delta))``.

:class:`ExactLoss` carries a loss with its remainder. Plain PyTorch.
"""
from typing import Callable, Optional

import torch
from torch import Tensor

# Below these |u| / |q|: 16-term power series (truncation < 1e-19); above:
# the direct differences lose < 3 / < 5 bits.
_SERIES_CUT = 0.5
_SERIES_TERMS = 16
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
    """``sum_rows coef * log E_p[exp(delta - E_p delta)]``: R of
    c * logsumexp(z_row) plus anything linear (logits (..., C); ``coef``
    each row's c, broadcastable to ``z.shape[:-1]``)."""
    p = torch.softmax(z, dim=-1)
    u = delta - (p * delta).sum(-1, keepdim=True)
    # E_p[exp(u)] = 1 + E_p[u] + E_p[expm1mx(u)] and E_p[u] = 0 exactly.
    return (coef * torch.log1p((p * expm1mx(u)).sum(-1))).sum()


def softplus_remainder(z: Tensor, delta: Tensor, coef: Tensor) -> Tensor:
    """sum coef * (softplus(z + delta) - softplus(z) - sigmoid(z) * delta):
    R of sigmoid binary cross-entropy."""
    # R(z, delta) = R(-z, -delta): take the side where sigmoid(z) <= 1/2.
    flip = z > 0
    zz = torch.where(flip, -z, z)
    dd = torch.where(flip, -delta, delta)
    s = torch.sigmoid(zz)
    # log1p(q) - s*delta = s*expm1mx(delta) - (q - log1p(q)), q = s*expm1.
    q = s * torch.expm1(dd)
    return (coef * (s * expm1mx(dd) - mlog1pmx(q))).sum()


def square_remainder(delta: Tensor, coef) -> Tensor:
    """sum coef * delta^2: the remainder of c * (z - target)^2."""
    return (coef * delta * delta).sum()


def abs_remainder(residual: Tensor, delta: Tensor, coef) -> Tensor:
    """sum coef * (|r + delta| - |r| - sign(r) * delta) at the residual
    r = z - target (sign(0) = 0, as autograd's gradient of |x|)."""
    x = residual + delta
    return (coef * (x.abs() - torch.sign(residual) * x)).sum()


class ExactLoss:
    """A task loss with its first-order Taylor remainder in closed form.

    :func:`mmgal.core.gal_step` calls it as ``loss_fn`` and, with
    ``remainder='exact'``, takes R from :meth:`remainder`; l' - l is then
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
    """``F.cross_entropy`` (mean) over (B, C) logits with its remainder.

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
        # c: the row's weight over F.cross_entropy's normaliser.
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
