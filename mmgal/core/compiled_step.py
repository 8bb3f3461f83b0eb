"""The GAL step as one ``torch.compile``-d graph: the eager step's own
:func:`~mmgal.core.gal_step.run_step` with ``torch.func`` gradients, and
the adjuster's Adam update in the same graph. Plain PyTorch."""
import importlib
import time
from typing import Callable, Dict, List, NamedTuple, Optional, Union

import torch
from torch import Tensor, nn
from torch.optim import Adam, AdamW, Optimizer

from .gal_step import (FunctionalGrads, GALOutput, StepSpec, add_to_grads,
                       gal_step, loss_and_grad, prepare_step, run_step)
# torch.optim.adam the module (torch.optim.adam is the function there).
_adam_functional = importlib.import_module('torch.optim.adam').adam


class _AdamUpdate(NamedTuple):
    """Adam's update for the graph: the parameters' names in the
    optimizer's order, its state (updated in place), its settings."""
    names: tuple
    exp_avgs: List[Tensor]
    exp_avg_sqs: List[Tensor]
    max_exp_avg_sqs: List[Tensor]
    steps: List[Tensor]
    settings: dict


def _compiled_body(params: Dict[str, Tensor], buffers: Dict[str, Tensor],
                   z: Tensor, z_native: Optional[Tensor], lr: Tensor,
                   loss_fn: Callable, adjuster: nn.Module, spec: StepSpec,
                   initial: Optional[nn.Module],
                   initial_params: Optional[Dict[str, Tensor]],
                   update: Optional[_AdamUpdate], grad_scale: float):
    out, grads = run_step(FunctionalGrads, adjuster, params, buffers, z,
                          z_native, lr.reshape(()), loss_fn, spec, initial,
                          initial_params)
    if update is not None:
        # torch.optim.Adam's own single-tensor update, traced, in place.
        _adam_functional(
            [params[k] for k in update.names],
            [grads[k] * grad_scale if grad_scale != 1 else grads[k]
             for k in update.names], update.exp_avgs,
            update.exp_avg_sqs, update.max_exp_avg_sqs, update.steps,
            foreach=False, capturable=False, **update.settings)
        return out, None
    return out, grads


def _adam_update(optimizer: Optional[Optimizer],
                 params: Dict[str, nn.Parameter]) -> Optional[_AdamUpdate]:
    """The in-graph update for ``optimizer``, or None where it would not be
    ``optimizer.step()``'s (not one group of exactly these parameters, not
    Adam/AdamW, no state yet, a host step count, a pending ``.grad``)."""
    if type(optimizer) not in (Adam, AdamW) or \
            len(optimizer.param_groups) != 1:
        return None
    group = optimizer.param_groups[0]
    names = {id(p): k for k, p in params.items()}
    if group['differentiable'] or len(group['params']) != len(names) or \
            any(id(p) not in names or p.grad is not None
                for p in group['params']):
        return None
    states = [optimizer.state.get(p, {}) for p in group['params']]
    keys = ('step', 'exp_avg', 'exp_avg_sq') + (
        ('max_exp_avg_sq', ) if group['amsgrad'] else ())
    if any(k not in st for st in states for k in keys) or any(
            st['step'].device != p.device
            for st, p in zip(states, group['params'])):
        return None
    beta1, beta2 = group['betas']
    return _AdamUpdate(
        names=tuple(names[id(p)] for p in group['params']),
        exp_avgs=[st['exp_avg'] for st in states],
        exp_avg_sqs=[st['exp_avg_sq'] for st in states],
        max_exp_avg_sqs=[st['max_exp_avg_sq'] for st in states]
        if group['amsgrad'] else [],
        steps=[st['step'] for st in states],
        settings=dict(
            amsgrad=group['amsgrad'], beta1=beta1, beta2=beta2,
            lr=group['lr'], weight_decay=group['weight_decay'],
            eps=group['eps'], maximize=group['maximize'],
            decoupled_weight_decay=group.get(
                'decoupled_weight_decay', type(optimizer) is AdamW)))


def compile_unavailable(device: Union[str, torch.device]) -> Optional[str]:
    """Why ``torch.compile`` cannot build a step on ``device``, or None."""
    if torch._dynamo.config.disable:
        return 'torch.compile is switched off (TORCH_COMPILE_DISABLE=1)'
    kind = torch.device(device).type
    if kind == 'cpu':
        try:
            from torch._inductor.cpp_builder import get_cpp_compiler
            get_cpp_compiler()
        except Exception as err:  # no compiler: its own error type
            return f'no working C++ compiler for a CPU graph ({err})'
        return None
    if kind == 'cuda':
        from torch.utils._triton import has_triton
        return None if has_triton() else \
            'Triton is not installed (needed for a CUDA graph)'
    return f'torch.compile is not used for {kind} devices here'


def _compile_error(err: Exception) -> str:
    """Why torch.compile failed, in one line, with a hint for its cache."""
    cause = getattr(err, 'inner_exception', None) or err
    first = (str(cause).strip().splitlines() or [''])[0]
    hint = ''
    if 'torchinductor' in first.lower():
        # e.g. a compile killed mid-write leaves an empty .so there
        hint = (". It names a file in torch's compile cache, which may be "
                'damaged (a compile killed while writing it): delete that '
                'file, or set TORCHINDUCTOR_CACHE_DIR to an empty folder')
    return f'({type(cause).__name__}: {first}){hint}'


def _is_compile_error(err: Exception) -> bool:
    return type(err).__module__.startswith(
        ('torch._dynamo', 'torch._inductor')) or isinstance(
            err, (OSError, ImportError))


class CompiledGALStep:
    """:func:`gal_step` as one ``torch.compile``-d graph: the same output
    and adjuster gradient up to float rounding.

    The first call per shape compiles (reported to ``on_compile``); lr is a
    tensor input and targets are closure cells, so neither recompiles; a
    second shape compiles once more, then dynamic shapes take over.
    ``loss_fn`` must be traceable; its inputs are checked eagerly once per
    shape. Where compiling fails, ``on_fallback`` is told why once and the
    eager step runs from then on (without ``on_fallback``: RuntimeError).
    Adjusters without parameters run eagerly.

    Given ``optimizer`` (the adjuster's), the step also applies the
    gradient (times ``grad_scale``) as ``optimizer.step();
    zero_grad(set_to_none=True)`` would: traced into the graph for an Adam
    or AdamW over exactly the adjuster's parameters (its settings compiled
    in), else by those calls.

    Args:
        backend (str): ``torch.compile`` backend. Defaults to
            ``'inductor'``.
        mode (str, optional): ``torch.compile`` mode, e.g.
            ``'reduce-overhead'`` (CUDA graphs) on GPUs. Defaults to None.
        dynamic (bool, optional): ``torch.compile``'s ``dynamic``.
            Defaults to None (automatic).
        on_fallback (Callable[[str], None], optional): Told why, once,
            when compiling fails; the step then runs eagerly. Defaults to
            None: raise instead.
        on_compile (Callable[[str, float], None], optional): Told what
            was compiled and the seconds it took, once per shape.
        module_guards (bool): Re-check the called modules' Python attributes
            every call (~0.15 ms). Defaults to False: a number changed on a
            module during a run (a loss weight set by a hook) is not seen.
    """

    def __init__(self,
                 backend: str = 'inductor',
                 mode: Optional[str] = None,
                 dynamic: Optional[bool] = None,
                 on_fallback: Optional[Callable[[str], None]] = None,
                 on_compile: Optional[Callable[[str, float],
                                               None]] = None,
                 module_guards: bool = False):
        # Else ~400 guards per call, half on the modules' attributes.
        options = None if module_guards else dict(
            guard_filter_fn=torch.compiler.skip_guard_on_all_nn_modules_unsafe)
        self._fn = torch.compile(
            _compiled_body, backend=backend, mode=mode, dynamic=dynamic,
            options=options)
        self.on_fallback = on_fallback
        self.on_compile = on_compile
        # Why compiling failed: the step then runs eagerly.
        self.failed: Optional[str] = None
        self._checked = set()
        # The adjuster last seen, its parameters and buffers (cached).
        self._adjuster: Optional[nn.Module] = None
        self._params: Dict[str, nn.Parameter] = {}
        self._buffers: Dict[str, Tensor] = {}
        self._initial: Optional[nn.Module] = None
        self._initial_params: Dict[str, Tensor] = {}

    def _see(self, adjuster: nn.Module,
             initial: Optional[nn.Module]) -> None:
        """Cache a new adjuster's (and initial one's) tensors."""
        if adjuster is not self._adjuster:
            self._adjuster = adjuster
            self._params = {name: p for name, p in
                            adjuster.named_parameters() if p.requires_grad}
            self._buffers = dict(adjuster.named_buffers())
        if initial is not self._initial:
            self._initial = initial
            self._initial_params = {} if initial is None else {
                k: p.detach() for k, p in initial.named_parameters()}

    def _check_once(self, z: Tensor, z0: Tensor, loss_fn: Callable,
                    spec: StepSpec, initial: Optional[nn.Module],
                    update: bool) -> bool:
        """gal_step's checks of the loss, eagerly once per shape and graph
        (torch.func gives a zero gradient where z is unused); True the
        first time."""
        key = (tuple(z.shape), z.dtype, z0.dtype, spec.grouped,
               initial is None, update)
        if key in self._checked:
            return False
        loss_and_grad(z0, loss_fn, spec.loss_shape, spec.grouped)
        self._checked.add(key)
        return True

    def _fail(self, err: Exception) -> None:
        """Re-raise an error not torch.compile's; else tell on_fallback."""
        if not _is_compile_error(err):
            raise err
        reason = _compile_error(err)
        if self.on_fallback is None:
            raise RuntimeError(
                'CompiledGALStep: torch.compile could not build the GAL '
                f"step {reason}. The eager step gives the same update: "
                "set fast='eager'") from err
        self.failed = reason
        self.on_fallback(reason)

    def _eager(self, step: Callable[[], GALOutput],
               optimizer: Optional[Optimizer],
               grad_scale: float) -> GALOutput:
        out = step()
        if optimizer is not None:
            if grad_scale != 1:
                grads = [p.grad for group in optimizer.param_groups
                         for p in group['params'] if p.grad is not None]
                torch._foreach_mul_(grads, grad_scale)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return out

    def __call__(self,
                 z: Tensor,
                 loss_fn: Callable[[Tensor], Tensor],
                 adjuster: nn.Module,
                 lr: Union[float, Tensor],
                 sigma: float,
                 *,
                 optimizer: Optional[Optimizer] = None,
                 grad_scale: float = 1.0,
                 initial: Optional[nn.Module] = None,
                 **step_args) -> GALOutput:
        """As :func:`gal_step` (``step_args``: its keywords)."""
        spec, z0, z_native = prepare_step(z, loss_fn, adjuster, lr, sigma,
                                          **step_args)

        def eager() -> GALOutput:
            return gal_step(z, loss_fn, adjuster, lr, sigma, initial=initial,
                            **step_args)

        self._see(adjuster, initial)
        params = {name: p.detach() for name, p in self._params.items()}
        update = _adam_update(optimizer, self._params)
        if self.failed is not None or not params or (
                optimizer is not None and update is None):
            # Compiling failed, no parameters, or no in-graph update yet.
            return self._eager(eager, optimizer, grad_scale)
        first = self._check_once(z, z0, loss_fn, spec, initial,
                                 update is not None)
        spec = spec._replace(loss_shape=None)
        lr_t = lr
        if not isinstance(lr, Tensor):
            # Not 0-dim: dynamo guards a 0-dim CPU tensor by its value.
            lr_t = torch.full((1, ), float(lr), dtype=z0.dtype,
                              device=z.device)
        t0 = time.perf_counter()
        try:
            out, grads = self._fn(
                params, self._buffers, z0, z_native, lr_t, loss_fn, adjuster,
                spec, initial, self._initial_params if initial is not None
                else None, update, float(grad_scale))
        except Exception as err:
            self._fail(err)
            return self._eager(eager, optimizer, grad_scale)
        if first and self.on_compile is not None:
            extras = [what for what, on in (
                ('the probe of the initial adjuster', initial is not None),
                ("the adjuster's Adam update", update is not None)) if on]
            self.on_compile(
                f'z of shape {tuple(z.shape)}' +
                (f' (with {" and ".join(extras)})' if extras else ''),
                time.perf_counter() - t0)
        if grads is not None:
            # Accumulated: the wrapper sums over micro-batches and groups.
            add_to_grads([self._params[k] for k in grads],
                         list(grads.values()))
        return out
