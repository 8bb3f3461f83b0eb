"""Tabular regression datasets of the paper's Table V.

No silent fallbacks: a missing raw file raises ``FileNotFoundError`` that
names the file, where it was looked for and how to get it.
"""
import os
import os.path as osp
from typing import Callable, Dict, Optional, Tuple

import numpy as np

DATA_ROOT_ENV = 'MMGAL_DATA_ROOT'
DATASETS = ('boston', 'diabetes', 'california')

BOSTON_FILE = 'boston_housing.data'
CALIFORNIA_FILE = 'california_housing.csv'
CALIFORNIA_COLUMNS = ('longitude', 'latitude', 'housing_median_age',
                      'total_rooms', 'total_bedrooms', 'population',
                      'households', 'median_income', 'median_house_value')

_HOW_TO_GET = {
    BOSTON_FILE:
    'the UCI Boston housing file `housing.data` (506 rows, 14 '
    'whitespace-separated columns, the last is MEDV), e.g. from '
    'https://archive.ics.uci.edu/ml/machine-learning-databases/housing/'
    'housing.data, saved under that name',
    CALIFORNIA_FILE:
    'the StatLib `cal_housing` table as CSV with the header '
    f"{','.join(CALIFORNIA_COLUMNS)} (20,640 rows); or, on a machine "
    "that is online, use source='sklearn' (--california-source sklearn) "
    'to take scikit-learn\'s fetch_california_housing',
}


def resolve_data_root(data_root: Optional[str] = None) -> str:
    """``data_root`` if given, else ``$MMGAL_DATA_ROOT``, else ``./data``."""
    if data_root:
        return data_root
    return os.environ.get(DATA_ROOT_ENV) or 'data'


def _raw_file(name: str, data_root: Optional[str]) -> str:
    root = resolve_data_root(data_root)
    path = osp.join(root, name)
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'regression data file {name!r} not found: expected it at '
            f'{osp.abspath(path)} (data root {root!r}, set with --data-root '
            f'or ${DATA_ROOT_ENV}). Get {_HOW_TO_GET[name]}.')
    return path


# Fewer rows cannot give a train, validation and test part of >= 2 rows.
MIN_ROWS = 10


def _read_table(path: str, columns: int, skiprows: int = 0,
                delimiter: Optional[str] = None) -> np.ndarray:
    """A numeric table of exactly ``columns`` columns and at least
    ``MIN_ROWS`` rows; errors name the file (and the line, where numpy
    says it)."""
    import warnings
    try:
        with warnings.catch_warnings():
            # numpy warns on an empty file; the error below says it.
            warnings.simplefilter('ignore', UserWarning)
            raw = np.loadtxt(path, delimiter=delimiter, skiprows=skiprows,
                             dtype=np.float64, ndmin=2)
    except ValueError as err:
        raise ValueError(f'{path}: cannot read it as a numeric table of '
                         f'{columns} columns: {err}') from None
    if raw.shape[0] < MIN_ROWS:
        raise ValueError(f'{path}: {raw.shape[0]} data row(s); a train/test '
                         f'split needs at least {MIN_ROWS}' +
                         (' (the file has a header only, or nothing)'
                          if raw.shape[0] == 0 else ''))
    if raw.shape[1] != columns:
        raise ValueError(f'{path}: expected {columns} columns, got '
                         f'{raw.shape[1]} (no column is ignored silently)')
    return raw


# |value| from which a feature or target cannot be trained in float32.
HUGE = 1e18


def check_finite(X: np.ndarray, y: np.ndarray, source: str,
                 first_line: int = 1) -> None:
    """``ValueError`` naming ``source`` and the line (``first_line`` is
    the line of row 0) of the first row with a NaN or infinite feature or
    target (e.g. a derived ratio with a zero denominator), or with one of
    magnitude :data:`HUGE` or more (float32 training overflows), or when
    the target is constant (R^2 undefined)."""
    bad = ~(np.isfinite(X).all(axis=1) & np.isfinite(y))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f'{source}: line {row + first_line} (data row {row}) gives a '
            f'non-finite feature or target (features {X[row].tolist()}, '
            f'target {float(y[row])}); {int(bad.sum())} row(s) in all. Fix '
            'or drop them: every metric would be NaN.')
    # Finite but beyond float32 training: squares past 3.4e38 overflow.
    table = np.column_stack([X, y])
    huge = np.abs(table) >= HUGE
    if huge.any():
        row, col = (int(i) for i in np.argwhere(huge)[0])
        what = 'the target' if col == X.shape[1] else f'feature {col}'
        raise ValueError(
            f'{source}: line {row + first_line} (data row {row}): {what} '
            f'is {float(table[row, col]):g}; values of '
            f'{HUGE:g} or more overflow float32 training (their squares '
            'pass 3.4e38): rescale that column.')
    if y.size and np.ptp(y) == 0:
        raise ValueError(
            f'{source}: the target is {float(y[0]):g} in every row: R^2 is '
            'undefined (no variance to explain) and a model that predicts '
            'the constant is exact, so the arms cannot be compared.')


def load_boston(data_root: Optional[str] = None
                ) -> Tuple[np.ndarray, np.ndarray]:
    """Boston housing: X (506, 13), y = MEDV (506, ), from UCI housing.data.
    """
    path = _raw_file(BOSTON_FILE, data_root)
    raw = _read_table(path, 14)
    X, y = raw[:, :13], raw[:, 13]
    check_finite(X, y, path)
    return X, y


def load_diabetes(data_root: Optional[str] = None
                  ) -> Tuple[np.ndarray, np.ndarray]:
    """Diabetes: X (442, 10), y (442, ), bundled with scikit-learn."""
    from sklearn.datasets import load_diabetes as _load
    X, y = _load(return_X_y=True)
    return X.astype(np.float64), y.astype(np.float64)


def california_from_raw(raw: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Derive scikit-learn's 8 California features from the raw columns.

    Features: MedInc, HouseAge, AveRooms, AveBedrms, Population, AveOccup,
    Latitude, Longitude; target = median_house_value / 100000.
    """
    col = {c: raw[:, i] for i, c in enumerate(CALIFORNIA_COLUMNS)}
    households = col['households']
    X = np.stack([
        col['median_income'],
        col['housing_median_age'],
        col['total_rooms'] / households,
        col['total_bedrooms'] / households,
        col['population'],
        col['population'] / households,
        col['latitude'],
        col['longitude'],
    ], axis=1)
    return X, col['median_house_value'] / 100000.0


def load_california(data_root: Optional[str] = None,
                    source: str = 'raw') -> Tuple[np.ndarray, np.ndarray]:
    """California housing: X (20640, 8), y (20640, ) in units of $100,000.

    Args:
        data_root (str, optional): Folder holding ``california_housing.csv``.
        source (str): ``'raw'`` (the CSV) or ``'sklearn'``
            (``fetch_california_housing``, needs the network or its cache).
            scikit-learn's cache (``cal_housing_py3.pkz``) is a joblib
            pickle, which runs code when loaded: use it only where you
            trust that file; ``'raw'`` reads a plain CSV.
    """
    if source == 'sklearn':
        from sklearn.datasets import fetch_california_housing
        X, y = fetch_california_housing(return_X_y=True)
        return X.astype(np.float64), y.astype(np.float64)
    if source != 'raw':
        raise ValueError(f"source must be 'raw' or 'sklearn', got {source!r}")
    path = _raw_file(CALIFORNIA_FILE, data_root)
    with open(path) as f:
        header = tuple(f.readline().strip().split(','))
    if header != CALIFORNIA_COLUMNS:
        raise ValueError(f'{path}: header must be {CALIFORNIA_COLUMNS}, got '
                         f'{header}')
    raw = _read_table(path, len(CALIFORNIA_COLUMNS), skiprows=1,
                      delimiter=',')
    with np.errstate(divide='ignore', invalid='ignore'):
        X, y = california_from_raw(raw)
    check_finite(X, y, path, first_line=2)  # line 1 is the header
    return X, y


LOADERS: Dict[str, Callable[..., Tuple[np.ndarray, np.ndarray]]] = {
    'boston': load_boston,
    'diabetes': load_diabetes,
    'california': load_california,
}


def load_dataset(name: str, data_root: Optional[str] = None,
                 **kwargs) -> Tuple[np.ndarray, np.ndarray]:
    """Load one of :data:`DATASETS` as float64 ``(X, y)``."""
    if name not in LOADERS:
        raise ValueError(f'dataset must be one of {DATASETS}, got {name!r}')
    return LOADERS[name](data_root, **kwargs)
