"""Which param group's lr is GAL's eta: that of the layer that outputs z."""
from typing import Optional, Sequence

from torch import Tensor, nn
from torch.optim import Optimizer


def group_of(optimizer: Optimizer, params) -> Optional[int]:
    """The index of the first param group holding one of ``params`` (in
    their order), or None."""
    index = {id(p): i for i, group in enumerate(optimizer.param_groups)
             for p in group['params']}
    return next((index[id(p)] for p in params if id(p) in index), None)


def find_lr_group(z: Tensor, optimizer: Optimizer,
                  head_params: Sequence[nn.Parameter]) -> Optional[int]:
    """The param group of the parameters nearest to z in its graph (a
    weight before a bias), else of the head's, else None."""
    frontier, seen = [z.grad_fn], set()
    while frontier:
        found, nxt = [], []
        for fn in frontier:
            for child, _ in getattr(fn, 'next_functions', ()):
                if child is None or id(child) in seen:
                    continue
                seen.add(id(child))
                var = getattr(child, 'variable', None)
                if var is not None:
                    found.append(var)
                else:
                    nxt.append(child)
        if found:
            found.sort(key=lambda p: p.dim() < 2)
            group = group_of(optimizer, found)
            if group is not None:
                return group
        frontier = nxt
    return group_of(optimizer, [p for p in head_params if p.requires_grad])
