#!/usr/bin/env python
"""Baseline vs GAL on the paper's regression datasets (Table V).

    python tools/regression.py --dataset all --runs 5
    python tools/regression.py --dataset diabetes --protocol tuned --out out/

Prints a Table V-style markdown table (mean ± std per arm, two-sample
t-test) next to the paper's numbers, and writes it as JSON and CSV under
--out. Same command and seed give the same numbers.
"""
import argparse
import csv
import json
import os
import os.path as osp
import sys
import time

HERE = osp.dirname(osp.abspath(__file__))
sys.path[:0] = [osp.dirname(HERE), HERE]  # mmgal, and tools/table_v

from mmgal.core import NORMALIZATIONS, OBJECTIVES, REMAINDERS  # noqa: E402
from table_v import (DATASETS, PROTOCOLS, format_table,  # noqa: E402
                     load_dataset, make_protocol, run_dataset, to_csv_rows)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('--dataset', default='all',
                   choices=DATASETS + ('all', ))
    p.add_argument('--runs', type=int, default=5,
                   help='runs (seeds) per arm (default 5)')
    p.add_argument('--protocol', default='paper', choices=PROTOCOLS)
    p.add_argument('--sigma', type=float, help="GAL's sigma (default: the "
                   "protocol's; an explicit value switches tuning off)")
    p.add_argument('--gamma', type=float, help="GAL's gamma (default 1)")
    p.add_argument('--lr', type=float, help='Adam lr (default: the '
                   "protocol's; an explicit value switches tuning off)")
    p.add_argument('--epochs', type=int, help='epochs (default 200)')
    p.add_argument('--batch-size', type=int, help='batch size (default 200)')
    p.add_argument('--policy', default='le',
                   choices=('le', 'lt', 'always', 'never'))
    p.add_argument('--remainder', default='exact', choices=REMAINDERS,
                   help="'exact' (default: MSE's closed form) or "
                   "'reference' (the authors' release)")
    p.add_argument('--objective', default='normalized', choices=OBJECTIVES,
                   help="the adjuster's objective: 'normalized' (default, "
                   "|R| / (lr |g~|)^2) or 'abs' (the paper's |R|)")
    p.add_argument('--normalize', default='auto', choices=NORMALIZATIONS,
                   help="Eq. 4's norms: 'auto' (default; here, with one "
                   "output, 'batch': a deviation from Eq. 4 that lets the "
                   "adjuster learn), 'row' (Eq. 4 as written: no gradient "
                   "for d = 1) or 'batch'")
    p.add_argument('--fast', default='eager',
                   choices=('eager', 'auto', 'compile'),
                   help="how the GAL step runs (GALSettings.fast): 'eager' "
                   "(default, the reference), 'auto' (fused Adam for the "
                   "adjuster), 'compile' (step and adjuster update as one "
                   'compiled graph; compiles for seconds once per batch '
                   'shape); the same training up to float rounding')
    p.add_argument('--seed', type=int, default=0, help='first seed')
    p.add_argument('--data-root', help='folder with boston_housing.data and '
                   'california_housing.csv (default: $MMGAL_DATA_ROOT, '
                   'else ./data)')
    p.add_argument('--california-source', default='raw',
                   choices=('raw', 'sklearn'),
                   help="'raw' (default): the CSV under --data-root; "
                   "'sklearn': scikit-learn's fetch_california_housing, "
                   'whose cache (cal_housing_py3.pkz) is a joblib pickle '
                   'that runs code when loaded: use it only where you '
                   'trust that file')
    p.add_argument('--out', default='work_dirs/regression',
                   help='folder for results.json and results.csv')
    p.add_argument('--threads', type=int, default=1,
                   help='torch threads (default 1: the numbers depend on '
                   'it)')
    p.add_argument('--no-progress', action='store_true')
    args = p.parse_args(argv)
    for name in ('runs', 'epochs', 'batch_size', 'threads'):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if not 0 <= args.seed < 2**32:
        # numpy's seeds: the runs use --seed, --seed + 1, ...
        p.error(f'--seed must be in [0, 2**32) (numpy seeds), got '
                f'{args.seed}')
    if args.runs < 2:
        p.error(f'--runs must be >= 2: the table compares the arms with a '
                f't-test, which needs two runs per arm, got {args.runs}')
    if osp.exists(args.out) and not osp.isdir(args.out):
        p.error(f'--out {args.out!r} is a file; give a folder for '
                'results.json, results.csv and results.md')
    try:
        args.proto = make_protocol(
            args.protocol,
            sigma=args.sigma,
            gamma=args.gamma,
            lr=args.lr,
            epochs=args.epochs,
            batch_size=args.batch_size)
    except ValueError as err:
        p.error(str(err))
    return args


def main(argv=None):
    import platform

    import numpy as np
    import torch
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    meta = dict(command=' '.join(['python tools/regression.py'] + list(
        argv if argv is not None else sys.argv[1:])),
                torch=torch.__version__, numpy=np.__version__,
                python=platform.python_version(),
                cpu_capability=torch.backends.cpu.get_cpu_capability(),
                threads=torch.get_num_threads())
    names = DATASETS if args.dataset == 'all' else (args.dataset, )
    proto = args.proto
    # Every dataset is read (and its faults named) before any training.
    for name in names:
        try:
            load_dataset(name, args.data_root, **(
                {'source': args.california_source}
                if name == 'california' else {}))
        except (OSError, ValueError) as err:
            raise SystemExit(f'tools/regression.py: {err}') from None
    os.makedirs(args.out, exist_ok=True)
    bar = None
    if not args.no_progress:
        from tqdm import tqdm
        per = 2 * args.runs + len(proto.lr_grid) + len(proto.sigma_grid)
        bar = tqdm(total=per * len(names), file=sys.stderr, unit='fit')
    results = []
    t0 = time.perf_counter()
    for name in names:
        def tick(msg):
            if bar is not None:
                bar.set_description(msg)
                bar.update(1)
        results.append(
            run_dataset(
                name,
                proto,
                runs=args.runs,
                seed=args.seed,
                data_root=args.data_root,
                gal_kwargs=dict(policy=args.policy, remainder=args.remainder,
                                objective=args.objective,
                                normalize=args.normalize, fast=args.fast),
                progress=tick,
                **({'source': args.california_source}
                   if name == 'california' else {})))
    if bar is not None:
        bar.close()
    elapsed = time.perf_counter() - t0

    table = format_table(results)
    print(f'\nprotocol: {args.protocol}, runs: {args.runs}, seed: '
          f'{args.seed}, {elapsed:.1f} s')
    for res in results:
        print(f"- {res['dataset']}: lr {res['lr']:g}, sigma "
              f"{res['gal']['sigma']:g}, gamma {res['gal']['gamma']:g}, "
              f"adjuster {tuple(res['gal']['arch'])}, mean adopt rate "
              f"{res['mean_adopt_rate']:.3f}, {res['seconds']:.1f} s")
    print()
    print(table)
    os.makedirs(args.out, exist_ok=True)
    with open(osp.join(args.out, 'results.json'), 'w') as f:
        json.dump(dict(meta=meta,
                       args={k: v for k, v in vars(args).items()
                             if k != 'proto'},
                       seconds=elapsed, results=results), f, indent=2)
    rows = to_csv_rows(results)
    with open(osp.join(args.out, 'results.csv'), 'w', newline='') as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    with open(osp.join(args.out, 'results.md'), 'w') as f:
        f.write(f"`{meta['command']}` (torch {meta['torch']}, "
                f"{meta['threads']} thread(s))\n\n" + table + '\n')
    print(f'\nwrote {args.out}/results.{{json,csv,md}}')
    return results


if __name__ == '__main__':
    main()
