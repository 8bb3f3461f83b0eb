"""tools/ab_test.py: arms over paired seeds, resumable, and bad input named
before anything trains."""
import json
import os
import os.path as osp

import pytest
from mm_helpers import DIGITS_BASELINE, DIGITS_GAL

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
import ab_test  # noqa: E402


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
    assert '[ab_test] gal seed 1 epoch 1: accuracy/top1' in out
    report = (work / 'report.md').read_text()
    for row in ('| baseline |', '| gal |', '| frozen |', '| gal - baseline |',
                '| gal - frozen |'):
        assert row in report
    signals = [runs['gal'][s]['signals'] for s in (0, 1)]
    frozen = [runs['frozen'][s]['signals'] for s in (0, 1)]
    # The gal arm's adjuster moved; the frozen arm's did not.
    assert all(s['gal/adjuster_drift'] > 0 for s in signals)
    assert all(s['gal/adjuster_drift'] == 0 for s in frozen)
    assert runs['baseline'][0]['signals'] == {}  # GAL off: no gal/* logged
    results = json.loads((work / 'results.json').read_text())
    assert results['meta']['seeds'] == [0, 1]
    assert set(results['meta']['tests']) == {'gal_vs_baseline',
                                             'gal_vs_frozen'}
    assert (work / 'curves.png').stat().st_size > 0
    # Again: every run is read, none trained; the same report.
    stamps = {p: os.stat(p).st_mtime for p in work.glob('*_seed*/done.json')}
    ab_test.main(args)
    assert {p: os.stat(p).st_mtime for p in stamps} == stamps
    assert (work / 'report.md').read_text() == report


@pytest.mark.slow
def test_an_interrupted_run_resumes_from_its_last_checkpoint(digits_root,
                                                             tmp_path):
    work = tmp_path / 'ab'
    args = [DIGITS_GAL, '--seeds', '2', '--arms', 'gal', 'baseline',
            '--work-dir', str(work), '--cfg-options'] + shrink(digits_root,
                                                               epochs=2)
    first = ab_test.main(args)
    run = work / 'gal_seed0'
    # As if killed during epoch 2: its checkpoint of epoch 1 is the last.
    (run / 'done.json').unlink()
    (run / 'epoch_2.pth').unlink()
    (run / 'last_checkpoint').write_text(str(run / 'epoch_1.pth'))
    again = ab_test.main(args)
    log = (run / 'ab_test_train.log').read_text()
    assert 'resumed epoch: 1' in log
    assert again['gal'][0]['final'] == first['gal'][0]['final']
    assert (run / 'epoch_2.pth').exists()


@pytest.mark.parametrize('argv, match', [
    ([DIGITS_BASELINE], r'is not a GAL config \(its optim_wrapper\.type is '
     r"'OptimWrapper'\): add the README's lines"),
    ([DIGITS_GAL, '--metric', 'accuracy/top3'],
     r"--metric 'accuracy/top3' is not logged by the val evaluator; it "
     r'logs: accuracy/top1'),
    ([DIGITS_GAL, '--cfg-options', 'optim_wrapper.enabled=False'],
     r'switches GAL off'),
])
def test_bad_input_is_named_before_anything_trains(tmp_path, argv, match):
    work = tmp_path / 'ab'
    with pytest.raises(SystemExit, match=match):
        ab_test.main(argv[:1] + ['--work-dir', str(work)] + argv[1:])
    assert not any(work.glob('*_seed*'))


def test_fewer_than_two_seeds_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        ab_test.main([DIGITS_GAL, '--seeds', '1', '--work-dir',
                      str(tmp_path)])
    assert err.value.code == 2
    assert '--seeds must be >= 2' in capsys.readouterr().err


def test_a_work_dir_of_another_config_is_not_overwritten(tmp_path):
    work = tmp_path / 'ab'
    work.mkdir()
    manifest = dict(config='/elsewhere/other.py', metric='accuracy/top1',
                    gpus=1, configs={})
    (work / 'manifest.json').write_text(json.dumps(manifest))
    with pytest.raises(SystemExit, match=r'holds runs of another config or '
                       r'other arguments \(config, configs differ'):
        ab_test.main([DIGITS_GAL, '--work-dir', str(work)])
    assert json.loads((work / 'manifest.json').read_text()) == manifest


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
    assert set(runs) == {'gal', 'frozen'}
    assert '| gal - frozen |' in (work / 'report.md').read_text()
    assert all(runs['gal'][s]['signals']['gal/adjuster_drift'] > 0
               for s in (0, 1))
