import numpy as np
import pytest

from table_v import (california_from_raw, load_boston, load_california,
                     load_dataset, load_diabetes)


def test_boston_shape_and_known_statistics(data_root):
    X, y = load_boston(data_root)
    assert X.shape == (506, 13) and y.shape == (506, )
    # Published statistics of the UCI file: mean MEDV 22.5328, mean CRIM
    # 3.6135, CHAS is binary with 35 ones.
    assert y.mean() == pytest.approx(22.532806, abs=1e-5)
    assert X[:, 0].mean() == pytest.approx(3.613524, abs=1e-5)
    assert X[:, 3].sum() == 35
    assert y.min() == 5.0 and y.max() == 50.0


def test_diabetes_shape_and_known_statistics():
    X, y = load_diabetes()
    assert X.shape == (442, 10) and y.shape == (442, )
    assert y.mean() == pytest.approx(152.133484, abs=1e-5)
    np.testing.assert_allclose(X.mean(0), 0, atol=1e-12)


def test_california_matches_sklearn_derivation(data_root):
    X, y = load_california(data_root)
    assert X.shape == (20640, 8) and y.shape == (20640, )
    # The statistics scikit-learn's fetch_california_housing documents
    # (MedInc, HouseAge, AveRooms, AveBedrms, Population, AveOccup,
    # Latitude, Longitude) and its target mean.
    expected = [3.870671, 28.639486, 5.429000, 1.096675, 1425.476744,
                3.070655, 35.631861, -119.569704]
    np.testing.assert_allclose(X.mean(0), expected, rtol=1e-6)
    assert y.mean() == pytest.approx(2.068558, abs=1e-6)
    assert y.max() == pytest.approx(5.00001)


def test_california_derivation_on_a_hand_row():
    raw = np.array([[-122.0, 37.0, 41.0, 880.0, 129.0, 322.0, 126.0, 8.3,
                     452600.0]])
    X, y = california_from_raw(raw)
    np.testing.assert_allclose(
        X[0], [8.3, 41.0, 880 / 126, 129 / 126, 322.0, 322 / 126, 37.0,
               -122.0])
    assert y[0] == pytest.approx(4.526)


@pytest.mark.parametrize('name, file', [('boston', 'boston_housing.data'),
                                        ('california',
                                         'california_housing.csv')])
def test_missing_file_is_a_clear_error(tmp_path, name, file):
    with pytest.raises(FileNotFoundError) as info:
        load_dataset(name, str(tmp_path))
    msg = str(info.value)
    assert repr(file) in msg
    assert str(tmp_path / file) in msg
    assert '--data-root' in msg and 'MMGAL_DATA_ROOT' in msg
    assert 'Get ' in msg


def test_data_root_env_is_used(monkeypatch, tmp_path):
    monkeypatch.setenv('MMGAL_DATA_ROOT', str(tmp_path))
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        load_boston()


def test_unknown_dataset_is_refused():
    with pytest.raises(ValueError, match=r"dataset must be one of \('boston'"
                       r", 'diabetes', 'california'\), got 'iris'"):
        load_dataset('iris')
