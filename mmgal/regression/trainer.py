"""MLP regressors trained with or without GAL, through the core's gal_step.

Both arms of a comparison share the seed: the same split, the same initial
weights (the model is built before the adjuster) and the same batch order.
"""
import warnings
from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmgal.core import (CompiledGALStep, GALOutput, build_adjuster,
                        check_count, check_gal_args, check_real,
                        compile_unavailable, dtype_from_name,
                        fast_optimizer, gal_step, mse_loss,
                        warn_if_unlearnable)

# GALSettings.fast: 'eager' (the reference: eager step, for-loop Adam, what
# produced docs/results' Table V), 'auto' (the step and the adjuster's Adam
# update as one torch.compile-d graph where torch.compile works here, else
# the eager step with a fused Adam), 'compile' (compiled wherever it can be
# tried); where compiling fails, one warning and the eager step.
FAST_MODES = ('eager', 'auto', 'compile')


def _warn_fallback(reason: str) -> None:
    warnings.warn(f'GAL: torch.compile could not build the step {reason}; '
                  'it runs eagerly from now on (the same training).',
                  stacklevel=2)


class MLPRegressor(nn.Module):
    """``in -> hidden... -> 1`` with ReLU, as in the paper's Table V models.

    Args:
        in_features (int): Number of input features.
        hidden (Sequence[int]): Hidden widths, e.g. ``(100, 50)``.
    """

    def __init__(self, in_features: int, hidden: Sequence[int]):
        super().__init__()
        widths = (in_features, ) + tuple(hidden)
        layers = []
        for w_in, w_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(w_in, w_out), nn.ReLU(inplace=True)]
        layers.append(nn.Linear(widths[-1], 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


@dataclass
class GALSettings:
    """GAL's settings for the regression trainer.

    Args:
        sigma (float): Relative adjustment strength (< 1, since d = 1).
        gamma (float): Tentative learning-rate scale.
        arch (Sequence[int]): Adjuster hidden widths.
        policy (str): Update policy, see :func:`mmgal.core.gal_step`.
        remainder (str): ``'exact'`` (default: MSE's closed form
            lr^2 mean(g~^2)), ``'taylor'`` (the difference of two losses
            in ``gal_dtype``, float32 by default: the tables made before
            the exact form) or ``'reference'`` (the authors' release).
        objective (str): The adjuster's objective, ``'normalized'``
            (default) or ``'abs'`` (the paper's |R|); see
            :func:`mmgal.core.gal_step`.
        normalize (str): Eq. 4's norms: ``'auto'`` (default; with one
            output, as here, the batch: a deviation from Eq. 4 under which
            the adjuster gets a gradient), ``'row'`` (Eq. 4 as written:
            the adjuster gets none for d = 1) or ``'batch'``.
        kind (str): Adjuster kind (``'mlp'``, ``'cnn'``, ``'uniform'``,
            ``'normal'``).
        lr_ratio (float): Adjuster lr = ``lr_ratio`` * model lr (Adam
            without weight decay).
        fast (str): How the GAL step runs: ``'auto'`` (default: the step
            and the adjuster's Adam update as one ``torch.compile``-d
            graph, see :class:`mmgal.core.CompiledGALStep`, where
            torch.compile works here; compiling takes seconds once, and
            once more for the smaller last batch; else the eager step and
            PyTorch's fused Adam), ``'compile'`` (compiled wherever it can
            be tried) or ``'eager'`` (the reference: the eager step and a
            for-loop Adam, bit for bit what produced the published tables;
            ``tools/regression.py``'s default). Where compiling fails, one
            warning and the eager step. All give the same training up to
            float rounding.
        gal_dtype (str, optional): The dtype of GAL's maths, ``'float32'``
            or ``'float64'``. Defaults to None: float32 (the exact form
            needs no more), as the authors' release.
    """
    sigma: float = 0.1
    gamma: float = 1.0
    arch: Sequence[int] = (16, 4)
    policy: str = 'le'
    remainder: str = 'exact'
    objective: str = 'normalized'
    normalize: str = 'auto'
    kind: str = 'mlp'
    lr_ratio: float = 1.0
    fast: str = 'auto'
    gal_dtype: Optional[str] = None

    def __post_init__(self):
        check_gal_args(self.sigma, self.gamma, self.policy, self.remainder,
                       self.objective, self.normalize)
        check_real('lr_ratio', self.lr_ratio)
        if self.fast not in FAST_MODES:
            raise ValueError(f'fast must be one of {FAST_MODES}, got '
                             f'{self.fast!r}')
        dtype_from_name('gal_dtype', self.gal_dtype)


@dataclass
class TrainResult:
    """What :func:`fit_regressor` returns: the trained model, the epoch
    whose weights it holds, per-epoch history and, with GAL, the adjuster
    as training left it."""
    model: nn.Module
    best_epoch: int
    history: Dict[str, list] = field(default_factory=dict)
    adjuster: Optional[nn.Module] = None


def _mse(model: nn.Module, X: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return float(F.mse_loss(model(X).squeeze(-1), y))


class RegressionStep:
    """One training iteration of a regressor: MSE loss, Adam, and with
    ``gal`` a GAL step on the predictions and the adjuster's update.

    What :func:`fit_regressor` runs for every batch (and what
    ``benchmarks/overhead.py`` times). The adjuster is built here, after
    the model, from the global random stream, on the model's device.

    Args:
        model (nn.Module): The regressor; its output is (batch, 1).
        lr (float): Adam's learning rate.
        weight_decay (float): Adam's weight decay. Defaults to 0.
        gal (GALSettings, optional): GAL's settings; None for the baseline.
    """

    def __init__(self,
                 model: nn.Module,
                 lr: float,
                 weight_decay: float = 0.0,
                 gal: Optional[GALSettings] = None):
        self.model = model
        self.gal = gal
        self.optimizer = torch.optim.Adam(
            model.parameters(), lr=lr, weight_decay=weight_decay)
        self.adjuster = self.adjuster_optimizer = None
        self._compiled = None
        self._dtype = None
        if gal is None:
            return
        device = next(model.parameters()).device
        warn_if_unlearnable(gal.kind, 1, gal.normalize)
        self.adjuster = build_adjuster(gal.kind, 1, gal.arch).to(device)
        params = list(self.adjuster.parameters())
        compiled = gal.fast == 'compile' or (
            gal.fast == 'auto' and compile_unavailable(device) is None)
        if params:
            kwargs = dict(lr=lr * gal.lr_ratio)
            if gal.fast == 'auto' and not compiled:
                self.adjuster_optimizer = fast_optimizer(
                    torch.optim.Adam, params, kwargs)
            else:
                if compiled and device.type == 'cuda':
                    # Its step count on the GPU, so the compiled graph
                    # applies the update without a host-to-device copy.
                    kwargs['capturable'] = True
                self.adjuster_optimizer = torch.optim.Adam(params, **kwargs)
        if compiled:
            self._compiled = CompiledGALStep(on_fallback=_warn_fallback)
        self._dtype = dtype_from_name('gal_dtype', gal.gal_dtype)

    def __call__(self, x: Tensor,
                 y: Tensor) -> Tuple[Tensor, Optional[GALOutput]]:
        """Train on one batch (x: (n, f), y: (n, 1)); returns the batch's
        loss before the update (0-dim) and GAL's output (None without
        GAL)."""
        pred = self.model(x)
        self.optimizer.zero_grad(set_to_none=True)
        gal, out = self.gal, None
        if gal is None:
            loss = F.mse_loss(pred, y)
            loss.backward()
        else:
            args = (pred, mse_loss(y), self.adjuster,
                    self.optimizer.param_groups[0]['lr'], gal.sigma,
                    gal.gamma, gal.policy, gal.remainder)
            kwargs = dict(dtype=self._dtype, objective=gal.objective,
                          normalize=gal.normalize)
            if self._compiled is not None:
                # The adjuster's update is part of the compiled step.
                out = self._compiled(*args,
                                     optimizer=self.adjuster_optimizer,
                                     **kwargs)
            else:
                out = gal_step(*args, **kwargs)
                if self.adjuster_optimizer is not None:
                    self.adjuster_optimizer.step()
                    self.adjuster_optimizer.zero_grad(set_to_none=True)
            pred.backward(out.grad)
            loss = out.loss
        self.optimizer.step()
        return loss.detach(), out


def fit_regressor(X: np.ndarray,
                  y: np.ndarray,
                  hidden: Sequence[int],
                  *,
                  epochs: int,
                  batch_size: int,
                  lr: float,
                  seed: int,
                  weight_decay: float = 0.0,
                  gal: Optional[GALSettings] = None,
                  val: Optional[Tuple[np.ndarray, np.ndarray]] = None
                  ) -> TrainResult:
    """Train an :class:`MLPRegressor` with Adam on the MSE loss.

    Args:
        X, y: Training inputs (n, f) and targets (n, ).
        hidden: Hidden widths of the regressor.
        epochs, batch_size, lr, weight_decay: Adam training settings.
        seed: Seeds the initial weights and the batch order.
        gal: GAL's settings, or None for the baseline.
        val: Optional (X, y) validation split; when given, the weights of
            the epoch with the lowest validation MSE are returned.

    Returns:
        TrainResult: the model, the selected epoch and per-epoch history
        (``train_loss``, ``val_mse``, and for GAL ``adopt_rate`` and
        ``remainder``).
    """
    check_count('epochs', epochs)
    check_count('batch_size', batch_size)
    check_real('lr', lr, strict=True)
    if len(X) == 0 or len(X) != len(y):
        raise ValueError(f'X and y must have the same number (>= 1) of '
                         f'rows, got {len(X)} and {len(y)}')
    Xt = torch.as_tensor(X, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.float32)
    torch.manual_seed(seed)
    model = MLPRegressor(Xt.shape[1], hidden)
    train_step = RegressionStep(model, lr, weight_decay, gal)
    gen = torch.Generator().manual_seed(seed)
    n = len(Xt)
    history: Dict[str, list] = {'train_loss': []}
    if gal is not None:
        history.update(adopt_rate=[], remainder=[])
    if val is not None:
        Xv = torch.as_tensor(val[0], dtype=torch.float32)
        yv = torch.as_tensor(val[1], dtype=torch.float32)
        history['val_mse'] = []
        best = (float('inf'), -1, None)

    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(n, generator=gen)
        loss_sum = torch.zeros(())
        adopt_sum = torch.zeros(())
        rem_sum = torch.zeros(())
        steps = 0
        for start in range(0, n, batch_size):
            idx = perm[start:start + batch_size]
            xb, yb = Xt[idx], yt[idx].unsqueeze(-1)
            loss, out = train_step(xb, yb)
            if out is not None:
                adopt_sum += out.adopted
                rem_sum += out.remainder.abs()
            loss_sum += loss
            steps += 1
        history['train_loss'].append(float(loss_sum) / steps)
        if gal is not None:
            history['adopt_rate'].append(float(adopt_sum) / steps)
            history['remainder'].append(float(rem_sum) / steps)
        if val is not None:
            model.eval()
            v = _mse(model, Xv, yv)
            history['val_mse'].append(v)
            if v < best[0]:
                best = (v, epoch, {
                    k: t.clone()
                    for k, t in model.state_dict().items()
                })
    model.eval()
    if val is not None and best[2] is not None:
        model.load_state_dict(best[2])
        return TrainResult(model, best[1], history, train_step.adjuster)
    return TrainResult(model, epochs - 1, history, train_step.adjuster)


def regression_metrics(y_true: np.ndarray,
                       y_pred: np.ndarray) -> Dict[str, float]:
    """MAE, MSE and R^2 (coefficient of determination; NaN where the
    targets are all equal, where it is undefined)."""
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    err = y_pred - y_true
    sse = float((err**2).sum())
    sst = float(((y_true - y_true.mean())**2).sum())
    return {
        'MAE': float(np.abs(err).mean()),
        'MSE': sse / len(y_true),
        'R2': 1.0 - sse / sst if sst > 0 else float('nan'),
    }


def predict(model: nn.Module, X: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.as_tensor(X, dtype=torch.float32)).squeeze(
            -1).double().numpy()
