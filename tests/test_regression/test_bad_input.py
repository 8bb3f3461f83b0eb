"""Bad input to the regression module and tool: a clear error naming the
cause, never a table of meaningless numbers."""
import os.path as osp
import shutil
import subprocess
import sys

import numpy as np
import pytest

from table_v import (format_table, load_boston, load_california,
                     make_protocol, run_dataset)
from table_v.datasets import CALIFORNIA_COLUMNS

from mmgal.regression import fit_regressor

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOL = osp.join(REPO, 'tools', 'regression.py')


def run_tool(tmp_path, *args):
    out = tmp_path / 'out'
    res = subprocess.run([sys.executable, TOOL, '--no-progress', '--out',
                          str(out), *args], capture_output=True, text=True)
    return res, out


@pytest.mark.parametrize('flag, value', [('--epochs', '0'),
                                         ('--epochs', '-1'),
                                         ('--runs', '0'),
                                         ('--batch-size', '0'),
                                         ('--threads', '0')])
def test_non_positive_counts_are_refused_before_anything_runs(
        tmp_path, flag, value):
    res, out = run_tool(tmp_path, '--dataset', 'diabetes', flag, value)
    assert res.returncode == 2
    assert f'{flag} must be >= 1, got {value}' in res.stderr
    assert not out.exists()


def test_a_seed_numpy_cannot_take_is_refused_by_name(tmp_path):
    res, out = run_tool(tmp_path, '--dataset', 'diabetes', '--seed', '-5')
    assert res.returncode == 2
    assert '--seed must be in [0, 2**32) (numpy seeds), got -5' in res.stderr
    assert not out.exists()


@pytest.mark.parametrize('kwargs, match', [
    (dict(epochs=0), 'epochs must be an int >= 1, got 0'),
    (dict(batch_size=0), 'batch_size must be an int >= 1, got 0'),
    (dict(lr=float('nan')), 'lr must be a finite number > 0, got nan'),
    (dict(sigma=float('inf')), 'sigma must be a finite number'),
])
def test_protocol_settings_are_checked(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_protocol('paper', **kwargs)


def test_fit_regressor_checks_its_arguments():
    X, y = np.zeros((4, 2)), np.zeros(4)
    with pytest.raises(ValueError, match='batch_size must be an int >= 1'):
        fit_regressor(X, y, (2, ), epochs=1, batch_size=0, lr=0.1, seed=0)
    with pytest.raises(ValueError, match='epochs must be an int >= 1'):
        fit_regressor(X, y, (2, ), epochs=0, batch_size=2, lr=0.1, seed=0)
    with pytest.raises(ValueError, match='same number'):
        fit_regressor(X, y[:3], (2, ), epochs=1, batch_size=2, lr=0.1,
                      seed=0)
    with pytest.raises(ValueError, match='runs must be an int >= 1'):
        run_dataset('diabetes', make_protocol('paper'), runs=0)


def california_copy(data_root, tmp_path, edit):
    lines = open(osp.join(data_root, 'california_housing.csv')).read(
    ).splitlines()
    lines = edit(lines)
    (tmp_path / 'california_housing.csv').write_text('\n'.join(lines) + '\n')
    return str(tmp_path)


def test_a_zero_denominator_row_is_named_with_file_and_line(
        data_root, tmp_path):
    col = CALIFORNIA_COLUMNS.index('households')

    def zero_households(lines):
        row = lines[5].split(',')
        row[col] = '0'
        lines[5] = ','.join(row)
        return lines

    root = california_copy(data_root, tmp_path, zero_households)
    with pytest.raises(ValueError, match=r'california_housing\.csv: line 6 '
                       r'\(data row 4\) gives a non-finite feature'):
        load_california(root)
    res, out = run_tool(tmp_path, '--dataset', 'california', '--runs', '2',
                        '--epochs', '1', '--data-root', root)
    assert res.returncode != 0 and 'line 6' in res.stderr
    assert not (out / 'results.md').exists()


def test_an_extra_csv_column_is_not_ignored(data_root, tmp_path):
    root = california_copy(data_root, tmp_path,
                           lambda lines: [lines[0]] + [
                               line + ',1' for line in lines[1:]])
    with pytest.raises(ValueError, match=r'california_housing\.csv: '
                       r'expected 9 columns, got 10'):
        load_california(root)


def test_a_csv_parse_error_names_the_file(data_root, tmp_path):
    root = california_copy(data_root, tmp_path,
                           lambda lines: lines[:3] + ['1,2,x'] + lines[3:])
    with pytest.raises(ValueError, match=r'california_housing\.csv: cannot '
                       r'read it as a numeric table of 9 columns'):
        load_california(root)


def test_a_nan_in_boston_is_named(data_root, tmp_path):
    lines = open(osp.join(data_root, 'boston_housing.data')).read(
    ).splitlines()
    lines[2] = lines[2].replace(lines[2].split()[0], 'nan', 1)
    (tmp_path / 'boston_housing.data').write_text('\n'.join(lines) + '\n')
    with pytest.raises(ValueError, match=r'boston_housing\.data: line 3 '
                       r'\(data row 2\) gives a non-finite'):
        load_boston(str(tmp_path))


def boston_copy(data_root, tmp_path, edit_row):
    lines = open(osp.join(data_root, 'boston_housing.data')).read(
    ).splitlines()
    lines = [' '.join(edit_row(i, line.split())) for i, line in
             enumerate(lines)]
    (tmp_path / 'boston_housing.data').write_text('\n'.join(lines) + '\n')
    return str(tmp_path)


def test_a_constant_target_is_named_not_scored(data_root, tmp_path):
    """Before: an R^2 of -8e41 written, exit 0."""
    root = boston_copy(data_root, tmp_path,
                       lambda i, row: row[:13] + ['24.0'])
    with pytest.raises(ValueError, match=r'boston_housing\.data: the target '
                       r'is 24 in every row: R\^2 is undefined'):
        load_boston(root)
    res, out = run_tool(tmp_path, '--dataset', 'boston', '--runs', '2',
                        '--epochs', '1', '--data-root', root)
    assert res.returncode != 0 and 'the target is 24 in every row' in \
        res.stderr
    assert not (out / 'results.md').exists()


def test_a_huge_finite_value_is_named_with_its_line_and_column(
        data_root, tmp_path):
    """Before: the fit diverged and the message blamed lr or sigma."""
    root = boston_copy(data_root, tmp_path, lambda i, row: (
        row[:4] + ['3e20'] + row[5:] if i == 7 else row))
    with pytest.raises(ValueError, match=r'boston_housing\.data: line 8 '
                       r'\(data row 7\): feature 4 is 3e\+20; values of '
                       r'1e\+18 or more overflow float32 training'):
        load_boston(root)


def test_identical_arms_are_a_tie_for_every_metric():
    summary = {m: dict(baseline=(1.5, 0.1), gal=(1.5, 0.1), t=0.0, p=1.0)
               for m in ('MAE', 'MSE', 'R2')}
    rows = format_table([dict(dataset='diabetes', summary=summary)],
                        with_paper=False).splitlines()[2:]
    assert [r.split(' | ')[5].rstrip(' |') for r in rows] == ['tie'] * 3


def test_sigma_zero_end_to_end_reports_ties(tmp_path):
    res, out = run_tool(tmp_path, '--dataset', 'diabetes', '--runs', '2',
                        '--epochs', '2', '--sigma', '0')
    assert res.returncode == 0, res.stderr[-2000:]
    rows = [r for r in (out / 'results.md').read_text().splitlines()
            if r.startswith('| diabetes')]
    assert len(rows) == 3 and all(r.split(' | ')[5] == 'tie' for r in rows)


def test_a_diverging_fit_writes_no_table(tmp_path, data_root):
    shutil.copy(osp.join(data_root, 'boston_housing.data'), tmp_path)
    res, out = run_tool(tmp_path, '--dataset', 'boston', '--runs', '2',
                        '--epochs', '2', '--lr', '1e30', '--data-root',
                        str(tmp_path))
    assert res.returncode != 0
    assert 'gave non-finite test metrics' in res.stderr
    assert not (out / 'results.md').exists()


def test_one_run_is_refused_since_the_table_needs_a_t_test(tmp_path):
    res, out = run_tool(tmp_path, '--dataset', 'diabetes', '--runs', '1')
    assert res.returncode == 2
    assert '--runs must be >= 2: the table compares the arms with a ' \
        't-test' in res.stderr
    assert not out.exists()


def test_out_naming_a_file_is_refused_before_training(tmp_path):
    target = tmp_path / 'results.txt'
    target.write_text('keep me')
    res = subprocess.run([sys.executable, TOOL, '--no-progress', '--dataset',
                          'diabetes', '--out', str(target)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert 'is a file; give a folder' in res.stderr
    assert target.read_text() == 'keep me'


@pytest.mark.parametrize('name, content, match', [
    ('california_housing.csv', ','.join(CALIFORNIA_COLUMNS) + '\n',
     r'0 data row\(s\); a train/test split needs at least 10 \(the file '
     r'has a header only'),
    ('boston_housing.data', '', r'0 data row\(s\)'),
    ('boston_housing.data', ' '.join(['1'] * 14) + '\n' +
     ' '.join(['2'] * 14) + '\n', r'2 data row\(s\)'),
])
def test_files_without_enough_rows_are_named(tmp_path, name, content, match):
    (tmp_path / name).write_text(content)
    loader = load_california if name.startswith('california') else \
        load_boston
    with pytest.raises(ValueError, match=match):
        loader(str(tmp_path))


def test_a_missing_file_stops_dataset_all_before_any_training(tmp_path,
                                                              data_root):
    # boston present, california missing: nothing trains (the tool used to
    # train boston and diabetes first).
    shutil.copy(osp.join(data_root, 'boston_housing.data'), tmp_path)
    res = subprocess.run(
        [sys.executable, TOOL, '--no-progress', '--dataset', 'all',
         '--data-root', str(tmp_path), '--out', str(tmp_path / 'out'),
         '--epochs', '200'], capture_output=True, text=True, timeout=60)
    assert res.returncode != 0
    assert "'california_housing.csv' not found" in res.stderr
    assert not (tmp_path / 'out').exists()


def test_r2_of_constant_targets_is_nan_not_a_division_error():
    from mmgal.regression import regression_metrics
    m = regression_metrics(np.ones(3), np.array([1.0, 2.0, 0.5]))
    assert np.isnan(m['R2']) and m['MAE'] == pytest.approx(0.5)
