"""Standalone GAL for tabular regression (no mm stack needed)."""
from .datasets import (DATASETS, california_from_raw, load_boston,
                       load_california, load_dataset, load_diabetes,
                       resolve_data_root)
from .experiment import (PAPER_MODELS, PAPER_TABLE_V, PROTOCOLS, Protocol,
                         format_table, make_protocol, run_dataset, t_test)
from mmgal.core import GALSettings
from .trainer import (MLPRegressor, RegressionStep,
                      fit_regressor, regression_metrics)

__all__ = [
    'DATASETS', 'PROTOCOLS', 'PAPER_MODELS', 'PAPER_TABLE_V',
    'california_from_raw', 'load_boston', 'load_california', 'load_dataset',
    'load_diabetes', 'resolve_data_root', 'Protocol', 'make_protocol',
    'run_dataset', 'format_table', 't_test', 'GALSettings', 'MLPRegressor',
    'RegressionStep', 'fit_regressor', 'regression_metrics'
]
