import os.path as osp

import pytest
import torch
from mmdet.registry import MODELS
from mmdet.utils import register_all_modules
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.structures import InstanceData

from host_reads import count_host_reads
from mm_helpers import RealGAL

import mmgal  # noqa: F401
from mmgal.adapters import DETRHeadAdapter, build_adapter

register_all_modules()
DETR_CFG = osp.join(
    osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'configs',
    'mmdet', 'detr', 'detr_r50_8xb2-150e_coco.py')


@pytest.fixture(autouse=True)
def mmdet_scope():
    """Build from the mmdet registries whatever scope another test
    module left as the default."""
    with DefaultScope.overwrite_default_scope('mmdet'):
        yield


class Recorder(RealGAL):
    """The real wrapper (policy 'le', lr 1e-4) on boxes; ``steps`` holds
    (z, GALOutput, loss_fn) of each GAL step."""

    def __init__(self, sigma=0.3):
        super().__init__(4, sigma=sigma, lr=1e-4, arch=(64, 16))

    @property
    def steps(self):
        return [(z, out, loss_fn) for z, loss_fn, out, _ in self.calls]


def detr_head():
    cfg = Config.fromfile(DETR_CFG).model
    head_cfg = cfg.bbox_head
    head_cfg.update(num_classes=3, train_cfg=cfg.train_cfg)
    torch.manual_seed(0)
    return MODELS.build(head_cfg)


def inputs(num_layers=6, queries=10):
    torch.manual_seed(0)
    hidden = torch.randn(num_layers, 2, queries, 256)
    gts = []
    for boxes, labels in (([[5., 5., 30., 40.], [10., 20., 50., 60.]],
                           [0, 2]), ([[1., 2., 70., 60.]], [1])):
        g = InstanceData()
        g.bboxes = torch.tensor(boxes)
        g.labels = torch.tensor(labels)
        gts.append(g)
    metas = [dict(img_shape=(64, 64)), dict(img_shape=(64, 80))]
    return hidden, gts, metas


def layer_key(i, n, name):
    return name if i == n - 1 else f'd{i}.{name}'


def test_detr_adapter_is_picked_for_the_detr_family_only():
    head = detr_head()
    assert isinstance(build_adapter(head), DETRHeadAdapter)
    assert build_adapter(head).out_dim() == 4

    class MyDETRHead(type(head)):
        pass

    head.__class__ = MyDETRHead
    with pytest.raises(ValueError, match='no GAL adapter supports the head '
                       'MyDETRHead; supported heads: .*DETRHead, '
                       'ConditionalDETRHead, DABDETRHead, '
                       'DeformableDETRHead, DINOHead'):
        build_adapter(head)


def test_boxes_get_gal_with_the_same_assignment_and_exact_losses(
        monkeypatch):
    head = detr_head()
    hidden, gts, metas = inputs()
    cls, boxes = head(hidden)
    boxes = boxes.detach().requires_grad_(True)
    cls = cls.detach()

    assigns = []
    orig_assign = head.assigner.assign
    monkeypatch.setattr(head.assigner, 'assign',
                        lambda *a, **k: assigns.append(1) or orig_assign(
                            *a, **k))
    plain = head.loss_by_feat(cls, boxes, gts, metas)
    n_plain = len(assigns)
    (g_full, ) = torch.autograd.grad(sum(plain.values()), boxes)

    adapter = build_adapter(head)
    rec = Recorder()
    adapter.install(rec)
    tapped = head.loss_by_feat(cls, boxes, gts, metas)
    assert len(assigns) == 2 * n_plain  # no second matching per GAL step
    assert tapped.keys() == plain.keys()
    for k in plain:
        assert torch.equal(tapped[k], plain[k]), k
    (g_tapped, ) = torch.autograd.grad(sum(tapped.values()), boxes)
    steps = rec.steps
    # One grouped step: its groups are the layers.
    assert len(steps) == 1 and steps[0][0].shape == (6, 2, 10, 4)
    z, out, _ = steps[0]
    steps = [(z[i], type(out)(*(f[i] for f in out)), None)
             for i in range(6)]
    for i, (z, out, loss_fn) in enumerate(steps):
        assert z.shape == (2, 10, 4)
        # The tentative loss at z is the layer's L1 + GIoU, as logged.
        torch.testing.assert_close(
            out.loss, plain[layer_key(i, 6, 'loss_bbox')] +
            plain[layer_key(i, 6, 'loss_iou')])
        # g is the gradient of the full loss w.r.t. the boxes ...
        torch.testing.assert_close(out.vanilla_grad, g_full[i])
        # ... and the model receives GAL's choice.
        torch.testing.assert_close(g_tapped[i], out.grad)
        assert not torch.equal(out.grad, out.vanilla_grad)
    adapter.remove()
    assert 'loss_by_feat_single' not in vars(head)
    assert 'loss_by_feat' not in vars(head)
    assert 'get_targets' not in vars(head)


def test_each_layers_tentative_loss_is_the_heads_own_with_its_assignment():
    """Through the real wrapper: each decoder layer's l' is the head's own
    loss_by_feat_single (L1 + GIoU) at z' = z - lr * g~, with the
    Hungarian assignment captured for that layer; g~ is formed here from
    the head's own gradient and the adjuster."""
    head = detr_head()
    hidden, gts, metas = inputs()
    cls, boxes = head(hidden)
    cls, boxes = cls.detach(), boxes.detach().requires_grad_(True)
    captured = []
    orig_targets = head.get_targets
    head.get_targets = lambda *a, **k: captured.append(
        orig_targets(*a, **k)) or captured[-1]
    adapter = build_adapter(head)
    rec = Recorder(sigma=0.3)
    adapter.install(rec)
    head.loss_by_feat(cls, boxes, gts, metas)
    adapter.remove()
    del head.get_targets
    assert len(captured) == 6
    (z, out, _), = rec.steps
    steps = [(z[i], type(out)(*(f[i] for f in out)), None)
             for i in range(6)]
    lr = 1e-4

    def own_loss(i, bp):
        head.get_targets = lambda *a, **k: captured[i]
        try:
            _, l1, giou = type(head).loss_by_feat_single(
                head, cls[i], bp, gts, metas)
        finally:
            del head.get_targets
        return l1 + giou

    for i, (z, out, _) in enumerate(steps):
        zi = z.detach().clone().requires_grad_(True)
        loss = own_loss(i, zi)
        g, = torch.autograd.grad(loss, zi)
        a = rec.adjuster(z.detach())
        g_adj = g + 0.3 * a / a.norm(dim=-1, keepdim=True) * g.norm(
            dim=-1, keepdim=True)
        with torch.no_grad():
            moved = own_loss(i, z.detach() - lr * g_adj)
        torch.testing.assert_close(out.loss.float(), loss.detach())
        torch.testing.assert_close(out.tentative_loss.float(), moved,
                                   rtol=1e-5, atol=1e-6)
        # The boxes' loss moves by far more than the tolerance.
        assert abs(float(moved - loss)) > 1e-5


def per_layer_gal(head, wrapper, cls, boxes, gts, metas):
    """The oracle: one GAL step per decoder layer, its loss the head's own
    L1 and GIoU modules with the layer's Hungarian targets (what the
    adapter's grouped step must equal); returns each layer's surrogate."""
    from mmdet.structures.bbox import bbox_cxcywh_to_xyxy
    out = []
    for i in range(len(boxes)):
        _, _, targets, weights, num_pos, _ = head.get_targets(
            cls[i], boxes[i].detach(), gts, metas)
        targets = torch.cat(targets, 0)
        weights = torch.cat(weights, 0)
        factors = torch.cat([
            targets.new_tensor([w, h, w, h]).expand(boxes.shape[2], 4)
            for h, w in (m['img_shape'] for m in metas)])
        gt_xyxy = bbox_cxcywh_to_xyxy(targets) * factors
        avg = float(max(num_pos, 1))

        def loss_fn(z, targets=targets, weights=weights, factors=factors,
                    gt_xyxy=gt_xyxy, avg=avg):
            b = z.reshape(-1, 4)
            return head.loss_bbox(b, targets, weights, avg_factor=avg) + \
                head.loss_iou(bbox_cxcywh_to_xyxy(b) * factors, gt_xyxy,
                              weights, avg_factor=avg)

        surrogate = wrapper.gal_forward(boxes[i], loss_fn)
        out.append(surrogate - surrogate.detach())
    return out


@pytest.mark.parametrize('own_box_losses', [False, True])
def test_the_batched_step_equals_the_per_layer_path(own_box_losses):
    """One grouped GAL step over the 6 decoder layers gives the update of 6
    per-layer steps: the boxes' gradients, the adjuster's gradient and the
    logged statistics, within float tolerance. With box-loss classes other
    than mmdet's L1Loss/GIoULoss the batched step calls the head's modules
    per layer instead of its own L1 + GIoU."""
    from mmdet.models.losses import GIoULoss, L1Loss

    from mmgal.engine import GALOptimWrapper

    class MyL1(L1Loss):
        pass

    class MyGIoU(GIoULoss):
        pass

    hidden, gts, metas = inputs()
    results = {}
    for batched in (False, True):
        head = detr_head()
        if own_box_losses:
            head.loss_bbox = MyL1(loss_weight=head.loss_bbox.loss_weight)
            head.loss_iou = MyGIoU(loss_weight=head.loss_iou.loss_weight)
        cls, boxes = head(hidden)
        boxes = boxes.detach().requires_grad_(True)
        wrapper = GALOptimWrapper(torch.optim.SGD(head.parameters(),
                                                  lr=1e-3), sigma=0.6,
                                  arch=(64, 16), tentative_lr=0.1)
        wrapper.setup_adjuster(4)
        if batched:
            adapter = build_adapter(head)
            adapter.install(wrapper.gal_forward)
            losses = head.loss_by_feat(cls.detach(), boxes, gts, metas)
            total = sum(losses.values())
        else:
            losses = head.loss_by_feat(cls.detach(), boxes, gts, metas)
            total = sum(per_layer_gal(head, wrapper, cls.detach(), boxes,
                                      gts, metas))
        (g_boxes, ) = torch.autograd.grad(total, boxes)
        results[batched] = dict(
            losses={k: v.detach() for k, v in losses.items()},
            g_boxes=g_boxes,
            adjuster_grads=[p.grad.clone()
                            for p in wrapper.adjuster.parameters()],
            steps=wrapper.learner._micro_steps,
            stats=wrapper.pop_gal_stats())
    per_layer, batched = results[False], results[True]
    assert per_layer['steps'] == batched['steps'] == 6
    for k, v in per_layer['losses'].items():
        assert torch.equal(v, batched['losses'][k]), k
    torch.testing.assert_close(batched['g_boxes'], per_layer['g_boxes'])
    assert any(p.abs().sum() > 0 for p in batched['adjuster_grads'])
    for p, q in zip(batched['adjuster_grads'], per_layer['adjuster_grads']):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-7)
    assert per_layer['stats'].keys() == batched['stats'].keys()
    for k, v in per_layer['stats'].items():
        assert batched['stats'][k] == pytest.approx(v, rel=1e-4,
                                                    abs=1e-7), k
    # Some layers adopted g~ and some not: the decision is per layer.
    assert 0 < batched['stats']['adopt_rate'] < 1


@pytest.mark.slow
def test_the_batched_step_compiles_to_one_graph_with_the_same_update(
        monkeypatch, compile_enabled):
    """fast='compile' on the DETR head: the grouped step with mmdet's box
    maths traces without a graph break, updates as fast='eager' and, once
    compiled, reads no tensor value on the host (torch.compile guards a
    0-dim CPU tensor it is given by its value). The reads are trapped
    before compiling (see test_compiled_step) and counted inside GAL's
    call only: the head's own loss reads on the host."""
    from torch._dynamo.utils import counters

    from mmgal.engine import GALOptimWrapper
    # Past other tests' compilations the step's code may be at dynamo's
    # recompile limit and run uncompiled (its inner frames then compiled
    # one by one, with guards that read values): start afresh.
    torch._dynamo.reset()
    hidden, gts, metas = inputs()
    results = {}
    breaks = sum(counters['graph_break'].values())
    for fast in ('eager', 'compile'):
        head = detr_head()
        cls, boxes = head(hidden)
        boxes = boxes.detach().requires_grad_(True)
        wrapper = GALOptimWrapper(torch.optim.SGD(head.parameters(),
                                                  lr=1e-3), sigma=0.6,
                                  arch=(64, 16), tentative_lr=0.1, fast=fast)
        wrapper.setup_adjuster(4)
        reads = count_host_reads(monkeypatch) if fast == 'compile' else []
        inside = []  # the reads of each GAL call

        def gal_forward(*args, _wrapper=wrapper, **kwargs):
            before = len(reads)
            out = _wrapper.gal_forward(*args, **kwargs)
            inside.append(reads[before:])
            return out

        build_adapter(head).install(gal_forward)
        losses = head.loss_by_feat(cls.detach(), boxes, gts, metas)
        (g_boxes, ) = torch.autograd.grad(sum(losses.values()), boxes)
        results[fast] = (g_boxes, [p.grad.clone()
                                   for p in wrapper.adjuster.parameters()],
                         wrapper.pop_gal_stats())
    inside.clear()
    head.loss_by_feat(cls.detach(), boxes, gts, metas)  # the cached graph
    monkeypatch.undo()
    assert inside == [[]]
    assert sum(counters['graph_break'].values()) == breaks
    (g_a, adj_a, st_a), (g_c, adj_c, st_c) = results['eager'], results[
        'compile']
    torch.testing.assert_close(g_c, g_a)
    for p, q in zip(adj_c, adj_a):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-7)
    assert st_c['adopt_rate'] == st_a['adopt_rate']


def test_the_batched_loss_reads_no_tensor_value_on_the_host(monkeypatch):
    head = detr_head()
    hidden, gts, metas = inputs()
    cls, boxes = head(hidden)
    rec = Recorder()
    build_adapter(head).install(rec)
    head.loss_by_feat(cls.detach(), boxes.detach().requires_grad_(), gts,
                      metas)
    (z, _, loss_fn), = rec.steps
    reads = count_host_reads(monkeypatch)
    rec.calls.clear()
    rec(z.detach(), loss_fn, grouped=True)
    monkeypatch.undo()
    assert reads == []


def test_the_classification_loss_is_untouched():
    head = detr_head()
    hidden, gts, metas = inputs()
    cls, boxes = head(hidden)
    cls = cls.detach().requires_grad_(True)
    plain = head.loss_by_feat(cls, boxes.detach(), gts, metas)
    (g_plain, ) = torch.autograd.grad(plain['loss_cls'], cls)
    build_adapter(head).install(Recorder())
    tapped = head.loss_by_feat(cls, boxes.detach().requires_grad_(), gts,
                               metas)
    (g_tapped, ) = torch.autograd.grad(tapped['loss_cls'], cls)
    assert torch.equal(g_plain, g_tapped)


def test_no_gal_without_grad():
    head = detr_head()
    hidden, gts, metas = inputs()
    rec = Recorder()
    build_adapter(head).install(rec)
    with torch.no_grad():
        cls, boxes = head(hidden)
        head.loss_by_feat(cls, boxes, gts, metas)
    assert rec.calls == []


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_the_batched_box_loss_equals_mmdets_modules_bit_for_bit(dtype):
    """The batched step's own L1 + GIoU (fewer operators) gives the values
    and gradients of mmdet's L1Loss + GIoULoss modules exactly, in the
    model's float32 and GAL's float64, on boxes with a zero width, a box
    equal to its target (ties in the corners' max/min) and boxes without a
    target (weight 0)."""
    from mmdet.models.losses import GIoULoss, L1Loss

    from mmgal.adapters.detr_head_adapter import _Layer

    class ModuleL1(L1Loss):  # another class: the per-module path
        pass

    class ModuleGIoU(GIoULoss):
        pass

    head = detr_head()
    torch.manual_seed(1)
    metas = [dict(img_shape=(64, 64)), dict(img_shape=(64, 80))]
    layers = []
    for _ in range(3):
        boxes = torch.rand(2, 10, 4)
        boxes[0, 0] = torch.tensor([0.5, 0.5, 0.0, 0.2])
        targets = torch.rand(20, 4)
        targets[1] = boxes[0, 1]
        weights = (torch.rand(20, 1) < 0.5).float().expand(-1, 4)
        layers.append(_Layer(boxes, targets, weights.contiguous(), metas))
    adapter = build_adapter(head)
    lean = adapter._grouped_loss_fn(layers)
    head.loss_bbox = ModuleL1(loss_weight=head.loss_bbox.loss_weight)
    head.loss_iou = ModuleGIoU(loss_weight=head.loss_iou.loss_weight)
    modules = adapter._grouped_loss_fn(layers)
    assert lean.__name__ == 'loss_fn'
    assert modules.func.__name__ == '_module_loss'  # the head's modules
    z = torch.stack([layer.boxes for layer in layers]).to(dtype)
    results = []
    for fn in (lean, modules):
        zz = z.clone().requires_grad_(True)
        loss = fn(zz)
        g, = torch.autograd.grad(loss.sum(), zz)
        results.append((loss, g))
    (loss_a, g_a), (loss_b, g_b) = results
    assert loss_a.dtype == dtype and loss_a.shape == (3, )
    assert torch.equal(loss_a, loss_b)
    assert torch.equal(g_a, g_b)


def test_a_layer_loss_called_on_its_own_gets_its_own_step():
    """loss_by_feat_single outside loss_by_feat (a head of the user's that
    calls it directly): one GAL step for that layer, the logged losses
    exact, the boxes' gradient GAL's."""
    head = detr_head()
    hidden, gts, metas = inputs()
    cls, boxes = head(hidden)
    cls, boxes = cls.detach(), boxes.detach().requires_grad_(True)
    plain = head.loss_by_feat_single(cls[-1], boxes[-1], gts, metas)
    adapter = build_adapter(head)
    rec = Recorder()
    adapter.install(rec)
    tapped = head.loss_by_feat_single(cls[-1], boxes[-1], gts, metas)
    for p, t in zip(plain, tapped):
        assert torch.equal(p, t)
    (z, out, _), = rec.steps
    assert z.shape == (1, 2, 10, 4)
    g, = torch.autograd.grad(sum(tapped), boxes)
    torch.testing.assert_close(g[-1], out.grad[0])
    adapter.remove()
    with pytest.raises(ValueError, match='batched was retired'):
        build_adapter(head, dict(type='DETRHeadAdapter', batched=False))
