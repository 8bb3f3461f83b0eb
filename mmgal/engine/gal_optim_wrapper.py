import logging
from contextlib import contextmanager
from typing import Dict, Optional, Sequence, Union

import torch
from mmengine.logging import print_log
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS, OPTIMIZERS
from torch import Tensor, nn
from torch.optim import Optimizer

from mmgal.core import AdjusterLearner, GALSettings
from .amp import build_amp
from .gal_statistics import read_stats
from .head_lr import find_lr_group, group_of

GAL_STATE_KEY = 'gal'
# Above this sigma the wrapper warns (the paper: 0.001-0.01; 0.2 on a toy).
SIGMA_WARN = 0.2
# OptimWrapper's own settings; every other key is GAL's (GALSettings).
_WRAPPER_KEYS = ('accumulative_counts', 'clip_grad')


def _log(message: str, level: int = logging.WARNING) -> None:
    print_log(message, logger='current', level=level)


class _InjectGrad(torch.autograd.Function):
    """Forward: ``value``; backward: ``grad`` times the incoming gradient
    to ``z`` (so AMP's scale and ``accumulative_counts`` reach z)."""

    @staticmethod
    def forward(ctx, z: Tensor, value: Tensor, grad: Tensor) -> Tensor:
        ctx.save_for_backward(grad)
        return value.detach().clone()

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        grad, = ctx.saved_tensors
        return (grad * grad_output).to(grad.dtype), None, None


@OPTIM_WRAPPERS.register_module()
class GALOptimWrapper(OptimWrapper):
    """Optimizer wrapper that adds Gradient Adjustment Learning.

    The model's optimizer steps as in :class:`OptimWrapper`
    (``accumulative_counts``, ``clip_grad``, schedulers, ``paramwise_cfg``);
    the adjuster and its optimizer are an
    :class:`~mmgal.core.AdjusterLearner`, outside the model and DDP.
    :class:`GALHook` sets it up and routes the head through
    :meth:`gal_forward`.

    Examples:
        >>> # Merged over a stock config's optim_wrapper: its optimizer,
        >>> # paramwise_cfg and clip_grad stay.
        >>> optim_wrapper = dict(type='GALOptimWrapper', sigma=0.01)
        >>> default_hooks = dict(gal=dict(type='GALHook'))
        >>> custom_imports = dict(imports=['mmgal'],
        >>>                       allow_failed_imports=False)
        >>> # The authors' release (their remainder, |R|, Eq. 4 per row,
        >>> # the adjuster in the model's optimizer):
        >>> optim_wrapper = dict(type='GALOptimWrapper', preset='release')
        >>> # A stock fp16 config adopts GAL by changing only the type:
        >>> optim_wrapper = dict(type='GALOptimWrapper', loss_scale=512.)

    Args:
        optimizer (Optimizer): The model's optimizer.
        loss_scale (float | str | dict, optional): As in
            :class:`AmpOptimWrapper`; it (or ``dtype``) switches AMP on.
        dtype (str | torch.dtype, optional): Autocast dtype.
        use_fsdp (bool): Only False (as AmpOptimWrapper accepts it).
        **kwargs: :class:`OptimWrapper`'s ``accumulative_counts`` and
            ``clip_grad``; every other key a
            :class:`~mmgal.core.GALSettings` field.
    """

    valid_dtypes = AmpOptimWrapper.valid_dtypes

    def __init__(self,
                 optimizer: Optimizer,
                 loss_scale: Union[None, float, str, dict] = None,
                 dtype: Union[None, str, torch.dtype] = None,
                 use_fsdp: bool = False,
                 **kwargs):
        if use_fsdp:
            raise ValueError('use_fsdp=True is not supported by '
                             'GALOptimWrapper (FSDP shards the head whose '
                             'output GAL adjusts); use DDP')
        gal = {k: kwargs.pop(k) for k in list(kwargs)
               if k not in _WRAPPER_KEYS}
        self.settings = GALSettings.from_dict(gal, 'GALOptimWrapper')
        super().__init__(optimizer=optimizer, **kwargs)
        if self.settings.sigma > SIGMA_WARN:
            _log(f'GALOptimWrapper: sigma={self.settings.sigma} is far above '
                 "the paper's range (0.001-0.01 in every task, 0.2 on its "
                 '3-D toy problem); a large sigma can make training diverge '
                 '(0.9 took the digits loss from 2.3 to 5.6e4 in one '
                 'epoch).')
        amp = build_amp(loss_scale, dtype)
        self.use_amp, self.loss_scaler = amp.use_amp, amp.loss_scaler
        self._scale_update_param, self.cast_dtype = (amp.scale_update_param,
                                                     amp.cast_dtype)
        self.learner: Optional[AdjusterLearner] = None
        self.probe = False  # GALHook: probe the initial adjuster now
        self._device: Union[str, torch.device] = 'cpu'
        self._head_params: list = []
        self._lr_group: Optional[int] = None
        self._lr_group_known = False
        self._set_up = False
        self._pending_state: Optional[dict] = None
        self._warned_idle = False
        self._last_weights: Optional[Tensor] = None

    @property
    def enabled(self) -> bool:
        return self.settings.enabled

    @property
    def adjuster(self) -> Optional[nn.Module]:
        return None if self.learner is None else self.learner.adjuster

    @property
    def adjuster_optimizer(self) -> Optional[Optimizer]:
        return None if self.learner is None else self.learner.optimizer

    def setup_adjuster(self, dim: Optional[int],
                       device: Union[str, torch.device, None] = None,
                       head_params: Optional[Sequence[nn.Parameter]] = None
                       ) -> Optional[nn.Module]:
        """:class:`GALHook`'s one set-up call: the head's device and
        parameters, and the learner for outputs of size ``dim`` (None: at
        the first step). A later run of the same runner keeps it."""
        if device is not None:
            self._device = device
        if head_params is not None:
            self._head_params = list(head_params)
            # Until the first GAL step finds the layer that outputs z.
            self._lr_group = group_of(self.optimizer, [
                p for p in self._head_params if p.requires_grad])
            self._lr_group_known = False
        self._set_up = True
        if dim is None:
            return None
        if self.learner is not None:
            if self.learner.adjuster.dim != dim:
                raise ValueError(f'the adjuster was already built for dim '
                                 f'{self.learner.adjuster.dim}, now asked '
                                 f'for {dim}')
            return self.learner.adjuster
        self.learner = AdjusterLearner(
            self.settings, dim, self._device, lr=self.base_lr(),
            model_optimizer=self.optimizer, resolve=OPTIMIZERS.get, log=_log,
            in_graph_update=self._accumulative_counts == 1)
        if self._pending_state is not None:
            state, self._pending_state = self._pending_state, None
            self.learner.load_state_dict(state)
        return self.learner.adjuster

    def base_lr(self) -> float:
        """GAL's eta: ``tentative_lr``, else the head's lr now (schedulers
        and multipliers applied), else the base lr."""
        if self.settings.tentative_lr is not None:
            return self.settings.tentative_lr
        if self._lr_group is not None:
            return float(self.optimizer.param_groups[self._lr_group]['lr'])
        if self.base_param_settings is not None:
            return float(self.base_param_settings['lr'])
        return float(self.optimizer.param_groups[0]['lr'])

    def gal_forward(self, z: Tensor, loss_fn, grouped: bool = False
                    ) -> Tensor:
        """Run GAL on output features ``z`` of the head.

        Args:
            z (Tensor): The head's output features (in the model's graph).
            loss_fn (Callable): z -> the z-dependent part of the head's loss
                (see :func:`mmgal.core.gal_step`).
            grouped (bool): z is (G, ..., d), G problems in one step.

        Returns:
            Tensor: ``loss_fn(z)`` (summed over groups) whose gradient
            w.r.t. z is GAL's choice.
        """
        if self.learner is None:
            self.setup_adjuster(z.shape[-1])
        if not self._lr_group_known:
            self._lr_group = find_lr_group(z, self.optimizer,
                                           self._head_params)
            self._lr_group_known = True
        out = self.learner.step(z, loss_fn, self.base_lr(), grouped,
                                self.probe)
        loss = out.loss.sum() if grouped else out.loss
        # The loss's dtype without GAL (float64 maths stay inside GAL).
        return _InjectGrad.apply(
            z, loss.to(torch.promote_types(z.dtype, torch.float32)),
            out.grad)

    def pop_gal_stats(self) -> Dict[str, float]:
        """:func:`~mmgal.engine.gal_statistics.read_stats` since the last
        call (one host read; under DDP an all-reduce on every rank)."""
        if self.learner is None:
            return {}
        res, self._last_weights = read_stats(
            self.learner.pop_stats(), self.learner.adjuster,
            self.learner.initial, self._last_weights)
        return res

    def backward(self, loss: Tensor, **kwargs) -> None:
        if self.enabled and self.learner is None:
            if self._set_up:
                raise RuntimeError(
                    "GALOptimWrapper: GAL ran no step in the first "
                    "iteration: the head's loss never reached the "
                    "adapter's tap. Check GALHook's head and adapter.")
            raise RuntimeError(
                'GALOptimWrapper is enabled but no GALHook has set up its '
                "adjuster: add default_hooks = dict(gal=dict(type="
                "'GALHook')) to the config (or set "
                'optim_wrapper.enabled=False)')
        if self.loss_scaler is None:
            return super().backward(loss, **kwargs)
        return AmpOptimWrapper.backward(self, loss, **kwargs)

    def step(self, **kwargs) -> None:
        """Step the model's optimizer as :class:`OptimWrapper` (or
        :class:`AmpOptimWrapper`) does, then the adjuster's."""
        if self.loss_scaler is None:
            super().step(**kwargs)
        else:
            AmpOptimWrapper.step(self, **kwargs)
        if self.learner is None:
            return
        if self.learner.update() == 0 and self.enabled and \
                not self._warned_idle:
            self._warned_idle = True
            _log('GALOptimWrapper: the model was updated but GAL ran no '
                 "step since the last update: the adapter's tap never saw "
                 "the head's loss. Check GALHook's head and adapter.")

    @contextmanager
    def optim_context(self, model: nn.Module):
        if not self.use_amp:
            with super().optim_context(model):
                yield
            return
        from mmengine.runner.amp import autocast
        param = next(model.parameters(), None)
        with super().optim_context(model), autocast(
                device_type=param.device.type if param is not None else None,
                dtype=self.cast_dtype):
            yield

    def state_dict(self) -> dict:
        state = super().state_dict()
        if self.loss_scaler is not None:
            state['loss_scaler'] = self.loss_scaler.state_dict()
        if self.learner is not None:
            state[GAL_STATE_KEY] = self.learner.state_dict()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        gal = state_dict.pop(GAL_STATE_KEY, None)
        scaler_state = state_dict.pop('loss_scaler', None)
        if self.loss_scaler is not None and scaler_state is not None:
            self.loss_scaler.load_state_dict(scaler_state)
        super().load_state_dict(state_dict)
        if gal is None:
            if self.enabled:
                _log('GALOptimWrapper: the checkpoint has no GAL state '
                     f"('{GAL_STATE_KEY}'); the adjuster starts afresh.")
        elif self.learner is None:
            self._pending_state = gal
        else:
            self.learner.load_state_dict(gal)

    def __repr__(self) -> str:
        return super().__repr__() + f'GAL: {self.settings}, ' \
            f'amp={self.use_amp}\n'
