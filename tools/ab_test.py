#!/usr/bin/env python
"""Does GAL help here? Train a GAL config's arms over paired seeds and
compare them with t-tests.

    python tools/ab_test.py CONFIG [--seeds N] [--arms baseline gal frozen]
        [--metric KEY] [--gpus K] [--work-dir DIR] [--cfg-options ...]

CONFIG is any GAL config (``optim_wrapper.type='GALOptimWrapper'`` and the
README's lines), MMPretrain or MMDetection. The arms:

- ``baseline``: the same config with GAL off (``optim_wrapper.enabled=
  False``: training is that of a plain ``OptimWrapper``);
- ``gal``: the config as it is;
- ``frozen``: an adjuster that never trains (its optimizer is SGD at lr 0):
  the paper's noise control (Table VI), a fixed random adjustment
  normalised by Eq. 4.

Seed s is shared by the arms: ``randomness.seed`` (model initialisation,
data order) and ``optim_wrapper.seed`` (the adjuster's initialisation).
Each run trains in its own folder ``DIR/<arm>_seed<s>`` through
``tools/train.py`` (``tools/dist_train.sh`` with ``--gpus K`` > 1), one
after another. A finished run is read, not trained again; an interrupted
one resumes from its last checkpoint. ``--cfg-options`` applies to every
arm, as in ``tools/train.py``.

The metric is read from mmengine's scalars (``vis_data/scalars.json``): by
default the val evaluator's main key (``accuracy/top1``,
``coco/bbox_mAP``); for each run its final and best value. The report
(``DIR/report.md``, ``DIR/results.json``, ``DIR/curves.png``): per arm
mean +- std and every seed's value; paired t-tests of gal vs baseline and
gal vs frozen with the mean difference and its 95 % interval; GAL's
learning signals at the end of each GAL run; the command, versions,
commit, threads and seeds.
"""
import argparse
import glob
import hashlib
import json
import math
import os
import os.path as osp
import platform
import subprocess
import sys
import time

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, REPO)

ARMS = ('baseline', 'gal', 'frozen')
# GAL's learning signals reported at the end of each GAL run.
SIGNALS = ('gal/remainder_ratio', 'gal/cos_init', 'gal/adjuster_drift',
           'gal/adopt_rate')


def parse_args(argv=None):
    from mmengine.config import DictAction
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('config', help='a GAL config file')
    p.add_argument('--seeds', type=int, default=3,
                   help='seeds 0..N-1, shared by the arms (default 3)')
    p.add_argument('--first-seed', type=int, default=0)
    p.add_argument('--arms', nargs='+', default=list(ARMS), choices=ARMS)
    p.add_argument('--metric', default=None,
                   help="the val metric (default: the evaluator's main key)")
    p.add_argument('--gpus', type=int, default=1,
                   help='processes per run (tools/dist_train.sh when > 1)')
    p.add_argument('--work-dir', default=None,
                   help='default: work_dirs/ab_test/<config name>')
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='override settings of every arm, as tools/train.py')
    args = p.parse_args(argv)
    if args.seeds < 2:
        p.error(f'--seeds must be >= 2 (the paired t-tests need two seeds '
                f'per arm), got {args.seeds}')
    if not 0 <= args.first_seed < 2**31:
        p.error(f'--first-seed must be in [0, 2**31), got {args.first_seed}')
    if args.gpus < 1:
        p.error(f'--gpus must be >= 1, got {args.gpus}')
    if len(set(args.arms)) != len(args.arms) or 'gal' not in args.arms \
            or len(args.arms) < 2:
        p.error(f"--arms must name 'gal' and at least one other arm, each "
                f'once, got {args.arms}')
    if args.work_dir is None:
        name = osp.splitext(osp.basename(args.config))[0]
        args.work_dir = osp.join('work_dirs', 'ab_test', name)
    return args


def metric_keys(cfg) -> list:
    """The keys the val evaluator logs, for the evaluators whose keys are
    known (MMPretrain's Accuracy, MMDetection's CocoMetric), else []."""
    evaluators = cfg.get('val_evaluator')
    if evaluators is None:
        return []
    keys = []
    for ev in evaluators if isinstance(evaluators, list) else [evaluators]:
        kind = str(ev.get('type', '')).split('.')[-1]
        if kind == 'Accuracy':
            topk = ev.get('topk', (1, ))
            topk = topk if isinstance(topk, (list, tuple)) else (topk, )
            keys += [f'accuracy/top{k}' for k in topk]
        elif kind == 'CocoMetric':
            metrics = ev.get('metric', 'bbox')
            for m in metrics if isinstance(metrics, list) else [metrics]:
                keys += [f'coco/{m}_mAP{s}' for s in
                         ('', '_50', '_75', '_s', '_m', '_l')]
        else:
            return []
    return keys


def arm_configs(args) -> dict:
    """Each arm's whole config (the arm's change applied), or SystemExit
    naming what is wrong with CONFIG or --metric."""
    from mmengine.config import Config
    if not osp.isfile(args.config):
        raise SystemExit(f'ab_test: config {args.config!r} not found')
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    wrapper = cfg.get('optim_wrapper') or {}
    if str(wrapper.get('type', '')).split('.')[-1] != 'GALOptimWrapper':
        raise SystemExit(
            f"ab_test: {args.config} is not a GAL config (its optim_wrapper."
            f"type is {wrapper.get('type', 'OptimWrapper')!r}): add the "
            "README's lines (optim_wrapper = dict(type='GALOptimWrapper', "
            "...), default_hooks = dict(gal=dict(type='GALHook')), "
            "custom_imports = dict(imports=['mmgal'])) and run it again")
    if wrapper.get('enabled', True) is False:
        raise SystemExit(f'ab_test: {args.config} switches GAL off '
                         '(optim_wrapper.enabled=False): the arms would be '
                         'the same')
    if cfg.get('val_dataloader') is None or cfg.get('val_cfg') is None:
        raise SystemExit(f'ab_test: {args.config} has no validation (val_'
                         'dataloader / val_cfg): there is no metric to '
                         'compare')
    keys = metric_keys(cfg)
    if args.metric is None:
        if not keys:
            raise SystemExit(
                'ab_test: the val evaluator '
                f"{cfg.val_evaluator.get('type')!r} is not one whose keys "
                'this tool knows: give the key to compare with --metric')
        args.metric = keys[0]
    elif keys and args.metric not in keys:
        raise SystemExit(
            f'ab_test: --metric {args.metric!r} is not logged by the val '
            f"evaluator; it logs: {', '.join(keys)}")
    configs = {}
    for arm in args.arms:
        arm_cfg = Config(cfg.to_dict(), filename=cfg.filename)
        if arm == 'baseline':
            arm_cfg.optim_wrapper.enabled = False
        elif arm == 'frozen':
            arm_cfg.optim_wrapper.adjuster_optimizer = dict(type='SGD',
                                                            lr=0.0)
        configs[arm] = arm_cfg
    return configs


def prepare_work_dir(args, configs: dict) -> dict:
    """Write each arm's config and the manifest; SystemExit where DIR holds
    runs of another config or other arguments (nothing is overwritten)."""
    os.makedirs(args.work_dir, exist_ok=True)
    texts = {arm: cfg.pretty_text for arm, cfg in configs.items()}
    manifest = dict(
        config=osp.abspath(args.config), metric=args.metric, gpus=args.gpus,
        configs={arm: hashlib.sha256(t.encode()).hexdigest()[:16]
                 for arm, t in texts.items()})
    path = osp.join(args.work_dir, 'manifest.json')
    if osp.exists(path):
        with open(path) as f:
            old = json.load(f)
        changed = [k for k in manifest if old.get(k) != manifest[k]]
        if changed:
            raise SystemExit(
                f'ab_test: {args.work_dir} holds runs of another config or '
                f"other arguments ({', '.join(changed)} differ from "
                f'{path}); nothing is overwritten: give another --work-dir')
    with open(path, 'w') as f:
        json.dump(manifest, f, indent=2)
    for arm, text in texts.items():
        with open(osp.join(args.work_dir, f'{arm}.py'), 'w') as f:
            f.write(text)
    return manifest


def read_scalars(run_dir: str) -> list:
    """mmengine's scalars of a run, in the order written (a resumed run
    writes a new timestamped folder)."""
    rows = []
    for path in sorted(glob.glob(osp.join(run_dir, '*', 'vis_data',
                                          'scalars.json'))):
        with open(path) as f:
            rows += [json.loads(line) for line in f if line.strip()]
    return rows


def summarize_run(run_dir: str, metric: str) -> dict:
    """The metric per validation (by epoch or step), the training loss,
    and GAL's learning signals at the end."""
    rows = read_scalars(run_dir)
    vals = {}
    losses, series = {}, {key: {} for key in SIGNALS}
    for row in rows:
        if metric in row:
            vals[row.get('step')] = row[metric]
        if 'loss' in row and 'iter' in row:
            losses[row['iter']] = row['loss']
        for key in SIGNALS:
            if key in row and 'iter' in row:
                series[key][row['iter']] = row[key]
    signals = {key: s[max(s)] for key, s in series.items() if s}
    if not vals:
        keys = sorted({k for r in rows for k in r
                       if '/' in k and not k.startswith('gal/')})
        raise SystemExit(f'ab_test: {run_dir} logged no {metric!r}; its '
                         f"val keys: {', '.join(keys) or 'none'}")
    steps = sorted(vals)
    return dict(metric=[vals[s] for s in steps], val_steps=steps,
                final=vals[steps[-1]], best=max(vals.values()),
                loss_iters=sorted(losses),
                loss=[losses[i] for i in sorted(losses)], signals=signals,
                signal_series={k: [[i, v[i]] for i in sorted(v)]
                               for k, v in series.items() if v})


def train_command(args, arm: str, seed: int, run_dir: str) -> list:
    cfg = osp.join(args.work_dir, f'{arm}.py')
    opts = [f'randomness.seed={seed}', f'optim_wrapper.seed={seed}']
    common = ['--work-dir', run_dir]
    if glob.glob(osp.join(run_dir, '*.pth')):
        common.append('--resume')  # an interrupted run: its last checkpoint
    if args.gpus > 1:
        return ['bash', osp.join(REPO, 'tools', 'dist_train.sh'), cfg,
                str(args.gpus)] + common + ['--cfg-options'] + opts
    return [sys.executable, osp.join(REPO, 'tools', 'train.py'), cfg] + \
        common + ['--cfg-options'] + opts


def run_one(args, arm: str, seed: int, index: int, total: int,
            started: float) -> dict:
    """Train (or read) one run; progress lines from its validations."""
    run_dir = osp.join(args.work_dir, f'{arm}_seed{seed}')
    done = osp.join(run_dir, 'done.json')
    if osp.exists(done):
        with open(done) as f:
            return json.load(f)
    os.makedirs(run_dir, exist_ok=True)
    cmd = train_command(args, arm, seed, run_dir)
    log_path = osp.join(run_dir, 'ab_test_train.log')
    with open(log_path, 'a') as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            log.write(line)
            if 'Epoch(val)' in line and f'{args.metric}:' in line:
                value = line.split(f'{args.metric}:')[1].split()[0]
                elapsed = time.perf_counter() - started
                left = elapsed / max(index - 1 + 0.5, 0.5) * (
                    total - index + 0.5)
                epoch = line.split('Epoch(val)')[1].split(']')[0].strip(
                    ' [')
                print(f'[ab_test] {arm} seed {seed} epoch {epoch}: '
                      f'{args.metric} {value} (run {index}/{total}, about '
                      f'{left / 60:.0f} min left)', flush=True)
        rc = proc.wait()
    if rc != 0:
        raise SystemExit(f'ab_test: the {arm} run of seed {seed} failed '
                         f'(exit {rc}); its log: {log_path}. Run the same '
                         'command again to resume it.')
    res = summarize_run(run_dir, args.metric)
    with open(done, 'w') as f:
        json.dump(res, f)
    return res


def paired(a: list, b: list) -> dict:
    """Paired t-test of a vs b (scipy), the mean difference and its 95 %
    interval."""
    from scipy import stats
    diff = [x - y for x, y in zip(a, b)]
    n = len(diff)
    mean = sum(diff) / n
    sd = math.sqrt(sum((d - mean)**2 for d in diff) / (n - 1))
    if sd == 0:
        return dict(diff=mean, low=mean, high=mean, t=float('nan'),
                    p=1.0 if mean == 0 else 0.0)
    t, p = stats.ttest_rel(a, b)
    half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    return dict(diff=mean, low=mean - half, high=mean + half, t=float(t),
                p=float(p))


def mean_std(xs: list) -> str:
    m = sum(xs) / len(xs)
    s = math.sqrt(sum((x - m)**2 for x in xs) / (len(xs) - 1))
    return f'{m:.2f} ± {s:.2f}'


def report(args, seeds: list, runs: dict, meta: dict) -> str:
    lines = [f"`{meta['command']}`", '',
             f"torch {meta['torch']}, mmengine {meta['mmengine']}, commit "
             f"{meta['commit']}, {meta['threads']} torch thread(s), seeds "
             f'{seeds}, metric `{args.metric}` (higher is better)', '',
             '| arm | final (mean ± std) | best (mean ± std) | final per '
             'seed |', '|---|---|---|---|']
    for arm in args.arms:
        final = [runs[arm][s]['final'] for s in seeds]
        best = [runs[arm][s]['best'] for s in seeds]
        lines.append(f'| {arm} | {mean_std(final)} | {mean_std(best)} | '
                     f"{', '.join(f'{x:.2f}' for x in final)} |")
    tests = {}
    lines += ['', '| comparison (final) | mean difference | 95 % interval '
              '| t | p |', '|---|---|---|---|---|']
    for other in ('baseline', 'frozen'):
        if other not in args.arms:
            continue
        res = paired([runs['gal'][s]['final'] for s in seeds],
                     [runs[other][s]['final'] for s in seeds])
        tests[f'gal_vs_{other}'] = res
        lines.append(f"| gal - {other} | {res['diff']:+.3f} | "
                     f"{res['low']:+.3f} to {res['high']:+.3f} | "
                     f"{res['t']:.2f} | {res['p']:.3g} |")
    lines += ['', "GAL's learning signals at the end of each GAL run:", '',
              '| seed | ' + ' | '.join(SIGNALS) + ' |',
              '|---' * (len(SIGNALS) + 1) + '|']
    for s in seeds:
        sig = runs['gal'][s]['signals']
        lines.append(f'| {s} | ' + ' | '.join(
            f'{sig[k]:.4g}' if k in sig else '-' for k in SIGNALS) + ' |')
    meta['tests'] = tests
    return '\n'.join(lines) + '\n'


def plot(args, seeds: list, runs: dict, path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import numpy as np
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for arm in args.arms:
        for ax, x_key, y_key in ((axes[0], 'val_steps', 'metric'),
                                 (axes[1], 'loss_iters', 'loss')):
            n = min(len(runs[arm][s][y_key]) for s in seeds)
            ys = np.array([runs[arm][s][y_key][:n] for s in seeds])
            xs = runs[arm][seeds[0]][x_key][:n]
            ax.plot(xs, ys.mean(0), label=arm)
            ax.fill_between(xs, ys.min(0), ys.max(0), alpha=0.2)
    axes[0].set(title=f'val {args.metric}', xlabel='validation')
    axes[1].set(title='training loss', xlabel='iteration')
    for key in SIGNALS:  # the gal arm's signals over training
        per_seed = [dict(map(tuple, runs['gal'][s].get(
            'signal_series', {}).get(key, []))) for s in seeds]
        iters = sorted(set.intersection(*(set(d) for d in per_seed)))
        if iters:
            axes[2].plot(iters, [np.mean([d[i] for d in per_seed])
                                 for i in iters], label=key.split('/')[1])
    axes[2].set(title="GAL's learning signals (gal arm, mean over seeds)",
                xlabel='iteration')
    axes[2].legend()
    for ax in axes[:2]:
        ax.legend()  # the arms
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    configs = arm_configs(args)
    prepare_work_dir(args, configs)
    import mmengine
    import torch
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    total = len(seeds) * len(args.arms)
    started = time.perf_counter()
    runs = {arm: {} for arm in args.arms}
    index = 0
    for seed in seeds:
        for arm in args.arms:
            index += 1
            runs[arm][seed] = run_one(args, arm, seed, index, total,
                                      started)
    commit = subprocess.run(['git', 'rev-parse', '--short=7', 'HEAD'],
                            cwd=REPO, capture_output=True, text=True)
    meta = dict(
        command=' '.join(['python tools/ab_test.py'] + list(
            argv if argv is not None else sys.argv[1:])),
        torch=torch.__version__, mmengine=mmengine.__version__,
        python=platform.python_version(),
        commit=commit.stdout.strip() or None,
        threads=torch.get_num_threads(), seeds=seeds, arms=args.arms,
        metric=args.metric)
    text = report(args, seeds, runs, meta)
    with open(osp.join(args.work_dir, 'report.md'), 'w') as f:
        f.write(text)
    with open(osp.join(args.work_dir, 'results.json'), 'w') as f:
        json.dump(dict(meta=meta, runs={a: {str(s): r for s, r in v.items()}
                                        for a, v in runs.items()}), f,
                  indent=1)
    plot(args, seeds, runs, osp.join(args.work_dir, 'curves.png'))
    print(text)
    return runs


if __name__ == '__main__':
    main()
