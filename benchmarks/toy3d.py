#!/usr/bin/env python
"""The paper's 3-D toy problem (Fig. 4): GAL vs plain optimisers.

    python benchmarks/toy3d.py --out docs/results/toy3d

f(x, y) = -sin(x^2) cos(3 y^2) exp(-(x y)^2) - exp(-(x + y)^2). The
parameters (x, y) themselves are the "features" z (one row, d = 2), so GAL
adjusts the gradient of f directly. Settings from the paper: starts
(0.5, 0.5) and (0.75, 1.0), 100 steps, GD lr 0.1, sigma 0.2, adjuster
(64, 24). The adjuster is trained by the same optimiser type and lr as the
parameters (the paper's setting; ``--adjuster-optimizer adam``: this
project's default, Adam lr 1e-3), over ``--seeds`` adjuster seeds. Prints
a table of final f per optimiser and start (GAL: mean ± std over the
seeds, and in how many seeds it ends lower than the baseline), and writes
the convergence paths of seed 0 on the contour of f and the f-vs-step
curves as PNGs. f is not convex: GAL's remainder is the difference of two
float64 losses.
"""
import argparse
import json
import os
import os.path as osp
import sys

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

from mmgal.core import AdjusterLearner, GALSettings  # noqa: E402

STARTS = ((0.5, 0.5), (0.75, 1.0))


def f(z: torch.Tensor) -> torch.Tensor:
    x, y = z[..., 0], z[..., 1]
    val = (-torch.sin(x**2) * torch.cos(3 * y**2) * torch.exp(-(x * y)**2) -
           torch.exp(-(x + y)**2))
    return val.sum()


def optimizer_class(name):
    """The optimiser ``name`` as a class built by ``(params, lr=...)``, for
    (x, y) and, as ``adjuster_optimizer``'s type, for the adjuster."""
    plain = dict(GD=torch.optim.SGD, RMSProp=torch.optim.RMSprop,
                 Adam=torch.optim.Adam)
    if name in plain:
        return plain[name]
    from pytorch_optimizer import AdaBound, Lookahead

    class LookaheadGD(Lookahead):

        def __init__(self, params, lr):
            super().__init__(torch.optim.SGD(params, lr=lr), k=5, alpha=0.5)

    class AdaBoundFinal01(AdaBound):

        def __init__(self, params, lr):
            super().__init__(params, lr=lr, final_lr=0.1,
                             weight_decouple=False)

    return {'Lookahead(GD)': LookaheadGD, 'AdaBound': AdaBoundFinal01}[name]


# Per-optimiser learning rates: the paper gives GD's (0.1); the adaptive
# methods take steps of about lr per coordinate, so a smaller lr keeps them
# on the same scale of path.
LRS = {'GD': 0.1, 'Lookahead(GD)': 0.1, 'RMSProp': 0.01, 'Adam': 0.01,
       'AdaBound': 0.01}


def run(name, start, gal, steps=100, sigma=0.2, arch=(64, 24), seed=0,
        lr=None, adjuster_optimizer='model'):
    lr = LRS[name] if lr is None else lr
    z = torch.nn.Parameter(torch.tensor([start], dtype=torch.float64))
    opt = optimizer_class(name)([z], lr=lr)
    if gal:
        # The project's adjuster learner, eager: the adjuster (float32; its
        # output joins the float64 step) and its optimizer.
        learner = AdjusterLearner(GALSettings(
            sigma=sigma, arch=arch, seed=seed, fast='eager',
            adjuster_optimizer=dict(type=optimizer_class(name), lr=lr)
            if adjuster_optimizer == 'model' else dict(type='Adam',
                                                       lr=1e-3)), dim=2)
    path, losses, adopted = [list(start)], [], []
    for _ in range(steps):
        opt.zero_grad()
        if gal:
            out = learner.step(z.detach(), f, lr)
            z.grad = out.grad.clone()
            learner.update()
            losses.append(float(out.loss))
            adopted.append(bool(out.adopted))
        else:
            loss = f(z)
            loss.backward()
            losses.append(float(loss))
        opt.step()
        path.append(z.detach()[0].tolist())
    with torch.no_grad():
        final = float(f(z))
    return dict(path=path, losses=losses + [final], final=final,
                adopt_rate=(sum(adopted) / len(adopted)) if adopted else None)


def plot(results, out_dir):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(LRS)
    xs = np.linspace(-1.5, 2.0, 300)
    X, Y = np.meshgrid(xs, xs)
    Z = (-np.sin(X**2) * np.cos(3 * Y**2) * np.exp(-(X * Y)**2) -
         np.exp(-(X + Y)**2))
    for s, start in enumerate(STARTS):
        fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 4))
        for ax, name in zip(axes, names):
            ax.contourf(X, Y, Z, levels=40, cmap='viridis')
            for arm, colour in (('baseline', 'white'), ('GAL', 'red')):
                res = results[(name, s, arm)]
                p = np.array(res['path'])
                ax.plot(p[:, 0], p[:, 1], '-', color=colour, lw=1.5,
                        label=f"{arm} (f={res['final']:.3f})")
            ax.plot(*start, 'ko')
            ax.set_title(name)
            ax.legend(fontsize=7, loc='lower left')
        fig.suptitle(f'Fig. 4 toy problem, start {start}: convergence paths')
        fig.tight_layout()
        fig.savefig(osp.join(out_dir, f'toy3d_paths_start{s}.png'), dpi=80)
        plt.close(fig)
        fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3))
        for ax, name in zip(axes, names):
            for arm, colour in (('baseline', 'tab:blue'), ('GAL', 'tab:red')):
                ax.plot(results[(name, s, arm)]['losses'], color=colour,
                        label=arm)
            ax.set_title(name)
            ax.set_xlabel('step')
            ax.set_ylabel('f')
            ax.legend(fontsize=7)
        fig.suptitle(f'Fig. 4 toy problem, start {start}: f vs step')
        fig.tight_layout()
        fig.savefig(osp.join(out_dir, f'toy3d_loss_start{s}.png'), dpi=80)
        plt.close(fig)


def main(argv=None):
    import statistics

    from bench_env import header, pin_threads, record
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('--steps', type=int, default=100)
    p.add_argument('--sigma', type=float, default=0.2)
    p.add_argument('--seeds', type=int, default=5,
                   help='adjuster seeds 0..N-1 (default 5)')
    p.add_argument('--adjuster-optimizer', default='model',
                   choices=('model', 'adam'))
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--out', default='work_dirs/toy3d')
    p.add_argument('--no-plot', action='store_true')
    args = p.parse_args(argv)
    for name in ('steps', 'seeds', 'threads'):
        if getattr(args, name) < 1:
            p.error(f'--{name} must be >= 1, got {getattr(args, name)}')
    pin_threads(args.threads)
    meta = record('benchmarks/toy3d.py', argv,
                  seeds=list(range(args.seeds)))
    results = {}
    for name in LRS:
        for s, start in enumerate(STARTS):
            results[(name, s, 'baseline')] = run(name, start, False,
                                                 args.steps)
            for seed in range(args.seeds):
                results[(name, s, f'GAL{seed}')] = run(
                    name, start, True, args.steps, args.sigma, seed=seed,
                    adjuster_optimizer=args.adjuster_optimizer)
    lines = [header(meta), '',
             f'steps {args.steps}, sigma {args.sigma}, adjuster (64, 24), '
             f'adjuster optimizer: {args.adjuster_optimizer}, seeds '
             f'0..{args.seeds - 1}', '',
             '| optimiser | lr | start | baseline final f | GAL final f '
             '(mean ± std) | seeds where GAL ends lower | GAL adopt rate |',
             '|---|---|---|---|---|---|---|']
    for name in LRS:
        for s, start in enumerate(STARTS):
            b = results[(name, s, 'baseline')]['final']
            gal = [results[(name, s, f'GAL{k}')] for k in range(args.seeds)]
            finals = [g['final'] for g in gal]
            lower = sum(g < b - 1e-6 for g in finals)
            std = statistics.stdev(finals) if len(finals) > 1 else 0.0
            lines.append(
                f'| {name} | {LRS[name]} | {start} | {b:.6f} | '
                f'{statistics.mean(finals):.6f} ± {std:.6f} | '
                f'{lower}/{args.seeds} | '
                f'{statistics.mean(g["adopt_rate"] for g in gal):.2f} |')
    print('\n'.join(lines))
    os.makedirs(args.out, exist_ok=True)
    with open(osp.join(args.out, 'toy3d.json'), 'w') as fp:
        json.dump(dict(meta=meta, runs={
            f'{k[0]}|{STARTS[k[1]]}|{k[2]}': v
            for k, v in results.items()}), fp)
    with open(osp.join(args.out, 'table.md'), 'w') as fp:
        fp.write('\n'.join(lines) + '\n')
    if not args.no_plot:
        plot({(n, s, 'GAL' if a == 'GAL0' else a): v
              for (n, s, a), v in results.items()}, args.out)
        print(f'\nwrote {args.out}/toy3d_paths_start*.png and '
              'toy3d_loss_start*.png')
    return results


if __name__ == '__main__':
    main()
