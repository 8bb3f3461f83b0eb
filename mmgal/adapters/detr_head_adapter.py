from collections import OrderedDict
from typing import Callable, List, NamedTuple, Optional

import torch
from torch import Tensor, nn

from .base_adapter import GAL_ADAPTERS, BaseGALAdapter, GALForward


@GAL_ADAPTERS.register_module()
class DETRHeadAdapter(BaseGALAdapter):
    """GAL on the predicted boxes of MMDetection's DETR family.

    z is the boxes of one decoder layer, shape (batch, queries, 4), the
    normalised (cx, cy, w, h) that the box losses read; every call of the
    head's ``loss_by_feat_single`` (one per decoder layer, plus the encoder
    proposals of two-stage heads) is one GAL problem, all with the same
    adjuster (4 -> arch -> 4). By default (``batched=True``) the layers'
    boxes, targets and weights are stacked after the last layer and solved
    in one grouped GAL step, each layer keeping its own adoption decision
    (l' <= l per layer), as one step per layer would (``batched=False``).
    The batched step computes L1 + GIoU itself (mmdet's ``L1Loss`` and
    ``GIoULoss``, same values) without reading tensor values on the host,
    and keeps the image-size factors on the device.

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
        batched (bool): One grouped GAL step per iteration (True) or one
            step per layer (False). Defaults to True.
    """

    supported_heads = ('DETRHead', 'ConditionalDETRHead', 'DABDETRHead',
                       'DeformableDETRHead', 'DINOHead')
    # Other DETRHead subclasses may compute their box losses differently.
    match_subclasses = False
    # Image-size factors kept on the device, by (image shapes, queries,
    # device, dtype): a fixed input size builds them once per run.
    _FACTOR_CACHE_SIZE = 32

    def __init__(self, head: nn.Module, batched: bool = True):
        super().__init__(head)
        if not isinstance(batched, bool):
            raise ValueError(f'DETRHeadAdapter: batched must be a bool, got '
                             f'{batched!r}')
        self.batched = batched
        self._installed = False
        self._pending: Optional[List[_Layer]] = None
        self._factors: 'OrderedDict[tuple, Tensor]' = OrderedDict()

    def out_dim(self) -> int:
        return 4

    # ------------------------------------------------------------ helpers
    def _image_factors(self, metas: list, queries: int,
                       like: Tensor) -> Tensor:
        """(w, h, w, h) per query of each image, (B * Q, 4), as the head
        scales boxes for its GIoU loss; cached on the device."""
        key = (tuple(tuple(m['img_shape'][:2]) for m in metas), queries,
               like.device, like.dtype)
        factors = self._factors.get(key)
        if factors is None:
            whwh = [[w, h, w, h] for h, w in key[0]]
            factors = like.new_tensor(whwh).repeat_interleave(queries, 0)
            self._factors[key] = factors
            if len(self._factors) > self._FACTOR_CACHE_SIZE:
                self._factors.popitem(last=False)
        return factors

    @staticmethod
    def _avg_factors(weights: Tensor) -> Tensor:
        """The head's box-loss averaging factor per layer, max(num_pos, 1)
        (averaged over ranks under DDP), from the (G, B * Q, 4) box weights
        on the device: get_targets gives positives weight 1 and counts
        them, so no host value is needed."""
        from mmengine.dist import is_distributed
        num_pos = (weights[..., 0] > 0).sum(-1).to(weights.dtype)
        if is_distributed():
            from mmdet.utils import reduce_mean
            num_pos = reduce_mean(num_pos)
        return num_pos.clamp(min=1)

    def _grouped_loss_fn(self, layers: List['_Layer']
                         ) -> Callable[[Tensor], Tensor]:
        """Each layer's L1 + GIoU box loss at stacked boxes (G, B, Q, 4),
        with its own targets, weights and averaging factor."""
        from mmdet.models.losses import GIoULoss, L1Loss
        from mmdet.structures.bbox import (bbox_cxcywh_to_xyxy,
                                           bbox_overlaps)
        head = self.head
        z0 = layers[0].boxes
        queries = z0.shape[1]
        factors = self._image_factors(layers[0].metas, queries, z0)
        targets = torch.stack([layer.targets for layer in layers])
        weights = torch.stack([layer.weights for layer in layers])
        avg = self._avg_factors(weights)
        gt_xyxy = bbox_cxcywh_to_xyxy(targets) * factors
        l1, iou = head.loss_bbox, head.loss_iou
        plain = (type(l1) is L1Loss and type(iou) is GIoULoss
                 and l1.reduction == iou.reduction == 'mean')
        if not plain:
            # Other box losses: the head's modules, one call per layer
            # (they may read tensor values on the host).
            def module_loss_fn(z: Tensor) -> Tensor:
                losses = []
                for k, boxes in enumerate(z.reshape(len(layers), -1, 4)):
                    w = weights[k].to(boxes.dtype)
                    a = avg[k].to(boxes.dtype)
                    losses.append(
                        iou(bbox_cxcywh_to_xyxy(boxes) *
                            factors.to(boxes.dtype),
                            gt_xyxy[k].to(boxes.dtype), w, avg_factor=a) +
                        l1(boxes, targets[k].to(boxes.dtype), w,
                           avg_factor=a))
                return torch.stack(losses)

            return module_loss_fn
        # mmdet's L1Loss and GIoULoss (reduction 'mean' with avg_factor),
        # written out without their all-weights-zero shortcut, which reads
        # a tensor on the host; that shortcut returns 0, as this does.
        eps = torch.finfo(torch.float32).eps
        iou_w = weights.mean(-1)

        def loss_fn(z: Tensor) -> Tensor:
            boxes = z.reshape(len(layers), -1, 4)
            dt = boxes.dtype
            denom = avg.to(dt) + eps
            loss_l1 = (boxes - targets.to(dt)).abs().mul(
                weights.to(dt)).sum((1, 2)) / denom
            gious = bbox_overlaps(
                (bbox_cxcywh_to_xyxy(boxes) * factors.to(dt)).reshape(-1, 4),
                gt_xyxy.to(dt).reshape(-1, 4),
                mode='giou', is_aligned=True, eps=iou.eps)
            loss_iou = (1 - gious.reshape(len(layers), -1)).mul(
                iou_w.to(dt)).sum(1) / denom
            return l1.loss_weight * loss_l1 + iou.loss_weight * loss_iou

        return loss_fn

    def _gal_on_layers(self, gal_forward: GALForward,
                       layers: List['_Layer']) -> Tensor:
        """One grouped GAL step per run of layers with equal box shapes
        (in practice one for all); returns a 0 whose gradient w.r.t. the
        boxes is GAL's choice."""
        zero = None
        by_shape: 'OrderedDict[tuple, list]' = OrderedDict()
        for layer in layers:
            by_shape.setdefault(tuple(layer.boxes.shape), []).append(layer)
        for group in by_shape.values():
            z = torch.stack([layer.boxes for layer in group])
            surrogate = gal_forward(z, self._grouped_loss_fn(group),
                                    grouped=True)
            part = surrogate - surrogate.detach()
            zero = part if zero is None else zero + part
        return zero

    # --------------------------------------------------------------- tap
    def install(self, gal_forward: GALForward) -> None:
        if self._installed:
            return
        from mmdet.structures.bbox import bbox_cxcywh_to_xyxy
        from mmengine.dist import is_distributed

        head = self.head
        loss_single = head.loss_by_feat_single  # the class's bound method
        loss_by_feat = head.loss_by_feat
        get_targets = head.get_targets

        def box_loss_fn(bbox_targets: Tensor, bbox_weights: Tensor,
                        num_pos: int, batch_img_metas: list
                        ) -> Callable[[Tensor], Tensor]:
            # The per-layer path (batched=False): the head's own modules.
            avg = float(max(num_pos, 1))
            if is_distributed():
                from mmdet.utils import reduce_mean
                avg = torch.clamp(
                    reduce_mean(bbox_targets.new_tensor([float(num_pos)])),
                    min=1)
            queries = len(bbox_targets) // len(batch_img_metas)
            factors = self._image_factors(batch_img_metas, queries,
                                          bbox_targets)
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

            # Restore what was there (an instance attribute of the user's
            # stays, the class's method shows through again).
            own = vars(head).get('get_targets', _MISSING)
            head.get_targets = capturing_get_targets
            try:
                loss_cls, loss_bbox, loss_iou = loss_single(
                    cls_scores, bbox_preds, batch_gt_instances,
                    batch_img_metas)
            finally:
                if own is _MISSING:
                    del head.get_targets
                else:
                    head.get_targets = own
            if not (torch.is_grad_enabled() and bbox_preds.requires_grad
                    and 'targets' in captured):
                return loss_cls, loss_bbox, loss_iou
            (_, _, bbox_targets_list, bbox_weights_list, num_pos,
             _) = captured['targets']
            targets = torch.cat(bbox_targets_list, 0).detach()
            weights = torch.cat(bbox_weights_list, 0).detach()
            if self._pending is not None:
                # Batched: GAL runs once, after the last layer.
                self._pending.append(
                    _Layer(bbox_preds, targets, weights, batch_img_metas))
                return loss_cls, loss_bbox.detach(), loss_iou.detach()
            loss_fn = box_loss_fn(targets, weights, num_pos,
                                  batch_img_metas)
            surrogate = gal_forward(bbox_preds, loss_fn)
            # Exact logged values; the boxes' gradient is GAL's.
            zero_with_grad = surrogate - surrogate.detach()
            return (loss_cls, loss_bbox.detach() + zero_with_grad,
                    loss_iou.detach())

        def batched_loss_by_feat(*args, **kwargs):
            self._pending = []
            try:
                losses = loss_by_feat(*args, **kwargs)
                layers = self._pending
            finally:
                self._pending = None
            if layers:
                # Every layer's box loss went in detached: the one grouped
                # step's zero-valued surrogate carries all their gradients.
                losses['loss_bbox'] = losses['loss_bbox'] + \
                    self._gal_on_layers(gal_forward, layers)
            return losses

        head.loss_by_feat_single = tapped_loss_single
        if self.batched:
            head.loss_by_feat = batched_loss_by_feat
        self._installed = True

    def remove(self) -> None:
        if self._installed:
            del self.head.loss_by_feat_single
            if 'loss_by_feat' in vars(self.head):
                del self.head.loss_by_feat
            self._installed = False
            self._factors.clear()


_MISSING = object()


class _Layer(NamedTuple):
    """What one decoder layer's loss call leaves for the batched step."""
    boxes: Tensor  # (B, Q, 4), in the model's graph
    targets: Tensor  # (B * Q, 4), normalised cx, cy, w, h
    weights: Tensor  # (B * Q, 4)
    metas: list
