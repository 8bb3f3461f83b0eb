from mmengine.registry import OPTIMIZERS
from pytorch_optimizer import AdaBound as _AdaBound


@OPTIMIZERS.register_module()
class AdaBound(_AdaBound):
    """AdaBound (Luo et al., 2019), from pytorch-optimizer.

    ``weight_decouple`` defaults to False (L2, as the original AdaBound).

    Examples:
        >>> optim_wrapper = dict(optimizer=dict(
        >>>     type='AdaBound', lr=1e-3, final_lr=0.1, gamma=1e-3,
        >>>     weight_decay=5e-4))

    Args:
        params: Parameters or param groups.
        weight_decouple (bool): Decoupled weight decay. Defaults to False.
        **kwargs: pytorch-optimizer's AdaBound arguments.
    """

    def __init__(self, params, weight_decouple: bool = False, **kwargs):
        super().__init__(params, weight_decouple=weight_decouple, **kwargs)
