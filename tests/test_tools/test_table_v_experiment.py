import json
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from table_v import format_table, make_protocol, run_dataset, t_test
from table_v.experiment import PAPER_TABLE_V

from mmgal.regression import GALSettings, fit_regressor, regression_metrics

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def test_metrics_on_known_values():
    m = regression_metrics(np.array([1., 2., 3., 4.]),
                           np.array([1., 3., 3., 2.]))
    assert m['MAE'] == pytest.approx(0.75)
    assert m['MSE'] == pytest.approx(1.25)
    assert m['R2'] == pytest.approx(1 - 5 / 5.0)


def test_t_test_reproduces_the_papers_boston_mae_row():
    # Table V's Boston MAE row: 3.9535 ± 0.4307 vs 2.8079 ± 0.2720 with 5
    # runs per arm gives (t, p) = (5.02, 1.02e-03).
    (mb, sb), (mg, sg), (t_paper, p_paper) = PAPER_TABLE_V['boston']['MAE']
    res = stats.ttest_ind_from_stats(mb, sb, 5, mg, sg, 5)
    assert res.statistic == pytest.approx(t_paper, abs=0.01)
    assert res.pvalue == pytest.approx(p_paper, rel=0.02)
    t, p = t_test([3., 4., 5.], [1., 2., 3.])
    ref = stats.ttest_ind([3., 4., 5.], [1., 2., 3.])
    assert (t, p) == (ref.statistic, ref.pvalue) and t > 0


def test_table_wiring_puts_each_number_in_its_cell():
    summary = {
        m: dict(baseline=(2.0, 0.1), gal=(1.0, 0.2), t=3.0, p=0.01)
        for m in ('MAE', 'MSE', 'R2')
    }
    table = format_table([dict(dataset='boston', summary=summary)])
    lines = table.splitlines()
    assert lines[0].startswith('| dataset | metric | baseline | GAL |')
    mae = lines[2].split(' | ')
    assert mae[:6] == ['| boston', 'MAE', '2.0000 ± 0.1000',
                       '1.0000 ± 0.2000', '(3.00, 1.00e-02)',
                       'GAL (p<0.05)']
    assert mae[6:] == ['3.9535 ± 0.4307', '2.8079 ± 0.2720',
                       '(5.02, 1.02e-03) |']
    r2 = lines[4].split(' | ')
    assert r2[5] == 'baseline (p<0.05)'  # higher R2 is better


def test_gal_fit_trains_the_adjuster_and_logs_adoption():
    """With one output, normalize='auto' (over the batch) lets the
    adjuster learn: its weights turn away from their initial direction
    (with Eq. 4 per row they would not move at all)."""
    import torch
    from mmgal.core import build_adjuster
    from table_v import load_diabetes

    from mmgal.regression import MLPRegressor
    X, y = load_diabetes()
    X = (X - X.mean(0)) / X.std(0)
    y = (y - y.mean()) / y.std()
    res = fit_regressor(X[:200], y[:200], (16, ), epochs=3, batch_size=50,
                        lr=1e-2, seed=0, gal=GALSettings(arch=(8, )))
    torch.manual_seed(0)  # the model, then the adjuster: the initial one
    MLPRegressor(X.shape[1], (16, ))
    init = torch.cat([p.flatten() for p in build_adjuster(
        'mlp', 1, (8, )).parameters()]).double()
    now = torch.cat([p.detach().flatten()
                     for p in res.adjuster.parameters()]).double()
    cos = float(torch.nn.functional.cosine_similarity(now, init, dim=0))
    assert (1 - cos**2)**0.5 > 1e-3
    # 4 batches per epoch; adoption is the share of adopted steps.
    assert len(res.history['adopt_rate']) == 3
    assert all(a * 4 == round(a * 4) for a in res.history['adopt_rate'])
    assert all(np.isfinite(res.history['remainder']))


def test_both_arms_start_from_the_same_weights(monkeypatch):
    import importlib
    trainer = importlib.import_module('mmgal.regression.trainer')
    initial = []

    class Recording(trainer.MLPRegressor):

        def __init__(self, *args):
            super().__init__(*args)
            initial.append({k: v.clone()
                            for k, v in self.state_dict().items()})

    monkeypatch.setattr(trainer, 'MLPRegressor', Recording)
    X = np.random.RandomState(0).randn(40, 3)
    y = X.sum(1)
    fit_regressor(X, y, (8, ), epochs=1, batch_size=10, lr=1e-2, seed=3)
    fit_regressor(X, y, (8, ), epochs=1, batch_size=10, lr=1e-2, seed=3,
                  gal=GALSettings(arch=(4, )))
    assert len(initial) == 2
    for k, v in initial[0].items():
        assert v.equal(initial[1][k]), k


def test_gal_with_sigma_zero_equals_the_baseline():
    X = np.random.RandomState(1).randn(64, 4)
    y = X @ np.array([1., -2., 0.5, 3.])
    base = fit_regressor(X, y, (8, ), epochs=3, batch_size=16, lr=1e-2,
                         seed=0)
    gal = fit_regressor(X, y, (8, ), epochs=3, batch_size=16, lr=1e-2,
                        seed=0, gal=GALSettings(sigma=0.0, arch=(4, )))
    for a, b in zip(base.model.state_dict().values(),
                    gal.model.state_dict().values()):
        assert a.equal(b)


def test_end_to_end_on_diabetes_is_deterministic():
    proto = make_protocol('paper', epochs=5)
    a = run_dataset('diabetes', proto, runs=2)
    b = run_dataset('diabetes', proto, runs=2)
    assert a['per_run'] == b['per_run']
    assert set(a['summary']) == {'MAE', 'MSE', 'R2'}
    from scipy import stats
    for name, m in a['summary'].items():
        t, p = stats.ttest_ind([r[name] for r in a['per_run']['baseline']],
                               [r[name] for r in a['per_run']['gal']])
        assert m['t'] == pytest.approx(float(t))
        assert m['p'] == pytest.approx(float(p))
    # The runs differ from each other (different seeds and splits).
    assert a['per_run']['baseline'][0] != a['per_run']['baseline'][1]


def test_tuned_protocol_picks_lr_and_sigma_on_validation():
    proto = make_protocol('tuned', epochs=3, lr_grid=(1e-3, 1e-2),
                          sigma_grid=(0.1, 0.5))
    res = run_dataset('diabetes', proto, runs=2)
    assert set(res['tuning']['lr_val_mse']) == {1e-3, 1e-2}
    assert res['lr'] == min(res['tuning']['lr_val_mse'],
                            key=res['tuning']['lr_val_mse'].get)
    assert res['gal']['sigma'] in (0.1, 0.5)


def test_explicit_sigma_switches_tuning_off():
    proto = make_protocol('tuned', sigma=0.2, lr=1e-3)
    assert proto.sigma_grid == () and proto.lr_grid == ()
    with pytest.raises(ValueError, match="protocol must be one of"):
        make_protocol('fast')


def test_cli_writes_table_json_and_csv(tmp_path, data_root):
    out = tmp_path / 'out'
    cmd = [sys.executable, osp.join(REPO, 'tools', 'regression.py'),
           '--dataset', 'boston', '--runs', '2', '--epochs', '2',
           '--no-progress', '--data-root', data_root, '--out', str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert '| boston | MAE |' in res.stdout
    data = json.loads((out / 'results.json').read_text())
    assert data['results'][0]['runs'] == 2
    csv_lines = (out / 'results.csv').read_text().splitlines()
    assert csv_lines[0].startswith('dataset,protocol,metric')
    assert len(csv_lines) == 4
    subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert json.loads((out / 'results.json').read_text())['results'][0][
        'per_run'] == data['results'][0]['per_run']


def test_cli_missing_data_fails_with_the_file_named(tmp_path):
    cmd = [sys.executable, osp.join(REPO, 'tools', 'regression.py'),
           '--dataset', 'boston', '--runs', '2', '--no-progress',
           '--data-root', str(tmp_path), '--out', str(tmp_path / 'o')]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode != 0
    assert "'boston_housing.data' not found" in res.stderr


def test_gal_settings_validate():
    with pytest.raises(ValueError, match='gamma must be'):
        GALSettings(gamma=0)
