from collections import OrderedDict
from functools import partial
from typing import Callable, List, NamedTuple, Optional

import torch
from torch import Tensor, nn

from .base_adapter import GAL_ADAPTERS, BaseGALAdapter, GALForward


@GAL_ADAPTERS.register_module()
class DETRHeadAdapter(BaseGALAdapter):
    """GAL on the predicted boxes of MMDetection's DETR family.

    z is one decoder layer's boxes (batch, queries, 4), the normalised
    (cx, cy, w, h) the box losses read. Each ``loss_by_feat_single`` call
    (a decoder layer, or two-stage heads' encoder proposals) is one GAL
    problem with the shared adjuster; after the last layer they are solved
    in one grouped step, each layer with its own decision. The tentative
    loss is the head's L1 + GIoU with its weights and the layer's *own*
    Hungarian assignment (kept from ``get_targets``, not matched again),
    written out with mmdet's arithmetic and no host reads (other box-loss
    classes: the head's modules per layer). The classification loss does
    not depend on the boxes, so this is the full loss's gradient w.r.t.
    them. The logged losses keep their values; DINO's denoising queries
    are left as they are.

    Examples:
        >>> # Over a stock DETR config; the adapter is picked by the head.
        >>> custom_imports = dict(imports=['mmgal'],
        >>>                       allow_failed_imports=False)
        >>> optim_wrapper = dict(type='GALOptimWrapper', sigma=0.01,
        >>>                      gamma=1.0, arch=(64, 16))
        >>> default_hooks = dict(gal=dict(type='GALHook'))

    Args:
        head (nn.Module): ``DETRHead``, ``ConditionalDETRHead``,
            ``DABDETRHead``, ``DeformableDETRHead`` or ``DINOHead``.
        batched: Retired (a ``ValueError``).
    """

    supported_heads = ('DETRHead', 'ConditionalDETRHead', 'DABDETRHead',
                       'DeformableDETRHead', 'DINOHead')
    # Other DETRHead subclasses may compute their box losses differently.
    match_subclasses = False
    # Image-size factors on the device, by (shapes, queries, device, dtype).
    _FACTOR_CACHE_SIZE = 32

    def __init__(self, head: nn.Module, batched=None):
        super().__init__(head)
        if batched is not None:
            raise ValueError(
                'DETRHeadAdapter: batched was retired: the decoder layers '
                'are always one grouped GAL step, each layer with its own '
                'decision (what one step per layer gives); remove it')
        self._installed = False
        self._pending: Optional[List[_Layer]] = None
        self._factors: 'OrderedDict[tuple, Tensor]' = OrderedDict()

    def out_dim(self) -> int:
        return 4

    def _image_factors(self, metas: list, queries: int,
                       like: Tensor) -> Tensor:
        """(w, h, w, h) per query, (B * Q, 4), as the head scales boxes."""
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
        """The head's max(num_pos, 1) per layer (averaged over ranks), from
        the box weights on the device."""
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
        from mmdet.structures.bbox import bbox_cxcywh_to_xyxy
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
            # Other box losses: the head's modules, one call per layer.
            return partial(_module_loss, l1, iou, targets, weights, avg,
                           factors, gt_xyxy)
        # mmdet's L1Loss, GIoULoss and bbox_overlaps(mode='giou'), the same
        # arithmetic with fewer operators: constants cast once per dtype, no
        # all-weights-zero shortcut (a host read; this returns 0 too).
        consts = _BoxConstants(targets, weights, avg, factors, gt_xyxy,
                               iou.eps)
        w_l1, w_iou = l1.loss_weight, iou.loss_weight
        groups = len(layers)

        def loss_fn(z: Tensor) -> Tensor:
            boxes = z.reshape(groups, -1, 4)
            c = consts.get(boxes.dtype)
            loss_l1 = (boxes - c.targets).abs().mul(c.weights).sum(
                (1, 2)) / c.denom
            # cxcywh -> xyxy in pixels (bbox_cxcywh_to_xyxy, then factors).
            centre, half = boxes[..., :2], 0.5 * boxes[..., 2:]
            lo = (centre - half) * c.factors
            hi = (centre + half) * c.factors
            wh1 = hi - lo
            area1 = wh1[..., 0] * wh1[..., 1]
            wh = (torch.min(hi, c.gt_hi) - torch.max(lo, c.gt_lo)).clamp(
                min=0)
            overlap = wh[..., 0] * wh[..., 1]
            union = torch.max(area1 + c.gt_area - overlap, c.eps)
            ewh = (torch.max(hi, c.gt_hi) - torch.min(lo, c.gt_lo)).clamp(
                min=0)
            enclose = torch.max(ewh[..., 0] * ewh[..., 1], c.eps)
            gious = overlap / union - (enclose - union) / enclose
            loss_iou = (1 - gious).mul(c.iou_weights).sum(1) / c.denom
            return w_l1 * loss_l1 + w_iou * loss_iou

        return loss_fn

    def _gal_on_layers(self, gal_forward: GALForward,
                       layers: List['_Layer']) -> Tensor:
        """One grouped step per box shape (in practice one); returns a 0
        whose gradient w.r.t. the boxes is GAL's choice."""
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

    def install(self, gal_forward: GALForward) -> None:
        if self._installed:
            return
        head = self.head
        loss_single = head.loss_by_feat_single  # the class's bound method
        loss_by_feat = head.loss_by_feat
        get_targets = head.get_targets

        def tapped_loss_single(cls_scores: Tensor, bbox_preds: Tensor,
                               batch_gt_instances, batch_img_metas):
            (loss_cls, loss_bbox, loss_iou), captured = _with_targets(
                head, loss_single, get_targets, cls_scores, bbox_preds,
                batch_gt_instances, batch_img_metas)
            if not (torch.is_grad_enabled() and bbox_preds.requires_grad
                    and 'targets' in captured):
                return loss_cls, loss_bbox, loss_iou
            _, _, bbox_targets_list, bbox_weights_list, _, _ = \
                captured['targets']
            targets = torch.cat(bbox_targets_list, 0).detach()
            weights = torch.cat(bbox_weights_list, 0).detach()
            layer = _Layer(bbox_preds, targets, weights, batch_img_metas)
            if self._pending is not None:
                # Inside loss_by_feat: GAL runs once, after the last layer.
                self._pending.append(layer)
                return loss_cls, loss_bbox.detach(), loss_iou.detach()
            # Called on its own: a step for this layer alone.
            return (loss_cls, loss_bbox.detach() +
                    self._gal_on_layers(gal_forward, [layer]),
                    loss_iou.detach())

        def batched_loss_by_feat(*args, **kwargs):
            self._pending = []
            try:
                losses = loss_by_feat(*args, **kwargs)
                layers = self._pending
            finally:
                self._pending = None
            if layers:
                # The layers' box losses went in detached: the grouped
                # step's zero surrogate carries their gradients.
                losses['loss_bbox'] = losses['loss_bbox'] + \
                    self._gal_on_layers(gal_forward, layers)
            return losses

        head.loss_by_feat_single = tapped_loss_single
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


def _module_loss(l1: nn.Module, iou: nn.Module, targets: Tensor,
                 weights: Tensor, avg: Tensor, factors: Tensor,
                 gt_xyxy: Tensor, z: Tensor) -> Tensor:
    """Each layer's box loss at ``z`` (G, B, Q, 4) by the head's modules."""
    from mmdet.structures.bbox import bbox_cxcywh_to_xyxy
    losses = []
    for k, boxes in enumerate(z.reshape(len(targets), -1, 4)):
        w = weights[k].to(boxes.dtype)
        a = avg[k].to(boxes.dtype)
        losses.append(
            iou(bbox_cxcywh_to_xyxy(boxes) * factors.to(boxes.dtype),
                gt_xyxy[k].to(boxes.dtype), w, avg_factor=a) +
            l1(boxes, targets[k].to(boxes.dtype), w, avg_factor=a))
    return torch.stack(losses)


def _with_targets(head: nn.Module, loss_single: Callable,
                  get_targets: Callable, *args) -> tuple:
    """``loss_single(*args)`` and ``{'targets': get_targets' result}`` (the
    layer's Hungarian assignment; empty where not called)."""
    captured: dict = {}

    def capturing_get_targets(*a, **kw):
        captured['targets'] = get_targets(*a, **kw)
        return captured['targets']

    # Restore what was there (a user's instance attribute stays).
    own = vars(head).get('get_targets', _MISSING)
    head.get_targets = capturing_get_targets
    try:
        return loss_single(*args), captured
    finally:
        if own is _MISSING:
            del head.get_targets
        else:
            head.get_targets = own


class _BoxTerms(NamedTuple):
    """The constants of the batched box loss in one dtype."""
    targets: Tensor  # (G, B * Q, 4), normalised cx, cy, w, h
    weights: Tensor  # (G, B * Q, 4)
    iou_weights: Tensor  # (G, B * Q), GIoULoss's weight.mean(-1)
    denom: Tensor  # (G, ), avg_factor + eps
    factors: Tensor  # (B * Q, 2), image (w, h) per box
    gt_lo: Tensor  # (G, B * Q, 2), the targets' x1, y1 in pixels
    gt_hi: Tensor  # (G, B * Q, 2), x2, y2
    gt_area: Tensor  # (G, B * Q)
    eps: Tensor  # (1, ), bbox_overlaps' eps


class _BoxConstants:
    """:class:`_BoxTerms` in float32 and float64, built with the loss
    function (a tensor made under ``torch.func.grad`` must not outlive
    it); other dtypes per call."""

    def __init__(self, targets: Tensor, weights: Tensor, avg: Tensor,
                 factors: Tensor, gt_xyxy: Tensor, eps: float):
        self._src = (targets, weights, avg, factors, gt_xyxy, eps)
        self._by_dtype = {
            dtype: self._build(dtype)
            for dtype in (torch.float32, torch.float64)
        }

    def _build(self, dtype: torch.dtype) -> _BoxTerms:
        targets, weights, avg, factors, gt_xyxy, eps = self._src
        gt = gt_xyxy.to(dtype)
        gt_lo, gt_hi = gt[..., :2], gt[..., 2:]
        gt_wh = gt_hi - gt_lo
        return _BoxTerms(
            targets=targets.to(dtype),
            weights=weights.to(dtype),
            iou_weights=weights.mean(-1).to(dtype),
            denom=avg.to(dtype) + torch.finfo(torch.float32).eps,
            factors=factors[:, :2].to(dtype),
            gt_lo=gt_lo,
            gt_hi=gt_hi,
            gt_area=gt_wh[..., 0] * gt_wh[..., 1],
            # (1, ): torch.compile guards a 0-dim CPU tensor by value.
            eps=gt.new_tensor([eps]))

    def get(self, dtype: torch.dtype) -> _BoxTerms:
        terms = self._by_dtype.get(dtype)
        return terms if terms is not None else self._build(dtype)


class _Layer(NamedTuple):
    """What a decoder layer's loss call leaves for the grouped step."""
    boxes: Tensor  # (B, Q, 4), in the model's graph
    targets: Tensor  # (B * Q, 4), normalised cx, cy, w, h
    weights: Tensor  # (B * Q, 4)
    metas: list
