import pytest
import torch
from mmengine.registry import DefaultScope
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample
from mmpretrain.utils import register_all_modules

import mmgal  # noqa: F401
from mmgal.adapters import (GAL_ADAPTERS, BaseGALAdapter, ClsHeadAdapter,
                            build_adapter, supported_heads)
from mm_helpers import RealGAL


register_all_modules()


@pytest.fixture(autouse=True)
def mmpretrain_scope():
    """Build from the mmpretrain registries whatever scope another test
    module left as the default."""
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        yield


HEADS = [
    dict(type='LinearClsHead', num_classes=5, in_channels=8),
    dict(type='StackedLinearClsHead', num_classes=5, in_channels=8,
         mid_channels=[6]),
    dict(type='VisionTransformerClsHead', num_classes=5, in_channels=8),
    dict(type='EfficientFormerClsHead', num_classes=5, in_channels=8,
         distillation=False),
    dict(type='MultiLabelLinearClsHead', num_classes=5, in_channels=8),
    dict(type='MultiLabelClsHead'),
    dict(type='ClsHead'),
]


def feats_for(head_type, batch=4):
    torch.manual_seed(0)
    if head_type in ('ClsHead', 'MultiLabelClsHead'):
        return (torch.randn(batch, 5), )
    return (torch.randn(batch, 8), )


def samples(batch=4, soft=False, multi=False):
    out = []
    for i in range(batch):
        s = DataSample()
        if soft:
            s.set_gt_score(torch.softmax(torch.randn(5), 0))
        elif multi:
            s.set_gt_label([i % 5, (i + 2) % 5])
        else:
            s.set_gt_label(i % 5)
        out.append(s)
    return out


class Recorder(RealGAL):
    """The real wrapper (policy 'le') on 5 logits; calls hold (z, out)."""

    def __init__(self, sigma=0.3):
        super().__init__(5, sigma=sigma)

    @property
    def outs(self):
        return [(z, out) for z, _, out, _ in self.calls]


@pytest.mark.parametrize('cfg', HEADS, ids=[h['type'] for h in HEADS])
def test_every_listed_head_gets_gal_with_the_same_loss_value(cfg):
    head = MODELS.build(cfg)
    adapter = build_adapter(head)
    assert isinstance(adapter, ClsHeadAdapter)
    if 'num_classes' in cfg:
        assert adapter.out_dim() == 5
    multi = 'MultiLabel' in cfg['type']
    feats = feats_for(cfg['type'])
    data = samples(multi=multi)
    feats = tuple(f.requires_grad_() for f in feats)
    plain = head.loss(feats, data)['loss']
    rec = Recorder()
    adapter.install(rec)
    tapped = head.loss(feats, data)['loss']
    assert len(rec.calls) == 1
    assert torch.equal(tapped, plain)
    z, out = rec.outs[0]
    assert z.shape[-1] == 5
    # The model receives GAL's gradient on z.
    (gz, ) = torch.autograd.grad(tapped, z)
    torch.testing.assert_close(gz, out.grad)
    adapter.remove()
    assert not head.loss_module._forward_hooks


def independent_loss(kind, z, data, weight=None):
    """The head's loss written out from the targets (not through the
    adapter or the loss module): what l(z) must be."""
    import torch.nn.functional as F
    B, C = z.shape
    if kind == 'soft':
        t = torch.stack([d.gt_score for d in data]).to(z.dtype)
        return -(t * torch.log_softmax(z, -1)).sum(-1).mean()
    if kind == 'multilabel':
        t = torch.zeros(B, C, dtype=z.dtype)
        for i, d in enumerate(data):
            t[i, d.gt_label] = 1
        # MMPretrain's BCE: summed over classes, averaged over the batch.
        return F.binary_cross_entropy_with_logits(
            z, t, reduction='none').sum() / B
    y = torch.cat([d.gt_label for d in data])
    if kind == 'smooth':
        t = F.one_hot(y, C).to(z.dtype) * 0.9 + 0.1 / C
        return -(t * torch.log_softmax(z, -1)).sum(-1).mean()
    per = F.cross_entropy(z, y, reduction='none')
    if kind == 'weighted':
        per = per * weight.to(z.dtype)[y]
    return per.sum() / B


LOSS_CASES = {
    'hard': (HEADS[0], {}, dict(type='CrossEntropyLoss')),
    'weighted': (HEADS[0], {}, dict(type='CrossEntropyLoss',
                                    class_weight=[1., 2., .5, 1., 3.])),
    'smooth': (HEADS[0], {}, dict(type='LabelSmoothLoss',
                                  label_smooth_val=0.1, num_classes=5)),
    'soft': (HEADS[0], dict(soft=True), dict(type='CrossEntropyLoss',
                                             use_soft=True)),
    'multilabel': (HEADS[4], dict(multi=True), dict(
        type='CrossEntropyLoss', use_sigmoid=True)),
}


@pytest.mark.parametrize('kind', list(LOSS_CASES))
def test_the_tentative_loss_is_the_heads_own_loss_at_z_prime(kind):
    """Through the real wrapper (policy 'le'): l, g, l' and R of the GAL
    step equal the head's loss written out from the same targets, at z
    and at z' = z - gamma * lr * g~ (g~ from that g and the adjuster),
    with R checked against float64; a step that used other targets (or
    another loss) is off by far more than the tolerance."""
    head_cfg, sample_kw, loss_cfg = LOSS_CASES[kind]
    head = MODELS.build(dict(head_cfg, loss=loss_cfg))
    rec = Recorder(sigma=0.3)
    build_adapter(head).install(rec)
    torch.manual_seed(3)
    feats = (torch.randn(4, 8, requires_grad=True), )
    data = samples(**sample_kw)
    head.loss(feats, data)
    (z, _, out, kw), = rec.calls
    weight = torch.tensor(loss_cfg['class_weight']) if kind == 'weighted' \
        else None
    z64 = z.detach().double().requires_grad_(True)
    loss = independent_loss(kind, z64, data, weight)
    g, = torch.autograd.grad(loss, z64)
    torch.testing.assert_close(out.loss.double(), loss.detach())
    torch.testing.assert_close(out.vanilla_grad.double(), g)
    a = rec.adjuster(z.detach()).double()
    g_adj = g + 0.3 * a / a.norm(dim=-1, keepdim=True) * g.norm(
        dim=-1, keepdim=True)
    eta = kw['lr'] * kw['gamma']
    with torch.no_grad():
        moved = independent_loss(kind, z64 - eta * g_adj, data, weight)
        rem = moved - loss + eta * (g_adj * g).sum()
    torch.testing.assert_close(out.tentative_loss.double(), moved,
                               rtol=1e-6, atol=0)
    assert abs(float(out.remainder) - float(rem)) <= 1e-3 * abs(float(rem))
    assert bool(out.adopted) == bool(moved <= loss)


def test_a_one_class_head_is_finite_with_a_zero_gradient():
    """One class: the softmax loss is 0 whatever z, so g = 0 and R = 0;
    that is a finite step, not a non-finite one (the closed form's
    coefficient was 0 / log 1)."""
    head = MODELS.build(dict(type='LinearClsHead', num_classes=1,
                             in_channels=8))
    rec = RealGAL(1, sigma=0.3)
    build_adapter(head).install(rec)
    feats = (torch.randn(4, 8, requires_grad=True), )
    data = [DataSample().set_gt_label(0) for _ in range(4)]
    head.loss(feats, data)
    (_, _, out, _), = rec.calls
    assert not bool(out.nonfinite)
    assert float(out.remainder) == 0.0
    assert torch.equal(out.vanilla_grad, torch.zeros_like(out.vanilla_grad))
    assert rec.wrapper.pop_gal_stats()['nonfinite'] == 0


def test_conformer_head_gets_one_step_per_branch():
    head = MODELS.build(
        dict(type='ConformerHead', num_classes=5, in_channels=[8, 6]))
    rec = Recorder()
    build_adapter(head).install(rec)
    feats = ((torch.randn(4, 8, requires_grad=True),
              torch.randn(4, 6, requires_grad=True)), )
    head.loss(feats, samples())
    assert len(rec.calls) == 2


def test_no_gal_without_grad_or_in_validation():
    head = MODELS.build(HEADS[0])
    rec = Recorder()
    build_adapter(head).install(rec)
    with torch.no_grad():
        head.loss((torch.randn(4, 8), ), samples())
    assert rec.calls == []


def test_accuracy_is_not_recomputed_per_gal_call(monkeypatch):
    from mmpretrain.evaluation import Accuracy
    head = MODELS.build(dict(HEADS[0], cal_acc=True))
    build_adapter(head).install(Recorder())
    calls = []
    orig = Accuracy.calculate
    monkeypatch.setattr(Accuracy, 'calculate',
                        lambda *a, **k: calls.append(1) or orig(*a, **k))
    head.loss((torch.randn(4, 8, requires_grad=True), ), samples())
    assert len(calls) == 1


def test_unsupported_head_error_lists_supported_heads():
    with pytest.raises(ValueError) as info:
        build_adapter(torch.nn.Linear(2, 2))
    msg = str(info.value)
    assert 'no GAL adapter supports the head Linear' in msg
    for name in ('ClsHead', 'LinearClsHead', 'StackedLinearClsHead',
                 'VisionTransformerClsHead', 'DeiTClsHead',
                 'EfficientFormerClsHead', 'ConformerHead',
                 'MultiLabelClsHead', 'MultiLabelLinearClsHead'):
        assert name in msg
    assert {f'{n} (and subclasses)'
            for n in ClsHeadAdapter.supported_heads} <= set(supported_heads())
    assert 'DETRHead' in supported_heads()  # exact class only


@pytest.mark.parametrize('cfg', [
    dict(type='ClsHead'), dict(type='MultiLabelClsHead'),
    dict(type='CSRAClsHead', num_classes=5, in_channels=8, num_heads=1,
         lam=0.1),
    dict(type='LinearClsHead', num_classes=5, in_channels=8)])
def test_out_dim_is_the_declared_size_or_none(cfg):
    head = MODELS.build(cfg)
    declared = getattr(head, 'num_classes', None)
    assert build_adapter(head).out_dim() == declared


def test_users_can_register_an_adapter_for_their_head():

    class MyHead(torch.nn.Module):
        pass

    @GAL_ADAPTERS.register_module()
    class MyHeadAdapter(BaseGALAdapter):
        supported_heads = ('MyHead', )

        def out_dim(self):
            return 3

    try:
        adapter = build_adapter(MyHead())
        assert isinstance(adapter, MyHeadAdapter) and adapter.out_dim() == 3
        named = build_adapter(MyHead(), 'MyHeadAdapter')
        assert isinstance(named, MyHeadAdapter)
    finally:
        GAL_ADAPTERS.module_dict.pop('MyHeadAdapter')
