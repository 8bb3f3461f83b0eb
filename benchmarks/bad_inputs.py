#!/usr/bin/env python
"""Feed mmgal bad input and print what each case gets (docs/results/robustness.md).

    python benchmarks/bad_inputs.py [--data-root ../shared/data] [--out FILE]

Every row is run here, in this process (no training loop): the input, and
the exception type with the first line of its message, the warning logged,
or what the call returned. Cases that need a whole training run are listed
with the test that runs them.
"""
import argparse
import logging
import os
import os.path as osp
import shutil
import sys
import tempfile
import warnings

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

RUN_ELSEWHERE = [
    ('resume a GAL checkpoint in the baseline config, or with '
     'enabled=False', 'no gal/* scalars logged (GAL scalars are not stored '
     'in checkpoints; old checkpoints are cleaned by GALHook)',
     'tests/test_engine/test_gal_hook.py::'
     'test_a_run_without_gal_steps_logs_no_gal_scalars_after_resume'),
    ("custom_hooks=[dict(type='GALHook'), dict(type='GALHook')]",
     'ValueError: GALHook is registered 2 times ...',
     'tests/test_engine/test_gal_hook.py::'
     'test_galhook_listed_twice_is_refused'),
    ('GALHook() on a model with two supported heads',
     'ValueError: ... has 2 heads a GAL adapter supports: <paths>',
     'tests/test_engine/test_gal_hook_head_discovery.py'),
    ('import mmgal next to transformers >= 5',
     "ImportError: ... transformers 5.x is installed ... pip install "
     "'transformers<5'", 'tests/test_utils/test_compat.py'),
    ('tools/regression.py --epochs 0 / --runs 0 / --batch-size 0',
     'exit 2, "--epochs must be >= 1, got 0", nothing written',
     'tests/test_regression/test_bad_input.py'),
    ('tools/regression.py --sigma 0 (identical arms)',
     "'tie' for MAE, MSE and R2",
     'tests/test_regression/test_bad_input.py::'
     'test_sigma_zero_end_to_end_reports_ties'),
]


def outcome(fn):
    """What calling ``fn`` gives: error, warning or result, in one line."""
    from mmengine.logging import MMLogger
    logger = MMLogger.get_current_instance()
    records = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            try:
                res = fn()
            except Exception as err:  # noqa: BLE001 - we report it
                msg = str(err).splitlines()[0] if str(err) else ''
                return f'{type(err).__name__}: {msg}'
    finally:
        logger.removeHandler(handler)
    notes = [r.getMessage() for r in records]
    notes += [str(w.message) for w in caught
              if issubclass(w.category, UserWarning)
              and 'pkg_resources' not in str(w.message)]
    text = f'ok, returned {res}' if res is not None else 'ok'
    if notes:
        text += '; warning: ' + notes[0]
    return text


def cases(data_root: str, tmp: str):
    import mmgal  # noqa: F401
    from mmgal.core import GradientAdjuster, gal_step
    from mmgal.datasets import make_digits_images
    from mmgal.engine import GALOptimWrapper
    from mmgal.regression import load_boston, load_california, \
        make_protocol

    z = torch.randn(8, 4)
    t = torch.randint(0, 4, (8, ))
    adj = GradientAdjuster(4, (8, ))

    def step(zz=z, loss_fn=None, **kw):
        args = dict(lr=0.1, sigma=0.1)
        args.update(kw)
        out = gal_step(zz, loss_fn or (lambda q: F.cross_entropy(q, t)),
                       adj, **args)
        return f'nonfinite={bool(out.nonfinite)}'

    yield 'gal_step', 'lr=-1', lambda: step(lr=-1.0)
    yield 'gal_step', 'lr=inf', lambda: step(lr=float('inf'))
    yield 'gal_step', 'lr=torch.tensor(nan) (CPU)', \
        lambda: step(lr=torch.tensor(float('nan')))
    yield 'gal_step', 'lr=torch.tensor([0.1, 0.2])', \
        lambda: step(lr=torch.tensor([0.1, 0.2]))
    yield 'gal_step', 'sigma=np.float32(0.01)', \
        lambda: step(sigma=np.float32(0.01))
    yield 'gal_step', 'sigma=nan', lambda: step(sigma=float('nan'))
    yield 'gal_step', 'integer z', \
        lambda: step(zz=torch.arange(8).reshape(2, 4),
                     loss_fn=lambda q: q.sum())
    yield 'gal_step', 'a loss that does not depend on z', \
        lambda: step(loss_fn=lambda q: torch.tensor(1.0))
    yield 'gal_step', 'grouped=True with a scalar loss', \
        lambda: step(zz=torch.randn(2, 3, 4), loss_fn=lambda q: q.sum(),
                     grouped=True)

    model = torch.nn.Linear(3, 4)

    def wrapper(**kw):
        return GALOptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1),
                               **kw) and None

    for kw in (dict(adjuster_lr_ratio=float('nan')),
               dict(adjuster_lr_ratio=float('inf')),
               dict(tentative_lr=float('inf')),
               dict(tentative_lr=float('nan')), dict(loss_scale=0),
               dict(loss_scale=-1), dict(enabled='False'),
               dict(sigma=0.9), dict(fast='graph')):
        text = ', '.join(f'{k}={v!r}' for k, v in kw.items())
        yield 'GALOptimWrapper', text, lambda kw=kw: wrapper(**kw)

    def trained(**kw):
        w = GALOptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1),
                            arch=(8, ), **kw)
        w.setup_adjuster(4)
        w.update_params(w.gal_forward(model(torch.randn(8, 3)),
                                      lambda q: F.cross_entropy(q, t)))
        return w.state_dict()

    def resume(state, **kw):
        w = GALOptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1),
                            **kw)
        w.setup_adjuster(4)
        w.load_state_dict(state)

    yield ('checkpoint', 'resume with adjuster_optimizer SGD -> Adam',
           lambda: resume(trained(adjuster_optimizer=dict(type='SGD')),
                          arch=(8, ), adjuster_optimizer=dict(type='Adam')))
    yield ('checkpoint', 'resume with arch (8,) -> (16,)',
           lambda: resume(trained(), arch=(16, )))

    def no_dim():
        state = trained()
        del state['gal']['dim']
        resume(state, arch=(8, ))

    yield 'checkpoint', "GAL state without 'dim'", no_dim

    yield 'regression', 'make_protocol(epochs=0)', \
        lambda: make_protocol('paper', epochs=0) and None
    yield 'regression', 'make_protocol(batch_size=0)', \
        lambda: make_protocol('paper', batch_size=0) and None

    def california(edit, name):
        folder = osp.join(tmp, name)
        os.makedirs(folder)
        lines = open(osp.join(data_root, 'california_housing.csv')).read(
        ).splitlines()
        with open(osp.join(folder, 'california_housing.csv'), 'w') as f:
            f.write('\n'.join(edit(lines)) + '\n')
        return lambda: load_california(folder) and None

    def zero_households(lines):
        row = lines[5].split(',')
        row[6] = '0'
        lines[5] = ','.join(row)
        return lines

    yield ('regression', 'California CSV with households=0 in line 6',
           california(zero_households, 'zero'))
    yield ('regression', 'California CSV with an extra column',
           california(lambda ls: [ls[0]] + [x + ',1' for x in ls[1:]],
                      'extra'))
    yield ('regression', "California CSV with a non-number ('1,2,x')",
           california(lambda ls: ls[:3] + ['1,2,x'] + ls[3:], 'parse'))

    def boston_nan():
        folder = osp.join(tmp, 'boston')
        os.makedirs(folder)
        lines = open(osp.join(data_root, 'boston_housing.data')).read(
        ).splitlines()
        lines[2] = 'nan ' + lines[2].split(None, 1)[1]
        with open(osp.join(folder, 'boston_housing.data'), 'w') as f:
            f.write('\n'.join(lines) + '\n')
        return load_boston(folder) and None

    yield 'regression', 'Boston file with nan in line 3', boston_nan

    digits = osp.join(tmp, 'digits')
    yield 'datasets', 'make_digits_images(DIR)', \
        lambda: make_digits_images(digits)
    yield 'datasets', 'make_digits_images(DIR, seed=1) again', \
        lambda: make_digits_images(digits, seed=1)

    def foreign():
        folder = osp.join(tmp, 'mine', 'train', 'cat')
        os.makedirs(folder)
        open(osp.join(folder, 'a.jpg'), 'w').close()
        return make_digits_images(osp.join(tmp, 'mine'))

    yield 'datasets', 'make_digits_images on a folder with other files', \
        foreign


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument('--data-root', default=os.environ.get(
        'MMGAL_DATA_ROOT', osp.join(osp.dirname(__file__), '..', '..',
                                    'shared', 'data')))
    p.add_argument('--out', help='also write the table to this file')
    args = p.parse_args(argv)
    from mmengine.logging import MMLogger
    MMLogger.get_instance('mmgal_bad_inputs', log_level='ERROR')
    tmp = tempfile.mkdtemp()
    rows = []
    try:
        for where, what, fn in cases(args.data_root, tmp):
            rows.append((where, what, outcome(fn).replace(tmp, '<tmp>')))
    finally:
        shutil.rmtree(tmp)
    lines = ['| where | bad input | what it gets now |', '|---|---|---|']
    for where, what, got in rows:
        got = got.replace('|', '\\|')
        lines.append(f'| {where} | `{what}` | {got} |')
    lines += ['', 'Run by the tests named (a training run each):', '',
              '| bad input | what it gets now | test |', '|---|---|---|']
    for what, got, test in RUN_ELSEWHERE:
        lines.append(f'| `{what}` | {got} | `{test}` |')
    table = '\n'.join(lines)
    print(table)
    if args.out:
        with open(args.out, 'w') as f:
            f.write(table + '\n')
    return rows


if __name__ == '__main__':
    main()
