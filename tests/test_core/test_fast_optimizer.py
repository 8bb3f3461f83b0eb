"""fast_optimizer: PyTorch's fused (else foreach) implementation where the
optimizer has one and the settings chose none; the same update."""
import torch

from mmgal.core import fast_optimizer


class PlainSGD(torch.optim.SGD):
    """An optimizer whose constructor takes neither flag."""

    def __init__(self, params, lr):
        super().__init__(params, lr=lr)


def test_fused_where_there_is_one_and_the_same_update():
    torch.manual_seed(0)
    w = torch.randn(5, 3, requires_grad=True)
    v = w.detach().clone().requires_grad_(True)
    fast = fast_optimizer(torch.optim.Adam, [w], dict(lr=0.1))
    plain = torch.optim.Adam([v], lr=0.1, foreach=False)
    assert fast.defaults['fused'] is True
    for _ in range(3):
        for p in (w, v):
            p.grad = torch.ones_like(p)
        fast.step()
        plain.step()
    torch.testing.assert_close(w, v)


def test_a_chosen_implementation_and_classes_without_flags_are_kept():
    w = torch.zeros(2, requires_grad=True)
    chosen = fast_optimizer(torch.optim.Adam, [w],
                            dict(lr=0.1, foreach=False))
    assert chosen.defaults['foreach'] is False
    assert not chosen.defaults['fused']
    plain = fast_optimizer(PlainSGD, [w], dict(lr=0.1))
    assert type(plain) is PlainSGD
