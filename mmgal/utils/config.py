import logging

from mmengine.config import Config
from mmengine.logging import print_log

GAL_WRAPPER = 'GALOptimWrapper'


def enable_amp(cfg: Config, loss_scale='dynamic') -> Config:
    """What ``tools/train.py --amp`` does, without dropping GAL.

    The stock scripts set ``optim_wrapper.type = 'AmpOptimWrapper'``, which
    would silently replace ``GALOptimWrapper``. For a GAL config this turns
    on GAL's own AMP (``loss_scale``) and keeps the type; other configs get
    the stock behaviour.
    """
    wrapper = cfg.optim_wrapper
    wrapper_type = wrapper.get('type', 'OptimWrapper')
    if wrapper_type == GAL_WRAPPER:
        wrapper.setdefault('loss_scale', loss_scale)
    elif wrapper_type == 'AmpOptimWrapper':
        print_log('AMP is already enabled in your config.', logger='current',
                  level=logging.WARNING)
    else:
        wrapper.type = 'AmpOptimWrapper'
        wrapper.setdefault('loss_scale', loss_scale)
    return cfg
