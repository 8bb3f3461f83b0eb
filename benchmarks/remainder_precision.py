#!/usr/bin/env python
"""Is GAL's remainder above the working precision? fp32 vs fp64, per task.

    python benchmarks/remainder_precision.py [--epochs 5] [--batches 50]

GAL's adjuster minimises |R| with R = l(z') - l(z) + eta <g~, g>, a
second-order quantity (~ eta^2 g~'Hg~ / 2) computed as the difference of
two losses of order 1. When |R| is below the spacing of float32 numbers
around l (eps * |l|), the sign of R, and with it the adjuster's gradient,
is set by rounding. For each task this trains the model briefly (no GAL),
then on ``--batches`` random batches runs one GAL step in float32 (what
training uses) and the same step in float64 (same adjuster, same z) and
prints: median |R| in float64, median |l|, float32's spacing there, how
often the two signs of R agree, the median relative error of R32, and for
MSE (whose remainder is exactly lr^2 * mean(g~^2)) how far the float64
step's R is from that closed form, and the largest entry of the
adjuster's gradient d|R|/dphi from the float64 step (with one output,
d = 1, the row-normalised adjustment is sign(a) * sigma * |g|, whose
derivative w.r.t. a is zero: the adjuster gets no gradient).

Tasks: the three regression datasets with the paper's protocol (the
models, adjusters, lr 1e-3, batch 200, sigma 0.1 of Table V; Boston and
California from ``--data-root`` / $MMGAL_DATA_ROOT), and, for contrast, a
classifier on scikit-learn's digits with the quick start's lr (0.05) and
batch (32), cross-entropy, sigma 0.01. Then (``--train-steps``) a
California regressor trained with GAL in both dtypes: how far its
adjuster's weights move.
"""
import argparse
import copy
import os.path as osp
import statistics
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))


def measure(z, target, loss, adjuster, lr, sigma, batches, batch, gen):
    """One GAL step per random batch in fp32 and fp64; the row's numbers."""
    from mmgal.core import gal_step
    adj64 = copy.deepcopy(adjuster).double()
    r64, losses, agree, rel, rel64, adj_grad = [], [], 0, [], [], []
    for _ in range(batches):
        idx = torch.randint(0, len(z), (batch, ), generator=gen)
        zb, tb = z[idx], target[idx]
        o32 = gal_step(zb, lambda t: loss(t, tb), adjuster, lr, sigma)
        t64 = tb.double() if tb.is_floating_point() else tb
        adj64.zero_grad(set_to_none=True)
        o64 = gal_step(zb.double(), lambda t: loss(t, t64), adj64, lr,
                       sigma)
        adj_grad.append(max(float(q.grad.abs().max())
                            for q in adj64.parameters()))
        a, b = float(o32.remainder), float(o64.remainder)
        if loss is F.mse_loss:
            # MSE's remainder in closed form: lr^2 * mean(g~^2), no
            # cancellation; how far the float64 step is from it.
            exact = lr**2 * float((o64.grad**2).mean())
            rel64.append(abs(b - exact) / exact)
        r64.append(abs(b))
        losses.append(abs(float(o64.loss)))
        agree += (a > 0) == (b > 0)
        rel.append(abs(a - b) / max(abs(b), 1e-300))
    mr, ml = statistics.median(r64), statistics.median(losses)
    spacing = float(np.spacing(np.float32(ml)))
    return dict(median_abs_R64=mr, median_loss=ml, fp32_spacing=spacing,
                R_over_spacing=mr / spacing, sign_agreement=agree / batches,
                median_rel_error_R32=statistics.median(rel),
                median_rel_error_R64_vs_exact=statistics.median(rel64)
                if rel64 else None,
                median_adjuster_grad64=statistics.median(adj_grad))



def regression_rows(args, gen):
    from mmgal.core import build_adjuster
    from mmgal.regression import (DATASETS, PAPER_MODELS, fit_regressor,
                                  load_dataset, make_protocol)
    from mmgal.regression.experiment import _Split
    proto = make_protocol('paper')
    rows = {}
    for name in DATASETS:
        X, y = load_dataset(name, args.data_root)
        split = _Split(X, y, proto, 0)
        res = fit_regressor(*split.train, PAPER_MODELS[name]['hidden'],
                            epochs=args.epochs, batch_size=proto.batch_size,
                            lr=proto.lr, seed=0)
        Xt = torch.as_tensor(split.train[0], dtype=torch.float32)
        with torch.no_grad():
            z = res.model(Xt)
        target = torch.as_tensor(split.train[1],
                                 dtype=torch.float32).unsqueeze(-1)
        torch.manual_seed(0)
        adjuster = build_adjuster('mlp', 1, PAPER_MODELS[name]['arch'])
        rows[f'{name} (MSE, lr {proto.lr:g}, sigma {proto.sigma:g})'] = \
            measure(z, target, F.mse_loss, adjuster, proto.lr, proto.sigma,
                    args.batches, proto.batch_size, gen)
    return rows


def digits_row(args, gen):
    from sklearn.datasets import load_digits

    from mmgal.core import build_adjuster
    X, y = load_digits(return_X_y=True)
    X = torch.as_tensor(X / 16.0, dtype=torch.float32)
    y = torch.as_tensor(y)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(),
                                torch.nn.Linear(64, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(args.epochs):
        for idx in torch.randperm(len(X), generator=gen).split(32):
            opt.zero_grad()
            F.cross_entropy(model(X[idx]), y[idx]).backward()
            opt.step()
    with torch.no_grad():
        z = model(X)
    torch.manual_seed(0)
    adjuster = build_adjuster('mlp', 10, (100, 32, 16))
    return {'digits (cross-entropy, lr 0.05, sigma 0.01)':
            measure(z, y, F.cross_entropy, adjuster, 0.05, 0.01,
                    args.batches, 32, gen)}


def adjuster_motion(args):
    """Train California's regressor with GAL (the paper's model, adjuster,
    lr 1e-3, batch 200, sigma 0.1, standardised data) for
    ``--train-steps`` steps per GAL dtype: how far the adjuster's weights
    moved, and the share of rows with |g~| < |g| over the last 100
    steps."""
    import copy

    from mmgal.regression import (GALSettings, MLPRegressor, PAPER_MODELS,
                                  RegressionStep, load_dataset)
    X, y = load_dataset('california', args.data_root)
    X = torch.as_tensor((X - X.mean(0)) / X.std(0), dtype=torch.float32)
    y = torch.as_tensor((y - y.mean()) / y.std(),
                        dtype=torch.float32).unsqueeze(-1)
    rows = {}
    for dtype in (None, 'float64'):
        torch.manual_seed(0)
        step = RegressionStep(
            MLPRegressor(8, PAPER_MODELS['california']['hidden']), 1e-3,
            gal=GALSettings(sigma=0.1, arch=PAPER_MODELS['california'][
                'arch'], gal_dtype=dtype))
        before = copy.deepcopy(step.adjuster.state_dict())
        gen = torch.Generator().manual_seed(0)
        shrunk = []
        for it in range(args.train_steps):
            idx = torch.randint(0, len(X), (200, ), generator=gen)
            _, out = step(X[idx], y[idx])
            if it >= args.train_steps - 100:
                shrunk.append(float(
                    (out.grad.abs() < out.vanilla_grad.abs()).float().mean()))
        moved = max(float((step.adjuster.state_dict()[k] - v).abs().max())
                    for k, v in before.items())
        rows[dtype or 'float32'] = dict(max_weight_change=moved,
                                        shrunk_share=statistics.mean(shrunk))
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('--epochs', type=int, default=5,
                   help='training epochs before measuring (default 5)')
    p.add_argument('--batches', type=int, default=50)
    p.add_argument('--data-root', default=None)
    p.add_argument('--train-steps', type=int, default=2000,
                   help='GAL steps of the California adjuster-motion check '
                   '(default 2000; 0 skips it)')
    args = p.parse_args(argv)
    gen = torch.Generator().manual_seed(0)
    rows = regression_rows(args, gen)
    rows.update(digits_row(args, gen))
    print(f'torch {torch.__version__}; {args.epochs} epochs of training, '
          f'then {args.batches} batches\n')
    print('| task | median abs R (fp64) | median loss | fp32 spacing at '
          'the loss | R / spacing | sign of R agrees (fp32 vs fp64) | '
          'median rel. error of R (fp32) | rel. error of R (fp64) vs the '
          'closed form (MSE) | largest adjuster gradient (fp64, median) |')
    print('|---|---|---|---|---|---|---|---|---|')
    for name, r in rows.items():
        print(f'| {name} | {r["median_abs_R64"]:.2e} | '
              f'{r["median_loss"]:.3g} | {r["fp32_spacing"]:.1e} | '
              f'{r["R_over_spacing"]:.2g} | {r["sign_agreement"]:.0%} | '
              f'{r["median_rel_error_R32"]:.2g} | ' +
              ('-' if r['median_rel_error_R64_vs_exact'] is None else
               f'{r["median_rel_error_R64_vs_exact"]:.1e}') +
              f' | {r["median_adjuster_grad64"]:.1e} |')
    if args.train_steps > 0:
        motion = adjuster_motion(args)
        print(f'\nCalifornia, {args.train_steps} GAL training steps (d = 1):'
              '\n\n| GAL dtype | largest change of an adjuster weight | '
              'rows with abs(g~) < abs(g), last 100 steps |\n|---|---|---|')
        for name, r in motion.items():
            print(f'| {name} | {r["max_weight_change"]:.3g} | '
                  f'{r["shrunk_share"]:.1%} |')
        rows['adjuster_motion'] = motion
    return rows


if __name__ == '__main__':
    main()
