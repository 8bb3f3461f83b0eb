"""MLP regressors trained with or without GAL, through the core's gal_step.

Both arms of a comparison share the seed: the same split, the same initial
weights (the model is built before the adjuster) and the same batch order.
"""
from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmgal.core import (build_adjuster, check_count, check_gal_args,
                        check_real, gal_step)


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
        remainder (str): ``'taylor'`` or ``'reference'``.
        kind (str): Adjuster kind (``'mlp'``, ``'cnn'``, ``'uniform'``,
            ``'normal'``).
        lr_ratio (float): Adjuster lr = ``lr_ratio`` * model lr.
    """
    sigma: float = 0.1
    gamma: float = 1.0
    arch: Sequence[int] = (16, 4)
    policy: str = 'le'
    remainder: str = 'taylor'
    kind: str = 'mlp'
    lr_ratio: float = 1.0

    def __post_init__(self):
        check_gal_args(self.sigma, self.gamma, self.policy, self.remainder)


@dataclass
class TrainResult:
    """What :func:`fit_regressor` returns: the trained model, the epoch
    whose weights it holds and per-epoch history."""
    model: nn.Module
    best_epoch: int
    history: Dict[str, list] = field(default_factory=dict)


def _mse(model: nn.Module, X: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return float(F.mse_loss(model(X).squeeze(-1), y))


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
    opt = torch.optim.Adam(model.parameters(), lr=lr,
                           weight_decay=weight_decay)
    adjuster = adj_opt = None
    if gal is not None:
        adjuster = build_adjuster(gal.kind, 1, gal.arch)
        params = list(adjuster.parameters())
        if params:
            adj_opt = torch.optim.Adam(params, lr=lr * gal.lr_ratio)
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
            pred = model(xb)
            opt.zero_grad(set_to_none=True)
            if gal is None:
                loss = F.mse_loss(pred, yb)
                loss.backward()
            else:
                out = gal_step(pred, lambda z: F.mse_loss(z, yb), adjuster,
                               opt.param_groups[0]['lr'], gal.sigma,
                               gal.gamma, gal.policy, gal.remainder)
                pred.backward(out.grad)
                loss = out.loss
                adopt_sum += out.adopted
                rem_sum += out.remainder.abs()
                if adj_opt is not None:
                    adj_opt.step()
                    adj_opt.zero_grad(set_to_none=True)
            opt.step()
            loss_sum += loss.detach()
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
        return TrainResult(model, best[1], history)
    return TrainResult(model, epochs - 1, history)


def regression_metrics(y_true: np.ndarray,
                       y_pred: np.ndarray) -> Dict[str, float]:
    """MAE, MSE and R^2 (coefficient of determination)."""
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    err = y_pred - y_true
    sse = float((err**2).sum())
    sst = float(((y_true - y_true.mean())**2).sum())
    return {
        'MAE': float(np.abs(err).mean()),
        'MSE': sse / len(y_true),
        'R2': 1.0 - sse / sst,
    }


def predict(model: nn.Module, X: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.as_tensor(X, dtype=torch.float32)).squeeze(
            -1).double().numpy()
