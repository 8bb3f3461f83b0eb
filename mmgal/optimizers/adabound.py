from mmengine.registry import OPTIMIZERS
from pytorch_optimizer import AdaBound as _AdaBound


@OPTIMIZERS.register_module()
class AdaBound(_AdaBound):
    """AdaBound (Luo et al., 2019), from pytorch-optimizer.

    Unlike pytorch-optimizer's default, ``weight_decouple`` defaults to
    False: the original AdaBound (and the paper's recipe) adds weight decay
    to the gradient (L2), not decoupled as in AdamW.

    Examples:
        >>> optim_wrapper = dict(optimizer=dict(
        >>>     type='AdaBound', lr=1e-3, final_lr=0.1, gamma=1e-3,
        >>>     weight_decay=5e-4))

    Args:
        params: Parameters or param groups.
        weight_decouple (bool): Decoupled weight decay. Defaults to False.
        **kwargs: ``lr``, ``final_lr``, ``betas``, ``gamma``,
            ``weight_decay``, ``amsbound``... of pytorch-optimizer's
            AdaBound.
    """

    def __init__(self, params, weight_decouple: bool = False, **kwargs):
        super().__init__(params, weight_decouple=weight_decouple, **kwargs)
