"""tools/ab_test.py: arms over paired seeds, resumable after a kill, a line
per run and epoch, and bad input named before anything trains."""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mm_helpers import DIGITS_BASELINE, DIGITS_GAL, digits_cfg

import ab_test
from ab_testing.arms import load_arms, metric_keys, prepare_work_dir
from ab_testing.runs import (Progress, _train, summarize_run,
                             train_command)

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
THREADS = torch.get_num_threads()


def shrink(root, epochs=1):
    return [f'{k}.dataset.data_root={root}' for k in (
        'train_dataloader', 'val_dataloader', 'test_dataloader')] + [
        'train_dataloader.dataset.indices=48',
        'val_dataloader.dataset.indices=32', f'train_cfg.max_epochs={epochs}',
        'model.backbone.base_channels=8', 'model.head.in_channels=64',
        'default_hooks.logger.interval=1']


@pytest.mark.slow
def test_three_arms_over_two_seeds_report_and_a_second_call_trains_nothing(
        digits_root, tmp_path, capsys):
    work = tmp_path / 'ab'
    args = [DIGITS_GAL, '--seeds', '2', '--work-dir', str(work),
            '--cfg-options'] + shrink(digits_root)
    runs = ab_test.main(args)
    assert set(runs) == {'baseline', 'gal', 'frozen'}
    out = capsys.readouterr().out
    assert '[ab_test] gal seed 1 epoch 1/1: accuracy/top1' in out
    report = (work / 'report.md').read_text()
    for row in ('| baseline |', '| gal |', '| frozen |', '**Verdict**',
                '| gal - baseline (final) |', '| gal - frozen (final) |',
                '| gal - frozen (best) |', '(higher is better)',
                'mmpretrain 1.2.0'):
        assert row in report
    # Each seed is shared by the arms: the same model and first batch give
    # the same loss before the first update; another seed another one.
    first = {(arm, s): runs[arm][s]['loss'][0] for arm in runs for s in (0, 1)}
    for s in (0, 1):
        assert first['gal', s] == first['baseline', s] == first['frozen', s]
    assert first['gal', 0] != first['gal', 1]
    signals = [runs['gal'][s]['signals'] for s in (0, 1)]
    frozen = [runs['frozen'][s]['signals'] for s in (0, 1)]
    # The gal arm's adjuster moved; the frozen arm's did not.
    assert all(s['gal/adjuster_drift'] > 0 for s in signals)
    assert all(s['gal/adjuster_drift'] == 0 for s in frozen)
    assert runs['baseline'][0]['signals'] == {}  # GAL off: no gal/* logged
    results = json.loads((work / 'results.json').read_text())
    assert results['meta']['seeds'] == [0, 1]
    assert set(results['meta']['tests']) == {
        'gal_vs_baseline', 'gal_vs_frozen', 'gal_vs_baseline_best',
        'gal_vs_frozen_best'}
    assert (work / 'curves.png').stat().st_size > 0
    # Again: every run is read, none trained; the same report.
    stamps = {p: os.stat(p).st_mtime for p in work.glob('*_seed*/done.json')}
    ab_test.main(args)
    assert {p: os.stat(p).st_mtime for p in stamps} == stamps
    assert (work / 'report.md').read_text() == report
    assert '[ab_test]' not in capsys.readouterr().out


KILLER = '''
import os, signal
from mmengine.hooks import CheckpointHook
_after = CheckpointHook.after_train_iter
def after_train_iter(self, runner, *args, **kwargs):
    _after(self, runner, *args, **kwargs)
    if runner.epoch == 1 and runner.work_dir.endswith('gal_seed0'):
        os.kill(os.getpid(), signal.SIGKILL)  # in epoch 2's first iteration
CheckpointHook.after_train_iter = after_train_iter
'''


@pytest.mark.slow
def test_a_killed_run_resumes_from_its_last_checkpoint_to_the_same_model(
        digits_root, tmp_path, monkeypatch):
    cfg = digits_cfg(digits_root, str(tmp_path / 'unused'), n_train=96,
                     epochs=2)
    cfg.log_level = 'INFO'
    config = str(tmp_path / 'tiny_digits_gal.py')
    cfg.dump(config)
    work = tmp_path / 'ab'
    args = [config, '--seeds', '2', '--arms', 'gal', 'baseline',
            '--work-dir', str(work)]
    # The training process is killed (SIGKILL) during epoch 2.
    killer = tmp_path / 'killer'
    killer.mkdir()
    (killer / 'sitecustomize.py').write_text(KILLER)
    monkeypatch.setenv('PYTHONPATH', os.pathsep.join(
        [str(killer), os.environ.get('PYTHONPATH', '')]))
    with pytest.raises(SystemExit, match=r'(?s)the gal run of seed 0 failed '
                       r'\(exit -9\).*Run the same command again'):
        ab_test.main(args)
    run = work / 'gal_seed0'
    assert (run / 'epoch_1.pth').exists()
    assert not (run / 'epoch_2.pth').exists()
    assert not (run / 'done.json').exists()
    monkeypatch.delenv('PYTHONPATH')
    runs = ab_test.main(args)
    assert 'resumed epoch: 1' in (run / 'ab_test_train.log').read_text()
    assert runs['gal'][0]['val_steps'] == [1, 2]
    # The same run, never killed: the same weights after epoch 2.
    ref = tmp_path / 'ref'
    subprocess.run([sys.executable, osp.join(REPO, 'tools', 'train.py'),
                    str(work / 'gal.py'), '--work-dir', str(ref),
                    '--cfg-options', 'randomness.seed=0',
                    'optim_wrapper.seed=0'], check=True, capture_output=True)
    resumed = torch.load(run / 'epoch_2.pth', map_location='cpu',
                         weights_only=False)['state_dict']
    fresh = torch.load(ref / 'epoch_2.pth', map_location='cpu',
                       weights_only=False)['state_dict']
    assert resumed.keys() == fresh.keys()
    for key in fresh:
        torch.testing.assert_close(resumed[key], fresh[key], rtol=0, atol=0)


@pytest.mark.parametrize('argv, match', [
    ([DIGITS_BASELINE], r'is not a GAL config \(its optim_wrapper\.type is '
     r"'OptimWrapper'\): add the README's lines"),
    ([DIGITS_GAL, '--metric', 'accuracy/top3'],
     r"--metric 'accuracy/top3' is not logged by the val evaluator; it "
     r'logs: accuracy/top1'),
    ([DIGITS_GAL, '--cfg-options', 'default_hooks.gal=None'],
     r"has a GALOptimWrapper but no GALHook, which sets it up: add "
     r"default_hooks = dict\(gal=dict\(type='GALHook'\)\)"),
    ([DIGITS_GAL, '--cfg-options', 'val_evaluator.type=MyMetric'],
     r"the val evaluator \(MyMetric\) is not one whose keys this tool "
     r'knows: give the key to compare with --metric'),
    ([DIGITS_GAL, '--cfg-options', 'optim_wrapper.enabled=False'],
     r'switches GAL off'),
    ([DIGITS_GAL, '--cfg-options', "val_evaluator.type=SingleLabelMetric",
      '--metric', 'single-label/f1-score'],
     r"whether a higher or a lower 'single-label/f1-score' is better cannot "
     r'be told from its name: give --rule greater or --rule less'),
])
def test_bad_input_is_named_before_anything_trains(tmp_path, argv, match):
    work = tmp_path / 'ab'
    with pytest.raises(SystemExit, match=match):
        ab_test.main(argv[:1] + ['--work-dir', str(work)] + argv[1:])
    assert not work.exists()


def test_fewer_than_two_seeds_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        ab_test.main([DIGITS_GAL, '--seeds', '1', '--work-dir',
                      str(tmp_path)])
    assert err.value.code == 2
    assert '--seeds must be >= 2' in capsys.readouterr().err


def test_a_work_dir_of_another_config_is_not_overwritten(tmp_path):
    work = tmp_path / 'ab'
    work.mkdir()
    manifest = dict(config='/elsewhere/other.py', gpus=1, configs={})
    (work / 'manifest.json').write_text(json.dumps(manifest))
    with pytest.raises(SystemExit, match=r'holds runs of another config or '
                       r'other arguments \(config differ'):
        ab_test.main([DIGITS_GAL, '--work-dir', str(work)])
    assert json.loads((work / 'manifest.json').read_text()) == manifest


def test_a_work_dir_of_other_settings_is_refused_but_fewer_arms_are_not(
        tmp_path):
    work = str(tmp_path / 'ab')
    configs, _, _ = load_arms(DIGITS_GAL, None, ['baseline', 'gal'], None,
                              None)
    prepare_work_dir(work, DIGITS_GAL, 1, configs).close()
    before = open(osp.join(work, 'gal.py')).read()
    # The same runs, fewer arms, or another metric: the folder is reused.
    prepare_work_dir(work, DIGITS_GAL, 1, {'gal': configs['gal']}).close()
    changed, _, _ = load_arms(DIGITS_GAL, {'optim_wrapper.sigma': 0.5},
                              ['gal'], None, None)
    with pytest.raises(SystemExit, match=r'\(the gal arm differ'):
        prepare_work_dir(work, DIGITS_GAL, 1, changed)
    with pytest.raises(SystemExit, match=r'\(gpus differ'):
        prepare_work_dir(work, DIGITS_GAL, 2, configs)
    assert open(osp.join(work, 'gal.py')).read() == before


def test_a_work_dir_in_use_by_another_call_is_refused_until_it_ends(
        tmp_path):
    work = str(tmp_path / 'ab')
    configs, _, _ = load_arms(DIGITS_GAL, None, ['gal', 'frozen'], None,
                              None)
    held = prepare_work_dir(work, DIGITS_GAL, 1, configs)
    with pytest.raises(SystemExit, match=rf'{work} is in use by another '
                       rf'ab_test \(pid {os.getpid()} on .* since .*\): '
                       'wait for it to end'):
        ab_test.main([DIGITS_GAL, '--arms', 'gal', 'frozen', '--work-dir',
                      work])
    held.close()  # that call ended (or died: the lock goes with it)
    prepare_work_dir(work, DIGITS_GAL, 1, configs).close()


def test_the_report_names_the_threads_a_run_starts_with(monkeypatch):
    from ab_testing.report import environment
    from mmengine.config import Config
    torch.set_num_threads(3)  # this process's count is not the runs'
    monkeypatch.setenv('OMP_NUM_THREADS', '1')
    try:
        meta = environment(Config(dict(default_scope='mmpretrain')), 'cmd')
    finally:
        torch.set_num_threads(THREADS)
    assert meta['threads'] == 1
    assert meta['versions']['mmpretrain'] == '1.2.0'


def test_the_metric_keys_follow_the_evaluator_and_its_prefix():
    from mmengine.config import Config

    def keys(evaluator):
        return metric_keys(Config(dict(val_evaluator=evaluator)))

    assert keys(dict(type='Accuracy', topk=(1, 5))) == (
        ['accuracy/top1', 'accuracy/top5'], True)
    assert keys(dict(type='Accuracy', prefix='acc')) == (['acc/top1'], True)
    assert keys(dict(type='Accuracy', thrs=(0., 0.5)))[0] == [
        'accuracy/top1_thr-0.00', 'accuracy/top1_thr-0.50']
    assert keys(dict(type='SingleLabelMetric', average='micro'))[0] == [
        'single-label/precision_micro', 'single-label/recall_micro',
        'single-label/f1-score_micro']
    assert keys(dict(type='MultiLabelMetric', topk=3))[0] == [
        'multi-label/precision_top3', 'multi-label/recall_top3',
        'multi-label/f1-score_top3']
    assert keys(dict(type='MultiLabelMetric', thr=0.3, average='micro',
                     items=['f1-score']))[0] == [
        'multi-label/f1-score_thr-0.30_micro']
    assert keys(dict(type='mmdet.VOCMetric'))[0] == ['pascal_voc/mAP',
                                                     'pascal_voc/AP50']
    assert keys(dict(type='CocoMetric'))[0][0] == 'coco/bbox_mAP'
    # A metric this tool does not know: the list is not complete, and a
    # --metric outside it is taken (and checked at the first validation).
    assert keys([dict(type='Accuracy'), dict(type='MyMetric')]) == (
        ['accuracy/top1'], False)
    configs, metric, rule = load_arms(
        DIGITS_GAL, {'val_evaluator': [dict(type='Accuracy'),
                                       dict(type='MyMetric')]},
        ['gal', 'baseline'], 'my/error', 'less')
    assert (metric, rule) == ('my/error', 'less')


def _samples(multi_label: bool, n: int = 8, classes: int = 4) -> list:
    gen = torch.Generator().manual_seed(0)
    return [dict(pred_score=torch.rand(classes, generator=gen),
                 gt_label=torch.tensor([i % classes]), num_classes=classes,
                 gt_label_difficult=[],
                 **({'gt_score': (torch.rand(classes, generator=gen) > .5)
                     .float()} if multi_label else {})) for i in range(n)]


@pytest.mark.parametrize('evaluators, multi_label', [
    ([dict(type='Accuracy', topk=(1, 2))], False),
    ([dict(type='Accuracy', thrs=(0., 0.5))], False),
    ([dict(type='SingleLabelMetric'),
      dict(type='SingleLabelMetric', average='micro', prefix='sl')], False),
    ([dict(type='MultiLabelMetric', topk=2),
      dict(type='MultiLabelMetric', thr=0.3, average='micro'),
      dict(type='AveragePrecision')], True),
    ([dict(type='VOCMultiLabelMetric'),
      dict(type='VOCMultiLabelMetric', average='micro'),
      dict(type='VOCAveragePrecision')], True),
])
def test_the_keys_known_before_training_are_those_mmpretrain_logs(
        evaluators, multi_label):
    from mmengine.config import Config
    from mmengine.evaluator import Evaluator
    # Scoped types: no default scope set for the tests after this one.
    evaluators = [dict(ev, type='mmpretrain.' + ev['type'])
                  for ev in evaluators]
    evaluator = Evaluator([dict(ev) for ev in evaluators])
    evaluator.process(_samples(multi_label))
    logged = list(evaluator.evaluate(8))
    assert metric_keys(Config(dict(val_evaluator=evaluators))) == (logged,
                                                                   True)


def test_a_users_config_with_the_readme_lines_has_its_arms(tmp_path):
    """The README's lines over MMPretrain's stock VGG-16 VOC config: its
    three evaluators' keys, the first one the default, as mmengine's
    save_best='auto' takes it."""
    from mm_helpers import readme_snippet, with_base
    path = tmp_path / 'vgg_voc_gal.py'
    path.write_text(with_base(readme_snippet(),
                              'mmpretrain::vgg/vgg16_8xb16_voc.py'))
    with pytest.raises(SystemExit, match=r"it logs: multi-label/precision, "
                       r'multi-label/recall, multi-label/f1-score, '
                       r'multi-label/precision_micro, multi-label/recall_'
                       r'micro, multi-label/f1-score_micro, multi-label/mAP'):
        load_arms(str(path), None, ['gal', 'baseline'], 'multi-label/AP',
                  None)
    configs, metric, rule = load_arms(str(path), None, ['gal', 'baseline'],
                                      None, None)
    assert (metric, rule) == ('multi-label/precision', 'greater')
    assert configs['baseline'].optim_wrapper.enabled is False
    assert load_arms(str(path), None, ['gal', 'frozen'], 'multi-label/mAP',
                     None)[1:] == ('multi-label/mAP', 'greater')


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


def test_the_verdict_reads_the_tests_by_the_rule_and_the_noise_control():
    from ab_testing.report import verdict

    def test(diff, p):
        return dict(diff=diff, low=diff - 1, high=diff + 1, t=2.0, p=p)

    text = verdict({'gal_vs_baseline': test(0.5, 0.01),
                    'gal_vs_frozen': test(0.1, 0.4)}, 'greater', 'acc')
    assert text.startswith('**Verdict** (final `acc`, paired t-tests at '
                           '0.05): gal vs baseline: better (mean difference '
                           '+0.5, 95 % interval -0.5 to +1.5, p = 0.01); '
                           'gal vs frozen: no significant difference')
    assert 'not shown to come from what the adjuster learns' in text
    # A lower error is better: the same difference, the other way.
    text = verdict({'gal_vs_baseline': test(0.5, 0.01)}, 'less', 'err')
    assert 'gal vs baseline: worse' in text and 'frozen' not in text
    text = verdict({'gal_vs_baseline': test(-0.5, 0.01),
                    'gal_vs_frozen': test(-0.4, 0.02)}, 'less', 'err')
    assert 'baseline: better' in text and 'frozen: better' in text
    assert 'not shown' not in text


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


@pytest.mark.slow
def test_a_detr_config_is_compared_on_its_coco_metric(tiny_coco, tmp_path):
    """An MMDetection config: the default metric is CocoMetric's
    coco/bbox_mAP, read from each run's scalars."""
    from mm_helpers import shrink_detector
    from mmengine.config import Config
    root, ann = tiny_coco
    cfg = shrink_detector(
        Config.fromfile(osp.join(REPO, 'configs', 'mmdet', 'detr',
                                 'detr_r50_8xb2-150e-gal_coco.py')),
        root, ann, str(tmp_path / 'unused'), epochs=1)
    path = tmp_path / 'tiny_detr_gal.py'
    cfg.dump(str(path))
    work = tmp_path / 'ab'
    runs = ab_test.main([str(path), '--seeds', '2', '--arms', 'gal',
                         'frozen', '--work-dir', str(work)])
    results = json.loads((work / 'results.json').read_text())
    assert results['meta']['metric'] == 'coco/bbox_mAP'
    assert 'mmdet' in results['meta']['versions']
    assert set(runs) == {'gal', 'frozen'}
    assert '| gal - frozen (final) |' in (work / 'report.md').read_text()
    assert all(runs['gal'][s]['signals']['gal/adjuster_drift'] > 0
               for s in (0, 1))


def test_the_gal_configs_of_each_family_have_their_arms_and_a_metric():
    """One GAL config per folder of configs/ (MMPretrain's CIFAR,
    ImageNet and digits, MMDetection's DETR, Deformable DETR and DINO, the
    digits ablations)."""
    import glob
    families = {}
    for path in sorted(glob.glob(osp.join(REPO, 'configs', '*', '*',
                                          '*gal*.py'))):
        families.setdefault(osp.dirname(path), path)
    assert len(families) == 7, families
    for path in families.values():
        configs, metric, rule = load_arms(path, None, ['gal', 'baseline',
                                                       'frozen'], None, None)
        assert metric in ('accuracy/top1', 'coco/bbox_mAP'), path
        assert rule == 'greater'
        assert configs['baseline'].optim_wrapper.enabled is False
        assert configs['frozen'].optim_wrapper.adjuster_optimizer == dict(
            type='SGD', lr=0.0)
        assert configs['gal'].optim_wrapper.get('enabled', True) is True
