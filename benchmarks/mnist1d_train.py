"""MNIST-1D (Greydanus 2020) training with and without GAL, in plain
PyTorch through mmgal's core: the shared part of
``benchmarks/mnist1d_quality.py`` and ``benchmarks/adjuster_learning.py``.

The data comes from the ``mnist1d`` package's ``make_dataset`` (made on the
spot, no download): 4000 training and 1000 test sequences of 40 values, 10
classes. Models and recipe follow the paper's code: an MLP 40-100-100-10
and a CNN (3 strided 1-D convolutions of 25 channels, then a linear
layer), batch 100, 6000 steps; Adam lr 1e-2 as there, or SGD with
momentum 0.9. Its test accuracies: MLP ~68 %, CNN ~94 %.

Arms (``ARMS``):

- ``baseline``: no GAL.
- ``release``: GAL as the authors' release ran it: the remainder as a
  float32 difference with the first-order term averaged over rows
  (``remainder='reference'``), the adjuster minimising |R| with the
  model's optimizer and settings, Eq. 4 per row.
- ``gal``: this project's defaults: the exact remainder (cross-entropy's
  closed form), the normalised objective, the adjuster's own Adam (lr
  1e-3, no weight decay).
- ``frozen``: the defaults with the adjuster never trained: a fixed random
  adjustment, normalised by Eq. 4 (the noise control of the paper's
  Table VI).
"""
import math
from typing import Dict, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmgal.core import (AdjusterLearner, GALSettings, cross_entropy_loss,
                        gal_step)

ARMS = ('baseline', 'release', 'gal', 'frozen')
MODELS = ('mlp', 'cnn')
OPTIMIZERS = {
    'adam': dict(type='Adam', lr=1e-2),
    'sgd': dict(type='SGD', lr=0.05, momentum=0.9),
}
# GALSettings per arm (all Eq. 4 per row; the step eager, as recorded).
ARM_SETTINGS = {
    'release': dict(preset='release'),
    'gal': dict(normalize='row'),
    # An adjuster whose optimizer moves nothing: the noise control.
    'frozen': dict(normalize='row',
                   adjuster_optimizer=dict(type='SGD', lr=0.0)),
}


def load_data(seed: int = 42) -> Dict[str, torch.Tensor]:
    """MNIST-1D as the package makes it (its default arguments; ``seed``
    is its data seed, 42 by default)."""
    from mnist1d.data import get_dataset_args, make_dataset
    args = get_dataset_args()
    args.seed = seed
    data = make_dataset(args)
    return dict(
        x=torch.as_tensor(data['x'], dtype=torch.float32),
        y=torch.as_tensor(data['y'], dtype=torch.long),
        x_test=torch.as_tensor(data['x_test'], dtype=torch.float32),
        y_test=torch.as_tensor(data['y_test'], dtype=torch.long))


class MLP(nn.Module):

    def __init__(self, width: int = 100):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(40, width), nn.ReLU(), nn.Linear(width, width),
            nn.ReLU(), nn.Linear(width, 10))

    def forward(self, x):
        return self.net(x)


class CNN(nn.Module):

    def __init__(self, channels: int = 25):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv1d(1, channels, 5, stride=2, padding=1), nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1), nn.ReLU())
        self.linear = nn.Linear(channels * 5, 10)

    def forward(self, x):
        return self.linear(self.conv(x.unsqueeze(1)).flatten(1))


def build_optimizer(cfg: dict, params) -> torch.optim.Optimizer:
    cfg = dict(cfg)
    klass = getattr(torch.optim, cfg.pop('type'))
    return klass(params, **cfg)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        acc = float((model(x).argmax(-1) == y).float().mean())
    model.train()
    return acc


def train(model_name: str,
          optimizer: str,
          arm: str,
          seed: int,
          data: Dict[str, torch.Tensor],
          steps: int = 6000,
          batch_size: int = 100,
          sigma: float = 0.01,
          gamma: float = 1.0,
          arch=(64, 32),
          probe_every: int = 0,
          probe_batches: int = 4) -> dict:
    """Train one model; returns the final test accuracy and, with
    ``probe_every``, the adjuster-learning trace (see :func:`probe`).

    ``seed`` fixes the model's initial weights, the batch order and the
    adjuster's initial weights (the same in every GAL arm)."""
    torch.manual_seed(seed)
    model = MLP() if model_name == 'mlp' else CNN()
    opt_cfg = OPTIMIZERS[optimizer]
    opt = build_optimizer(opt_cfg, model.parameters())
    gen = torch.Generator().manual_seed(seed)
    learner = adjuster = initial = settings = None
    if arm in ARM_SETTINGS:
        settings = GALSettings(sigma=sigma, gamma=gamma, arch=arch,
                               seed=10_000 + seed, fast='eager',
                               **ARM_SETTINGS[arm])
        learner = AdjusterLearner(settings, 10, lr=opt.param_groups[0]['lr'],
                                  model_optimizer=opt)
        adjuster, initial = learner.adjuster, learner.initial
    x, y = data['x'], data['y']
    n = len(x)
    trace = []
    adopted = torch.zeros(())
    perm = torch.randperm(n, generator=gen)
    pos = 0
    for it in range(steps):
        if pos + batch_size > n:
            perm, pos = torch.randperm(n, generator=gen), 0
        idx = perm[pos:pos + batch_size]
        pos += batch_size
        if probe_every and it % probe_every == 0 and adjuster is not None:
            trace.append(dict(step=it, **probe(model, adjuster, initial,
                                               data, opt, sigma, gamma,
                                               settings, probe_batches)))
        z = model(x[idx])
        opt.zero_grad(set_to_none=True)
        if adjuster is None:
            F.cross_entropy(z, y[idx]).backward()
        else:
            out = learner.step(z, cross_entropy_loss(y[idx]),
                               opt.param_groups[0]['lr'])
            adopted += out.adopted
            z.backward(out.grad)
            learner.update()
        opt.step()
    if probe_every and adjuster is not None:
        trace.append(dict(step=steps, **probe(model, adjuster, initial, data,
                                              opt, sigma, gamma, settings,
                                              probe_batches)))
    res = dict(test_acc=accuracy(model, data['x_test'], data['y_test']),
               train_acc=accuracy(model, x, y),
               adopt_rate=float(adopted) / steps if adjuster is not None
               else None)
    if probe_every:
        res['trace'] = trace
    return res


def _flat(module: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()])


def probe(model: nn.Module, adjuster: nn.Module, initial: nn.Module,
          data: dict, opt, sigma: float, gamma: float, settings: GALSettings,
          batches: int) -> dict:
    """On held-out (test) batches the adjuster never trains on: mean |R|
    with the current, the initial and no adjuster (sigma 0), the cosine of
    the current adjustment with the initial one, and the weights' change
    beyond a common rescaling (sine of the angle to the initial weights).
    The exact remainder is used for all three, whatever the arm trains
    with."""
    model.eval()
    lr = opt.param_groups[0]['lr']
    r_now = r_init = r_none = cos = 0.0
    xs, ys = data['x_test'], data['y_test']
    size = len(xs) // batches
    with torch.no_grad():
        for b in range(batches):
            xb, yb = xs[b * size:(b + 1) * size], ys[b * size:(b + 1) * size]
            z = model(xb)
            loss = cross_entropy_loss(yb)
            kw = dict(normalize=settings.normalize)
            r_now += float(gal_step(z, loss, adjuster, lr, sigma, gamma,
                                    **kw).remainder.abs())
            r_init += float(gal_step(z, loss, initial, lr, sigma, gamma,
                                     **kw).remainder.abs())
            r_none += float(gal_step(z, loss, initial, lr, 0.0, gamma,
                                     **kw).remainder.abs())
            cos += float(F.cosine_similarity(adjuster(z), initial(z),
                                             dim=-1).mean())
    model.train()
    w, w0 = _flat(adjuster).double(), _flat(initial).double()
    c = float(F.cosine_similarity(w, w0, dim=0))
    return dict(ratio_initial=r_now / r_init if r_init > 0 else math.nan,
                ratio_none=r_now / r_none if r_none > 0 else math.nan,
                initial_vs_none=r_init / r_none if r_none > 0 else math.nan,
                cos_init=cos / batches,
                drift=math.sqrt(max(0.0, 1 - c * c)),
                norm_ratio=float(w.norm() / w0.norm()))


def t_test(a, b) -> tuple:
    """Student's two-sample t-test (equal variances), (t, p); t > 0 when
    mean(a) > mean(b)."""
    from scipy import stats
    if len(a) < 2 or len(b) < 2:
        return math.nan, math.nan
    if np.std(a) == 0 and np.std(b) == 0:
        return (0.0, 1.0) if np.mean(a) == np.mean(b) else (math.inf, 0.0)
    res = stats.ttest_ind(a, b)
    return float(res.statistic), float(res.pvalue)


def environment() -> dict:
    """What a result depends on beyond its command."""
    import platform
    return dict(torch=torch.__version__, numpy=np.__version__,
                python=platform.python_version(),
                threads=torch.get_num_threads(),
                machine=platform.machine(), processor=platform.processor())


def timed(fn, *args, **kwargs):
    import time
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def check_args(steps: Optional[int], seeds: Optional[int]) -> None:
    for name, value in (('steps', steps), ('seeds', seeds)):
        if value is not None and value < 1:
            raise SystemExit(f'--{name} must be >= 1, got {value}')
