#!/usr/bin/env python
"""How much of a training step is GAL's own call, measured inside the step.

    python benchmarks/gal_share.py [--case resnet18 detr] [--fast auto]
        [--steps 20] [--out docs/results/overhead/gal_share_cpu.json]

``benchmarks/overhead.py`` compares two whole steps, whose repeat-to-repeat
spread on a shared machine (several %) can hide a 1-2 % cost. This times
the part GAL adds directly: ``GALOptimWrapper.gal_forward`` (the adjuster,
the tentative loss evaluations, the adoption decision), called inside the
GAL arm's own training step (the same steps as overhead.py's ``resnet18``
and ``detr`` cases), against that whole step; and counts the aten operator
calls of one ``gal_forward`` with torch.profiler. It does not see what GAL
adds to the backward pass or to the adjuster's optimizer step, so it is a
lower bound of the overhead, not a replacement for the ratio.
"""
import argparse
import json
import os
import os.path as osp
import statistics
import sys
import time

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))


def measure(case: str, steps: int, warmup: int, top: int = 0) -> dict:
    import overhead
    from torch.profiler import ProfilerActivity, profile

    import mmgal.engine.gal_optim_wrapper as gw
    cls = gw.GALOptimWrapper
    original = cls.gal_forward
    spent = []
    ops = {}

    def timed(self, *args, **kwargs):
        if ops.get('take'):
            ops['take'] = False
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                out = original(self, *args, **kwargs)
            events = prof.key_averages()
            ops['aten'] = sum(e.count for e in events
                              if e.key.startswith('aten::'))
            ops['top'] = [(e.key, e.count, e.self_cpu_time_total)
                          for e in sorted(events, key=lambda e: -e.count)
                          if e.key.startswith('aten::')][:top]
            return out
        t0 = time.perf_counter()
        out = original(self, *args, **kwargs)
        spent.append(time.perf_counter() - t0)
        return out

    # Patched before the adapter binds the wrapper's method.
    cls.gal_forward = timed
    try:
        step = overhead.build_step(case, True, 'cpu', False, 128)
        for _ in range(warmup):
            step()
        ops['take'] = True
        step()  # the profiled call (not timed)
        spent.clear()
        step_times, shares = [], []
        for _ in range(steps):
            before = len(spent)
            t0 = time.perf_counter()
            step()
            total = time.perf_counter() - t0
            own = sum(spent[before:])
            step_times.append(total)
            shares.append(own / total)
    finally:
        cls.gal_forward = original
    return dict(case=case, steps=steps,
                step_ms=statistics.median(step_times) * 1e3,
                gal_forward_ms=statistics.median(spent) * 1e3,
                calls_per_step=len(spent) / steps,
                share_median=statistics.median(shares),
                share_min=min(shares), share_max=max(shares),
                aten_calls=ops.get('aten'), top_ops=ops.get('top'))


def main(argv=None):
    import overhead
    from bench_env import header, pin_threads, record
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument('--case', nargs='+', default=['resnet18', 'detr'],
                   choices=('resnet18', 'detr'))
    p.add_argument('--fast', default='auto',
                   choices=('auto', 'compile', 'eager'))
    p.add_argument('--steps', type=int, default=20)
    p.add_argument('--warmup', type=int, default=3)
    p.add_argument('--top', type=int, default=0,
                   help="also list the N most called aten operators of "
                   "the profiled call (calls, self CPU us)")
    p.add_argument('--threads', type=int, default=None)
    p.add_argument('--out', default=None)
    args = p.parse_args(argv)
    pin_threads(args.threads)
    overhead.FAST = args.fast
    meta = record('benchmarks/gal_share.py', argv)
    rows = [measure(c, args.steps, args.warmup, args.top)
            for c in args.case]
    lines = [header(meta), '',
             f'fast={args.fast}; median over {args.steps} steps of the GAL '
             'arm', '',
             '| case | step ms | gal_forward ms | share of the step '
             '(median, min-max) | aten calls per gal_forward |',
             '|---|---|---|---|---|']
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['step_ms']:.1f} | "
            f"{r['gal_forward_ms']:.2f} | {r['share_median'] * 100:.2f} % "
            f"({r['share_min'] * 100:.2f}-{r['share_max'] * 100:.2f}) | "
            f"{r['aten_calls']} |")
    for r in rows:
        if r['top_ops']:
            lines += ['', f"{r['case']}: the {len(r['top_ops'])} most "
                      'called aten operators of one gal_forward', '',
                      '| operator | calls | self CPU us |', '|---|---|---|']
            lines += [f'| {k} | {n} | {us:.0f} |' for k, n, us in
                      r['top_ops']]
    print('\n'.join(lines))
    if args.out:
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as f:
            json.dump(dict(meta=meta, args=vars(args), rows=rows), f,
                      indent=1)
    return rows


if __name__ == '__main__':
    main()
