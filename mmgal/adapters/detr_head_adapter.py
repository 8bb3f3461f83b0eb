from typing import Callable

import torch
from torch import Tensor, nn

from .base_adapter import GAL_ADAPTERS, BaseGALAdapter, GALForward


@GAL_ADAPTERS.register_module()
class DETRHeadAdapter(BaseGALAdapter):
    """GAL on the predicted boxes of MMDetection's DETR family.

    z is the boxes of one decoder layer, shape (batch, queries, 4), the
    normalised (cx, cy, w, h) that the box losses read; every call of the
    head's ``loss_by_feat_single`` (one per decoder layer, plus the encoder
    proposals of two-stage heads) is one GAL step, all with the same
    adjuster (4 -> arch -> 4).

    The tentative loss is the head's own box losses, L1 (``loss_bbox``) and
    GIoU (``loss_iou``) with the head's loss weights, recomputed at z' with
    the *same* Hungarian assignment: the adapter keeps what the head's
    ``get_targets`` returned for this layer and does not match again. The
    classification loss is untouched: it does not depend on the boxes (the
    matching is not differentiable, and QualityFocalLoss detaches them), so
    the gradient of the box losses is the gradient of the full loss w.r.t.
    the boxes. The logged ``loss_bbox`` and ``loss_iou`` keep their exact
    values; the boxes receive GAL's chosen gradient.

    DINO's denoising queries (``loss_dn``) have fixed targets and are left
    as they are.

    Examples:
        >>> # Over a stock DETR config (the head is the detector's
        >>> # `bbox_head`; this adapter is picked by its class).
        >>> custom_imports = dict(imports=['mmgal'],
        >>>                       allow_failed_imports=False)
        >>> optim_wrapper = dict(type='GALOptimWrapper', sigma=0.01,
        >>>                      gamma=1.0, arch=(64, 16))
        >>> custom_hooks = [dict(type='GALHook')]

    Args:
        head (nn.Module): ``DETRHead``, ``ConditionalDETRHead``,
            ``DABDETRHead``, ``DeformableDETRHead`` or ``DINOHead``.
    """

    supported_heads = ('DETRHead', 'ConditionalDETRHead', 'DABDETRHead',
                       'DeformableDETRHead', 'DINOHead')
    # Other DETRHead subclasses may compute their box losses differently.
    match_subclasses = False

    def __init__(self, head: nn.Module):
        super().__init__(head)
        self._installed = False

    def out_dim(self) -> int:
        return 4

    def install(self, gal_forward: GALForward) -> None:
        if self._installed:
            return
        from mmdet.structures.bbox import bbox_cxcywh_to_xyxy
        from mmengine.dist import is_distributed

        head = self.head
        loss_single = head.loss_by_feat_single  # the class's bound method
        get_targets = head.get_targets

        def box_loss_fn(bbox_targets: Tensor, bbox_weights: Tensor,
                        num_pos: int, batch_img_metas: list
                        ) -> Callable[[Tensor], Tensor]:
            avg = float(max(num_pos, 1))
            if is_distributed():
                from mmdet.utils import reduce_mean
                avg = torch.clamp(
                    reduce_mean(bbox_targets.new_tensor([float(num_pos)])),
                    min=1)
            # (w, h, w, h) per query of each image, as the head scales
            # the boxes for its GIoU loss.
            queries = len(bbox_targets) // len(batch_img_metas)
            factors = torch.cat([
                bbox_targets.new_tensor([w, h, w, h]).expand(queries, 4)
                for h, w in (m['img_shape'] for m in batch_img_metas)
            ])
            gt_xyxy = bbox_cxcywh_to_xyxy(bbox_targets) * factors

            def loss_fn(z: Tensor) -> Tensor:
                boxes = z.reshape(-1, 4)
                targets = bbox_targets.to(boxes.dtype)
                weights = bbox_weights.to(boxes.dtype)
                loss_iou = head.loss_iou(
                    bbox_cxcywh_to_xyxy(boxes) * factors.to(boxes.dtype),
                    gt_xyxy.to(boxes.dtype),
                    weights,
                    avg_factor=avg)
                loss_l1 = head.loss_bbox(
                    boxes, targets, weights, avg_factor=avg)
                return loss_l1 + loss_iou

            return loss_fn

        def tapped_loss_single(cls_scores: Tensor, bbox_preds: Tensor,
                               batch_gt_instances, batch_img_metas):
            captured: dict = {}

            def capturing_get_targets(*args, **kwargs):
                captured['targets'] = get_targets(*args, **kwargs)
                return captured['targets']

            head.get_targets = capturing_get_targets
            try:
                loss_cls, loss_bbox, loss_iou = loss_single(
                    cls_scores, bbox_preds, batch_gt_instances,
                    batch_img_metas)
            finally:
                del head.get_targets
            if not (torch.is_grad_enabled() and bbox_preds.requires_grad
                    and 'targets' in captured):
                return loss_cls, loss_bbox, loss_iou
            (_, _, bbox_targets_list, bbox_weights_list, num_pos,
             _) = captured['targets']
            loss_fn = box_loss_fn(
                torch.cat(bbox_targets_list, 0).detach(),
                torch.cat(bbox_weights_list, 0).detach(), num_pos,
                batch_img_metas)
            surrogate = gal_forward(bbox_preds, loss_fn)
            # Exact logged values; the boxes' gradient is GAL's.
            zero_with_grad = surrogate - surrogate.detach()
            return (loss_cls, loss_bbox.detach() + zero_with_grad,
                    loss_iou.detach())

        head.loss_by_feat_single = tapped_loss_single
        self._installed = True

    def remove(self) -> None:
        if self._installed:
            del self.head.loss_by_feat_single
            self._installed = False
