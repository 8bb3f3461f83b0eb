"""tools/ab_testing/report.py: what the report says of the runs."""
import pytest
import torch

THREADS = torch.get_num_threads()


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


def test_the_verdict_reads_the_tests_by_the_rule_and_the_noise_control():
    from ab_testing.report import verdict

    def test(diff, p):
        return dict(diff=diff, low=diff - 1, high=diff + 1, t=2.0, p=p)

    text = verdict({'gal_vs_baseline': test(0.5, 0.01),
                    'gal_vs_frozen': test(0.1, 0.4)}, 'greater', 'acc')
    assert text.startswith(
        '**Verdict** (final `acc`, paired t-tests, Holm-adjusted over 2 '
        'comparison(s), at 0.05): gal vs baseline: better (mean difference '
        '+0.5, 95 % interval -0.5 to +1.5, p = 0.01, Holm 0.02); gal vs '
        'frozen: no significant difference')
    assert 'not shown to come from what the adjuster learns' in text
    # A lower error is better: the same difference, the other way.
    text = verdict({'gal_vs_baseline': test(0.5, 0.01)}, 'less', 'err')
    assert 'gal vs baseline: worse' in text and 'frozen' not in text
    # p = 0.03 twice: 0.06 for the first after Holm, so neither stands.
    text = verdict({'gal_vs_baseline': test(-0.5, 0.03),
                    'gal_vs_frozen': test(-0.4, 0.03)}, 'less', 'err')
    assert text.count('no significant difference') == 2
    text = verdict({'gal_vs_baseline': test(-0.5, 0.01),
                    'gal_vs_frozen': test(-0.4, 0.02)}, 'less', 'err')
    assert 'baseline: better' in text and 'frozen: better' in text
    assert 'not shown' not in text


def test_holm_adjusts_step_down_and_keeps_the_order():
    from ab_testing.report import holm
    assert holm([0.04, 0.01, 0.03]) == pytest.approx([0.06, 0.03, 0.06])
    assert holm([0.5]) == [0.5]
    assert holm([0.6, 0.9]) == [1.0, 1.0]
