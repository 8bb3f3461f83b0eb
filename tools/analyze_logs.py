#!/usr/bin/env python
"""Plot mmengine json logs of one or more runs (baseline vs GAL) to PNG.

    python tools/analyze_logs.py work_dirs/base work_dirs/gal \\
        --legend baseline GAL --out docs/results/digits_curves

Each LOG is a ``scalars.json`` written by mmengine's visualizer (or a work
dir / run dir holding one; the newest run is taken). Figures:

- ``loss.png`` (the paper's Fig. 5): training loss per iteration and the
  validation metric per evaluation.
- ``remainder.png`` (Fig. 6): ``gal/remainder`` (mean |R| / (eta |g~|)^2,
  the curvature along the step; ``--keys gal/log10_remainder`` plots
  log10 of the mean |R| itself) and ``gal/cos_sim`` (cosine between g and
  the adjustment).
- ``adopt_rate.png`` (Fig. 8b): ``gal/adopt_rate``, how often g~ beat g.
- ``learning.png``: whether the adjuster learns: ``gal/remainder_ratio``
  (|R| with the current over the initial adjuster on the logging batch:
  below 1 when learning lowers it), ``gal/cos_init`` (its adjustment
  against the initial one's) and ``gal/adjuster_drift`` (its weights'
  turn away from the initial ones).

``--keys`` plots any other logged keys into ``custom.png``.
"""
import argparse
import glob
import json
import os
import os.path as osp
from typing import Dict, List

PRESETS = {
    'loss': ('loss', None),
    'remainder': ('gal/remainder', 'gal/cos_sim'),
    'adopt_rate': ('gal/adopt_rate', None),
    'learning': ('gal/remainder_ratio', 'gal/cos_init',
                 'gal/adjuster_drift'),
}


def find_scalars(path: str) -> str:
    """``path`` if it is a json file, else the newest scalars.json under
    it."""
    if osp.isfile(path):
        return path
    found = glob.glob(osp.join(path, '**', 'scalars.json'), recursive=True)
    if not found:
        raise FileNotFoundError(
            f'no scalars.json under {path!r}: give a json log written by '
            "mmengine's LocalVisBackend (<work_dir>/<run>/vis_data/"
            'scalars.json) or a folder holding one')
    return max(found, key=osp.getmtime)


def load_log(path: str) -> Dict[str, List[dict]]:
    """Rows of a json log, split into training and validation rows."""
    train, val = [], []
    with open(find_scalars(path)) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            row = json.loads(line)
            (train if 'loss' in row or 'lr' in row else val).append(row)
    return dict(train=train, val=val)


def series(rows: List[dict], key: str):
    xs = [r.get('step', r.get('iter', i)) for i, r in enumerate(rows)
          if key in r]
    ys = [r[key] for r in rows if key in r]
    return xs, ys


def val_metric(logs) -> str:
    for log in logs:
        for row in log['val']:
            for k in row:
                if k not in ('step', 'epoch', 'iter', 'time', 'data_time'):
                    return k
    return ''


def plot(logs, legends, out_dir, name, keys, val_key=None):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    panels = [k for k in keys if k] + ([val_key] if val_key else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.5),
                             squeeze=False)
    drew = False
    for ax, key in zip(axes[0], panels):
        for log, label in zip(logs, legends):
            rows = log['val'] if key == val_key else log['train']
            xs, ys = series(rows, key)
            if xs:
                ax.plot(xs, ys, label=label, marker='o' if key == val_key
                        else None, ms=3)
                drew = True
        ax.set_title(key)
        ax.set_xlabel('epoch' if key == val_key else 'iteration')
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = osp.join(out_dir, f'{name}.png')
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path if drew else None


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('logs', nargs='+', help='scalars.json files or dirs')
    p.add_argument('--legend', nargs='+', help='one name per log')
    p.add_argument('--figures', nargs='+', default=list(PRESETS),
                   choices=list(PRESETS))
    p.add_argument('--keys', nargs='+', help='other keys, into custom.png')
    p.add_argument('--out', default='work_dirs/analysis')
    args = p.parse_args(argv)
    legends = args.legend or [osp.basename(osp.normpath(x))
                              for x in args.logs]
    if len(legends) != len(args.logs):
        p.error(f'--legend needs one name per log ({len(args.logs)}), got '
                f'{len(legends)}')
    logs = [load_log(x) for x in args.logs]
    os.makedirs(args.out, exist_ok=True)
    written = []
    for name in args.figures:
        val_key = val_metric(logs) if name == 'loss' else None
        path = plot(logs, legends, args.out, name, PRESETS[name], val_key)
        if path:
            written.append(path)
        else:
            print(f'{name}: none of the logs has {PRESETS[name]}; skipped')
    if args.keys:
        path = plot(logs, legends, args.out, 'custom', args.keys)
        if path:
            written.append(path)
    for path in written:
        print(f'wrote {path}')
    return written


if __name__ == '__main__':
    main()
