#!/usr/bin/env python
"""Is GAL's remainder resolved? The release's float32 difference, the
closed form and the float64 difference, per task, against float64's
closed form.

    python benchmarks/remainder_precision.py --out docs/results/remainder_precision

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
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))),
                            'tools'))  # the Table V harness (table_v)
from bench_env import header, pin_threads, record  # noqa: E402


def measure(z, target, loss, exact, adjuster, lr, sigma, batches, batch,
            gen):
    """One GAL step per random batch by each way of computing R, against
    the float64 closed form; the row's numbers."""
    from mmgal.core import gal_step
    frozen = copy.deepcopy(adjuster).requires_grad_(False)
    adj64 = copy.deepcopy(frozen).double()
    ref_r, losses, agree = [], [], 0
    rel = {'taylor': [], 'exact': [], 'float64': []}
    adj_grad = []
    for _ in range(batches):
        idx = torch.randint(0, len(z), (batch, ), generator=gen)
        zb, tb = z[idx], target[idx]
        t64 = tb.double() if tb.is_floating_point() else tb
        ref = float(gal_step(zb.double(), exact(t64), adj64, lr,
                             sigma).remainder)
        got = {
            # The release's way: the difference of two losses in float32.
            'taylor': gal_step(zb, lambda t: loss(t, tb), frozen, lr, sigma,
                               dtype=torch.float32),
            # The default for a closed form: float32.
            'exact': gal_step(zb, exact(tb), frozen, lr, sigma),
            # The default for a plain loss: the difference in float64.
            'float64': gal_step(zb, lambda t: loss(t, tb), frozen, lr,
                                sigma)}
        for key, out in got.items():
            rel[key].append(abs(float(out.remainder) - ref) /
                            max(abs(ref), 1e-300))
        agree += (float(got['taylor'].remainder) > 0) == (ref > 0)
        adjuster.zero_grad(set_to_none=True)
        gal_step(zb, exact(tb), adjuster, lr, sigma)
        adj_grad.append(max(float(q.grad.abs().max())
                            for q in adjuster.parameters()))
        ref_r.append(abs(ref))
        losses.append(abs(float(got['exact'].loss)))
    mr, ml = statistics.median(ref_r), statistics.median(losses)
    spacing = float(np.spacing(np.float32(ml)))
    return dict(median_abs_R64=mr, median_loss=ml, fp32_spacing=spacing,
                R_over_spacing=mr / spacing, sign_agreement=agree / batches,
                **{f'median_rel_error_{k}': statistics.median(v)
                   for k, v in rel.items()},
                median_adjuster_grad=statistics.median(adj_grad))


def regression_rows(args, gen):
    from mmgal.core import build_adjuster, mse_loss
    from table_v import DATASETS, PAPER_MODELS, load_dataset, make_protocol
    from table_v.experiment import _Split

    from mmgal.regression import fit_regressor
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
            measure(z, target, F.mse_loss, mse_loss, adjuster, proto.lr,
                    proto.sigma, args.batches, proto.batch_size, gen)
    return rows


def digits_row(args, gen):
    from sklearn.datasets import load_digits

    from mmgal.core import build_adjuster, cross_entropy_loss
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
            measure(z, y, F.cross_entropy, cross_entropy_loss, adjuster,
                    0.05, 0.01, args.batches, 32, gen)}


MOTION_SETTINGS = {
    # name: GALSettings overrides
    "the release preset (Eq. 4 per row, |R|, its remainder, the model's "
    "Adam)": dict(preset='release'),
    "Eq. 4 per row, this project's objective and exact R":
    dict(normalize='row'),
    "defaults (normalize='auto': over the batch for d = 1)": dict(),
}


def adjuster_motion(args):
    """Train California's regressor with GAL (the paper's model, adjuster,
    lr 1e-3, batch 200, sigma 0.1, standardised data) for
    ``--train-steps`` steps per setting: how far the adjuster's weights
    moved (largest change, and their change beyond a common rescaling)."""
    from table_v import PAPER_MODELS, load_dataset

    from mmgal.regression import GALSettings, MLPRegressor, RegressionStep
    X, y = load_dataset('california', args.data_root)
    X = torch.as_tensor((X - X.mean(0)) / X.std(0), dtype=torch.float32)
    y = torch.as_tensor((y - y.mean()) / y.std(),
                        dtype=torch.float32).unsqueeze(-1)
    rows = {}
    for name, overrides in MOTION_SETTINGS.items():
        torch.manual_seed(0)
        step = RegressionStep(
            MLPRegressor(8, PAPER_MODELS['california']['hidden']), 1e-3,
            gal=GALSettings(sigma=0.1, arch=PAPER_MODELS['california'][
                'arch'], **overrides))
        before = copy.deepcopy(step.adjuster.state_dict())
        gen = torch.Generator().manual_seed(0)
        for it in range(args.train_steps):
            idx = torch.randint(0, len(X), (200, ), generator=gen)
            step(X[idx], y[idx])
        after = step.adjuster.state_dict()
        moved = max(float((after[k] - v).abs().max())
                    for k, v in before.items())
        w0 = torch.cat([v.flatten() for v in before.values()]).double()
        w1 = torch.cat([v.flatten() for v in after.values()]).double()
        cos = float(F.cosine_similarity(w0, w1, dim=0))
        rows[name] = dict(max_weight_change=moved,
                          drift=max(0.0, 1 - cos * cos)**0.5)
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
    p.add_argument('--threads', type=int, default=1,
                   help='torch threads (default 1; results depend on it)')
    p.add_argument('--out', help='write results.json and results.md here')
    args = p.parse_args(argv)
    pin_threads(args.threads)
    meta = record('benchmarks/remainder_precision.py', argv, seeds=[0])
    gen = torch.Generator().manual_seed(0)
    rows = regression_rows(args, gen)
    rows.update(digits_row(args, gen))
    lines = [header(meta), '',
             f'{args.epochs} epochs of training, then {args.batches} '
             'batches; R by each method against the float64 closed form:',
             '',
             '| task | median abs R | median loss | fp32 spacing at the '
             'loss | R / spacing | sign of fp32 difference right | median '
             'rel. error: fp32 difference (release) | fp32 closed form '
             '(default) | fp64 difference (default, plain loss) | largest '
             'adjuster gradient (default, median) |',
             '|---|---|---|---|---|---|---|---|---|---|']
    for name, r in rows.items():
        lines.append(
            f'| {name} | {r["median_abs_R64"]:.2e} | '
            f'{r["median_loss"]:.3g} | {r["fp32_spacing"]:.1e} | '
            f'{r["R_over_spacing"]:.2g} | {r["sign_agreement"]:.0%} | '
            f'{r["median_rel_error_taylor"]:.2g} | '
            f'{r["median_rel_error_exact"]:.1e} | '
            f'{r["median_rel_error_float64"]:.1e} | '
            f'{r["median_adjuster_grad"]:.1e} |')
    if args.train_steps > 0:
        motion = adjuster_motion(args)
        lines += ['', f'California, {args.train_steps} GAL training steps '
                  '(d = 1):', '',
                  '| setting | largest change of an adjuster weight | '
                  'change beyond a rescaling (sine to the initial '
                  'weights) |', '|---|---|---|']
        for name, r in motion.items():
            cell = name.replace('|', '\\|')  # a markdown table's cell
            lines.append(f'| {cell} | {r["max_weight_change"]:.3g} | '
                         f'{r["drift"]:.3g} |')
        rows['adjuster_motion'] = motion
    text = '\n'.join(lines)
    print(text)
    if args.out:
        import json
        import os
        os.makedirs(args.out, exist_ok=True)
        with open(osp.join(args.out, 'results.json'), 'w') as f:
            json.dump(dict(meta=meta, rows=rows), f, indent=1)
        with open(osp.join(args.out, 'results.md'), 'w') as f:
            f.write(text + '\n')
    return rows


if __name__ == '__main__':
    main()
