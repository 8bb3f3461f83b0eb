#!/usr/bin/env python
"""What GAL costs per training iteration: time and peak memory, GAL / baseline.

    python benchmarks/overhead.py                      # all cases
    python benchmarks/overhead.py --case resnet18 --repeats 15

Cases (each through the same code path as training):

- ``resnet18``: MMPretrain's stock ResNet-18 CIFAR config, 32x32, batch 32,
  ``model.train_step`` with ``OptimWrapper`` vs ``GALOptimWrapper`` + the
  ClsHead tap (the paper's CIFAR-10 adjuster, arch (100, 32, 16)).
- ``detr``: MMDetection's stock DETR R50 config (no pretrained weights),
  small input (``--detr-size``, default 128), batch 2, 100 queries,
  adjuster (64, 16) on the boxes of the 6 decoder layers.
- ``digits``: the dispatch-bound case. The quick start's two digits
  configs (``configs/mmpretrain/digits``, the README's GAL lines,
  ``GALHook`` included) at 8x8 pixels, batch 16, trained through
  mmengine's Runner: each arm's Runner is set up as ``Runner.train()``
  does, and an iteration is its train loop's ``run_iter`` (every hook, the
  step, the logging) on batches loaded beforehand, so data loading is not
  timed. With one thread (``--threads 1``) a step is ~15 ms of a few
  thousand small operators: bound by their dispatch, as a small model's
  step is on a GPU, which is where GAL's own operator count shows.
- ``mlp``: the regression MLP of California housing (8 -> 256 -> 64 -> 1),
  batch 200, adjuster (128, 2): one ``RegressionStep`` of the standalone
  regression module (what ``fit_regressor`` runs per batch) with
  ``GALSettings(fast=--fast)``.

Time: both arms are built once in one process and timed interleaved
(the order alternates every repeat), ``--iters`` iterations per timing,
median per-iteration time over ``--repeats`` repeats. Memory: on CUDA the
peak allocated bytes of an iteration; on CPU, where PyTorch keeps no such
counter, each arm runs in a fresh subprocess and reports its peak resident
set size over the timed iterations (after warm-up) and the part of it above
the resident size before them.

Synchronisations (``--syncs``, on by default): each arm runs ``--sync-iters``
steps after warm-up while they are counted, and the table gives the count
per step and what GAL adds. On CUDA these are the host-device
synchronisations ``torch.cuda.set_sync_debug_mode('warn')`` reports (one
warning each; 'error' mode cannot isolate GAL, as the baseline step itself
synchronises). On the CPU, where nothing synchronises, the same column
counts host reads of tensor values (``item``, ``bool``, ``tolist``,
``float``, ``int``, ``numpy``), which become synchronisations on a GPU.
"""
import argparse
import json
import math
import os
import os.path as osp
import platform
import statistics
import subprocess
import sys
import time

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(REPO, 'tools'))  # make_digits
CASES = ('resnet18', 'detr', 'digits', 'mlp')


# ---------------------------------------------------------------- the arms
FAST = None  # GALOptimWrapper.fast for the GAL arms (--fast); None: default
BATCH = None  # the classifier cases' batch size (--batch); None: theirs


def _classifier(gal: bool, device: str, amp: bool, config: str,
                size: int, batch: int, num_classes: int):
    """A stock MMPretrain classifier config and its GAL twin."""
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    from mmpretrain.structures import DataSample

    name = config.format('-gal' if gal else '')
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'mmpretrain', name))
    if gal and FAST is not None:
        cfg.optim_wrapper.fast = FAST
    init_default_scope('mmpretrain')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).to(device)
    wrapper = build_optim_wrapper(model, _with_amp(cfg.optim_wrapper, amp))
    if gal:
        _install_gal(model.head, wrapper, device)
    gen = torch.Generator().manual_seed(0)
    data = dict(
        inputs=[
            torch.randint(0, 256, (3, size, size), generator=gen,
                          dtype=torch.uint8) for _ in range(batch)
        ],
        data_samples=[
            DataSample().set_gt_label(i % num_classes) for i in range(batch)
        ])
    return lambda: model.train_step(data, wrapper)


def _with_amp(wrapper_cfg, amp: bool):
    """fp16 with dynamic loss scaling, GAL's own AMP for the GAL arm."""
    if amp:
        if wrapper_cfg.get('type', 'OptimWrapper') == 'OptimWrapper':
            wrapper_cfg.type = 'AmpOptimWrapper'
        wrapper_cfg.loss_scale = 'dynamic'
    return wrapper_cfg


def _detr(gal: bool, device: str, amp: bool, size: int = 128):
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope
    from mmengine.structures import InstanceData

    cfg = Config.fromfile(
        osp.join(REPO, 'configs', 'mmdet', 'detr',
                 'detr_r50_8xb2-150e-gal_coco.py'
                 if gal else 'detr_r50_8xb2-150e_coco.py'))
    init_default_scope('mmdet')
    cfg.model.backbone.init_cfg = None
    if gal and FAST is not None:
        cfg.optim_wrapper.fast = FAST
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).to(device)
    wrapper = build_optim_wrapper(model, _with_amp(cfg.optim_wrapper, amp))
    if gal:
        _install_gal(model.bbox_head, wrapper, device)
    gen = torch.Generator().manual_seed(0)
    inputs, samples = [], []
    for i in range(2):
        inputs.append(
            torch.randint(0, 256, (3, size, size), generator=gen,
                          dtype=torch.uint8))
        s = DetDataSample(
            metainfo=dict(
                img_shape=(size, size),
                ori_shape=(size, size),
                pad_shape=(size, size),
                batch_input_shape=(size, size),
                scale_factor=(1.0, 1.0)))
        gt = InstanceData()
        gt.bboxes = torch.tensor([[10., 12., 60., 70.],
                                  [40., 30., 120., 100.]])[:i + 1] * (
                                      size / 128)
        gt.labels = torch.tensor([3, 17])[:i + 1]
        s.gt_instances = gt
        samples.append(s)
    data = dict(inputs=inputs, data_samples=samples)
    return lambda: model.train_step(data, wrapper)


def _install_gal(head, wrapper, device):
    from mmgal.adapters import build_adapter
    adapter = build_adapter(head)
    wrapper.setup_adjuster(adapter.out_dim(), device)
    adapter.install(wrapper.gal_forward)


def _digits(gal: bool, device: str, amp: bool):
    """One Runner iteration of the quick start's digits config (or its
    baseline) at 8x8 pixels, batch 16 (see the module docstring)."""
    import copy
    import tempfile

    from mmengine.config import Config
    from mmengine.runner import Runner

    from make_digits import make_digits_images
    root = osp.join(tempfile.gettempdir(), 'mmgal_overhead_digits')
    if not osp.isdir(osp.join(root, 'train')):
        make_digits_images(root)
    name = 'resnet18_gal_1xb32_digits.py' if gal else \
        'resnet18_1xb32_digits.py'
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'mmpretrain', 'digits',
                                   name))
    if gal and FAST is not None:
        cfg.optim_wrapper.fast = FAST
    pipeline = [dict(type='LoadImageFromFile'),
                dict(type='Resize', scale=(8, 8), interpolation='bilinear'),
                dict(type='PackInputs')]
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[key].batch_size = 16
        cfg[key].dataset.data_root = root
        cfg[key].dataset.pipeline = copy.deepcopy(pipeline)
    cfg.work_dir = tempfile.mkdtemp(prefix='mmgal_overhead_')
    cfg.log_level = 'ERROR'
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=-1)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=10)
    cfg.visualizer = dict(type='Visualizer', vis_backends=[])
    cfg.device = device
    runner = Runner.from_cfg(cfg)
    # What Runner.train() does before its loop runs (mmengine 0.10).
    loop = runner._train_loop = runner.build_train_loop(runner._train_loop)
    runner.optim_wrapper = runner.build_optim_wrapper(runner.optim_wrapper)
    runner.scale_lr(runner.optim_wrapper, runner.auto_scale_lr)
    runner.param_schedulers = runner.build_param_scheduler(
        runner.param_schedulers)
    runner.call_hook('before_run')
    runner._init_model_weights()
    runner.optim_wrapper.initialize_count_status(runner.model, loop.iter,
                                                 loop.max_iters)
    runner.call_hook('before_train')
    runner.call_hook('before_train_epoch')
    runner.model.train()
    batches = list(loop.dataloader)[:-1]  # full batches only
    count = [0]

    def step():
        idx = count[0] % len(batches)
        count[0] += 1
        loop.run_iter(idx, batches[idx])

    return step


def _mlp(gal: bool, device: str, amp: bool):
    from mmgal.regression import GALSettings, MLPRegressor, RegressionStep
    torch.manual_seed(0)
    model = MLPRegressor(8, (256, 64)).to(device)
    # The standalone regression module's own iteration, with its fast mode
    # (--fast): 'eager' the reference (for-loop Adam), 'auto' a fused Adam
    # for the adjuster, 'compile' the step and the adjuster's Adam update
    # as one compiled graph.
    fast = {} if FAST is None else dict(fast=FAST)
    settings = GALSettings(sigma=0.1, arch=(128, 2), **fast) if gal \
        else None
    step = RegressionStep(model, 1e-3, gal=settings)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, 8, generator=gen).to(device)
    y = torch.randn(200, 1, generator=gen).to(device)
    return lambda: step(x, y)


def build_step(case: str, gal: bool, device: str, amp: bool,
               detr_size: int):
    import mmgal  # noqa: F401  (registers the mm layer)
    from mmengine.logging import MMLogger
    MMLogger.get_instance('overhead_benchmark', log_level='ERROR')
    if case == 'resnet18':
        return _classifier(gal, device, amp,
                           'cifar/resnet18_8xb16-sgd{}_cifar10.py', 32,
                           BATCH or 32, 10)
    if case == 'resnet50':
        return _classifier(gal, device, amp,
                           'imagenet/resnet50_8xb100-rmsprop{}_in1k.py', 224,
                           BATCH or 64, 1000)
    if case == 'detr':
        return _detr(gal, device, amp, detr_size)
    if case == 'digits':
        return _digits(gal, device, amp)
    return _mlp(gal, device, amp)


# ----------------------------------------------------------------- timing
def _sync(device):
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def calibrate_iters(step, device: str, min_window: float) -> int:
    """Iterations per timed window so that a window of ``step`` lasts at
    least ``min_window`` seconds: sub-millisecond steps timed a few at a
    time measure the switch between the arms (cold caches, the other arm's
    code) more than the steps. A step longer than the window is timed one
    at a time: adjacent steps of the two arms make the tightest pairs, and
    the most of them per minute."""
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(3):
        step()
    _sync(device)
    per_iter = (time.perf_counter() - t0) / 3
    return max(1, math.ceil(min_window / max(per_iter, 1e-9)))


def time_case(case, device, amp, iters, repeats, warmup, detr_size,
              sync_iters=0, min_window=0.1):
    """Median seconds per iteration of both arms (and every repeat's, and
    the synchronisations counted); ``iters=None`` calibrates the window on
    the baseline arm (:func:`calibrate_iters`). Returns (medians, times,
    syncs, iters)."""
    steps = {
        arm: build_step(case, arm == 'gal', device, amp, detr_size)
        for arm in ('baseline', 'gal')
    }
    for arm, step in steps.items():
        for _ in range(warmup):
            step()
    _sync(device)
    if iters is None:
        iters = calibrate_iters(steps['baseline'], device, min_window)
    syncs = {
        arm: count_syncs(step, device, sync_iters)
        for arm, step in steps.items()
    } if sync_iters else None
    times = {'baseline': [], 'gal': []}
    for r in range(repeats):
        order = ('baseline', 'gal') if r % 2 == 0 else ('gal', 'baseline')
        for arm in order:
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(iters):
                steps[arm]()
            _sync(device)
            times[arm].append((time.perf_counter() - t0) / iters)
    med = {arm: statistics.median(v) for arm, v in times.items()}
    return med, times, syncs, iters


_HOST_READS = ('item', '__bool__', 'tolist', '__float__', '__int__',
               'numpy')


def count_syncs(step, device: str, iters: int) -> float:
    """Synchronisations (CUDA) or host reads of tensor values (CPU) per
    call of ``step``, counted over ``iters`` calls."""
    import warnings
    if device.startswith('cuda'):
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            torch.cuda.set_sync_debug_mode('warn')
            try:
                for _ in range(iters):
                    step()
            finally:
                torch.cuda.set_sync_debug_mode(0)
        n = sum('synchroniz' in str(w.message) for w in caught)
        return n / iters
    count = [0]
    originals = {name: getattr(torch.Tensor, name) for name in _HOST_READS}

    def counting(name):
        orig = originals[name]

        def wrapped(self, *args, **kwargs):
            count[0] += 1
            return orig(self, *args, **kwargs)

        return wrapped

    try:
        for name in _HOST_READS:
            setattr(torch.Tensor, name, counting(name))
        for _ in range(iters):
            step()
    finally:
        for name, orig in originals.items():
            setattr(torch.Tensor, name, orig)
    return count[0] / iters


# The CPU targets of docs/results/overhead.md (GAL / baseline time).
TARGETS = {'resnet18': 1.02, 'detr': 1.02, 'digits': 1.03, 'mlp': 1.5}


def ratio_interval(times: dict, level: float = 0.95, resamples: int = 10000
                   ) -> tuple:
    """The median of the per-repeat ratios GAL / baseline (each repeat
    times both arms back to back) and a bootstrap percentile interval of
    that median over the repeats (fixed seed: reproducible)."""
    import random
    ratios = [g / b for g, b in zip(times['gal'], times['baseline'])]
    med = statistics.median(ratios)
    if len(ratios) < 3:
        return med, float('nan'), float('nan')
    rng = random.Random(0)
    meds = sorted(statistics.median(rng.choices(ratios, k=len(ratios)))
                  for _ in range(resamples))
    lo = meds[int((1 - level) / 2 * resamples)]
    hi = meds[int((1 + level) / 2 * resamples) - 1]
    return med, lo, hi


def verdict(case: str, lo: float, hi: float) -> str:
    """The target's verdict by the interval: met when all of it is at or
    below the target, missed when all of it is above, else open."""
    target = TARGETS.get(case)
    if target is None or lo != lo:
        return '-'
    if hi <= target:
        return f'<= {target} (met)'
    if lo > target:
        return f'> {target} (missed)'
    return f'{target} inside the interval (open)'


def memory_case(case, device, amp, iters, warmup, detr_size):
    """Peak memory per arm (bytes)."""
    if device.startswith('cuda'):
        res = {}
        for arm in ('baseline', 'gal'):
            step = build_step(case, arm == 'gal', device, amp, detr_size)
            for _ in range(warmup):
                step()
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            for _ in range(iters):
                step()
            torch.cuda.synchronize()
            res[arm] = dict(peak=torch.cuda.max_memory_allocated(),
                            above_start=torch.cuda.max_memory_allocated() -
                            base)
        return res
    res = {}
    for arm in ('baseline', 'gal'):
        out = subprocess.run(
            [sys.executable, __file__, '--rss-child', case, arm]
            + (['--fast', FAST] if FAST is not None else [])
            + (['--batch', str(BATCH)] if BATCH is not None else []) + [
             '--iters', str(iters), '--warmup', str(warmup),
             '--detr-size', str(detr_size)],
            capture_output=True, text=True, check=True)
        res[arm] = json.loads(out.stdout.strip().splitlines()[-1])
    return res


def _proc_status_kib(field: str) -> int:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    raise RuntimeError(f'{field} not in /proc/self/status')


def rss_child(case, arm, iters, warmup, detr_size):
    """Peak RSS of this fresh process over ``iters`` iterations after
    ``warmup`` (Linux: VmHWM, reset through /proc/self/clear_refs; not
    ru_maxrss, which survives exec and would report the parent's peak)."""
    step = build_step(case, arm == 'gal', 'cpu', False, detr_size)
    for _ in range(warmup):
        step()
    start = _proc_status_kib('VmRSS')
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')  # reset the peak-RSS high-water mark
    for _ in range(iters):
        step()
    peak = _proc_status_kib('VmHWM')
    print(json.dumps(dict(peak=peak * 1024, above_start=(peak - start) *
                          1024)))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('--case', choices=CASES + ('resnet50', 'all'),
                   default='all')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available()
                   else 'cpu')
    p.add_argument('--amp', action='store_true',
                   help='fp16 AMP with dynamic loss scaling (CUDA)')
    p.add_argument('--iters', type=int, default=None,
                   help='iterations per timed window (default: enough for '
                   '--min-window, at least 1)')
    p.add_argument('--min-window', type=float, default=0.1,
                   help='seconds a timed window lasts at least when --iters '
                   'is not given (default 0.1)')
    p.add_argument('--repeats', type=int, default=11)
    p.add_argument('--warmup', type=int, default=3)
    p.add_argument('--detr-size', type=int, default=128)
    p.add_argument('--sync-iters', type=int, default=2,
                   help='steps over which synchronisations are counted '
                   '(0: do not count)')
    p.add_argument('--no-memory', action='store_true')
    p.add_argument('--threads', type=int, default=None)
    p.add_argument('--fast', default=None,
                   choices=('auto', 'compile', 'eager'),
                   help="GALOptimWrapper.fast of the GAL arms (default: "
                   "the settings' own default); the MLP "
                   "arm: GALSettings.fast of the regression module ('eager' "
                   "= eager step and for-loop Adam, 'auto' = fused Adam, "
                   "'compile' = the step and the adjuster's Adam update as "
                   'one compiled graph)')
    p.add_argument('--batch', type=int, default=None,
                   help='batch size of the resnet18 (default 32) and '
                   'resnet50 (default 64) cases')
    p.add_argument('--out', help='write the results as JSON here')
    p.add_argument('--rss-child', nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for name in ('repeats', 'iters', 'threads', 'batch', 'detr_size'):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    for name in ('warmup', 'sync_iters'):
        if getattr(args, name) < 0:
            p.error(f"--{name.replace('_', '-')} must be >= 0, got "
                    f'{getattr(args, name)}')
    if args.threads:
        torch.set_num_threads(args.threads)
    global FAST, BATCH
    FAST = args.fast
    BATCH = args.batch
    if args.rss_child:
        return rss_child(*args.rss_child, args.iters, args.warmup,
                         args.detr_size)
    cases = CASES if args.case == 'all' else (args.case, )
    rows = []
    for case in cases:
        med, times, syncs, iters = time_case(
            case, args.device, args.amp, args.iters, args.repeats,
            args.warmup, args.detr_size, args.sync_iters, args.min_window)
        mem = None if args.no_memory else memory_case(
            case, args.device, args.amp, iters, args.warmup,
            args.detr_size)
        rows.append(dict(case=case, iters=iters, median_s=med,
                         times_s=times, memory=mem, syncs=syncs))
        print(f'[{case}] baseline {med["baseline"] * 1e3:.2f} ms, GAL '
              f'{med["gal"] * 1e3:.2f} ms', file=sys.stderr)
    machine = (f'{platform.node()}: {platform.processor() or "cpu"}, '
               f'{torch.get_num_threads()} threads, torch '
               f'{torch.__version__}, device {args.device}'
               + (f' ({torch.cuda.get_device_name()})'
                  if args.device.startswith('cuda') else ''))
    per_case = ', '.join(f'{r["case"]} {r["iters"]}' for r in rows)
    print(f'\nmachine: {machine}; amp: {args.amp}; fast: {args.fast}; '
          f'median of {args.repeats} repeats of a window of iterations '
          f'({per_case}), arms interleaved\n')
    sync_kind = ('host-device syncs' if args.device.startswith('cuda') else
                 'host reads')
    print('| case | baseline ms/iter | GAL ms/iter | time ratio (median '
          'of paired repeats) | 95% interval | CPU target | '
          'baseline peak mem | GAL peak mem | mem ratio | GAL - baseline | '
          f'baseline {sync_kind}/iter | GAL {sync_kind}/iter | '
          'added by GAL |')
    print('|---|---|---|---|---|---|---|---|---|---|---|---|---|')
    for row in rows:
        b, g = row['median_s']['baseline'], row['median_s']['gal']
        med, lo, hi = ratio_interval(row['times_s'])
        row['ratio'] = dict(median=med, low=lo, high=hi)
        if row['memory']:
            mb, mg = row['memory']['baseline'], row['memory']['gal']
            mem = (f'{mb["peak"] / 2**20:.1f} MiB | '
                   f'{mg["peak"] / 2**20:.1f} MiB | '
                   f'{mg["peak"] / mb["peak"]:.3f} | '
                   f'{(mg["peak"] - mb["peak"]) / 2**20:+.1f} MiB')
        else:
            mem = '- | - | - | -'
        sy = row['syncs']
        sync = (f'{sy["baseline"]:g} | {sy["gal"]:g} | '
                f'{sy["gal"] - sy["baseline"]:+g}') if sy else '- | - | -'
        target = verdict(row['case'], lo, hi) if args.device == 'cpu' \
            else '-'
        print(f'| {row["case"]} | {b * 1e3:.2f} | {g * 1e3:.2f} | '
              f'{med:.3f} | {lo:.3f}-{hi:.3f} | {target} | {mem} | {sync} |')
    if args.out:
        from bench_env import record
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as f:
            json.dump(dict(machine=machine,
                           meta=record('benchmarks/overhead.py', argv),
                           args=vars(args), rows=rows), f, indent=2)
    return rows


if __name__ == '__main__':
    main()
