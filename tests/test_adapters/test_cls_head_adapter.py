import pytest
import torch
from mmengine.registry import DefaultScope
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample
from mmpretrain.utils import register_all_modules

import mmgal  # noqa: F401
from mmgal.adapters import (GAL_ADAPTERS, BaseGALAdapter, ClsHeadAdapter,
                            build_adapter, supported_heads)
from mmgal.core import gal_step

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


class Recorder:
    """A gal_forward that runs the real step and keeps its output."""

    def __init__(self, sigma=0.3):
        from mmgal.core import GradientAdjuster
        self.adjuster = GradientAdjuster(5, (8, ))
        self.sigma = sigma
        self.calls = []

    def __call__(self, z, loss_fn):
        out = gal_step(z, loss_fn, self.adjuster, 0.1, self.sigma,
                       policy='always')
        self.calls.append((z, out))
        from mmgal.engine.gal_optim_wrapper import _InjectGrad
        return _InjectGrad.apply(z, out.loss, out.grad)


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
    z, out = rec.calls[0]
    assert z.shape[-1] == 5
    # The model receives GAL's gradient on z.
    (gz, ) = torch.autograd.grad(tapped, z)
    torch.testing.assert_close(gz, out.grad)
    adapter.remove()
    assert not head.loss_module._forward_hooks


def test_mixup_soft_targets_reach_the_tentative_loss():
    head = MODELS.build(HEADS[0])
    adapter = build_adapter(head)
    rec = Recorder()
    adapter.install(rec)
    feats = (torch.randn(4, 8, requires_grad=True), )
    data = samples(soft=True)
    loss = head.loss(feats, data)['loss']
    z, out = rec.calls[0]
    target = torch.stack([d.gt_score for d in data])
    expected = -(target * torch.log_softmax(z.detach(), -1)).sum(-1).mean()
    torch.testing.assert_close(out.loss, expected)
    torch.testing.assert_close(loss, expected)


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
    dict(type='CSRAClsHead', num_classes=5, in_channels=8, num_heads=1),
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
