import logging
from typing import Optional, Union

from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.optim import OptimWrapper
from mmengine.registry import HOOKS

from mmgal.adapters import (BaseGALAdapter, build_adapter,
                            find_supported_heads, supported_heads)
from mmgal.utils.checkpoint import (confine_runtime_info,
                                    strip_executable_meta)
from .gal_optim_wrapper import GALOptimWrapper

DATA_BATCH = Optional[Union[dict, tuple, list]]
GAL_SCALAR_PREFIX = 'train/gal/'


def drop_gal_scalars(checkpoint: dict) -> None:
    """Remove logged GAL scalars from a checkpoint's MessageHub."""
    hub = checkpoint.get('message_hub')
    if not isinstance(hub, dict):
        return
    for part in ('log_scalars', 'resumed_keys'):
        table = hub.get(part)
        if isinstance(table, dict):
            for key in [k for k in table if k.startswith(GAL_SCALAR_PREFIX)]:
                del table[key]


@HOOKS.register_module()
class GALHook(Hook):
    """Connects a model's head to :class:`GALOptimWrapper`.

    ``before_run`` finds the head, picks its adapter, sets the wrapper up
    (the adjuster sized to the head's output) and installs the adapter's
    tap, which sends z through GAL; ``after_run`` removes it. Each logging
    interval it puts in the ``MessageHub`` (text and json logs, every
    visualizer) the scalars of
    :func:`~mmgal.engine.gal_statistics.read_stats`: ``gal/remainder``
    (|R| / (eta |g~|)^2), ``gal/adopt_rate``, ``gal/cos_sim``,
    ``gal/nonfinite``, ``gal/tentative_gain`` and whether the adjuster
    learns, ``gal/adjuster_update``, ``gal/remainder_ratio`` (|R| with the
    current over the initial adjuster, on an unseen batch) and
    ``gal/cos_init``. Statistics stay on the device between intervals.

    Examples:
        >>> # Any supported model (classifier or DETR-family detector):
        >>> # the hook finds the head by its class.
        >>> default_hooks = dict(gal=dict(type='GALHook'))
        >>> # One of several heads, or a head your own adapter handles:
        >>> default_hooks = dict(gal=dict(type='GALHook', head='bbox_head',
        >>>                               adapter='MyHeadAdapter'))

    Args:
        head (str, optional): Dotted path of the head in the model.
            Defaults to None: the one submodule an adapter supports.
        adapter (str | dict, optional): A ``GAL_ADAPTERS`` type. Defaults
            to None: chosen by the head's class.
        dim (int, optional): z's size, for heads that do not expose it.
        interval (int, optional): Logging interval. Defaults to the
            ``LoggerHook``'s.
    """

    priority = 'NORMAL'

    def __init__(self,
                 head: Optional[str] = None,
                 adapter: Optional[Union[str, dict]] = None,
                 dim: Optional[int] = None,
                 interval: Optional[int] = None):
        if head is not None and (not isinstance(head, str) or not head):
            raise ValueError('GALHook: head must be None (found by its '
                             'class) or a dotted attribute path such as '
                             f"'head' or 'bbox_head', got {head!r}")
        if adapter is not None and not isinstance(adapter, (str, dict)):
            raise ValueError('GALHook: adapter must be None, a registered '
                             f'adapter name or a config dict, got '
                             f'{adapter!r}')
        for name, value in (('dim', dim), ('interval', interval)):
            if value is not None and (not isinstance(value, int)
                                      or isinstance(value, bool)
                                      or value < 1):
                raise ValueError(f'GALHook: {name} must be None or a '
                                 f'positive int, got {value!r}')
        self.head = head
        self.adapter_cfg = adapter
        self.dim = dim
        self.interval = interval
        self.adapter: Optional[BaseGALAdapter] = None
        self._wrapper: Optional[GALOptimWrapper] = None
        self._warned_nonfinite = False

    def _find_head(self, model):
        if self.head is None:
            found = find_supported_heads(model, self.adapter_cfg)
            if len(found) == 1:
                return found[0][1]
            if not found:
                raise ValueError(
                    f'GALHook: no submodule of {type(model).__name__} is a '
                    f"head that a GAL adapter supports (supported: "
                    f"{', '.join(supported_heads())}); set GALHook(head="
                    "'...') and, for your own head, adapter='...'")
            raise ValueError(
                f'GALHook: {type(model).__name__} has {len(found)} heads a '
                f"GAL adapter supports: {', '.join(p for p, _ in found)}; "
                "choose one with GALHook(head='...')")
        obj = model
        for part in self.head.split('.'):
            if not hasattr(obj, part):
                raise ValueError(
                    f'GALHook: the model {type(model).__name__} has no '
                    f"'{self.head}' (no attribute '{part}'); set "
                    "GALHook(head='...') to the head's dotted path")
            obj = getattr(obj, part)
        return obj

    def before_run(self, runner) -> None:
        wrapper = runner.optim_wrapper
        if not isinstance(wrapper, OptimWrapper):
            # runner.val()/test(): nothing is trained, nothing to install.
            return
        if not isinstance(wrapper, GALOptimWrapper):
            raise TypeError(
                'GALHook needs optim_wrapper.type=\'GALOptimWrapper\', got '
                f'{type(wrapper).__name__}; set optim_wrapper = dict('
                "type='GALOptimWrapper', ...) in the config")
        n_hooks = sum(isinstance(h, GALHook) for h in runner.hooks)
        if n_hooks > 1:
            raise ValueError(
                f'GALHook is registered {n_hooks} times (custom_hooks); each '
                'would run GAL on the head, so GAL would step several times '
                'per iteration. Keep one GALHook.')
        self._check_priority(runner)
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        head = self._find_head(model)
        self.adapter = build_adapter(head, self.adapter_cfg)
        dim = self.dim or self.adapter.out_dim()
        # The model's device (a head without parameters, e.g. VGG's
        # multi-label head, has none of its own).
        param = next(head.parameters(), None)
        if param is None:
            param = next(model.parameters(), None)
        device = param.device if param is not None else 'cpu'
        wrapper.setup_adjuster(dim, device, list(head.parameters()))
        self._wrapper = wrapper
        if self.interval is None:
            self.interval = next((h.interval for h in runner.hooks
                                  if type(h).__name__ == 'LoggerHook'), 10)
        if wrapper.enabled:
            s = wrapper.settings
            self.adapter.install(wrapper.gal_forward)
            size = f'z dim {dim}' if dim is not None else \
                'z dim from the first output'
            print_log(
                f'GAL on {type(head).__name__} ({type(self.adapter).__name__}'
                f', {size}): {s.adjuster} adjuster {s.arch}, sigma '
                f'{s.sigma}, gamma {s.gamma}, policy {s.policy}, remainder '
                f'{s.remainder}, objective {s.objective}, normalize '
                f'{s.normalize}', logger='current')
        else:
            print_log('GAL is switched off (GALOptimWrapper.enabled=False)',
                      logger='current')

    def _check_priority(self, runner) -> None:
        """GALHook must hand its statistics to the MessageHub before the
        LoggerHook reads it in the same iteration."""
        from mmengine.runner.priority import get_priority
        logger = next((h for h in runner.hooks
                       if type(h).__name__ == 'LoggerHook'), None)
        if logger is not None and get_priority(self.priority) > \
                get_priority(logger.priority):
            raise ValueError(
                f'GALHook: priority={self.priority!r} runs after the '
                f'LoggerHook ({logger.priority!r}), which would log every '
                'gal/* value one interval late and never the last: give '
                "GALHook a priority of at least the LoggerHook's, e.g. "
                "'NORMAL' (the default)")

    def _logs_at(self, runner, batch_idx: int) -> bool:
        # The same condition as LoggerHook's.
        return self.every_n_inner_iters(batch_idx, self.interval) or \
            self.end_of_epoch(runner.train_dataloader, batch_idx)

    def before_train_iter(self,
                          runner,
                          batch_idx: int,
                          data_batch: DATA_BATCH = None) -> None:
        if self._wrapper is not None:
            # Probe the logging iteration's batch (gal/remainder_ratio).
            self._wrapper.probe = self._logs_at(runner, batch_idx)

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch: DATA_BATCH = None,
                         outputs: Optional[dict] = None) -> None:
        if self._wrapper is None:
            return
        self._wrapper.probe = False
        if self._logs_at(runner, batch_idx):
            # resumed=False: GAL scalars are never saved in a checkpoint,
            # so a run that resumes one logs only what its own steps give.
            stats = self._wrapper.pop_gal_stats()
            for key, value in stats.items():
                runner.message_hub.update_scalar(
                    f'{GAL_SCALAR_PREFIX}{key}', value, resumed=False)
            if stats.get('nonfinite', 0) > 0 and not self._warned_nonfinite:
                self._warned_nonfinite = True
                print_log(
                    f'GAL: {int(stats["nonfinite"])} GAL step(s) up to '
                    f'iteration {runner.iter + 1} had a non-finite '
                    'gradient, adjustment or tentative loss; each used the '
                    'vanilla gradient and left the adjuster untouched '
                    '(gal/nonfinite counts them per interval).',
                    logger='current', level=logging.WARNING)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        # Checkpoints written before GAL scalars were kept out of them.
        drop_gal_scalars(checkpoint)
        # Runs before Runner.resume reads meta['config'] (Python text it
        # would execute): GAL configs are safe with the stock scripts too.
        strip_executable_meta(checkpoint)
        confine_runtime_info(checkpoint, runner)

    def after_run(self, runner) -> None:
        if self.adapter is not None:
            self.adapter.remove()
            self.adapter = None
        self._wrapper = None
