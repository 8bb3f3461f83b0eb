import math
from typing import Callable, Optional

import torch
from torch import Tensor, nn

from mmgal.core import ExactLoss, softmax_remainder, softplus_remainder
from .base_adapter import GAL_ADAPTERS, BaseGALAdapter, GALForward


def curvature_kind(loss_module: nn.Module) -> Optional[str]:
    """``'softmax'`` / ``'sigmoid'`` for exactly MMPretrain's
    ``CrossEntropyLoss`` and ``LabelSmoothLoss``; None for other losses."""
    from mmpretrain.models.losses import CrossEntropyLoss, LabelSmoothLoss
    if type(loss_module) is LabelSmoothLoss:
        loss_module = loss_module.ce
    if type(loss_module) is not CrossEntropyLoss:
        return None
    return 'sigmoid' if loss_module.use_sigmoid else 'softmax'


def exact_loss(loss_fn: Callable[..., Tensor], kind: Optional[str]
               ) -> Callable[[Tensor], Tensor]:
    """The head's bound loss ``loss_fn(z, reduction_override=None)`` as an
    :class:`ExactLoss` with ``kind``'s closed form (itself for None).

    Each row's (element's) c is read off the loss at z = 0, where the linear
    term vanishes and logsumexp = log C (softplus = log 2), unreduced and
    times the reduction's factor: labels, smoothing, soft scores, weights
    and ``pos_weight`` need no formula of their own.
    """
    if kind is None:
        return lambda z: loss_fn(z)

    def remainder_fn(z: Tensor, delta: Tensor) -> Tensor:
        if kind == 'softmax' and z.shape[-1] == 1:
            # One class: the loss and R are 0 for every z.
            return z.new_zeros(())
        zeros = torch.zeros_like(z)
        per = loss_fn(zeros, reduction_override='none')
        total = loss_fn(zeros)
        denom = per.sum()
        scale = torch.where(denom != 0, total / torch.where(
            denom != 0, denom, torch.ones_like(denom)), torch.zeros_like(
                denom))
        log_base = math.log(z.shape[-1]) if kind == 'softmax' else math.log(
            2.0)
        coef = per * (scale / log_base)
        if kind == 'softmax':
            return softmax_remainder(z, delta, coef.reshape(z.shape[:-1]))
        return softplus_remainder(z, delta, coef.reshape(z.shape))

    return ExactLoss(lambda z: loss_fn(z), remainder_fn)


@GAL_ADAPTERS.register_module()
class ClsHeadAdapter(BaseGALAdapter):
    """GAL on the logits of MMPretrain's classification heads.

    A forward hook on the head's ``loss_module``: z is the logits it gets,
    the tentative loss the same module with the same targets and arguments.
    MMPretrain's cross-entropy losses give R in closed form
    (:func:`exact_loss`); other losses run in float64. A head calling its
    loss several times (``ConformerHead``) gets a GAL step per call.

    Examples:
        >>> # Picked by the head's class; MMPretrain's ImageClassifier keeps
        >>> # its head at `head`, GALHook's default.
        >>> default_hooks = dict(gal=dict(type='GALHook'))

    Args:
        head (nn.Module): The classification head.
    """

    supported_heads = ('ClsHead', 'LinearClsHead', 'StackedLinearClsHead',
                       'VisionTransformerClsHead', 'DeiTClsHead',
                       'EfficientFormerClsHead', 'ConformerHead',
                       'LeViTClsHead', 'VigClsHead', 'ArcFaceClsHead',
                       'MultiLabelClsHead', 'MultiLabelLinearClsHead',
                       'CSRAClsHead')

    def __init__(self, head: nn.Module):
        super().__init__(head)
        if not isinstance(getattr(head, 'loss_module', None), nn.Module):
            raise ValueError(f'{type(head).__name__} has no `loss_module`, '
                             'which ClsHeadAdapter taps')
        self._handle = None

    def out_dim(self) -> Optional[int]:
        """``num_classes`` where the head declares it, else None."""
        num_classes = getattr(self.head, 'num_classes', None)
        if isinstance(num_classes, int) and not isinstance(
                num_classes, bool) and num_classes >= 1:
            return num_classes
        return None

    def install(self, gal_forward: GALForward) -> None:
        if self._handle is not None:
            return
        kind = curvature_kind(self.head.loss_module)

        def tap(module: nn.Module, args: tuple, kwargs: dict,
                output: torch.Tensor) -> Optional[torch.Tensor]:
            z = args[0]
            if not (torch.is_grad_enabled() and z.requires_grad):
                return None  # validation losses and frozen heads: untouched

            def loss_fn(z_new, reduction_override=None):
                # .forward skips the hooks, so this does not recurse.
                kw = kwargs if reduction_override is None else dict(
                    kwargs, reduction_override=reduction_override)
                return module.forward(z_new, *args[1:], **kw)

            return gal_forward(z, exact_loss(loss_fn, kind))

        self._handle = self.head.loss_module.register_forward_hook(
            tap, with_kwargs=True)

    def remove(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
