from typing import Optional

import torch
from torch import nn

from .base_adapter import GAL_ADAPTERS, BaseGALAdapter, GALForward


@GAL_ADAPTERS.register_module()
class ClsHeadAdapter(BaseGALAdapter):
    """GAL on the logits of MMPretrain's classification heads.

    Every head listed here computes its loss as
    ``self.loss_module(cls_score, target, avg_factor=..., **kwargs)``. The
    adapter puts a forward hook on ``loss_module``: z is the logits passed
    to it, and the tentative loss calls the same loss module with the same
    target (hard labels, or the soft ``gt_score`` of mixup/cutmix) and
    arguments. Accuracy is not recomputed. Heads that call the loss module
    several times (``ConformerHead``, once per branch) get one GAL step per
    call, all with the same adjuster.

    Examples:
        >>> # Picked by the head's class; MMPretrain's ImageClassifier keeps
        >>> # its head at `head`, GALHook's default.
        >>> custom_hooks = [dict(type='GALHook')]

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

    def out_dim(self) -> int:
        num_classes = getattr(self.head, 'num_classes', None)
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(
                f'{type(self.head).__name__} has no `num_classes`; give the '
                "logits' size as GALHook(dim=...)")
        return num_classes

    def install(self, gal_forward: GALForward) -> None:
        if self._handle is not None:
            return

        def tap(module: nn.Module, args: tuple, kwargs: dict,
                output: torch.Tensor) -> Optional[torch.Tensor]:
            z = args[0]
            if not (torch.is_grad_enabled() and z.requires_grad):
                return None  # validation losses and frozen heads: untouched

            def loss_fn(z_new):
                # .forward skips the hooks, so this does not recurse.
                return module.forward(z_new, *args[1:], **kwargs)

            return gal_forward(z, loss_fn)

        self._handle = self.head.loss_module.register_forward_hook(
            tap, with_kwargs=True)

    def remove(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
