#!/usr/bin/env python
"""Where one GAL step's time goes, on the regression MLP's shapes.

    python benchmarks/profile_step.py [--device cpu|cuda] [--rows 200]
        [--threads 1] [--no-gc] [--out docs/results/overhead]

Times (median of 7 x ``--calls`` calls, default 300) the parts of GAL's per-
iteration work on z of shape (rows, 1) with the California adjuster 1 -> 128
-> 2 -> 1, and prints torch.profiler's top operators for ``gal_step`` (CPU
time; on CUDA also the kernel count). With ``--out`` the tables, the
command, torch's version and the thread count go to
``profile_step_<device>.{md,json}``.
"""
import argparse
import json
import os
import os.path as osp
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

LINES = []  # everything printed, for --out
CALLS = 300  # calls per timed window (--calls)


def emit(text=''):
    print(text)
    LINES.append(text)


def bench(fn, device, repeats=7):
    n = CALLS
    for _ in range(30):
        fn()
    times = []
    for _ in range(repeats):
        if device == 'cuda':
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        if device == 'cuda':
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) / n)
    return statistics.median(times) * 1e6


def in_context(dev, rows, compiled_step, eager_step, results):
    """A GAL step alone vs right after the regression model's own step
    (8 -> 256 -> 64 -> 1, MSE, Adam): what the step costs in a training
    loop, where the model's step has just run through the caches."""
    from mmgal.regression import MLPRegressor, RegressionStep
    torch.manual_seed(0)
    model_step = RegressionStep(MLPRegressor(8, (256, 64)).to(dev), 1e-3)
    x = torch.randn(rows, 8, device=dev)
    y = torch.randn(rows, 1, device=dev)

    def model():
        model_step(x, y)

    emit('\nin context (model step, then a GAL step on other data):\n')
    emit('| part | us per call |\n|---|---|')
    base = bench(model, dev)
    results['model step alone'] = base
    emit(f'| model step alone | {base:.1f} |')
    for name, fn in (('CompiledGALStep(optimizer=Adam)', compiled_step),
                     ('gal_step (eager)', eager_step)):
        alone = bench(fn, dev)
        both = bench(lambda: (model(), fn()), dev)
        results[f'{name}: alone'] = alone
        results[f'model step + {name}'] = both
        emit(f'| {name}: alone | {alone:.1f} |')
        emit(f'| model step + {name} | {both:.1f} (the step adds '
             f'{both - base:.1f}) |')


def main(argv=None):
    from mmgal.core import CompiledGALStep, build_adjuster, gal_step
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument('--device', default='cpu')
    p.add_argument('--rows', type=int, default=200)
    p.add_argument('--threads', type=int, default=1,
                   help='torch threads (default 1, as benchmarks/overhead.py)')
    p.add_argument('--no-gc', action='store_true',
                   help="switch Python's garbage collector off")
    p.add_argument('--calls', type=int, default=300,
                   help='calls per timed window (median of 7 windows)')
    p.add_argument('--out', default=None,
                   help='folder for profile_step_<device>.md and .json')
    args = p.parse_args(argv)
    from bench_env import header, pin_threads, record
    if args.no_gc:
        import gc
        gc.disable()
    global CALLS
    CALLS = args.calls
    pin_threads(args.threads)
    meta = record('benchmarks/profile_step.py', argv)
    LINES.clear()
    emit(header(meta) + '\n')
    dev = args.device
    torch.manual_seed(0)
    adj = build_adjuster('mlp', 1, (128, 2)).to(dev)
    params = list(adj.parameters())
    for q in params:
        q.grad = torch.zeros_like(q)
    z = torch.randn(args.rows, 1, device=dev)
    y = torch.randn(args.rows, 1, device=dev)

    def loss_and_grad():
        z0 = z.detach().requires_grad_(True)
        return torch.autograd.grad(F.mse_loss(z0, y), z0)

    def adjuster_fwd_bwd():
        return torch.autograd.grad(adj(z).abs().sum(), params)

    def step():
        return gal_step(z, lambda t: F.mse_loss(t, y), adj, 1e-3, 0.1)

    compiled = CompiledGALStep()

    def compiled_step():
        return compiled(z, lambda t: F.mse_loss(t, y), adj, 1e-3, 0.1)

    # The regression module's fast='compile': the step with the adjuster's
    # Adam update in its graph (a twin adjuster, so the others stay put).
    adj2 = build_adjuster('mlp', 1, (128, 2)).to(dev)
    adj2_opt = torch.optim.Adam(adj2.parameters(), lr=1e-3,
                                capturable=dev == 'cuda')
    compiled2 = CompiledGALStep()

    def compiled_step_and_update():
        return compiled2(z, lambda t: F.mse_loss(t, y), adj2, 1e-3, 0.1,
                         optimizer=adj2_opt)

    rows = [('loss + autograd.grad (g)', bench(loss_and_grad, dev)),
            ('adjuster forward + backward', bench(adjuster_fwd_bwd, dev)),
            ('whole gal_step (eager)', bench(step, dev)),
            ('whole step, CompiledGALStep (after compiling)',
             bench(compiled_step, dev)),
            ("whole step + the adjuster's Adam update, "
             'CompiledGALStep(optimizer=Adam)',
             bench(compiled_step_and_update, dev))]
    for name, kw in (('Adam (for-loop)', dict(foreach=False)),
                     ('Adam (foreach)', dict(foreach=True)),
                     ('Adam (fused)', dict(fused=True))):
        try:
            opt = torch.optim.Adam(params, lr=1e-3, **kw)
        except (RuntimeError, ValueError) as err:
            rows.append((f'adjuster step, {name}', f'n/a ({err})'))
            continue
        rows.append((f'adjuster step, {name}', bench(opt.step, dev)))
    emit(f'device {dev}, torch {torch.__version__}, '
         f'{torch.get_num_threads()} threads, z ({args.rows}, 1)\n')
    emit('| part | us per call |\n|---|---|')
    for name, us in rows:
        emit(f'| {name} | {us if isinstance(us, str) else f"{us:.1f}"} |')
    context = {}
    in_context(dev, args.rows, compiled_step_and_update, step, context)

    from torch.profiler import ProfilerActivity, profile
    acts = [ProfilerActivity.CPU] + (
        [ProfilerActivity.CUDA] if dev == 'cuda' else [])
    with profile(activities=acts) as prof:
        for _ in range(50):
            step()
    events = prof.key_averages()
    aten = sum(e.count for e in events if e.key.startswith('aten::')) / 50
    emit(f'\nper gal_step (50 calls profiled): {aten:.0f} aten operator calls')
    kernels = None
    if dev == 'cuda':
        kernels = sum(e.count for e in events
                      if e.device_type.name == 'CUDA') / 50
        emit(f'{kernels:.0f} CUDA kernels per gal_step')
    table = events.table(sort_by='self_cpu_time_total', row_limit=15)
    emit('\n```\n' + table + '\n```')
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        stem = osp.join(args.out, f'profile_step_{dev}')
        with open(stem + '.md', 'w') as f:
            f.write('\n'.join(LINES) + '\n')
        with open(stem + '.json', 'w') as f:
            json.dump(dict(meta=meta, rows=args.rows, alone=dict(rows),
                           in_context=context, aten_calls=aten,
                           cuda_kernels=kernels), f, indent=1)
        print(f'wrote {stem}.md and .json')
    return dict(rows) | context


if __name__ == '__main__':
    main()
