"""GALHook() without ``head=`` finds the one supported head by its class."""
import pytest
import torch
from mmengine.registry import DefaultScope
from mmpretrain.registry import MODELS
from mmpretrain.utils import register_all_modules
from torch import nn

import mmgal  # noqa: F401
from mmgal.adapters import ClsHeadAdapter, find_supported_heads
from mmgal.engine import GALHook

register_all_modules()


def cls_head():
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        return MODELS.build(dict(type='LinearClsHead', num_classes=5,
                                 in_channels=8))


class Wrapped(nn.Module):

    def __init__(self, n_heads: int):
        super().__init__()
        self.backbone = nn.Linear(3, 8)
        self.decode = nn.ModuleDict(
            {f'branch{i}': nn.Sequential(cls_head())
             for i in range(n_heads)})


def test_the_one_supported_head_is_found_wherever_it_sits():
    model = Wrapped(1)
    hook = GALHook()
    assert hook.head is None
    assert hook._find_head(model) is model.decode.branch0[0]


def test_two_supported_heads_are_an_error_listing_their_paths():
    with pytest.raises(ValueError, match=r'Wrapped has 2 heads a GAL adapter '
                       r'supports: decode\.branch0\.0, decode\.branch1\.0; '
                       r"choose one with GALHook\(head='\.\.\.'\)"):
        GALHook()._find_head(Wrapped(2))


def test_an_explicit_head_still_wins():
    model = Wrapped(2)
    assert GALHook(head='decode.branch1.0')._find_head(model) is \
        model.decode.branch1[0]


def test_no_supported_head_is_an_error_listing_the_supported_ones():
    with pytest.raises(ValueError, match=r'no submodule of Sequential is a '
                       r'head that a GAL adapter supports \(supported: '
                       r'ClsHead \(and subclasses\)'):
        GALHook()._find_head(nn.Sequential(nn.Linear(2, 2)))


def test_a_named_adapter_restricts_the_search_to_its_heads():
    model = Wrapped(1)
    assert find_supported_heads(model, 'ClsHeadAdapter') == [
        ('decode.branch0.0', model.decode.branch0[0])]
    assert find_supported_heads(model, 'DETRHeadAdapter') == []
    assert find_supported_heads(model, dict(type=ClsHeadAdapter)) == [
        ('decode.branch0.0', model.decode.branch0[0])]
    with pytest.raises(KeyError, match="'NoSuchAdapter' is not in the "
                       'GAL_ADAPTERS registry'):
        find_supported_heads(model, 'NoSuchAdapter')


def test_a_supported_module_inside_a_supported_head_is_not_a_second_head():
    head = cls_head()
    head.inner = cls_head()  # e.g. an auxiliary head owned by the head
    model = nn.Sequential(head)
    assert [p for p, _ in find_supported_heads(model)] == ['0']


def test_stock_detr_config_with_plain_galhook_finds_bbox_head():
    from mm_helpers import stock_config
    from mmdet.registry import MODELS as DET_MODELS
    cfg = stock_config('mmdet::detr/detr_r50_8xb2-150e_coco.py')
    cfg.model.backbone.update(depth=18, init_cfg=None)
    cfg.model.neck.in_channels = [512]
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = DET_MODELS.build(cfg.model)
    assert GALHook()._find_head(model) is model.bbox_head
    assert torch.is_tensor(next(model.bbox_head.parameters()))
