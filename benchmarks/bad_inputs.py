#!/usr/bin/env python
"""Feed mmgal bad input and print what each case gets
(docs/results/robustness.md).

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
# tools/: the Table V harness (table_v) and train.py's helpers.
sys.path.insert(0, osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))),
                            'tools'))

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
    ("a checkpoint whose meta['config'] is Python code, to tools/train.py "
     '--resume', "nothing runs; logged: ignored the checkpoint's "
     "meta['config'] (str, N characters): mmengine would execute it; "
     'training goes on', 'tests/test_tools/test_faults.py::'
     'test_a_checkpoint_cannot_run_code_on_resume'),
    ('the lr x1e7 at epoch 3, max_keep_ckpts=2',
     'NonFiniteTrainingError: training diverged: the loss is nan at '
     'iteration N (epoch E); the last checkpoint with finite weights is '
     'epoch K (kept); exit 1', 'tests/test_tools/test_faults.py::'
     'test_a_diverging_run_stops_naming_the_iteration_and_keeps_its_'
     'checkpoint'),
    ("the same with custom_hooks=[dict(type='TrainingGuardHook', "
     'stop=False)]', 'trains on; one error logged at the first non-finite '
     'loss, GAL warns of its non-finite steps; the last finite checkpoint '
     "is kept out of max_keep_ckpts' rotation",
     'tests/test_tools/test_faults.py::'
     'test_with_stop_off_the_last_finite_checkpoint_survives_the_rotation'),
    ('SIGSTOP one rank of dist_train.sh CONFIG 2',
     'the other rank fails its collective after env_cfg.dist_cfg.timeout '
     '(tools/train.py: 600 s where the config sets none; 20 s in the '
     'test), the run ends non-zero', 'tests/test_tools/test_faults.py::'
     'test_a_stalled_rank_stops_the_run_after_the_timeout'),
    ("GALHook with priority='LOW' (after the LoggerHook)",
     "ValueError: GALHook: priority='LOW' runs after the LoggerHook "
     "('BELOW_NORMAL') ...", 'tests/test_engine/test_gal_hook.py::'
     'test_a_galhook_below_the_logger_is_refused'),
    ('a 0-byte or truncated checkpoint to --resume or load_from',
     'exit: tools/train.py: --resume: checkpoint PATH is empty (0 bytes) '
     '... / is not a complete torch checkpoint ...',
     'tests/test_tools/test_faults.py::'
     'test_an_empty_or_truncated_checkpoint_is_named_before_training'),
    ('an empty class folder, or a 0-byte PNG, in an image-folder dataset',
     'exit before training: train_dataloader.dataset: 1 class folder(s) '
     'hold no image: PATH ... / 1 empty (0-byte) image file(s): PATH',
     'tests/test_tools/test_faults.py::'
     'test_image_folder_faults_are_named_before_training'),
    ('a checkpoint written onto a full disk', 'OSError; the previous '
     'file stays whole (written to a temporary name, then renamed)',
     'tests/test_tools/test_faults.py::'
     'test_a_full_disk_leaves_the_previous_checkpoint_whole'),
    ('tools/regression.py --runs 1', 'exit 2: --runs must be >= 2: the '
     'table compares the arms with a t-test ...',
     'tests/test_regression/test_bad_input.py'),
    ('tools/regression.py --out FILE', 'exit 2 before training: --out '
     "'FILE' is a file; give a folder ...",
     'tests/test_regression/test_bad_input.py'),
    ('tools/regression.py --dataset all with california_housing.csv '
     'missing', "exit before any training: regression data file "
     "'california_housing.csv' not found ...",
     'tests/test_regression/test_bad_input.py'),
    ("a checkpoint's runtime_info with best_ckpt=<a folder outside the "
     'run>, best_score=-1, keep_ckpt_ids=[1..7], last_ckpt=/etc/passwd, '
     "cfg=<Python code>, meta['seed']=2**70, resumed with save_best=auto "
     'and max_keep_ckpts=1', "nothing outside the run and none of the "
     "user's epoch_3..7.pth deleted; each field ignored or replaced with a "
     "logged line; the new checkpoints carry the run's own config",
     'tests/test_tools/test_faults.py::'
     'test_a_resumed_run_trusts_no_path_or_config_in_runtime_info'),
    ('a divergence with max_keep_ckpts=1 (stop=True and stop=False)',
     'a finite checkpoint is on disk afterwards and the messages name it '
     '(the weights are checked before mmengine rotates)',
     'tests/test_tools/test_faults.py::'
     'test_with_one_kept_checkpoint_a_finite_one_survives_the_divergence'),
    ('tools/train.py --cfg-options default_hooks.gal=None',
     'exit before anything is built: default_hooks.gal=None: mmengine '
     'switches off only its own default hooks ... To train without GAL, '
     'set optim_wrapper.enabled=False ...',
     'tests/test_tools/test_train_tool.py::'
     'test_switching_off_gals_default_hook_by_none_is_named'),
    ('an image folder of 1 class for a 10-class head; 3 for a 2-class '
     'head', 'UserWarning: ... has 1 class folder(s) while '
     'model.head.num_classes is 10 ... accuracy is 100 % and meaningless; '
     'exit before training: ... has 3 class folders but '
     'model.head.num_classes is 2 ...', 'tests/test_tools/test_faults.py::'
     'test_a_class_count_other_than_the_heads_is_named'),
    ('TORCHINDUCTOR_CACHE_DIR=<a file>, tools/train.py',
     "exit 1: TORCHINDUCTOR_CACHE_DIR='FILE' is a file, not a folder ...",
     'tests/test_tools/test_faults.py::'
     'test_a_compile_cache_that_is_a_file_is_named'),
    ('dist_train.sh CONFIG 0', "exit 2: NPROC must be a whole number >= 1 "
     "..., got '0'", 'tests/test_tools/test_dist_train.py'),
    ('tools/regression.py --threads 0 / --seed -5', 'exit 2: --threads '
     'must be >= 1, got 0 / --seed must be in [0, 2**32) ...',
     'tests/test_regression/test_bad_input.py'),
    ('tools/regression.py on a Boston file with a constant target / a '
     'value of 3e20', 'exit 1: the target is 24 in every row: R^2 is '
     'undefined ... / line 8 (data row 7): feature 4 is 3e+20; values of '
     '1e+18 or more overflow float32 training ...',
     'tests/test_regression/test_bad_input.py'),
    ('benchmarks: digits_quality.py --seeds 1, mnist1d_quality.py --seeds '
     '1, toy3d.py --seeds 0, overhead.py --repeats 0',
     'exit 2 (a usage error naming the flag); nothing written',
     'tests/test_benchmarks/test_benchmarks.py'),
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
    from make_digits import make_digits_images
    from mmgal.engine import GALOptimWrapper
    from table_v import load_boston, load_california, make_protocol

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

    for kw in (dict(adjuster_lr_ratio=0.5), dict(gal_dtype='float64'),
               dict(remainder='taylor'), dict(sigam=0.1),
               dict(preset='paper'),
               dict(adjuster_optimizer=dict(type='Adam', lr=float('nan'))),
               dict(tentative_lr=0), dict(tentative_lr=float('inf')),
               dict(tentative_lr=float('nan')), dict(loss_scale=0),
               dict(loss_scale=-1), dict(enabled='False'),
               dict(seed=2**70), dict(sigma=0.9), dict(fast='graph'),
               dict(remainder='closed'), dict(normalize='layer')):
        text = ', '.join(f'{k}={v!r}' for k, v in kw.items())
        yield 'GALOptimWrapper', text, lambda kw=kw: wrapper(**kw)

    def built(**kw):
        w = GALOptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1),
                            arch=(8, ), **kw)
        w.setup_adjuster(4)

    yield ('GALOptimWrapper', "adjuster_optimizer=dict(type='Adam', "
           'betas=0.9)', lambda: built(adjuster_optimizer=dict(
               type='Adam', betas=0.9)))
    yield ('GALOptimWrapper', 'loss_scale=dict(init_scale=inf)',
           lambda: wrapper(loss_scale=dict(init_scale=float('inf'))))
    if not torch.cuda.is_available():
        yield ('GALOptimWrapper', "dtype='float16' (no CUDA)",
               lambda: wrapper(dtype='float16'))

    def one_class_head():
        from mmgal.adapters import build_adapter
        from mmpretrain.registry import MODELS
        from mmpretrain.structures import DataSample
        head = MODELS.build(dict(type='mmpretrain.LinearClsHead',
                                 num_classes=1, in_channels=8))
        w = GALOptimWrapper(torch.optim.SGD(head.parameters(), lr=0.1),
                            arch=(8, ), fast='eager')
        w.setup_adjuster(1)
        build_adapter(head).install(w.gal_forward)
        head.loss((torch.randn(4, 8, requires_grad=True), ),
                  [DataSample().set_gt_label(0) for _ in range(4)])
        return f"nonfinite={w.pop_gal_stats()['nonfinite']:g}"

    yield ('GALHook', 'a 1-class softmax head (g = 0)', one_class_head)

    def detr_adapter_on_a_classifier():
        from mmgal.adapters import build_adapter
        from mmpretrain.registry import MODELS
        head = MODELS.build(dict(type='mmpretrain.LinearClsHead',
                                 num_classes=4, in_channels=8))
        build_adapter(head, 'DETRHeadAdapter')

    yield ('GALHook', "adapter='DETRHeadAdapter' on a classification head",
           detr_adapter_on_a_classifier)

    def checkpoint_file(content):
        from mmgal.utils import check_checkpoint_file
        path = osp.join(tmp, 'epoch_1.pth')
        with open(path, 'wb') as f:
            f.write(content)
        return lambda: check_checkpoint_file(path, '--resume')

    yield ('tools/train.py', 'a 0-byte checkpoint to --resume',
           checkpoint_file(b''))
    yield ('tools/train.py', 'a truncated checkpoint to --resume',
           checkpoint_file(b'PK\x03\x04 cut'))

    def crafted_meta():
        from mmgal.utils import strip_executable_meta
        ckpt = dict(meta=dict(config="__import__('os').system('id')",
                              epoch=1))
        strip_executable_meta(ckpt)
        return sorted(ckpt['meta'])

    yield ('checkpoint', "meta['config'] holding Python code (on load)",
           crafted_meta)

    def image_folder(kind):
        from data_check import check_image_folder
        root = osp.join(tmp, f'folder_{kind}', 'train')
        for label in ('0', '1'):
            os.makedirs(osp.join(root, label))
            if kind == 'empty_class' and label == '1':
                continue
            with open(osp.join(root, label, 'a.png'), 'wb') as f:
                f.write(b'' if kind == 'zero_byte' else b'\x89PNG')
        return lambda: check_image_folder(root, 'train_dataloader.dataset')

    yield ('tools/train.py', 'an empty class folder',
           image_folder('empty_class'))
    yield ('tools/train.py', 'a 0-byte PNG', image_folder('zero_byte'))

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

    def resumed_lr():
        state = trained(adjuster_optimizer=dict(type='Adam', lr=1e-3))
        resume(state, arch=(8, ),
               adjuster_optimizer=dict(type='Adam', lr=0.05))

    yield ('checkpoint', 'resume with the adjuster Adam lr 1e-3 -> 0.05',
           resumed_lr)

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
    yield ('regression', 'California CSV with the header only',
           california(lambda ls: ls[:1], 'header'))

    def boston(rows, name):
        folder = osp.join(tmp, name)
        os.makedirs(folder)
        lines = open(osp.join(data_root, 'boston_housing.data')).read(
        ).splitlines()[:rows]
        with open(osp.join(folder, 'boston_housing.data'), 'w') as f:
            f.write('\n'.join(lines) + ('\n' if lines else ''))
        return lambda: load_boston(folder) and None

    yield 'regression', 'an empty Boston file', boston(0, 'empty')
    yield 'regression', 'a 2-row Boston file', boston(2, 'two')

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
