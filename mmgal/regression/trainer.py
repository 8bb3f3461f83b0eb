"""MLP regressors trained with or without GAL; both arms of a comparison
share the seed (initial weights, batch order, the adjuster's draw)."""
from dataclasses import dataclass, field, replace
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmgal.core import (AdjusterLearner, GALOutput, GALSettings, check_count,
                        check_real, mse_loss)


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
class TrainResult:
    """:func:`fit_regressor`'s model, the epoch of its weights, the
    per-epoch history and the trained adjuster (or None)."""
    model: nn.Module
    best_epoch: int
    history: Dict[str, list] = field(default_factory=dict)
    adjuster: Optional[nn.Module] = None


def _mse(model: nn.Module, X: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return float(F.mse_loss(model(X).squeeze(-1), y))


class RegressionStep:
    """One training iteration: MSE, Adam and, with ``gal``, a GAL step on
    the predictions through an :class:`~mmgal.core.AdjusterLearner` (what
    :func:`fit_regressor` runs per batch, ``benchmarks/overhead.py`` times).

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
        self.optimizer = torch.optim.Adam(
            model.parameters(), lr=lr, weight_decay=weight_decay)
        self.learner = None if gal is None else AdjusterLearner(
            gal, 1, next(model.parameters()).device, lr=lr,
            model_optimizer=self.optimizer)

    @property
    def adjuster(self) -> Optional[nn.Module]:
        return None if self.learner is None else self.learner.adjuster

    def __call__(self, x: Tensor,
                 y: Tensor) -> Tuple[Tensor, Optional[GALOutput]]:
        """Train on one batch (x: (n, f), y: (n, 1)); returns the batch's
        loss before the update (0-dim) and GAL's output (None without
        GAL)."""
        pred = self.model(x)
        self.optimizer.zero_grad(set_to_none=True)
        out = None
        if self.learner is None:
            loss = F.mse_loss(pred, y)
            loss.backward()
        else:
            out = self.learner.step(pred, mse_loss(y),
                                    self.optimizer.param_groups[0]['lr'])
            pred.backward(out.grad)
            loss = out.loss
        self.optimizer.step()
        if self.learner is not None:
            self.learner.update()
        return loss.detach(), out


def _epoch(train_step: RegressionStep, X: Tensor, y: Tensor, perm: Tensor,
           batch_size: int) -> Tuple[float, float, float]:
    """One epoch in the order ``perm``: the means over its batches of the
    loss, GAL's adoption and |R| (one host read each, at the end)."""
    sums = torch.zeros(3)
    steps = 0
    for start in range(0, len(X), batch_size):
        idx = perm[start:start + batch_size]
        loss, out = train_step(X[idx], y[idx].unsqueeze(-1))
        sums[0] += loss
        if out is not None:
            sums[1] += out.adopted
            sums[2] += out.remainder.abs()
        steps += 1
    return tuple((sums / steps).tolist())


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
        gal: GAL's settings (the adjuster drawn with ``seed``), or None.
        val: Optional (X, y): the epoch with the lowest MSE on it is kept.

    Returns:
        TrainResult: history ``train_loss``, ``val_mse``, GAL's
        ``adopt_rate`` and ``remainder`` per epoch.
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
    if gal is not None:
        gal = replace(gal, seed=seed)
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
        means = _epoch(train_step, Xt, yt, torch.randperm(n, generator=gen),
                       batch_size)
        for key, value in zip(('train_loss', 'adopt_rate', 'remainder'),
                              means):
            if key in history:
                history[key].append(value)
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
