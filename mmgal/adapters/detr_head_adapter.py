from collections import OrderedDict
from functools import partial
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
    adjuster (4 -> arch -> 4). The layers' boxes, targets and weights are
    stacked after the last layer and solved in one grouped GAL step, each
    layer keeping its own adoption decision (l' <= l per layer), as one
    step per layer would (the tests hold it against that). The step
    computes L1 + GIoU itself (mmdet's ``L1Loss`` and ``GIoULoss``, same
    values) without reading tensor values on the host, and keeps the
    image-size factors on the device; other box-loss classes are called
    per layer.

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
        >>> default_hooks = dict(gal=dict(type='GALHook'))

    Args:
        head (nn.Module): ``DETRHead``, ``ConditionalDETRHead``,
            ``DABDETRHead``, ``DeformableDETRHead`` or ``DINOHead``.
        batched: Retired (a ``ValueError``): every call is one grouped
            step.
    """

    supported_heads = ('DETRHead', 'ConditionalDETRHead', 'DABDETRHead',
                       'DeformableDETRHead', 'DINOHead')
    # Other DETRHead subclasses may compute their box losses differently.
    match_subclasses = False
    # Image-size factors kept on the device, by (image shapes, queries,
    # device, dtype): a fixed input size builds them once per run.
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
            # Other box losses: the head's modules, one call per layer
            # (they may read tensor values on the host).
            return partial(_module_loss, l1, iou, targets, weights, avg,
                           factors, gt_xyxy)
        # mmdet's L1Loss and GIoULoss (reduction 'mean' with avg_factor)
        # and bbox_overlaps(mode='giou', is_aligned=True), written out with
        # the same arithmetic (same values and gradients) but fewer
        # operators: the targets' corners and areas and every constant are
        # cast once per dtype, not per call, and there is no all-weights-zero
        # shortcut (it reads a tensor on the host; it returns 0, as this
        # does).
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
            # Called on its own: a step for this layer alone. Exact logged
            # values; the boxes' gradient is GAL's.
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
                # Every layer's box loss went in detached: the one grouped
                # step's zero-valued surrogate carries all their gradients.
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
    """Each layer's box loss at stacked boxes ``z`` (G, B, Q, 4) through
    the head's own L1 and IoU modules, one call per layer."""
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
    """``loss_single(*args)`` and what the head's ``get_targets`` returned
    in it (``{'targets': ...}``, empty where it was not called): the
    layer's Hungarian assignment, kept so that GAL does not match again."""
    captured: dict = {}

    def capturing_get_targets(*a, **kw):
        captured['targets'] = get_targets(*a, **kw)
        return captured['targets']

    # Restore what was there (an instance attribute of the user's stays,
    # the class's method shows through again).
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
    """:class:`_BoxTerms` in float32 and float64 (the model's dtype and
    GAL's default work dtype for this loss), built eagerly when the loss
    function is made, from the float32 tensors the head gives, cast as
    mmdet's losses cast them; any other dtype is built per call. (Built
    outside the loss, never inside it: a tensor made under
    ``torch.func.grad`` must not outlive that call.)"""

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
            # (1, ) as bbox_overlaps makes it: torch.compile guards a
            # 0-dim CPU tensor by its value, a host read per call.
            eps=gt.new_tensor([eps]))

    def get(self, dtype: torch.dtype) -> _BoxTerms:
        terms = self._by_dtype.get(dtype)
        return terms if terms is not None else self._build(dtype)


class _Layer(NamedTuple):
    """What one decoder layer's loss call leaves for the batched step."""
    boxes: Tensor  # (B, Q, 4), in the model's graph
    targets: Tensor  # (B * Q, 4), normalised cx, cy, w, h
    weights: Tensor  # (B * Q, 4)
    metas: list
