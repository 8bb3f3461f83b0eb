import copy
import inspect
import logging
from contextlib import contextmanager
from typing import Dict, Optional, Sequence, Union

import torch
import torch.distributed as torch_dist
from mmengine.dist import broadcast, get_world_size, is_distributed
from mmengine.logging import print_log
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS, OPTIMIZERS
from torch import Tensor, nn
from torch.optim import Adam, AdamW, Optimizer

from .gal_statistics import read_stats
from mmgal.core import (ADJUSTER_KINDS, CompiledGALStep,
                        build_adjuster, check_arch, check_gal_args,
                        check_real, compile_unavailable, dtype_from_name,
                        fast_optimizer, gal_step, is_real,
                        warn_if_unlearnable)

GAL_STATE_KEY = 'gal'
# 'auto': the step as one torch.compile-d graph where torch.compile works
# here, else eagerly; 'compile': compiled wherever it can be tried; both
# with a fused/foreach adjuster optimizer where PyTorch has one, and both
# run eagerly, with one warning, where compiling fails. 'eager': the
# reference implementation, op by op.
FAST_MODES = ('auto', 'compile', 'eager')
# Above this sigma the wrapper warns (the paper uses 0.001-0.01, 0.2 on its
# toy problem).
SIGMA_WARN = 0.2
# The adjuster's optimizer when the config names none: Adam without weight
# decay (its step does not depend on the gradient's scale, and no decay
# shrinks the weights toward 0, which Eq. 4's normalisation would ignore).
DEFAULT_ADJUSTER_OPTIMIZER = dict(type='Adam', lr=1e-3)
# adjuster_optimizer='model': the model optimizer's type and settings, as
# the paper (the adjuster as one more param group of the model optimizer).
MODEL_OPTIMIZER = 'model'
# How a torch optimizer runs, not what it computes: not reported as a
# changed setting on resume.
_IMPL_FLAGS = ('fused', 'foreach', 'capturable', 'differentiable')


class _InjectGrad(torch.autograd.Function):
    """Returns ``value`` in the forward pass and sends ``grad`` (times the
    incoming gradient) to ``z`` in the backward pass.

    The logged loss is exactly the task loss, and whatever the optimizer
    wrapper does to the loss before ``backward`` (loss scaling for AMP,
    division for ``accumulative_counts``) reaches ``z`` unchanged.
    """

    @staticmethod
    def forward(ctx, z: Tensor, value: Tensor, grad: Tensor) -> Tensor:
        ctx.save_for_backward(grad)
        return value.detach().clone()

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        grad, = ctx.saved_tensors
        return (grad * grad_output).to(grad.dtype), None, None


def _inner_optimizer(optimizer: Optimizer) -> Optimizer:
    # Wrappers such as Lookahead hold the real optimizer as `.optimizer`.
    while isinstance(getattr(optimizer, 'optimizer', None), Optimizer):
        optimizer = optimizer.optimizer
    return optimizer


@OPTIM_WRAPPERS.register_module()
class GALOptimWrapper(OptimWrapper):
    """Optimizer wrapper that adds Gradient Adjustment Learning.

    It steps the model's optimizer exactly as :class:`OptimWrapper` does
    (``accumulative_counts``, ``clip_grad``, param schedulers and
    ``paramwise_cfg`` keep working), and owns GAL's state: the adjuster and
    the adjuster's own optimizer, which stay out of the model, out of DDP
    and out of the model optimizer's param groups. :class:`GALHook` sizes
    the adjuster to the head and routes the head's output through
    :meth:`gal_forward`.

    Mixed precision follows :class:`AmpOptimWrapper` in the same wrapper:
    give ``loss_scale`` and/or ``dtype`` (its keys) and the forward pass
    runs under autocast with the loss scaled; GAL's tentative step and
    remainder always use unscaled fp32 values.

    Examples:
        >>> # Merged over a stock config's optim_wrapper: its optimizer,
        >>> # paramwise_cfg and clip_grad stay.
        >>> optim_wrapper = dict(
        >>>     type='GALOptimWrapper', sigma=0.01, gamma=1.0,
        >>>     arch=(256, 64, 32))
        >>> default_hooks = dict(gal=dict(type='GALHook'))
        >>> custom_imports = dict(imports=['mmgal'],
        >>>                       allow_failed_imports=False)
        >>> # A stock fp16 config adopts GAL by changing only the type:
        >>> optim_wrapper = dict(type='GALOptimWrapper', loss_scale=512.)

    Args:
        optimizer (Optimizer): The model's optimizer.
        sigma (float): Relative strength of the adjustment (Eq. 4), >= 0.
            Defaults to 0.01.
        gamma (float): Tentative learning-rate scale, > 0. Defaults to 1.
        arch (Sequence[int]): Adjuster hidden widths (MLP) or channels
            (CNN). Defaults to (256, 64, 32).
        adjuster (str): ``'mlp'``, ``'cnn'``, ``'uniform'`` or ``'normal'``.
            Defaults to ``'mlp'``.
        policy (str): Update policy, ``'le'``, ``'lt'``, ``'always'`` or
            ``'never'`` (Algorithm 1). Defaults to ``'le'``.
        remainder (str): ``'exact'`` (default: the head's closed form where
            the adapter knows the loss, else the difference of the losses
            in float64), ``'taylor'`` (that difference in the output's
            dtype, float32: below the loss's rounding on most tasks) or
            ``'reference'`` (the authors' release: as ``'taylor'`` with
            the first-order term averaged over rows).
        objective (str): The adjuster's objective: ``'normalized'``
            (default: |R| / (eta |g~|)^2, denominator detached) or
            ``'abs'`` (|R|, the paper's; its gradient is O(lr^2)).
        normalize (str): Eq. 4's norms: ``'auto'`` (default: per row for
            outputs of d > 1 features, over the batch for d = 1),
            ``'row'`` (Eq. 4) or ``'batch'`` (a deviation from Eq. 4).
        adjuster_optimizer (dict | str, optional): The adjuster's
            optimizer, without ``params``. Defaults to None:
            ``dict(type='Adam', lr=1e-3)`` (no weight decay). ``'model'``:
            the model optimizer's type and settings (weight decay
            included) at ``adjuster_lr_ratio`` times the head's current lr,
            as in the paper. A dict with ``lr`` keeps that lr; without
            ``lr`` it follows the head's lr times ``adjuster_lr_ratio``.
        adjuster_lr_ratio (float, optional): For an adjuster optimizer
            without its own lr: its lr is this ratio times the head's
            current lr. Defaults to None (1.0 where it applies); giving it
            with an ``lr`` in ``adjuster_optimizer`` is an error.
        tentative_lr (float, optional): A fixed eta (> 0) for the tentative
            step. Defaults to None: the lr the head's parameters get now
            (after ``auto_scale_lr``, warm-up, schedulers and
            ``paramwise_cfg``'s multipliers).
        enabled (bool): Switch GAL on or off. Off, this wrapper behaves as
            :class:`OptimWrapper` (or :class:`AmpOptimWrapper`). Defaults
            to True.
        seed (int): Seed of the adjuster's initial weights (drawn from a
            private generator, so the model's random stream is the same
            with or without GAL). Defaults to 0.
        loss_scale (float | str | dict, optional): As in
            :class:`AmpOptimWrapper`; setting it switches AMP on.
        dtype (str | torch.dtype, optional): Autocast dtype
            (``'float16'``, ``'bfloat16'``); setting it switches AMP on.
        use_fsdp (bool): Accepted for config compatibility with
            :class:`AmpOptimWrapper`; only False is supported.
        fast (str): ``'auto'`` (default): the GAL step runs as one
            ``torch.compile``-d graph (:class:`mmgal.core.CompiledGALStep`:
            compiled on the first iteration and once more for a new batch
            shape, the time logged) where torch.compile works here (a C++
            compiler for the CPU, Triton for CUDA, not switched off by
            ``TORCH_COMPILE_DISABLE=1``), else eagerly, and the adjuster's
            optimizer uses PyTorch's fused (else foreach) implementation
            where it has one and the settings chose none; ``'compile'``:
            the same, compiling wherever it can be tried; where compiling
            fails, both log one warning and run eagerly. ``'eager'``: the
            plain per-operator step and optimizer. All compute the same
            update up to float rounding.
        gal_dtype (str, optional): The dtype of GAL's maths (the losses at
            z and z', the remainder, the choice): ``'float32'`` or
            ``'float64'``. Defaults to None: float64 where the remainder
            is an exact difference of losses, else the output's dtype, at
            least float32.
        **kwargs: ``accumulative_counts`` and ``clip_grad`` of
            :class:`OptimWrapper`.
    """

    valid_dtypes = AmpOptimWrapper.valid_dtypes

    def __init__(self,
                 optimizer: Optimizer,
                 sigma: float = 0.01,
                 gamma: float = 1.0,
                 arch: Sequence[int] = (256, 64, 32),
                 adjuster: str = 'mlp',
                 policy: str = 'le',
                 remainder: str = 'exact',
                 objective: str = 'normalized',
                 normalize: str = 'auto',
                 adjuster_optimizer: Union[None, str, dict] = None,
                 adjuster_lr_ratio: Optional[float] = None,
                 tentative_lr: Optional[float] = None,
                 enabled: bool = True,
                 seed: int = 0,
                 loss_scale: Union[None, float, str, dict] = None,
                 dtype: Union[None, str, torch.dtype] = None,
                 use_fsdp: bool = False,
                 fast: str = 'auto',
                 gal_dtype: Optional[str] = None,
                 **kwargs):
        if use_fsdp:
            raise ValueError('use_fsdp=True is not supported by '
                             'GALOptimWrapper (FSDP shards the head whose '
                             'output GAL adjusts); use DDP')
        super().__init__(optimizer=optimizer, **kwargs)
        check_gal_args(sigma, gamma, policy, remainder, objective, normalize)
        if fast not in FAST_MODES:
            raise ValueError(f'fast must be one of {FAST_MODES}, got '
                             f'{fast!r}')
        self.fast = fast
        self.gal_dtype = dtype_from_name('gal_dtype', gal_dtype)
        # Picked for the head's device by setup_adjuster().
        self._gal_step = gal_step
        if adjuster not in ADJUSTER_KINDS:
            raise ValueError(f'adjuster must be one of {ADJUSTER_KINDS}, got '
                             f'{adjuster!r}')
        if adjuster in ('mlp', 'cnn'):
            check_arch(arch)
        self.adjuster_optimizer_cfg, self.adjuster_lr_ratio = \
            self._check_adjuster_optimizer(adjuster_optimizer,
                                           adjuster_lr_ratio)
        if tentative_lr is not None:
            if not is_real(tentative_lr):
                raise ValueError('tentative_lr must be None (the head\'s '
                                 'current lr) or a finite number > 0, got '
                                 f'{tentative_lr!r}')
            # 0 would be gamma=0 in disguise: no tentative step, R = 0,
            # the adjuster never learns and g~ is adopted every step.
            check_real('tentative_lr', tentative_lr, strict=True)
        for name, value in (('enabled', enabled), ('seed', seed)):
            kind = bool if name == 'enabled' else int
            if not isinstance(value, kind) or (
                    kind is int and isinstance(value, bool)):
                raise ValueError(f'{name} must be a {kind.__name__}, got '
                                 f'{value!r} ({type(value).__name__})')
        if not -2**63 <= seed < 2**64:
            raise ValueError(f'seed must be an int in [-2**63, 2**64) '
                             f'(torch.manual_seed), got {seed!r}')
        if float(sigma) > SIGMA_WARN:
            print_log(
                f'GALOptimWrapper: sigma={sigma} is far above the paper\'s '
                'range (0.001-0.01 in every task, 0.2 on its 3-D toy '
                'problem); a large sigma can make training diverge (0.9 '
                'took the digits loss from 2.3 to 5.6e4 in one epoch).',
                logger='current',
                level=logging.WARNING)
        self.sigma = float(sigma)
        self.gamma = float(gamma)
        self.arch = tuple(arch)
        self.adjuster_kind = adjuster
        self.policy = policy
        self.remainder = remainder
        self.objective = objective
        self.normalize = normalize
        self.tentative_lr = None if tentative_lr is None else float(
            tentative_lr)
        self.enabled = enabled
        self.seed = seed
        self.adjuster: Optional[nn.Module] = None
        self.adjuster_optimizer: Optional[Optimizer] = None
        # The initial adjuster, frozen (probes on logging iterations), and
        # the weights at the last log (gal/adjuster_update).
        self._initial_adjuster: Optional[nn.Module] = None
        self._last_weights: Optional[Tensor] = None
        self.probe = False
        # Index of the param group of the layer that outputs z (its lr is
        # GAL's eta), found on the first GAL step; None: mmengine's base
        # lr. The head's device and parameters (GALHook.prepare).
        self._lr_group: Optional[int] = None
        self._lr_group_known = False
        self._device: Union[str, torch.device] = 'cpu'
        self._head_params: list = []
        self._prepared = False
        self._pending_gal_state: Optional[dict] = None
        self._gal_micro_steps = 0
        self._gal_calls = 0  # GAL calls since the adjuster's last update
        # The adjuster's Adam update inside the compiled step (see
        # _step_adjuster).
        self._in_graph = False
        self._warned_idle = False
        self._stats: Optional[Tensor] = None
        self._init_amp(loss_scale, dtype)

    @staticmethod
    def _check_adjuster_optimizer(cfg, ratio) -> tuple:
        """(the adjuster optimizer's config, the lr ratio or None when the
        config fixes the lr), or ``ValueError`` naming the field."""
        if ratio is not None:
            check_real('adjuster_lr_ratio', ratio, strict=True)
        if cfg is None:
            if ratio is not None:
                raise ValueError(
                    'adjuster_lr_ratio applies to an adjuster optimizer '
                    'without its own lr; the default adjuster_optimizer is '
                    f'{DEFAULT_ADJUSTER_OPTIMIZER} (fixed lr): give '
                    "adjuster_optimizer='model' (the model's optimizer, as "
                    'the paper) or a dict without lr to use the ratio')
            return dict(DEFAULT_ADJUSTER_OPTIMIZER), None
        if cfg == MODEL_OPTIMIZER:
            return cfg, 1.0 if ratio is None else float(ratio)
        if not isinstance(cfg, dict) or 'type' not in cfg:
            raise ValueError(
                "adjuster_optimizer must be None (Adam, lr 1e-3), 'model' "
                "(the model optimizer's type and settings) or a dict with "
                f"a 'type', got {cfg!r}")
        cfg = dict(cfg)
        if 'params' in cfg:
            raise ValueError('adjuster_optimizer must not name params: the '
                             "adjuster's parameters are added by "
                             'GALOptimWrapper')
        if 'lr' in cfg:
            check_real('adjuster_optimizer.lr', cfg['lr'])
            if ratio is not None:
                raise ValueError(
                    f"adjuster_optimizer has its own lr ({cfg['lr']}) and "
                    f'adjuster_lr_ratio={ratio} is given too: keep one (a '
                    'fixed lr, or a ratio of the head\'s lr)')
            return cfg, None
        return cfg, 1.0 if ratio is None else float(ratio)

    # ------------------------------------------------------------------ AMP
    def _init_amp(self, loss_scale, dtype) -> None:
        self.use_amp = loss_scale is not None or dtype is not None
        self.loss_scaler = None
        self._scale_update_param = None
        if isinstance(dtype, str):
            if dtype not in self.valid_dtypes:
                raise ValueError(f'dtype must be one of {self.valid_dtypes}, '
                                 f'got {dtype!r}')
            dtype = getattr(torch, dtype)
        if dtype is not None and not isinstance(dtype, torch.dtype):
            raise ValueError(f'dtype must be None, a torch.dtype or one of '
                             f'{self.valid_dtypes}, got {dtype!r}')
        if dtype == torch.float16 and not torch.cuda.is_available():
            raise ValueError(
                "dtype='float16' needs a CUDA device: autocast on the CPU "
                "runs bfloat16 only; set dtype='bfloat16' (or leave dtype "
                'unset) here')
        self.cast_dtype = dtype
        if not self.use_amp:
            return
        if loss_scale is None:
            # bf16/fp32 autocast needs no loss scaling; fp16 gets dynamic.
            loss_scale = 'dynamic' if dtype in (None, torch.float16) else None
        if loss_scale is None:
            return
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
        if loss_scale == 'dynamic':
            self.loss_scaler = torch.amp.GradScaler(device)
        elif is_real(loss_scale):
            check_real('loss_scale', loss_scale, strict=True)
            self._scale_update_param = float(loss_scale)
            self.loss_scaler = torch.amp.GradScaler(
                device, init_scale=float(loss_scale))
        elif isinstance(loss_scale, dict):
            if 'init_scale' in loss_scale:
                # inf or NaN: every step is skipped as an overflow, so no
                # parameter ever changes.
                check_real('loss_scale.init_scale', loss_scale['init_scale'],
                           strict=True)
            self.loss_scaler = torch.amp.GradScaler(device, **loss_scale)
        else:
            raise ValueError("loss_scale must be 'dynamic', a finite number "
                             '> 0 or a dict of GradScaler arguments, got '
                             f'{loss_scale!r}')

    def backward(self, loss: Tensor, **kwargs) -> None:
        if self.enabled and self.adjuster is None:
            if self._prepared:
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

    @contextmanager
    def optim_context(self, model: nn.Module):
        if not self.use_amp:
            with super().optim_context(model):
                yield
            return
        from mmengine.runner.amp import autocast
        # Autocast on the device the model lives on (AmpOptimWrapper picks
        # CUDA whenever it is available, even for a model on the CPU).
        param = next(model.parameters(), None)
        device_type = param.device.type if param is not None else None
        with super().optim_context(model), autocast(
                device_type=device_type, dtype=self.cast_dtype):
            yield

    # ------------------------------------------------------------------ GAL
    def base_lr(self) -> float:
        """GAL's eta: ``tentative_lr`` when set, else the lr the head's
        parameters get now (their param group's lr: after auto_scale_lr,
        warm-up, schedulers and paramwise multipliers); before the head is
        known, mmengine's base lr."""
        if self.tentative_lr is not None:
            return float(self.tentative_lr)
        if self._lr_group is not None:
            return float(self.optimizer.param_groups[self._lr_group]['lr'])
        if self.base_param_settings is not None:
            return float(self.base_param_settings['lr'])
        return float(self.optimizer.param_groups[0]['lr'])

    def _group_of(self, params) -> Optional[int]:
        """The index of the first param group holding one of ``params``
        (in their order), or None."""
        index = {id(p): i for i, group in enumerate(
            self.optimizer.param_groups) for p in group['params']}
        return next((index[id(p)] for p in params if id(p) in index), None)

    def _find_lr_group(self, z: Tensor) -> Optional[int]:
        """The param group of the layer that outputs z: the parameters
        nearest to z in its autograd graph (a weight before a bias, which
        a ``bias_lr_mult`` may set apart), else the head's parameters,
        else None (mmengine's base lr)."""
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
                group = self._group_of(found)
                if group is not None:
                    return group
            frontier = nxt
        return self._group_of([p for p in self._head_params
                               if p.requires_grad])

    def prepare(self, device: Union[str, torch.device] = 'cpu',
                head_params: Sequence[nn.Parameter] = ()) -> None:
        """What :class:`GALHook` knows before the first iteration: the
        head's device and parameters. The adjuster is then built on the
        first GAL step, sized to its output, unless
        :meth:`setup_adjuster` built it already."""
        self._device = device
        self._head_params = list(head_params)
        # Until the first GAL step finds the layer that outputs z: the
        # head's group.
        self._lr_group = self._group_of(
            [p for p in self._head_params if p.requires_grad])
        self._lr_group_known = False
        self._prepared = True

    def _select_step(self, device: Union[str, torch.device]):
        """The GAL step for ``fast`` on ``device``: compiled where it can
        be (see ``fast``), else the eager step, with the reason logged."""
        if self.fast == 'eager':
            return gal_step
        reason = compile_unavailable(device)
        if reason is not None and torch._dynamo.config.disable:
            return gal_step  # the user switched torch.compile off
        if reason is not None and self.fast == 'auto':
            print_log(f'GAL: the step runs eagerly: {reason}.',
                      logger='current', level=logging.WARNING)
            return gal_step

        def fallback(why: str) -> None:
            print_log(f'GAL: torch.compile could not build the step {why}; '
                      'it runs eagerly from now on (the same update, more '
                      "host time per step; fast='eager' skips compiling).",
                      logger='current', level=logging.WARNING)

        def compiled(what: str, seconds: float) -> None:
            print_log(f'GAL: compiled the step for {what} in {seconds:.1f} '
                      's (once per shape).', logger='current')

        return CompiledGALStep(on_fallback=fallback, on_compile=compiled)

    def setup_adjuster(self, dim: int,
                       device: Union[str, torch.device, None] = None,
                       head_params: Optional[Sequence[nn.Parameter]] = None
                       ) -> nn.Module:
        """Build the adjuster for outputs of size ``dim`` and its optimizer.

        Called by :class:`GALHook` once the head's output size is known
        (before the first iteration, or on the first GAL step for heads
        that do not declare it; again on a later run of the same runner:
        the trained adjuster is kept). The initial weights come from a
        private generator seeded with ``seed`` and are broadcast from rank
        0, so every rank starts from the same adjuster and the global
        random stream is not consumed.
        """
        if device is not None or head_params is not None:
            self.prepare(device or self._device,
                         head_params if head_params is not None else
                         self._head_params)
        device = self._device
        if self.adjuster is not None:
            if self.adjuster.dim != dim:
                raise ValueError(f'the adjuster was already built for dim '
                                 f'{self.adjuster.dim}, now asked for {dim}')
            return self.adjuster  # a later run of the same runner
        self._gal_step = self._select_step(device)
        warn_if_unlearnable(self.adjuster_kind, dim, self.normalize)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            adjuster = build_adjuster(self.adjuster_kind, dim, self.arch)
        self.adjuster = adjuster.to(device)
        params = list(adjuster.parameters())
        for p in params:
            if is_distributed():
                broadcast(p.data, src=0)
            p.grad = torch.zeros_like(p)
        if params:
            self._initial_adjuster = copy.deepcopy(adjuster).requires_grad_(
                False)
            for p in self._initial_adjuster.parameters():
                p.grad = None
        self.adjuster_optimizer = self._build_adjuster_optimizer(params)
        if self._pending_gal_state is not None:
            state, self._pending_gal_state = self._pending_gal_state, None
            self._load_gal_state(state)
        return adjuster

    def _adjuster_lr(self) -> Optional[float]:
        """The adjuster's lr now when it follows the head's lr, else None
        (the adjuster optimizer's own lr)."""
        if self.adjuster_lr_ratio is None:
            return None
        return self.adjuster_lr_ratio * self.base_lr()

    def _build_adjuster_optimizer(self, params) -> Optional[Optimizer]:
        if not params:
            return None
        lr = self._adjuster_lr()
        if self.adjuster_optimizer_cfg == MODEL_OPTIMIZER:
            inner = _inner_optimizer(self.optimizer)
            # Keep only what the constructor takes (AdamW's defaults hold a
            # `decoupled_weight_decay` its __init__ does not accept).
            accepted = inspect.signature(type(inner).__init__).parameters
            defaults = {
                k: v
                for k, v in inner.defaults.items() if k in accepted
            }
            defaults['lr'] = lr
            return self._fused(type(inner), params, defaults)
        cfg = dict(self.adjuster_optimizer_cfg)
        if lr is not None:
            cfg['lr'] = lr
        klass = OPTIMIZERS.get(cfg['type']) if isinstance(
            cfg['type'], str) else cfg['type']
        if klass is None:
            raise ValueError(
                f"adjuster_optimizer.type={cfg['type']!r} is not in "
                "mmengine's OPTIMIZERS registry (e.g. 'Adam', 'SGD', "
                "'AdamW')")
        try:
            if isinstance(klass, type):
                cfg.pop('type')
                return self._fused(klass, params, cfg)
            return OPTIMIZERS.build(dict(cfg, params=params))
        except (TypeError, ValueError) as err:
            raise ValueError(
                f'adjuster_optimizer={self.adjuster_optimizer_cfg!r} could '
                f'not build the optimizer: {type(err).__name__}: {err}'
            ) from err

    def _fused(self, klass: type, params: list,
               kwargs: dict) -> Optimizer:
        """``klass(params, **kwargs)``; unless ``fast='eager'``, a PyTorch
        optimizer runs on its fused (else foreach) implementation where it
        has one and the settings chose none
        (:func:`mmgal.core.fast_optimizer`)."""
        if self.fast != 'eager' and klass.__module__.startswith(
                'torch.optim'):
            return fast_optimizer(klass, params, kwargs)
        return klass(params, **kwargs)

    def _step_kwargs(self, grouped: bool) -> dict:
        return dict(
            lr=self.base_lr(),
            sigma=self.sigma,
            gamma=self.gamma,
            policy=self.policy,
            remainder=self.remainder,
            grouped=grouped,
            dtype=self.gal_dtype,
            objective=self.objective,
            normalize=self.normalize)

    def gal_forward(self, z: Tensor, loss_fn, grouped: bool = False
                    ) -> Tensor:
        """Run GAL on output features ``z`` of the head.

        Args:
            z (Tensor): The head's output features (in the model's graph).
            loss_fn (Callable): Maps a tensor shaped like z to the scalar
                z-dependent part of the head's loss, with the same targets
                (with ``grouped``: to the vector of each group's loss); an
                :class:`mmgal.core.ExactLoss` also gives the remainder in
                closed form.
            grouped (bool): z is (G, ..., d), G GAL problems solved in one
                step with a decision each (see :func:`gal_step`); they
                count as G steps for the adjuster's averaging and the
                logged statistics.

        Returns:
            Tensor: A 0-dim loss whose value is ``loss_fn(z)`` (summed over
            the groups) and whose gradient w.r.t. z is the gradient GAL
            chose (g~ or g, per group).
        """
        if self.adjuster is None:
            # A head that does not declare its output size: sized here.
            self.setup_adjuster(z.shape[-1], z.device)
        if not self._lr_group_known:
            self._lr_group = self._find_lr_group(z)
            self._lr_group_known = True
        # On a logging iteration the step also probes the initial adjuster
        # (gal/remainder_ratio, gal/cos_init).
        initial = self._initial_adjuster if self.probe else None
        kwargs = self._step_kwargs(grouped)
        self._gal_calls += 1
        if self._in_graph and self._gal_calls > 1:
            # A second GAL call before the model's update (a head with two
            # losses): the calls' gradients are averaged again from now on.
            self._in_graph = False
        if self._in_graph:
            # This step's gradient, averaged over its groups, applied by
            # the adjuster's Adam in the step's own graph.
            kwargs.update(optimizer=self.adjuster_optimizer,
                          grad_scale=1.0 / (z.shape[0] if grouped else 1))
        out = self._gal_step(z, loss_fn, self.adjuster, initial=initial,
                             **kwargs)
        if not self._in_graph:  # else already applied in the graph
            self._gal_micro_steps += out.adopted.numel()
        # One vector per step (a grouped step: summed over its groups),
        # kept on the device (see STAT_NAMES).
        if self._stats is None:
            self._stats = out.stats.clone()
        else:
            self._stats += out.stats
        loss = out.loss.sum() if grouped else out.loss
        # The dtype the loss has without GAL: float64 GAL maths do not turn
        # the model's loss into float64.
        return _InjectGrad.apply(
            z, loss.to(torch.promote_types(z.dtype, torch.float32)),
            out.grad)

    def pop_gal_stats(self) -> Dict[str, float]:
        """Averages over the GAL steps since the last call, as floats, for
        logging (one host read); under DDP over every rank's steps (one
        all-reduce, which every rank must call). Empty when GAL ran no
        step. The keys: :func:`mmgal.engine.gal_statistics.read_stats`."""
        stats, self._stats = self._stats, None
        res, self._last_weights = read_stats(
            stats, self.adjuster, self._initial_adjuster,
            self._last_weights)
        return res

    def step(self, **kwargs) -> None:
        """Step the model's optimizer as :class:`OptimWrapper` (or
        :class:`AmpOptimWrapper`) does, then the adjuster's."""
        if self.loss_scaler is None:
            super().step(**kwargs)
        else:
            AmpOptimWrapper.step(self, **kwargs)
        self._step_adjuster()

    def _step_adjuster(self) -> None:
        """Average the adjuster's gradients over the GAL steps since the last
        update (micro-batches and, under DDP, ranks), then step it."""
        if self.adjuster_optimizer is None:
            return
        calls, self._gal_calls = self._gal_calls, 0
        distributed = get_world_size() > 1
        if self.enabled and calls == 0 and not self._warned_idle:
            self._warned_idle = True
            print_log(
                'GALOptimWrapper: the model was updated but GAL ran no step '
                "since the last update: the adapter's tap never saw the "
                "head's loss. Check GALHook's head and adapter.",
                logger='current',
                level=logging.WARNING)
        if self._gal_micro_steps == 0 and not distributed:
            return
        params = [
            p for g in self.adjuster_optimizer.param_groups
            for p in g['params']
        ]
        grads = [p.grad for p in params]
        if distributed:
            # One collective: the gradient sums and the step count of every
            # rank; each rank then holds the same average.
            count = grads[0].new_tensor([float(self._gal_micro_steps)])
            flat = torch._utils._flatten_dense_tensors(grads + [count])
            torch_dist.all_reduce(flat)
            flat = flat[:-1] / flat[-1:].clamp_min(1.0)
            for g, synced in zip(
                    grads,
                    torch._utils._unflatten_dense_tensors(flat, grads)):
                g.copy_(synced)
        elif self._gal_micro_steps > 1:
            torch._foreach_mul_(grads, 1.0 / self._gal_micro_steps)
        lr = self._adjuster_lr()
        if lr is not None:
            for group in self.adjuster_optimizer.param_groups:
                group['lr'] = lr
        self.adjuster_optimizer.step()
        self.adjuster_optimizer.zero_grad(set_to_none=False)
        self._gal_micro_steps = 0
        if calls == 1 and not distributed and self._can_update_in_graph():
            # One GAL step per update: from the next one on, the compiled
            # step applies it (the same Adam update, without the
            # optimizer's own calls: ~0.3 ms of host time per step).
            self._in_graph = True
            for p in params:
                p.grad = None

    def _can_update_in_graph(self) -> bool:
        return (isinstance(self._gal_step, CompiledGALStep)
                and self._gal_step.failed is None
                and type(self.adjuster_optimizer) in (Adam, AdamW)
                and self._accumulative_counts == 1
                and self.adjuster_lr_ratio is None)

    # ---------------------------------------------------------- state dict
    def state_dict(self) -> dict:
        state = super().state_dict()
        if self.loss_scaler is not None:
            state['loss_scaler'] = self.loss_scaler.state_dict()
        if self.adjuster is not None:
            gal = dict(
                adjuster=self.adjuster.state_dict(),
                dim=self.adjuster.dim,
                adjuster_kind=self.adjuster_kind,
                arch=list(self.arch))
            if self.adjuster_optimizer is not None:
                gal['optimizer'] = self.adjuster_optimizer.state_dict()
                gal['optimizer_type'] = type(self.adjuster_optimizer).__name__
            state[GAL_STATE_KEY] = gal
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
                print_log(
                    'GALOptimWrapper: the checkpoint has no GAL state '
                    f"('{GAL_STATE_KEY}'); the adjuster starts afresh.",
                    logger='current',
                    level=logging.WARNING)
            return
        if self.adjuster is None:
            self._pending_gal_state = gal
        else:
            self._load_gal_state(gal)

    def _load_gal_state(self, gal: dict) -> None:
        missing = [k for k in ('adjuster', 'dim')
                   if not isinstance(gal, dict) or k not in gal]
        if missing:
            raise ValueError(
                f"the checkpoint's GAL state ('{GAL_STATE_KEY}' in its "
                f'optimizer state) lacks {missing}: it was not written by '
                'GALOptimWrapper (it holds '
                f'{sorted(gal) if isinstance(gal, dict) else type(gal)})')
        if gal['dim'] != self.adjuster.dim:
            raise ValueError(f"the checkpoint's adjuster has dim "
                             f"{gal['dim']}, the head's output has "
                             f'{self.adjuster.dim}')
        now = dict(adjuster_kind=self.adjuster_kind, arch=list(self.arch))
        for key in ('adjuster_kind', 'arch'):
            if key == 'arch' and self.adjuster_kind not in ('mlp', 'cnn'):
                continue
            if key in gal and gal[key] != now[key]:
                raise ValueError(
                    f"the checkpoint's adjuster has {key}={gal[key]!r}, "
                    f'the config asks for {now[key]!r}: set '
                    f'optim_wrapper.{key.replace("adjuster_kind", "adjuster")}'
                    f'={gal[key]!r} to resume it, or start a new run')
        self.adjuster.load_state_dict(gal['adjuster'])
        state = gal.get('optimizer')
        if self.adjuster_optimizer is None or state is None:
            return
        was = gal.get('optimizer_type')
        current = type(self.adjuster_optimizer).__name__
        # Checkpoints without 'optimizer_type': compare the settings each
        # param group holds (SGD's momentum vs Adam's betas, ...).
        same = was == current if was is not None else set(
            state['param_groups'][0]) == set(
                self.adjuster_optimizer.param_groups[0])
        if not same:
            print_log(
                f"GALOptimWrapper: the checkpoint's adjuster optimizer was "
                f"{was or 'of another type'}, the config's is {current}; "
                "its state is not loaded (the adjuster's weights are): the "
                'adjuster optimizer starts afresh.',
                logger='current',
                level=logging.WARNING)
            return
        # The config's settings win over the checkpoint's (its moments and
        # step counts are kept), and a difference is said.
        own = [{k: v for k, v in g.items() if k != 'params'}
               for g in self.adjuster_optimizer.param_groups]
        self.adjuster_optimizer.load_state_dict(state)
        changed = sorted({
            f'{k}: {g[k]!r} -> {o[k]!r}'
            for g, o in zip(self.adjuster_optimizer.param_groups, own)
            for k in o if k in g and g[k] != o[k] and k not in _IMPL_FLAGS
            and not (k == 'lr' and self.adjuster_lr_ratio is not None)})
        for g, o in zip(self.adjuster_optimizer.param_groups, own):
            g.update(o)
        if changed:
            print_log(
                "GALOptimWrapper: the checkpoint's adjuster optimizer had "
                f"other settings ({', '.join(changed)}); the config's are "
                'used, with the checkpoint\'s optimizer state.',
                logger='current', level=logging.WARNING)

    def __repr__(self) -> str:
        return (super().__repr__() +
                f'GAL: enabled={self.enabled}, sigma={self.sigma}, '
                f'gamma={self.gamma}, adjuster={self.adjuster_kind}'
                f'{self.arch}, policy={self.policy}, '
                f'remainder={self.remainder}, objective={self.objective}, '
                f'normalize={self.normalize}, amp={self.use_amp}\n')
