"""Standalone GAL for tabular regression (no mm stack needed).

The paper's Table V datasets and harness are in ``tools/table_v`` (run by
``tools/regression.py``)."""
from mmgal.core import GALSettings
from .trainer import (MLPRegressor, RegressionStep, fit_regressor,
                      regression_metrics)

__all__ = [
    'GALSettings', 'MLPRegressor', 'RegressionStep', 'fit_regressor',
    'regression_metrics'
]
