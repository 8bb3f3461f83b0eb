"""tools/ab_testing/arms.py: a GAL config's arms, the val keys known
before training, the rule, and the work folder's manifest."""
import os.path as osp

import pytest
import torch
from mm_helpers import DIGITS_GAL

from ab_testing.arms import load_arms, metric_keys, prepare_work_dir

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


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
