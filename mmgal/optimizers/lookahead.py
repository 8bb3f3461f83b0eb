from typing import Union

from mmengine.registry import OPTIMIZERS
from pytorch_optimizer import Lookahead as _Lookahead


@OPTIMIZERS.register_module()
class Lookahead(_Lookahead):
    """Lookahead (Zhang et al., 2019) around any registered optimizer.

    ``param_groups`` *is* the base optimizer's (schedulers drive it).

    Examples:
        >>> # Lookahead(SGD) as in the paper's CIFAR recipe.
        >>> optim_wrapper = dict(optimizer=dict(
        >>>     type='Lookahead', base_optimizer=dict(type='SGD'),
        >>>     lr=0.05, momentum=0.9, weight_decay=1e-5, k=5, alpha=0.8))

    Args:
        params: Parameters or param groups.
        base_optimizer (str | dict): The inner ``OPTIMIZERS`` type (or
            config). Defaults to ``'SGD'``.
        k (int): Inner steps between slow-weight updates. Defaults to 5.
        alpha (float): Slow-weight step size. Defaults to 0.5.
        pullback_momentum (str): ``'none'``, ``'reset'`` or ``'pullback'``.
        **base_kwargs: The inner optimizer's arguments.
    """

    def __init__(self,
                 params,
                 base_optimizer: Union[str, dict] = 'SGD',
                 k: int = 5,
                 alpha: float = 0.5,
                 pullback_momentum: str = 'none',
                 **base_kwargs):
        cfg = dict(type=base_optimizer) if isinstance(
            base_optimizer, str) else dict(base_optimizer)
        cfg.update(base_kwargs)
        cfg['params'] = params
        super().__init__(
            OPTIMIZERS.build(cfg),
            k=k,
            alpha=alpha,
            pullback_momentum=pullback_momentum)
