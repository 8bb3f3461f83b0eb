#!/usr/bin/env python
"""Where one GAL step's time goes, on the regression MLP's shapes.

    python benchmarks/profile_step.py [--device cpu|cuda] [--rows 200]
        [--threads N] [--no-gc]

Times (median of 7 x 300 calls) the parts of GAL's per-iteration work on
z of shape (rows, 1) with the California adjuster 1 -> 128 -> 2 -> 1, and
prints torch.profiler's top operators for ``gal_step`` (CPU time; on CUDA
also the kernel count).
"""
import argparse
import os.path as osp
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))


def bench(fn, device, n=300, repeats=7):
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


def in_context(dev, rows, compiled_step, eager_step):
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

    print('\nin context (model step, then a GAL step on other data):\n')
    print('| part | us per call |\n|---|---|')
    base = bench(model, dev)
    print(f'| model step alone | {base:.1f} |')
    for name, fn in (('CompiledGALStep(optimizer=Adam)', compiled_step),
                     ('gal_step (eager)', eager_step)):
        alone = bench(fn, dev)
        both = bench(lambda: (model(), fn()), dev)
        print(f'| {name}: alone | {alone:.1f} |')
        print(f'| model step + {name} | {both:.1f} (the step adds '
              f'{both - base:.1f}) |')


def main(argv=None):
    from mmgal.core import CompiledGALStep, build_adjuster, gal_step
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument('--device', default='cpu')
    p.add_argument('--rows', type=int, default=200)
    p.add_argument('--threads', type=int, default=None)
    p.add_argument('--no-gc', action='store_true',
                   help="switch Python's garbage collector off")
    args = p.parse_args(argv)
    if args.no_gc:
        import gc
        gc.disable()
    if args.threads:
        torch.set_num_threads(args.threads)
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
    print(f'device {dev}, torch {torch.__version__}, '
          f'{torch.get_num_threads()} threads, z ({args.rows}, 1)\n')
    print('| part | us per call |\n|---|---|')
    for name, us in rows:
        print(f'| {name} | {us if isinstance(us, str) else f"{us:.1f}"} |')
    in_context(dev, args.rows, compiled_step_and_update, step)

    from torch.profiler import ProfilerActivity, profile
    acts = [ProfilerActivity.CPU] + (
        [ProfilerActivity.CUDA] if dev == 'cuda' else [])
    with profile(activities=acts) as prof:
        for _ in range(50):
            step()
    events = prof.key_averages()
    print('\nper gal_step (50 calls profiled): '
          f'{sum(e.count for e in events if e.key.startswith("aten::")) / 50:.0f}'
          ' aten operator calls')
    if dev == 'cuda':
        kernels = sum(e.count for e in events
                      if e.device_type.name == 'CUDA') / 50
        print(f'{kernels:.0f} CUDA kernels per gal_step')
    print(events.table(sort_by='self_cpu_time_total', row_limit=15))


if __name__ == '__main__':
    main()
