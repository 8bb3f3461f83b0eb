"""An A/B test's report: per arm mean +- std and every seed's value, paired
t-tests of gal against the other arms with the mean difference and its
95 % interval, GAL's learning signals, what made it (``report.md``,
``results.json``), and its curves (``curves.png``)."""
import math
import platform
import subprocess
import sys
from typing import Dict, List

from .runs import REPO, SIGNALS


def paired(a: List[float], b: List[float]) -> dict:
    """Paired t-test of a vs b (scipy), the mean difference and its 95 %
    interval."""
    from scipy import stats
    diff = [x - y for x, y in zip(a, b)]
    n = len(diff)
    mean = sum(diff) / n
    sd = math.sqrt(sum((d - mean)**2 for d in diff) / (n - 1))
    if sd == 0:  # every seed the same difference: no spread to test
        return dict(diff=mean, low=mean, high=mean, t=float('nan'),
                    p=1.0 if mean == 0 else 0.0)
    t, p = stats.ttest_rel(a, b)
    half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    return dict(diff=mean, low=mean - half, high=mean + half, t=float(t),
                p=float(p))


def mean_std(xs: List[float]) -> str:
    m = sum(xs) / len(xs)
    s = math.sqrt(sum((x - m)**2 for x in xs) / (len(xs) - 1))
    return f'{m:.2f} ± {s:.2f}'


def environment(cfg, command: str) -> dict:
    """The command, versions (the stack, the config's codebase, mmgal),
    commit and the threads the runs get."""
    import mmcv
    import mmengine
    import torch

    import mmgal
    scope = cfg.get('default_scope')
    versions = dict(python=platform.python_version(),
                    torch=torch.__version__, mmengine=mmengine.__version__,
                    mmcv=mmcv.__version__, mmgal=mmgal.__version__)
    if scope in ('mmpretrain', 'mmdet'):
        versions[scope] = __import__(scope).__version__
    commit = subprocess.run(['git', 'rev-parse', '--short=7', 'HEAD'],
                            cwd=REPO, capture_output=True, text=True)
    # What a run starts with: a new process with this environment (this
    # one's own count may have been set by its caller).
    threads = subprocess.run(
        [sys.executable, '-c', 'import torch; print(torch.get_num_threads())'],
        capture_output=True, text=True)
    return dict(command=command, versions=versions,
                commit=commit.stdout.strip() or None,
                threads=int(threads.stdout) if threads.returncode == 0 else
                None)


def holm(ps: List[float]) -> List[float]:
    """Holm's step-down adjustment of ``ps`` (same order)."""
    order = sorted(range(len(ps)), key=lambda i: ps[i])
    adjusted, running = [0.0] * len(ps), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(ps) - rank) * ps[i]))
        adjusted[i] = running
    return adjusted


def verdict(tests: Dict[str, dict], rule: str, metric: str,
            level: float = 0.05) -> str:
    """What the paired t-tests of the final values say, in words: gal
    against each other arm, better, worse, or no difference at ``level``
    after Holm's correction over these comparisons; a gain that the frozen
    adjuster matches is not GAL's learning (the paper's noise control)."""
    others = [o for o in ('baseline', 'frozen') if f'gal_vs_{o}' in tests]
    results = [tests[f'gal_vs_{o}'] for o in others]
    said = {}
    for other, res, p in zip(others, results,
                             holm([r['p'] for r in results])):
        if not p < level:
            said[other] = 'no significant difference'
        else:
            gain = res['diff'] > 0 if rule == 'greater' else res['diff'] < 0
            said[other] = 'better' if gain else 'worse'
        said[other] += (f" (mean difference {res['diff']:+.3g}, 95 % "
                        f"interval {res['low']:+.3g} to {res['high']:+.3g}, "
                        f"p = {res['p']:.2g}, Holm {p:.2g})")
    text = (f'**Verdict** (final `{metric}`, paired t-tests, Holm-adjusted '
            f'over {len(others)} comparison(s), at {level:g}): ' +
            '; '.join(f'gal vs {k}: {v}' for k, v in said.items()) + '.')
    if said.get('baseline', '').startswith('better') and \
            not said.get('frozen', 'better').startswith('better'):
        text += (' The frozen adjuster is not beaten: the gain over the '
                 'baseline is not shown to come from what the adjuster '
                 'learns.')
    return text


def report(runs: Dict[str, dict], seeds: List[int], meta: dict) -> str:
    """The markdown report; the t-tests also go into ``meta['tests']``."""
    arms, metric, rule = meta['arms'], meta['metric'], meta['rule']
    versions = ', '.join(f'{k} {v}' for k, v in meta['versions'].items())
    better = 'higher' if rule == 'greater' else 'lower'
    lines = [f"`{meta['command']}`", '',
             f"{versions}; commit {meta['commit']}, {meta['threads']} torch "
             f'thread(s) per run, seeds {seeds}, metric `{metric}` ({better} '
             'is better)', '',
             '| arm | final (mean ± std) | best (mean ± std) | final per '
             'seed | training time per run |', '|---|---|---|---|---|']
    for arm in arms:
        final = [runs[arm][s]['final'] for s in seeds]
        best = [runs[arm][s]['best'] for s in seeds]
        secs = [runs[arm][s].get('seconds') for s in seeds]
        secs = [x for x in secs if x is not None]
        took = f'{sum(secs) / len(secs):.0f} s' if secs else '-'
        lines.append(f'| {arm} | {mean_std(final)} | {mean_std(best)} | '
                     f"{', '.join(f'{x:.2f}' for x in final)} | {took} |")
    tests = {}
    lines += ['', f'Paired over the seeds (a difference > 0: gal\'s '
              f'`{metric}` is higher):', '',
              '| comparison | mean difference | 95 % interval | t | p |',
              '|---|---|---|---|---|']
    for value in ('final', 'best'):
        for other in ('baseline', 'frozen'):
            if other not in arms:
                continue
            res = paired([runs['gal'][s][value] for s in seeds],
                         [runs[other][s][value] for s in seeds])
            tests[f'gal_vs_{other}' + ('' if value == 'final' else
                                       '_best')] = res
            lines.append(f"| gal - {other} ({value}) | {res['diff']:+.3f} | "
                         f"{res['low']:+.3f} to {res['high']:+.3f} | "
                         f"{res['t']:.2f} | {res['p']:.3g} |")
    lines += ['', verdict(tests, rule, metric)]
    lines += ['', "GAL's learning signals at the end of each run with GAL "
              '(frozen: an adjuster_drift of 0 shows it never moved):', '',
              '| arm | seed | ' + ' | '.join(SIGNALS) + ' |',
              '|---' * (len(SIGNALS) + 2) + '|']
    for arm in (a for a in ('gal', 'frozen') if a in arms):
        for s in seeds:
            sig = runs[arm][s]['signals']
            lines.append(f'| {arm} | {s} | ' + ' | '.join(
                f'{sig[k]:.4g}' if k in sig else '-' for k in SIGNALS) +
                ' |')
    meta['tests'] = tests
    return '\n'.join(lines) + '\n'


def plot(runs: Dict[str, dict], seeds: List[int], metric: str,
         path: str, by_epoch: bool = True) -> None:
    """The val metric and the training loss per arm (mean and min-max band
    over the seeds), and the gal arm's learning signals over training."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.ticker import MaxNLocator
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for arm in runs:
        for ax, x_key, y_key in ((axes[0], 'val_steps', 'metric'),
                                 (axes[1], 'loss_iters', 'loss')):
            n = min(len(runs[arm][s][y_key]) for s in seeds)
            ys = np.array([runs[arm][s][y_key][:n] for s in seeds])
            xs = runs[arm][seeds[0]][x_key][:n]
            ax.plot(xs, ys.mean(0), label=arm)
            ax.fill_between(xs, ys.min(0), ys.max(0), alpha=0.2)
    axes[0].set(title=f'val {metric}',
                xlabel='epoch' if by_epoch else 'iteration')
    axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[1].set(title='training loss', xlabel='iteration')
    for key in SIGNALS:
        per_seed = [dict(map(tuple, runs['gal'][s]['signal_series'].get(
            key, []))) for s in seeds]
        iters = sorted(set.intersection(*(set(d) for d in per_seed)))
        if iters:
            axes[2].plot(iters, [np.mean([d[i] for d in per_seed])
                                 for i in iters], label=key.split('/')[1])
    axes[2].set(title="GAL's learning signals (gal arm, mean over seeds)",
                xlabel='iteration')
    for ax in axes:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
