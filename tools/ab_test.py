#!/usr/bin/env python
"""Does GAL help here? Train a GAL config's arms over paired seeds and
compare them with t-tests.

    python tools/ab_test.py CONFIG [--seeds N] [--arms baseline gal frozen]
        [--metric KEY] [--rule {greater,less}] [--gpus K] [--work-dir DIR]
        [--cfg-options ...]

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
after another, with a line per epoch (arm, seed, epoch, metric so far,
time left). A finished run is read, not trained again; an interrupted one
resumes from its last checkpoint (the config's checkpoint interval says
how much an interruption loses). ``--cfg-options`` applies to every arm,
as in ``tools/train.py``.

The metric is read from mmengine's scalars (``vis_data/scalars.json``): by
default the val evaluator's main key (``accuracy/top1``, ``coco/bbox_mAP``,
...); for each run its final and best value, best by ``--rule`` (default:
the config's checkpoint rule for that key, else mmengine's inference from
its name). The report (``DIR/report.md``, ``DIR/results.json``,
``DIR/curves.png``): per arm mean +- std and every seed's value; paired
t-tests of gal vs baseline and gal vs frozen with the mean difference and
its 95 % interval; GAL's learning signals at the end of each run with GAL;
the command, versions, commit, threads and seeds.
"""
import argparse
import json
import os.path as osp
import signal
import sys

HERE = osp.dirname(osp.abspath(__file__))
sys.path[:0] = [osp.dirname(HERE), HERE]  # mmgal, and the tools' helpers

from ab_testing.arms import ARMS, load_arms, prepare_work_dir  # noqa: E402
from ab_testing.report import environment, plot, report  # noqa: E402
from ab_testing.runs import Progress, is_done, run_one  # noqa: E402


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
    p.add_argument('--rule', choices=('greater', 'less'), default=None,
                   help='which value of the metric is best (default: from '
                   'the config or the key, as mmengine\'s CheckpointHook)')
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
    if not 0 <= args.first_seed < 2**31 - args.seeds:
        p.error(f'--first-seed must be in [0, 2**31 - N), got '
                f'{args.first_seed}')
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


def main(argv=None) -> dict:
    """Train (or read) every run, write and print the report; the runs'
    summaries by arm and seed."""
    args = parse_args(argv)
    configs, metric, rule = load_arms(args.config, args.cfg_options,
                                      args.arms, args.metric, args.rule)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    max_epochs = configs['gal'].train_cfg.get('max_epochs')  # None: iters
    # The folder is this call's until the report is written, or it fails.
    with prepare_work_dir(args.work_dir, args.config, args.gpus, configs):
        runs = train_all(args, seeds, metric, rule, max_epochs)
        meta = environment(configs['gal'], ' '.join(
            ['python tools/ab_test.py'] +
            list(argv if argv is not None else sys.argv[1:])))
        meta.update(seeds=seeds, arms=args.arms, metric=metric, rule=rule)
        text = report(runs, seeds, meta)
        with open(osp.join(args.work_dir, 'report.md'), 'w') as f:
            f.write(text)
        with open(osp.join(args.work_dir, 'results.json'), 'w') as f:
            json.dump(dict(meta=meta, runs={
                a: {str(s): r for s, r in v.items()}
                for a, v in runs.items()}), f, indent=1)
        plot(runs, seeds, metric, osp.join(args.work_dir, 'curves.png'),
             by_epoch=max_epochs is not None)
    print(text)
    return runs


def train_all(args, seeds: list, metric: str, rule: str,
              max_epochs) -> dict:
    """Every arm's run of every seed, trained or read, in the order seed
    by seed, arm by arm."""
    order = [(arm, seed) for seed in seeds for arm in args.arms]
    progress = Progress(metric, max_epochs, sum(
        not is_done(args.work_dir, *r) for r in order))
    runs = {arm: {} for arm in args.arms}
    for index, (arm, seed) in enumerate(order, 1):
        progress.start(arm, seed, index, len(order))
        runs[arm][seed] = run_one(args.work_dir, arm, seed, args.gpus,
                                  metric, rule, progress)
    return runs


if __name__ == '__main__':
    # A stop by SIGTERM (a job scheduler's) stops the training process too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    main()
