"""tools/ab_testing/runs.py: progress lines and the time left, a run's
summary by the rule, the training command, and a run stopped at a
validation without the metric."""
import json
import os.path as osp
import sys

import pytest
from mm_helpers import DIGITS_GAL

from ab_testing.arms import load_arms
from ab_testing.runs import Progress, _train, summarize_run, train_command

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


LOG = [
    'Epoch(train) [1][2/4]  lr: 5.0e-02  eta: 0:00:03  loss: 2.0',
    'Epoch(train) [1][4/4]  lr: 5.0e-02  eta: 0:00:02  loss: 1.9',
    'Epoch(train) [2][2/4]  lr: 5.0e-02  eta: 0:00:01  loss: 1.8',
    'Epoch(val) [2][ 5/10]    eta: 0:00:00  time: 0.01',
    'Epoch(val) [2][10/10]    accuracy/top1: 41.5000  data_time: 0.0  '
    'time: 0.01',
]


def test_a_progress_line_per_epoch_with_the_metric_so_far_and_time_left(
        monkeypatch):
    import ab_testing.runs as runs_module
    clock = [100.0]
    monkeypatch.setattr(runs_module.time, 'perf_counter', lambda: clock[0])
    progress = Progress('accuracy/top1', max_epochs=3, to_train=2)
    progress.start('gal', 1, index=3, total=4)
    clock[0] += 60  # a minute into the first run this call trains
    lines = [progress.feed(line) for line in LOG]
    assert lines[:2] == [None, None]
    # Epoch 1 had no validation: its line, when epoch 2 begins, says so.
    assert lines[2].startswith('[ab_test] gal seed 1 epoch 1/3: '
                               'accuracy/top1 - (run 3/4, about ')
    assert lines[3] is None  # a validation's progress, not its summary
    # 1.5 of 3 epochs in 60 s; this run's other half and one run more to
    # train: 1.5 runs' worth at 120 s each.
    assert lines[4] == ('[ab_test] gal seed 1 epoch 2/3: accuracy/top1 '
                        '41.5000 (run 3/4, about 3 min left)')


def test_a_run_by_iteration_has_a_line_per_validation_with_its_iteration():
    progress = Progress('accuracy/top1', max_epochs=None, to_train=1)
    progress.start('frozen', 2, index=1, total=1)
    assert progress.feed('Iter(train) [ 400/1000]  lr: 0.1  loss: 1.0') \
        is None
    val = 'Iter(val) [10/10]    accuracy/top1: 12.5000  time: 0.01'
    # Its first training line is where it started (a resumed run's too):
    # no training measured yet.
    assert progress.feed(val) == ('[ab_test] frozen seed 2 iter 400/1000: '
                                  'accuracy/top1 12.5000 (run 1/1, time '
                                  'left not known yet)')
    progress.feed('Iter(train) [ 500/1000]  lr: 0.1  loss: 0.9')
    assert progress.feed(val).startswith(
        '[ab_test] frozen seed 2 iter 500/1000: accuracy/top1 12.5000 '
        '(run 1/1, about ')


def test_a_resumed_run_counts_only_its_own_epochs_towards_the_rate():
    progress = Progress('accuracy/top1', max_epochs=4, to_train=1)
    progress.start('gal', 0, index=1, total=2)
    progress.feed('Epoch(train) [3][2/2]  loss: 1.0')  # resumed at epoch 2
    assert (progress.first, progress.fraction) == (0.5, 0.75)
    progress.finish()
    assert progress.trained == 0.25 and progress.to_train == 0


def test_a_validation_without_the_metric_stops_the_run_and_lists_its_keys(
        tmp_path, capsys):
    line = ('Epoch(val) [1][1/1]    my/error: 0.25  my/loss: 1.5  '
            'data_time: 0.01  time: 0.02')
    script = ('import time; print(%r, flush=True); time.sleep(60)' % line)
    progress = Progress('my/accuracy', max_epochs=2, to_train=1)
    progress.start('gal', 0, 1, 2)
    with pytest.raises(SystemExit, match=r"does not log 'my/accuracy'; it "
                       r'logs: my/error, my/loss\. Give one of those'):
        _train([sys.executable, '-c', script], str(tmp_path / 'log'),
               progress, 'my/accuracy')
    # The training process is stopped at once, not left to its minute.
    assert (tmp_path / 'log').read_text().strip() == line


def test_a_run_with_several_processes_goes_through_dist_train_and_resumes(
        tmp_path):
    run = tmp_path / 'gal_seed3'
    run.mkdir()
    cmd = train_command(str(tmp_path), 'gal', 3, str(run), gpus=4)
    assert cmd[:4] == ['bash', osp.join(REPO, 'tools', 'dist_train.sh'),
                       str(tmp_path / 'gal.py'), '4']
    assert cmd[-2:] == ['randomness.seed=3', 'optim_wrapper.seed=3']
    assert '--resume' not in cmd
    (run / 'epoch_1.pth').write_bytes(b'')
    assert '--resume' in train_command(str(tmp_path), 'gal', 3, str(run), 1)


def test_the_best_value_follows_the_rule_and_the_config(tmp_path):
    folder = tmp_path / 'run' / '20261207_000000' / 'vis_data'
    folder.mkdir(parents=True)
    rows = [dict(loss=2.0, iter=1, step=1), dict(err=5.0, step=1),
            dict(loss=1.0, iter=2, step=2), dict(err=3.0, step=2),
            dict(loss=0.5, iter=3, step=3), dict(err=4.0, step=3)]
    (folder / 'scalars.json').write_text(
        '\n'.join(json.dumps(r) for r in rows))
    less = summarize_run(str(tmp_path / 'run'), 'err', 'less')
    assert (less['final'], less['best']) == (4.0, 3.0)
    assert summarize_run(str(tmp_path / 'run'), 'err', 'greater')['best'] \
        == 5.0
    assert less['loss'] == [2.0, 1.0, 0.5]
    # Without --rule: the config's checkpoint rule for that key, else the
    # key's name as mmengine's CheckpointHook reads it.
    _, _, rule = load_arms(DIGITS_GAL, {'val_evaluator.type': 'MyMetric',
                                        'default_hooks.checkpoint.save_best':
                                        'my/error',
                                        'default_hooks.checkpoint.rule':
                                        'less'}, ['gal', 'frozen'],
                           'my/error', None)
    assert rule == 'less'
    assert load_arms(DIGITS_GAL, None, ['gal', 'frozen'], None, None)[2] \
        == 'greater'
