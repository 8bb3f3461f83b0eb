"""tools/ab_test.py end to end: arms over paired seeds, resumable after a
kill, and bad input named before anything trains or anything is
overwritten. Its parts: test_ab_testing_{arms,runs,report}.py."""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mm_helpers import DIGITS_BASELINE, DIGITS_GAL, digits_cfg

import ab_test
from ab_testing.arms import load_arms, prepare_work_dir

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


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
