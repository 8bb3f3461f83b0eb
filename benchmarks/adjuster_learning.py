#!/usr/bin/env python
"""Does the adjuster learn? Its weights, its output and the remainder over
training, for this project's defaults and for the setting of the authors'
release.

    python benchmarks/adjuster_learning.py --out docs/results/adjuster_learning

Tasks:

- ``digits``: the README's quick start (MMPretrain's ResNet-18 CIFAR
  config on scikit-learn's digits, 32 px, 10 epochs, SGD), through
  mmengine's Runner; what GALHook logs.
- ``detr``: MMDetection's stock DETR config shrunk to the tiny COCO set
  (ResNet-18, 20 queries, 64 px), AdamW; what GALHook logs.
- ``mnist1d``: the MNIST-1D MLP (Adam) and CNN (SGD) of
  ``benchmarks/mnist1d_train.py``, probed on held-out test batches.

Settings: ``gal`` (the defaults: exact remainder, normalised objective,
Adam lr 1e-3 for the adjuster) and ``release`` (the authors' release: the
float32 difference with the row-averaged first-order term, |R|, the
model's optimizer and settings for the adjuster).

Printed per setting, at points over training:

- ``drift``: sine of the angle between the adjuster's weights and its
  initial weights (their change beyond a common rescaling, which Eq. 4's
  normalisation ignores; 0 = not learned);
- ``cos_init``: cosine of the adjustment with the initial adjuster's on
  the same z (1 = the same direction as at the start);
- ``R/R_init``: |R| with the current adjuster over |R| with the frozen
  initial one, on batches the adjuster has not trained on (the Runner
  tasks: each logging iteration's batch, measured before the adjuster's
  update on it; MNIST-1D: the test set); below 1 = learning lowered the
  remainder. With sigma 0.01 the adjustment can move |R| by about 2 % at
  most, so the ratio is bounded near 1 by construction;
- MNIST-1D also ``R/R_0`` (against no adjustment).
"""
import argparse
import json
import os
import os.path as osp
import sys
import tempfile
import time

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, REPO)
# tools/make_digits.py and the tests' tiny COCO maker
sys.path[1:1] = [osp.join(REPO, 'tools'), osp.join(REPO, 'tests')]

SETTINGS = {
    'gal': dict(),
    'release': dict(adjuster_optimizer='model', objective='abs',
                    remainder='reference'),
}
TASKS = ('digits', 'detr', 'mnist1d')
LOG_KEYS = ('adjuster_drift', 'cos_init', 'remainder_ratio')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('--tasks', nargs='+', default=list(TASKS), choices=TASKS)
    p.add_argument('--settings', nargs='+', default=list(SETTINGS),
                   choices=list(SETTINGS))
    p.add_argument('--epochs', type=int, default=10, help='digits epochs')
    p.add_argument('--detr-epochs', type=int, default=25)
    p.add_argument('--steps', type=int, default=6000, help='MNIST-1D steps')
    p.add_argument('--points', type=int, default=5,
                   help='rows per setting (default 5)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--threads', type=int, default=1,
                   help='torch threads (default 1: results do not depend '
                   "on the machine's core count)")
    p.add_argument('--data', default='data/adjuster_learning',
                   help='where the digits images and tiny COCO set are '
                   'written')
    p.add_argument('--out', default='work_dirs/adjuster_learning')
    return p.parse_args(argv)


def _segments(rows: list, points: int) -> list:
    """``points`` consecutive segments of the logged rows, each averaged:
    (last iteration, mean of each key present)."""
    rows = [r for r in rows if any(f'gal/{k}' in r for k in LOG_KEYS)]
    if not rows:
        return []
    size = max(1, len(rows) // points)
    out = []
    for start in range(0, len(rows), size):
        seg = rows[start:start + size]
        entry = dict(iter=seg[-1]['iter'])
        for k in LOG_KEYS:
            vals = [r[f'gal/{k}'] for r in seg if f'gal/{k}' in r]
            if vals:
                entry[k] = sum(vals) / len(vals)
        out.append(entry)
    return out[:points] if len(out) <= points else out[:points - 1] + [
        out[-1]]


def _runner_rows(cfg) -> list:
    from mmengine.runner import Runner
    runner = Runner.from_cfg(cfg)
    runner.train()
    import glob
    path = glob.glob(osp.join(cfg.work_dir, '*', 'vis_data',
                              'scalars.json'))[0]
    with open(path) as f:
        return [json.loads(line) for line in f]


def run_digits(setting: str, args) -> list:
    import mmgal  # noqa: F401
    from mmengine.config import Config
    from make_digits import make_digits_images
    root = osp.abspath(osp.join(args.data, 'digits'))
    make_digits_images(root)
    cfg = Config.fromfile(osp.join(
        REPO, 'configs', 'mmpretrain', 'digits',
        'resnet18_gal_1xb32_digits.py'))
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[name].dataset.data_root = root
    cfg.work_dir = tempfile.mkdtemp(prefix=f'digits_{setting}_')
    cfg.experiment_name = osp.basename(cfg.work_dir)
    cfg.train_cfg.max_epochs = args.epochs
    cfg.randomness = dict(seed=args.seed, deterministic=False)
    cfg.optim_wrapper.update(SETTINGS[setting])
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook',
                                        interval=args.epochs)
    cfg.log_level = 'WARNING'
    return _segments(_runner_rows(cfg), args.points)


def run_detr(setting: str, args) -> list:
    import mmgal  # noqa: F401
    from mmengine.config import Config
    from tiny_coco import make_tiny_coco, tiny_detector_config  # tests/
    root = osp.abspath(osp.join(args.data, 'tiny_coco'))
    ann = make_tiny_coco(root, num_images=8)
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'mmdet', 'detr',
                                   'detr_r50_8xb2-150e-gal_coco.py'))
    work_dir = tempfile.mkdtemp(prefix=f'detr_{setting}_')
    cfg = tiny_detector_config(cfg, root, ann, work_dir, n_train=8,
                               epochs=args.detr_epochs)
    cfg.train_cfg.val_interval = args.detr_epochs
    cfg.default_hooks.logger.interval = 2
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook',
                                        interval=args.detr_epochs)
    cfg.randomness = dict(seed=args.seed)
    cfg.optim_wrapper.update(SETTINGS[setting])
    return _segments(_runner_rows(cfg), args.points)


def run_mnist1d(setting: str, args) -> dict:
    import mnist1d_train as M
    data = M.load_data()
    arm = 'gal' if setting == 'gal' else 'release'
    out = {}
    for model, opt in (('mlp', 'adam'), ('cnn', 'sgd')):
        res = M.train(model, opt, arm, args.seed, data, steps=args.steps,
                      probe_every=max(1, args.steps // (args.points - 1)))
        out[f'{model}/{opt}'] = res
    return out


def fmt(x, spec='.4f'):
    return '-' if x is None else format(x, spec)


def main(argv=None):
    args = parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    results, lines = {}, []
    t0 = time.perf_counter()
    for task in args.tasks:
        for setting in args.settings:
            t1 = time.perf_counter()
            if task == 'mnist1d':
                for name, res in run_mnist1d(setting, args).items():
                    results[f'{task}/{name}/{setting}'] = res
                    lines.append(f'\n### {task} {name}, {setting} (test '
                                 f'accuracy {100 * res["test_acc"]:.1f} %)\n')
                    lines.append('| step | drift | cos_init | R/R_init | '
                                 'R_init/R_0 | R/R_0 |')
                    lines.append('|---|---|---|---|---|---|')
                    for r in res['trace']:
                        lines.append(
                            f"| {r['step']} | {fmt(r['drift'])} | "
                            f"{fmt(r['cos_init'])} | "
                            f"{fmt(r['ratio_initial'])} | "
                            f"{fmt(r['initial_vs_none'])} | "
                            f"{fmt(r['ratio_none'])} |")
            else:
                rows = (run_digits if task == 'digits' else run_detr)(
                    setting, args)
                results[f'{task}/{setting}'] = rows
                lines.append(f'\n### {task}, {setting}\n')
                lines.append('| iteration | drift | cos_init | R/R_init |')
                lines.append('|---|---|---|---|')
                for r in rows:
                    lines.append(
                        f"| {r['iter']} | {fmt(r.get('adjuster_drift'))} | "
                        f"{fmt(r.get('cos_init'))} | "
                        f"{fmt(r.get('remainder_ratio'))} |")
            print('\n'.join(lines[-8:]), flush=True)
            print(f'({task}, {setting}: {time.perf_counter() - t1:.0f} s)',
                  file=sys.stderr, flush=True)
    text = '\n'.join(lines)
    print('\n' + text)
    from mnist1d_train import environment
    with open(osp.join(args.out, 'results.json'), 'w') as f:
        json.dump(dict(command='python benchmarks/adjuster_learning.py ' +
                       ' '.join(argv if argv is not None else sys.argv[1:]),
                       args=vars(args), environment=environment(),
                       seconds=time.perf_counter() - t0, results=results),
                  f, indent=1)
    with open(osp.join(args.out, 'results.md'), 'w') as f:
        f.write(text + '\n')
    return results


if __name__ == '__main__':
    main()
