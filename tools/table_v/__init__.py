"""The paper's Table V (tabular regression), reproduced: its datasets'
loaders and the baseline-vs-GAL harness with its two protocols and
t-tests, run by ``tools/regression.py``. Built on the standalone
:mod:`mmgal.regression` module (no mm stack)."""
from .datasets import (DATASETS, california_from_raw, load_boston,
                       load_california, load_dataset, load_diabetes,
                       resolve_data_root)
from .experiment import (PAPER_MODELS, PAPER_TABLE_V, PROTOCOLS, Protocol,
                         format_table, make_protocol, run_dataset, t_test,
                         to_csv_rows)

__all__ = [
    'DATASETS', 'PROTOCOLS', 'PAPER_MODELS', 'PAPER_TABLE_V',
    'california_from_raw', 'load_boston', 'load_california', 'load_dataset',
    'load_diabetes', 'resolve_data_root', 'Protocol', 'make_protocol',
    'run_dataset', 'format_table', 't_test', 'to_csv_rows'
]
