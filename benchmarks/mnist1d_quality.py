#!/usr/bin/env python
"""Does GAL help where there is room? MNIST-1D, MLP and CNN, SGD and Adam.

    python benchmarks/mnist1d_quality.py --seeds 10 --out docs/results/mnist1d

Four arms per (model, optimizer), each over the same seeds (model init,
batch order and adjuster init shared across arms): the baseline, GAL as
the authors' release ran it, GAL with this project's defaults, and GAL
with a frozen random adjuster (see ``benchmarks/mnist1d_train.py``). The
metric is the final test accuracy (%); each GAL arm gets Student's t-test
against the baseline, and the defaults also against the frozen adjuster.

Every run is one process with one torch thread (results do not depend on
the machine's thread count); ``--jobs`` runs that many at once. Finished
runs are kept in ``OUT/runs.jsonl``, so an interrupted command resumes.
"""
import argparse
import json
import os
import os.path as osp
import sys
import time
from multiprocessing import get_context

import numpy as np

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import mnist1d_train as M  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('--seeds', type=int, default=10)
    p.add_argument('--first-seed', type=int, default=0)
    p.add_argument('--steps', type=int, default=6000)
    p.add_argument('--sigma', type=float, default=0.01)
    p.add_argument('--gamma', type=float, default=1.0)
    p.add_argument('--models', nargs='+', default=list(M.MODELS),
                   choices=M.MODELS)
    p.add_argument('--optimizers', nargs='+', default=list(M.OPTIMIZERS),
                   choices=list(M.OPTIMIZERS))
    p.add_argument('--arms', nargs='+', default=list(M.ARMS),
                   choices=M.ARMS)
    p.add_argument('--jobs', type=int, default=2,
                   help='runs at once, one torch thread each (default 2)')
    p.add_argument('--data-seed', type=int, default=42,
                   help="mnist1d's make_dataset seed (default 42)")
    p.add_argument('--out', default='work_dirs/mnist1d')
    args = p.parse_args(argv)
    M.check_args(args.steps, args.seeds)
    if args.seeds < 2:
        # One seed has no spread and no t-test: the table would be NaN.
        raise SystemExit(f'--seeds must be >= 2 (mean +- std and the '
                         f't-tests need two runs per arm), got {args.seeds}')
    return args


def _key(job: dict) -> str:
    return '{model}/{optimizer}/{arm}/{seed}'.format(**job)


def _run(job: dict) -> dict:
    import torch
    torch.set_num_threads(1)
    data = M.load_data(job['data_seed'])
    res, seconds = M.timed(
        M.train, job['model'], job['optimizer'], job['arm'], job['seed'],
        data, steps=job['steps'], sigma=job['sigma'], gamma=job['gamma'])
    return dict(job, **res, seconds=seconds)


def summarize(runs: list, args) -> tuple:
    """Markdown table and rows: mean ± std of the test accuracy per arm,
    t-tests against the baseline (and the frozen adjuster)."""
    by = {}
    for r in runs:
        by.setdefault((r['model'], r['optimizer'], r['arm']), {})[
            r['seed']] = 100 * r['test_acc']
    lines = ['| model | optimizer | arm | test accuracy % (mean ± std) | '
             '(t, p) vs baseline | (t, p) vs frozen | runs |',
             '|---|---|---|---|---|---|---|']
    rows = []
    for model in args.models:
        for opt in args.optimizers:
            base = by.get((model, opt, 'baseline'), {})
            frozen = by.get((model, opt, 'frozen'), {})
            for arm in args.arms:
                accs = by.get((model, opt, arm), {})
                vals = [accs[s] for s in sorted(accs)]
                if not vals:
                    continue
                row = dict(model=model, optimizer=opt, arm=arm,
                           mean=float(np.mean(vals)),
                           std=float(np.std(vals, ddof=1))
                           if len(vals) > 1 else float('nan'),
                           runs=vals, n=len(vals))
                cells = []
                for name, ref in (('baseline', base), ('frozen', frozen)):
                    if arm == name or not ref or (name == 'frozen'
                                                  and arm != 'gal'):
                        cells.append('-')
                        continue
                    t, p = M.t_test(vals, [ref[s] for s in sorted(ref)])
                    row[f'vs_{name}'] = (t, p)
                    cells.append(f'({t:.2f}, {p:.2e})')
                rows.append(row)
                lines.append(
                    f'| {model} | {opt} | {arm} | {row["mean"]:.2f} ± '
                    f'{row["std"]:.2f} | {cells[0]} | {cells[1]} | '
                    + ', '.join(f'{v:.1f}' for v in vals) + ' |')
    return '\n'.join(lines), rows


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    done_path = osp.join(args.out, 'runs.jsonl')
    done = {}
    if osp.exists(done_path):
        with open(done_path) as f:
            for line in f:
                r = json.loads(line)
                done[_key(r)] = r
    common = dict(steps=args.steps, sigma=args.sigma, gamma=args.gamma,
                  data_seed=args.data_seed)
    jobs = [dict(model=m, optimizer=o, arm=a, seed=s, **common)
            for m in args.models for o in args.optimizers for a in args.arms
            for s in range(args.first_seed, args.first_seed + args.seeds)]
    # A kept run counts only if it was made with the same settings.
    todo = [j for j in jobs if not (
        _key(j) in done and all(done[_key(j)].get(k) == v
                                for k, v in common.items()))]
    t0 = time.perf_counter()
    with open(done_path, 'a') as f, get_context('spawn').Pool(
            args.jobs) as pool:
        for i, r in enumerate(pool.imap_unordered(_run, todo)):
            done[_key(r)] = r
            f.write(json.dumps(r) + '\n')
            f.flush()
            print(f'[{i + 1}/{len(todo)}] {_key(r)}: test '
                  f'{100 * r["test_acc"]:.1f}% ({r["seconds"]:.0f} s)',
                  file=sys.stderr, flush=True)
    runs = [done[_key(j)] for j in jobs]
    table, rows = summarize(runs, args)
    print(table)
    import torch
    env = M.environment()
    env['threads'] = 1  # per run, set in each worker
    with open(osp.join(args.out, 'results.json'), 'w') as f:
        json.dump(dict(command='python benchmarks/mnist1d_quality.py ' +
                       ' '.join(argv if argv is not None else sys.argv[1:]),
                       args=vars(args), environment=env,
                       torch_threads_per_run=1, jobs=args.jobs,
                       seconds_this_call=time.perf_counter() - t0,
                       rows=rows, runs=runs), f, indent=1)
    with open(osp.join(args.out, 'results.md'), 'w') as f:
        f.write(table + '\n')
    del torch
    return rows


if __name__ == '__main__':
    main()
