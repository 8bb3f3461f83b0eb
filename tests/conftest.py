import os
import os.path as osp

import pytest

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


@pytest.fixture(scope='session')
def data_root():
    """The regression data folder: $MMGAL_DATA_ROOT, else ../shared/data.

    Missing data fails the tests that need it (no silent skip)."""
    root = os.environ.get('MMGAL_DATA_ROOT') or osp.join(
        REPO, '..', 'shared', 'data')
    assert osp.isdir(root), (
        f'regression data folder {root} not found; set MMGAL_DATA_ROOT')
    return root
