"""tools/ab_testing/report.py: what the report says of the runs."""
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
