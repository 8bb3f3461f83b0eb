"""The adjuster and how it learns, one object for the wrapper, the
regression module and the benchmarks. Plain PyTorch. :meth:`step` runs GAL
(eager or compiled) and adds the adjuster's gradient; :meth:`update`
averages it over the steps (micro-batches, groups, DDP ranks) and steps
its optimizer, which the compiled step does in its graph where it can."""
import copy
import inspect
import logging
import warnings
from typing import Callable, Optional, Union

import torch
import torch.distributed as dist
from torch import Tensor
from torch.optim import Adam, AdamW, Optimizer

from .adjusters import build_adjuster, warn_if_unlearnable
from .compiled_step import CompiledGALStep, compile_unavailable
from .fast_optimizer import fast_optimizer
from .gal_step import GALOutput, gal_step
from .settings import MODEL_OPTIMIZER, GALSettings

# How a torch optimizer runs, not what it computes: not reported as a
# changed setting on resume.
_IMPL_FLAGS = ('fused', 'foreach', 'capturable', 'differentiable')


def _warn(message: str, level: int = logging.WARNING) -> None:
    if level >= logging.WARNING:
        warnings.warn(message, stacklevel=3)


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and \
        dist.is_initialized() else 1


def inner_optimizer(optimizer: Optimizer) -> Optimizer:
    """The optimizer a wrapper such as Lookahead holds as ``.optimizer``."""
    while isinstance(getattr(optimizer, 'optimizer', None), Optimizer):
        optimizer = optimizer.optimizer
    return optimizer


def select_step(fast: str, device, log: Callable = _warn):
    """:func:`gal_step` or a :class:`CompiledGALStep` for ``fast`` on
    ``device``; why not, logged where ``'auto'`` cannot compile."""
    if fast == 'eager':
        return gal_step
    reason = compile_unavailable(device)
    if reason is not None and torch._dynamo.config.disable:
        return gal_step  # the user switched torch.compile off
    if reason is not None and fast == 'auto':
        log(f'GAL: the step runs eagerly: {reason}.')
        return gal_step
    return CompiledGALStep(
        on_fallback=lambda why: log(
            f'GAL: torch.compile could not build the step {why}; it runs '
            'eagerly from now on (the same update, more host time per '
            "step; fast='eager' skips compiling)."),
        on_compile=lambda what, s: log(
            f'GAL: compiled the step for {what} in {s:.1f} s (once per '
            'shape).', logging.INFO))


class AdjusterLearner:
    """The adjuster h_phi, its optimizer and its update.

    Examples:
        >>> learner = AdjusterLearner(GALSettings(sigma=0.1), dim=10, lr=0.1)
        >>> out = learner.step(logits, cross_entropy_loss(labels), lr=0.1)
        >>> logits.backward(out.grad)   # the model gets g~ or g
        >>> model_optimizer.step(); learner.update()

    Args:
        settings (GALSettings): GAL's settings.
        dim (int): Size of z's last dimension.
        device (str | torch.device): The head's device.
        lr (float): The head's lr now (followed by an adjuster optimizer
            without its own lr).
        model_optimizer (Optimizer, optional): For
            ``adjuster_optimizer='model'``.
        resolve (Callable, optional): ``adjuster_optimizer['type']`` -> a
            class. Defaults to ``torch.optim``'s.
        log (Callable, optional): ``log(message, level)``. Defaults to
            Python warnings.
        in_graph_update (bool): Whether the compiled step may apply the
            update (not under gradient accumulation).
    """

    def __init__(self,
                 settings: GALSettings,
                 dim: int,
                 device: Union[str, torch.device] = 'cpu',
                 lr: float = 1e-3,
                 model_optimizer: Optional[Optimizer] = None,
                 resolve: Optional[Callable[[str], type]] = None,
                 log: Callable = _warn,
                 in_graph_update: bool = True):
        self.settings = settings
        self._step_args = settings.step_args()
        self.log = log
        self._in_graph_ok = in_graph_update
        warn_if_unlearnable(settings.adjuster, dim, settings.normalize)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(settings.seed)
            adjuster = build_adjuster(settings.adjuster, dim, settings.arch)
        self.adjuster = adjuster.to(device)
        params = list(self.adjuster.parameters())
        distributed = _world_size() > 1
        for p in params:
            if distributed:  # every rank starts from rank 0's weights
                dist.broadcast(p.data, src=0)
            p.grad = torch.zeros_like(p)
        # The initial adjuster, frozen: the probe of learning.
        self.initial = copy.deepcopy(self.adjuster).requires_grad_(
            False) if params else None
        self.follows_lr = False
        self.optimizer = self._build_optimizer(
            params, lr, model_optimizer, resolve or (
                lambda name: getattr(torch.optim, name, None))) \
            if params else None
        self.step_fn = select_step(settings.fast, device, log)
        self.calls = 0  # GAL steps since the last update
        self._micro_steps = 0  # ... whose gradient is in .grad
        self._in_graph = False
        self._lr_varies = False
        self._updated = False
        self.stats: Optional[Tensor] = None

    def _build_optimizer(self, params, lr, model_optimizer, resolve):
        cfg = self.settings.adjuster_optimizer
        if cfg == MODEL_OPTIMIZER:
            if model_optimizer is None:
                raise ValueError("adjuster_optimizer='model' needs the "
                                 "model's optimizer")
            inner = inner_optimizer(model_optimizer)
            klass = type(inner)
            # Only what the constructor takes (AdamW's defaults hold a
            # `decoupled_weight_decay` its __init__ does not accept).
            accepted = inspect.signature(klass.__init__).parameters
            kwargs = {k: v for k, v in inner.defaults.items()
                      if k in accepted}
            kwargs.pop('lr', None)
        else:
            kwargs = dict(cfg)
            klass = kwargs.pop('type')
            if isinstance(klass, str):
                klass = resolve(klass)
            if not isinstance(klass, type):
                raise ValueError(
                    f"adjuster_optimizer.type={cfg['type']!r} is not an "
                    "optimizer class or a registered optimizer's name "
                    "(e.g. 'Adam', 'SGD', 'AdamW')")
        self.follows_lr = 'lr' not in kwargs
        kwargs.setdefault('lr', lr)
        try:
            if self.settings.fast != 'eager' and \
                    klass.__module__.startswith('torch.optim'):
                return fast_optimizer(klass, params, kwargs)
            return klass(params, **kwargs)
        except (TypeError, ValueError) as err:
            raise ValueError(
                f'adjuster_optimizer={cfg!r} could not build the optimizer: '
                f'{type(err).__name__}: {err}') from err

    def step(self, z: Tensor, loss_fn: Callable, lr: Union[float, Tensor],
             grouped: bool = False, probe: bool = False) -> GALOutput:
        """One GAL step (:func:`gal_step`) at the head's ``lr``; ``probe``
        also measures the initial adjuster. Adds to :attr:`stats`."""
        self.calls += 1
        kwargs = {}
        if self.follows_lr and not isinstance(lr, Tensor):
            group = self.optimizer.param_groups[0]
            if group['lr'] != lr:
                # The graph's Adam has its lr built in: a changing lr
                # steps eagerly.
                self._lr_varies = self._lr_varies or self._updated
                for g in self.optimizer.param_groups:
                    g['lr'] = float(lr)
        if self._in_graph and (self.calls > 1 or self._lr_varies):
            # Two steps per update (two losses): update() averages.
            self._in_graph = False
        if self._in_graph:
            # The update in the graph; a grouped step's averaged.
            kwargs = dict(optimizer=self.optimizer,
                          grad_scale=1.0 / (z.shape[0] if grouped else 1))
        out = self.step_fn(
            z, loss_fn, self.adjuster, lr=lr, grouped=grouped,
            initial=self.initial if probe else None,
            **self._step_args, **kwargs)
        if not self._in_graph:
            self._micro_steps += out.adopted.numel()
        if self.stats is None:
            self.stats = out.stats.clone()
        else:
            self.stats += out.stats
        return out

    def update(self) -> int:
        """Average the gradients since the last update (and over ranks),
        step the optimizer; returns the GAL steps (0: none)."""
        calls, self.calls = self.calls, 0
        self._updated = True
        distributed = _world_size() > 1
        if self.optimizer is None or (self._micro_steps == 0
                                      and not distributed):
            return calls
        params = [p for g in self.optimizer.param_groups
                  for p in g['params']]
        grads = [p.grad for p in params]
        if distributed:
            # One collective: the gradient sums and each rank's step count.
            count = grads[0].new_tensor([float(self._micro_steps)])
            flat = torch._utils._flatten_dense_tensors(grads + [count])
            dist.all_reduce(flat)
            flat = flat[:-1] / flat[-1:].clamp_min(1.0)
            for g, synced in zip(
                    grads, torch._utils._unflatten_dense_tensors(flat,
                                                                 grads)):
                g.copy_(synced)
        elif self._micro_steps > 1:
            torch._foreach_mul_(grads, 1.0 / self._micro_steps)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=False)
        self._micro_steps = 0
        if calls == 1 and not distributed and self._in_graph_ok and \
                not self._lr_varies and \
                isinstance(self.step_fn, CompiledGALStep) and \
                self.step_fn.failed is None and \
                type(self.optimizer) in (Adam, AdamW):
            self._in_graph = True
            for p in params:
                p.grad = None
        return calls

    def pop_stats(self) -> Optional[Tensor]:
        """The statistics summed since the last call (None: no step)."""
        stats, self.stats = self.stats, None
        return stats

    def state_dict(self) -> dict:
        s = self.settings
        state = dict(adjuster=self.adjuster.state_dict(),
                     dim=self.adjuster.dim, adjuster_kind=s.adjuster,
                     arch=list(s.arch))
        if self.optimizer is not None:
            state['optimizer'] = self.optimizer.state_dict()
            state['optimizer_type'] = type(self.optimizer).__name__
        return state

    def load_state_dict(self, state: dict) -> None:
        """Load :meth:`state_dict`; ``ValueError`` for another adjuster or
        size. The config's optimizer settings win (the moments are kept,
        a change is logged, another type starts afresh)."""
        missing = [k for k in ('adjuster', 'dim')
                   if not isinstance(state, dict) or k not in state]
        if missing:
            raise ValueError(
                f"the checkpoint's GAL state lacks {missing}: it was not "
                'written by GAL (it holds '
                f'{sorted(state) if isinstance(state, dict) else state!r})')
        if state['dim'] != self.adjuster.dim:
            raise ValueError(f"the checkpoint's adjuster has dim "
                             f"{state['dim']}, the head's output has "
                             f'{self.adjuster.dim}')
        s = self.settings
        for key, field, now in (('adjuster_kind', 'adjuster', s.adjuster),
                                ('arch', 'arch', list(s.arch))):
            if key == 'arch' and s.adjuster not in ('mlp', 'cnn'):
                continue
            if key in state and state[key] != now:
                raise ValueError(
                    f"the checkpoint's adjuster has {field}={state[key]!r}, "
                    f'the config asks for {now!r}: set optim_wrapper.'
                    f'{field}={state[key]!r} to resume it, or start a new run')
        self.adjuster.load_state_dict(state['adjuster'])
        saved = state.get('optimizer')
        if self.optimizer is None or saved is None:
            return
        was = state.get('optimizer_type')
        current = type(self.optimizer).__name__
        # Without 'optimizer_type': compare the settings each group holds.
        same = was == current if was is not None else set(
            saved['param_groups'][0]) == set(self.optimizer.param_groups[0])
        if not same:
            self.log(f"GAL: the checkpoint's adjuster optimizer was "
                     f"{was or 'of another type'}, the config's is "
                     f'{current}; its state is not loaded (the adjuster\'s '
                     'weights are): the adjuster optimizer starts afresh.')
            return
        own = [{k: v for k, v in g.items() if k != 'params'}
               for g in self.optimizer.param_groups]
        self.optimizer.load_state_dict(saved)
        changed = sorted({
            f'{k}: {g[k]!r} -> {o[k]!r}'
            for g, o in zip(self.optimizer.param_groups, own) for k in o
            if k in g and g[k] != o[k] and k not in _IMPL_FLAGS
            and not (k == 'lr' and self.follows_lr)})
        for g, o in zip(self.optimizer.param_groups, own):
            g.update(o)
        if changed:
            self.log("GAL: the checkpoint's adjuster optimizer had other "
                     f"settings ({', '.join(changed)}); the config's are "
                     "used, with the checkpoint's optimizer state.")
