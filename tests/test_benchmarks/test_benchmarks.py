"""The benchmark and analysis scripts run and produce what they promise
(on tiny settings; the real runs are in docs/results)."""
import json
import math
import os.path as osp
import subprocess
import sys

import pytest

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(REPO, 'benchmarks'))

import analyze_logs  # noqa: E402
import overhead  # noqa: E402
import toy3d  # noqa: E402


def test_toy_problem_runs_both_arms_over_seeds_and_reproduces(tmp_path):
    args = ['--steps', '5', '--seeds', '2', '--out', str(tmp_path)]
    res = toy3d.main(args)
    assert len(res[('GD', 0, 'baseline')]['path']) == 6
    # Adjuster seeds give different GAL paths; GAL differs from plain GD.
    assert res[('GD', 0, 'GAL0')]['path'] != res[('GD', 0, 'GAL1')]['path']
    assert res[('GD', 0, 'GAL0')]['path'] != res[('GD', 0, 'baseline')][
        'path']
    for s in (0, 1):
        assert (tmp_path / f'toy3d_paths_start{s}.png').stat().st_size > 0
    table = (tmp_path / 'table.md').read_text()
    assert '| GD | 0.1 | (0.5, 0.5) |' in table
    # The recorded command reproduces the table.
    toy3d.main(args)
    assert (tmp_path / 'table.md').read_text() == table
    meta = json.loads((tmp_path / 'toy3d.json').read_text())['meta']
    assert meta['command'].endswith(' '.join(args))
    assert meta['threads'] == 1 and meta['seeds'] == [0, 1]
    # Which CPU kernels ran: the last bits depend on them.
    import torch
    assert meta['cpu_capability'] == torch.backends.cpu.get_cpu_capability()
    # The code that made it: this checkout's commit (a clean clone in CI).
    head = subprocess.run(['git', 'rev-parse', '--short=7', 'HEAD'],
                          cwd=REPO, capture_output=True, text=True)
    if head.returncode == 0:
        assert meta['commit'].split('+')[0] == head.stdout.strip()


def test_toy_function_matches_the_paper_formula():
    import torch
    z = torch.tensor([[0.3, -0.7]], dtype=torch.float64)
    x, y = 0.3, -0.7
    expected = (-math.sin(x**2) * math.cos(3 * y**2) * math.exp(-(x * y)**2)
                - math.exp(-(x + y)**2))
    assert float(toy3d.f(z)) == pytest.approx(expected)


def test_overhead_benchmark_prints_a_ratio_table(capsys):
    rows = overhead.main(['--case', 'mlp', '--iters', '1', '--repeats', '2',
                          '--warmup', '0', '--no-memory'])
    assert rows[0]['case'] == 'mlp'
    assert set(rows[0]['median_s']) == {'baseline', 'gal'}
    out = capsys.readouterr().out
    assert '| case | baseline ms/iter | GAL ms/iter | time ratio (median ' \
        'of paired repeats) | 95% interval | CPU target |' in out
    assert '| mlp |' in out


def test_overhead_window_is_calibrated_to_last_min_window():
    import time
    assert 3 <= overhead.calibrate_iters(lambda: time.sleep(0.01), 'cpu',
                                         0.05) <= 5
    # A fast step gets many iterations per window; a step longer than the
    # window is timed one at a time (adjacent pairs of the two arms).
    assert overhead.calibrate_iters(lambda: None, 'cpu', 0.05) > 1000
    assert overhead.calibrate_iters(lambda: time.sleep(0.02), 'cpu',
                                    0.001) == 1
    rows = overhead.main(['--case', 'mlp', '--repeats', '1', '--warmup', '0',
                          '--no-memory', '--min-window', '0.01'])
    assert rows[0]['iters'] >= 3


def test_overhead_counts_host_reads_per_step_in_both_arms():
    import torch
    x = torch.ones(3)

    def reads_twice():
        x.sum().item()
        bool(x.all())

    assert overhead.count_syncs(reads_twice, 'cpu', 3) == 2
    assert overhead.count_syncs(lambda: x.sum(), 'cpu', 3) == 0
    rows = overhead.main(['--case', 'mlp', '--iters', '1', '--repeats', '1',
                          '--warmup', '1', '--no-memory', '--sync-iters',
                          '1'])
    assert set(rows[0]['syncs']) == {'baseline', 'gal'}


def test_overhead_runs_the_dispatch_bound_case_through_the_runner(capsys):
    """The quick start's configs at 8x8, batch 16: each arm an iteration of
    its Runner's train loop (hooks, step, logging)."""
    rows = overhead.main(['--case', 'digits', '--iters', '1', '--repeats',
                          '2', '--warmup', '1', '--no-memory'])
    assert rows[0]['case'] == 'digits'
    assert rows[0]['syncs']['gal'] == rows[0]['syncs']['baseline']
    assert '| digits |' in capsys.readouterr().out


@pytest.mark.parametrize('args, match', [
    (['--case', 'mlp', '--repeats', '0'], '--repeats must be >= 1, got 0'),
    (['--case', 'mlp', '--warmup', '-1'], '--warmup must be >= 0, got -1'),
])
def test_overhead_refuses_counts_it_cannot_run(args, match, capsys):
    with pytest.raises(SystemExit) as err:
        overhead.main(args)
    assert err.value.code == 2 and match in capsys.readouterr().err


def test_toy_problem_refuses_zero_seeds(capsys):
    with pytest.raises(SystemExit) as err:
        toy3d.main(['--seeds', '0'])
    assert err.value.code == 2
    assert '--seeds must be >= 1, got 0' in capsys.readouterr().err


@pytest.mark.parametrize('script', ['digits_quality', 'mnist1d_quality'])
def test_quality_benchmarks_refuse_fewer_than_two_seeds(script):
    module = __import__(script)
    with pytest.raises(SystemExit) as err:
        module.main(['--seeds', '1'])
    assert err.value.code != 0


@pytest.mark.slow
@pytest.mark.parametrize('case', ['resnet18', 'detr', 'digits'])
def test_gal_adds_no_host_reads_to_a_training_step(case):
    """The benchmark's count, as a check: the GAL arm of a whole training
    step reads no more tensor values on the host than the baseline arm."""
    _, _, syncs, _ = overhead.time_case(case, 'cpu', False, iters=1,
                                        repeats=1, warmup=1, detr_size=64,
                                        sync_iters=1)
    assert syncs['gal'] == syncs['baseline'], syncs


def test_bad_inputs_get_errors_and_only_the_expected_cases_pass(
        data_root, tmp_path):
    import bad_inputs
    rows = bad_inputs.main(['--data-root', data_root, '--out',
                            str(tmp_path / 't.md')])
    passed = {what for _, what, got in rows if got.startswith('ok')}
    assert passed == {
        'sigma=np.float32(0.01)', 'sigma=0.9',
        'resume with adjuster_optimizer SGD -> Adam',
        'resume with the adjuster Adam lr 1e-3 -> 0.05',
        "meta['config'] holding Python code (on load)",
        'make_digits_images(DIR)', 'make_digits_images(DIR, seed=1) again',
        'a 1-class softmax head (g = 0)'
    }
    one_class = next(got for _, what, got in rows
                     if what == 'a 1-class softmax head (g = 0)')
    assert one_class == 'ok, returned nonfinite=0'
    warned = {what for _, what, got in rows if 'warning:' in got}
    assert warned == passed - {'sigma=np.float32(0.01)',
                               'make_digits_images(DIR)',
                               'a 1-class softmax head (g = 0)'}
    assert all('<tmp>' in got or '/tmp' not in got for _, _, got in rows)
    assert (tmp_path / 't.md').read_text().startswith('| where |')


def test_overhead_memory_child_reports_peak_rss():
    res = overhead.memory_case('mlp', 'cpu', False, 1, 0, 128)
    for arm in ('baseline', 'gal'):
        # The child's own peak: above what it held before its steps.
        assert res[arm]['peak'] >= res[arm]['above_start'] >= 0
    # GAL on a small MLP costs little memory (each arm is its own process).
    assert abs(res['gal']['peak'] - res['baseline']['peak']) < 200 * 2**20


def write_log(path, rows):
    path.parent.mkdir(parents=True)
    path.write_text('\n'.join(json.dumps(r) for r in rows) + '\n')


def test_analyze_logs_plots_the_paper_figures(tmp_path):
    rows = []
    for i in range(1, 6):
        rows.append({'lr': 0.1, 'loss': 2.0 / i, 'gal/remainder': 1e-4 / i,
                     'gal/cos_sim': 0.1, 'gal/adopt_rate': 0.9,
                     'gal/remainder_ratio': 1.0, 'gal/cos_init': 1 - i / 10,
                     'gal/adjuster_drift': i / 100,
                     'epoch': 1, 'iter': i, 'step': i})
    rows.append({'accuracy/top1': 90.0, 'step': 1})
    write_log(tmp_path / 'gal' / 'run' / 'vis_data' / 'scalars.json', rows)
    base = [{k: v for k, v in r.items() if not k.startswith('gal/')}
            for r in rows]
    write_log(tmp_path / 'base' / 'run' / 'vis_data' / 'scalars.json', base)
    written = analyze_logs.main([
        str(tmp_path / 'base'), str(tmp_path / 'gal'), '--legend',
        'baseline', 'GAL', '--out', str(tmp_path / 'out')
    ])
    names = sorted(osp.basename(p) for p in written)
    assert names == ['adopt_rate.png', 'learning.png', 'loss.png',
                     'remainder.png']
    log = analyze_logs.load_log(str(tmp_path / 'gal'))
    assert len(log['train']) == 5 and len(log['val']) == 1
    assert analyze_logs.val_metric([log]) == 'accuracy/top1'


def test_analyze_logs_missing_log_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match='no scalars.json under'):
        analyze_logs.main([str(tmp_path)])


@pytest.mark.slow
def test_gpu_session_script_writes_a_summary_and_one_archive(tmp_path):
    """benchmarks/gpu_session.sh, tried on the CPU (DEVICE/CASES): each
    command's rc in the summary with its table row, everything in one
    archive; a bad part is a usage error."""
    import os
    import subprocess
    import tarfile
    # A short mlp row (the flags ride along in CASES, as on the GPU).
    env = dict(os.environ, DEVICE='cpu', PYTHON=sys.executable,
               CASES='mlp --repeats 3 --warmup 1 --iters 20 --no-memory',
               OUT=str(tmp_path))
    script = osp.join(REPO, 'benchmarks', 'gpu_session.sh')
    res = subprocess.run(['bash', script, 'overhead', 'auto'], env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    summary = (tmp_path / 'overhead_auto.md').read_text()
    assert '- mlp: rc 0,' in summary
    assert '| mlp |' in summary
    with tarfile.open(tmp_path / 'overhead_auto.tar.gz') as tar:
        names = tar.getnames()
    assert 'overhead_auto/mlp_cpu_auto.json' in names
    assert 'overhead_auto/mlp.log' in names
    bad = subprocess.run(['bash', script, 'overhead', 'fused'], env=env,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and 'usage:' in bad.stderr


def test_remainder_precision_compares_the_methods_and_reproduces(
        data_root, tmp_path):
    import remainder_precision
    args = ['--epochs', '1', '--batches', '5', '--data-root', data_root,
            '--train-steps', '40', '--out', str(tmp_path)]
    rows = remainder_precision.main(args)
    motion = rows.pop('adjuster_motion')
    assert len(rows) == 4 and any(k.startswith('digits') for k in rows)
    for r in rows.values():
        # The closed form in float32 is accurate; the release's float32
        # difference is not, on these tasks.
        assert r['median_rel_error_exact'] < 1e-5
        assert r['median_rel_error_taylor'] > 100 * r[
            'median_rel_error_exact']
    release, row_norm, default = motion.values()
    # The release preset's |R| (its remainder in float32): the adjuster
    # barely moves.
    assert release['max_weight_change'] < 1e-6
    assert default['drift'] > 10 * row_norm['drift']
    table = (tmp_path / 'results.md').read_text()
    remainder_precision.main(args)
    assert (tmp_path / 'results.md').read_text() == table


def test_mnist1d_quality_runs_its_arms_and_reproduces(tmp_path):
    import mnist1d_quality
    args = ['--seeds', '2', '--steps', '20', '--models', 'mlp',
            '--optimizers', 'sgd', '--arms', 'baseline', 'gal', 'frozen',
            '--jobs', '1']
    rows = mnist1d_quality.main(args + ['--out', str(tmp_path / 'a')])
    assert [r['arm'] for r in rows] == ['baseline', 'gal', 'frozen']
    gal = next(r for r in rows if r['arm'] == 'gal')
    assert 'vs_baseline' in gal and 'vs_frozen' in gal
    again = mnist1d_quality.main(args + ['--out', str(tmp_path / 'b')])
    assert [r['runs'] for r in again] == [r['runs'] for r in rows]
    meta = json.loads((tmp_path / 'a' / 'results.json').read_text())
    assert meta['torch_threads_per_run'] == 1
    # A finished run is kept: the same command resumes without training.
    kept = (tmp_path / 'a' / 'runs.jsonl').read_text()
    mnist1d_quality.main(args + ['--out', str(tmp_path / 'a')])
    assert (tmp_path / 'a' / 'runs.jsonl').read_text() == kept


def test_adjuster_learning_shows_which_setting_moves_the_adjuster(tmp_path):
    import adjuster_learning
    res = adjuster_learning.main(['--tasks', 'mnist1d', '--steps', '40',
                                  '--points', '3', '--out', str(tmp_path)])
    # The release's setting under SGD: |R|'s gradient is O(lr^2), the
    # weights barely move (below float32's resolution of most of them);
    # the defaults move them by orders of magnitude more.
    release = res['mnist1d/cnn/sgd/release']['trace'][-1]
    default = res['mnist1d/cnn/sgd/gal']['trace'][-1]
    assert release['drift'] < 1e-4
    assert default['drift'] > 1e-3 and default['drift'] > 100 * release[
        'drift']
    text = (tmp_path / 'results.md').read_text()
    assert '| step | drift | cos_init |' in text


@pytest.mark.slow
def test_digits_quality_reproduces_its_table(tmp_path):
    import digits_quality
    args = ['--seeds', '2', '--epochs', '1', '--size', '8',
            '--optimizers', 'SGD', '--train-size', '64',
            '--data-root', str(tmp_path / 'digits')]
    first = digits_quality.main(args + ['--out', str(tmp_path / 'a')])
    again = digits_quality.main(args + ['--out', str(tmp_path / 'b')])
    assert [r['runs'] for _, rows in first for r in rows] == \
        [r['runs'] for _, rows in again for r in rows]
    meta = json.loads((tmp_path / 'a' / 'optimizers.json').read_text())[
        'meta']
    assert meta['threads'] == 1 and meta['seeds'] == [0, 1]


def test_gal_share_times_the_wrappers_own_call_inside_the_step(tmp_path):
    """benchmarks/gal_share.py: GAL's call is timed inside the GAL arm's
    real step (one call per step, a share strictly between 0 and 1, the
    wrapper's method restored afterwards) and its profile counted."""
    import gal_share
    from mmgal.engine.gal_optim_wrapper import GALOptimWrapper
    method = GALOptimWrapper.gal_forward
    out = tmp_path / 'share.json'
    rows = gal_share.main(['--case', 'resnet18', '--steps', '2',
                           '--warmup', '1', '--top', '3', '--out', str(out)])
    assert GALOptimWrapper.gal_forward is method
    row, = rows
    assert row['calls_per_step'] == 1
    assert 0 < row['gal_forward_ms'] < row['step_ms']
    assert 0 < row['share_min'] <= row['share_max'] < 1
    assert row['aten_calls'] > 10
    counts = [n for _, n, _ in row['top_ops']]
    assert len(counts) == 3 and counts == sorted(counts, reverse=True)
    assert sum(counts) <= row['aten_calls']
    saved = json.loads(out.read_text())
    assert saved['meta']['command'].startswith('python benchmarks/gal_share')
    assert saved['rows'][0]['case'] == 'resnet18'
