"""A GAL config's arms, the val metric they are compared on and the work
folder (its manifest and lock); every check of the command's input, done
before anything trains."""
import fcntl
import hashlib
import json
import os
import os.path as osp
import socket
import time
from typing import Dict, List, Optional, Tuple

ARMS = ('baseline', 'gal', 'frozen')


def _topk_keys(ev: dict) -> List[str]:
    """mmpretrain's Accuracy: top-k, a suffix per threshold if several."""
    topk = ev.get('topk', (1, ))
    thrs = ev.get('thrs', 0.)
    thrs = list(thrs) if isinstance(thrs, (list, tuple)) else [thrs]
    suffixes = [''] if len(thrs) == 1 else [
        '_no-thr' if t is None else f'_thr-{t:.2f}' for t in thrs]
    return [f'top{k}{s}' for k in _as_list(topk) for s in suffixes]


def _averaged(ev: dict, suffix: str = '') -> List[str]:
    """Precision / recall / F1 keys as mmpretrain's label metrics write
    them: the item, ``suffix``, then the average's own (none for macro);
    none for class-wise lists (``average=None``)."""
    average = ev.get('average', 'macro')
    if average is None:
        return []
    suffix += '' if average == 'macro' else f'_{average}'
    items = _as_list(ev.get('items', ('precision', 'recall', 'f1-score')))
    return [f'{item}{suffix}' for item in items if item != 'support']


def _multi_label_keys(ev: dict) -> List[str]:
    """mmpretrain's MultiLabelMetric (and VOC's): a threshold (0.5 if
    neither it nor top-k is given) or top-k suffix."""
    thr, topk = ev.get('thr'), ev.get('topk')
    thr = 0.5 if thr is None and topk is None else thr
    return _averaged(ev, ('' if thr == 0.5 else f'_thr-{thr:.2f}')
                     if thr else f'_top{topk}')


def _coco_keys(ev: dict) -> List[str]:
    return [f'{m}_mAP{s}' for m in _as_list(ev.get('metric', 'bbox'))
            for s in ('', '_50', '_75', '_s', '_m', '_l')]


def _voc_keys(ev: dict) -> List[str]:
    if ev.get('metric', 'mAP') != 'mAP':
        return []
    return ['mAP'] + [f'AP{int(t * 100):02d}'
                      for t in _as_list(ev.get('iou_thrs', (0.5, )))]


# The val metrics whose logged keys are known before training: their
# default prefix (mmengine's Evaluator writes prefix/key) and keys, main
# key first.
KNOWN_METRICS = {
    'Accuracy': ('accuracy', _topk_keys),
    'SingleLabelMetric': ('single-label', _averaged),
    'AveragePrecision': ('multi-label', lambda ev: ['mAP']),
    'VOCAveragePrecision': ('multi-label', lambda ev: ['mAP']),
    'MultiLabelMetric': ('multi-label', _multi_label_keys),
    'VOCMultiLabelMetric': ('multi-label', _multi_label_keys),
    'CocoMetric': ('coco', _coco_keys),
    'VOCMetric': ('pascal_voc', _voc_keys),
}


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _type_name(cfg) -> str:
    """A component config's type without its scope ('mmdet.VOCMetric')."""
    return str((cfg or {}).get('type', '')).split('.')[-1]


def metric_keys(cfg) -> Tuple[List[str], bool]:
    """The keys the val evaluator logs, main key first, and whether that
    list is complete (False where an evaluator is not in KNOWN_METRICS)."""
    keys, complete = [], True
    for ev in _as_list(cfg.get('val_evaluator') or []):
        kind = _type_name(ev)
        if kind not in KNOWN_METRICS:
            complete = False
            continue
        prefix, known = KNOWN_METRICS[kind]
        prefix = ev.get('prefix') or prefix
        keys += [f'{prefix}/{key}' for key in known(ev)]
    return keys, complete


def metric_rule(cfg, metric: str, rule: Optional[str]) -> str:
    """'greater' or 'less': ``rule``; else the config's checkpoint rule
    where it keeps the best of ``metric``; else mmengine's CheckpointHook
    inference from the key's name (``acc``, ``mAP``: greater; ``loss``:
    less)."""
    from mmengine.hooks import CheckpointHook
    ckpt = (cfg.get('default_hooks') or {}).get('checkpoint') or {}
    if rule is None and ckpt.get('save_best') == metric:
        rule = ckpt.get('rule')
    try:
        return CheckpointHook(save_best=metric, rule=rule).rules[0]
    except (KeyError, ValueError):
        raise SystemExit(
            f'ab_test: whether a higher or a lower {metric!r} is better '
            "cannot be told from its name: give --rule greater or --rule "
            'less') from None


def check_gal(cfg, config: str) -> None:
    """SystemExit unless ``cfg`` trains with GAL on and validates."""
    wrapper = cfg.get('optim_wrapper') or {}
    if _type_name(wrapper) != 'GALOptimWrapper':
        raise SystemExit(
            f"ab_test: {config} is not a GAL config (its optim_wrapper.type "
            f"is {wrapper.get('type', 'OptimWrapper')!r}): add the README's "
            "lines (optim_wrapper = dict(type='GALOptimWrapper', ...), "
            "default_hooks = dict(gal=dict(type='GALHook')), custom_imports "
            "= dict(imports=['mmgal'])) and run it again")
    hooks = list((cfg.get('default_hooks') or {}).values()) + list(
        cfg.get('custom_hooks') or [])
    if not any(_type_name(h) == 'GALHook' for h in hooks):
        raise SystemExit(
            f'ab_test: {config} has a GALOptimWrapper but no GALHook, which '
            "sets it up: add default_hooks = dict(gal=dict(type='GALHook')) "
            'and run it again')
    if wrapper.get('enabled', True) is False:
        raise SystemExit(f'ab_test: {config} switches GAL off (optim_'
                         'wrapper.enabled=False): the arms would be the same')
    if cfg.get('val_dataloader') is None or cfg.get('val_cfg') is None:
        raise SystemExit(f'ab_test: {config} has no validation (val_'
                         'dataloader / val_cfg): there is no metric to '
                         'compare')


def choose_metric(cfg, metric: Optional[str]) -> str:
    """``metric``, or the val evaluator's main key; SystemExit where the
    evaluator is known not to log it, or nothing says which key to use."""
    keys, complete = metric_keys(cfg)
    if metric is None:
        if not keys:
            kinds = [ev.get('type') for ev in _as_list(cfg.val_evaluator)]
            raise SystemExit(
                f'ab_test: the val evaluator ({", ".join(map(str, kinds))}) '
                "is not one whose keys this tool knows: give the key to "
                'compare with --metric')
        return keys[0]
    if metric not in keys and complete:
        raise SystemExit(
            f'ab_test: --metric {metric!r} is not logged by the val '
            f"evaluator; it logs: {', '.join(keys)}")
    return metric


def load_arms(config: str, cfg_options: Optional[dict], arms: List[str],
              metric: Optional[str],
              rule: Optional[str]) -> Tuple[Dict[str, object], str, str]:
    """Each arm's whole config, the metric and its rule; SystemExit naming
    what is wrong with CONFIG, ``--metric`` or ``--rule``.

    baseline: GAL off (``optim_wrapper.enabled=False``, training is a plain
    OptimWrapper's); gal: the config as it is; frozen: an adjuster whose
    optimizer is SGD at lr 0, so it never moves from its seeded draw."""
    from mmengine.config import Config
    if not osp.isfile(config):
        raise SystemExit(f'ab_test: config {config!r} not found')
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    check_gal(cfg, config)
    metric = choose_metric(cfg, metric)
    rule = metric_rule(cfg, metric, rule)
    configs = {}
    for arm in arms:
        arm_cfg = Config(cfg.to_dict(), filename=cfg.filename)
        if arm == 'baseline':
            arm_cfg.optim_wrapper.enabled = False
        elif arm == 'frozen':
            arm_cfg.optim_wrapper.adjuster_optimizer = dict(type='SGD',
                                                            lr=0.0)
        configs[arm] = arm_cfg
    return configs, metric, rule


def prepare_work_dir(work_dir: str, config: str, gpus: int,
                     configs: dict):
    """Lock the folder, write each arm's config and the manifest; the lock
    (an open file: keep it while training). SystemExit where another
    ab_test holds the folder, or it holds runs of another config or other
    arguments (nothing is overwritten). The metric is not in the manifest:
    the runs are the same whichever is compared, and a second call may
    compare another."""
    os.makedirs(work_dir, exist_ok=True)
    lock = _lock(work_dir)
    texts = {arm: cfg.pretty_text for arm, cfg in configs.items()}
    manifest = dict(
        config=osp.abspath(config), gpus=gpus,
        configs={arm: hashlib.sha256(t.encode()).hexdigest()[:16]
                 for arm, t in texts.items()})
    path = osp.join(work_dir, 'manifest.json')
    try:
        manifest = _same_runs(path, manifest)
    except SystemExit:
        lock.close()  # refused: the folder is free again
        raise
    with open(path, 'w') as f:
        json.dump(manifest, f, indent=2)
    for arm, text in texts.items():
        with open(osp.join(work_dir, f'{arm}.py'), 'w') as f:
            f.write(text)
    return lock


def _same_runs(path: str, manifest: dict) -> dict:
    """The manifest to write: ``manifest`` with the arms of the one at
    ``path`` that this call leaves out; SystemExit where that one is of
    another config, process count or arm settings."""
    if not osp.exists(path):
        return manifest
    with open(path) as f:
        old = json.load(f)
    configs = old.get('configs', {})
    changed = [k for k in ('config', 'gpus') if old.get(k) != manifest[k]]
    changed += [f'the {arm} arm' for arm, digest in manifest['configs'].items()
                if configs.get(arm, digest) != digest]
    if changed:
        verb = 'differs' if len(changed) == 1 else 'differ'
        raise SystemExit(
            f'ab_test: {osp.dirname(path)} holds runs of another config or '
            f"other arguments ({', '.join(changed)} {verb} from {path}); "
            'nothing is overwritten: give another --work-dir')
    return dict(manifest, configs=dict(configs, **manifest['configs']))


def _lock(work_dir: str):
    """An exclusive lock on ``work_dir/.lock``, released when this process
    ends however it ends (flock); SystemExit naming the holder where
    another call holds it: two calls would train the same runs at once."""
    f = open(osp.join(work_dir, '.lock'), 'a+')
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or 'another process'
        f.close()
        raise SystemExit(
            f'ab_test: {work_dir} is in use by another ab_test ({holder}): '
            'wait for it to end, or give another --work-dir') from None
    f.truncate(0)
    f.write(f'pid {os.getpid()} on {socket.gethostname()} since '
            f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    f.flush()
    return f
