import os
import os.path as osp
import sys

import pytest

# Runner tests use randomness=dict(deterministic=True), which makes torch
# refuse cuBLAS's non-deterministic reductions unless this is set before
# CUDA starts (no effect on the CPU).
os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')
# GAL compiles its step by default (fast='auto'); a compile takes seconds to
# a minute on these CPUs, so the suite runs the eager step (the same
# update) unless a test is about compiling and asks for the
# `compile_enabled` fixture. Inherited by the tools the tests run.
# TORCH_COMPILE_DISABLE=0 runs every test with the default compiled step.
os.environ.setdefault('TORCH_COMPILE_DISABLE', '1')

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
# The tools' own modules (tools/table_v, train.py, ...) import as in tools/.
sys.path.insert(0, osp.join(REPO, 'tools'))


@pytest.fixture
def compile_enabled(monkeypatch):
    """torch.compile switched on for this test (and for the tools it runs
    in subprocesses)."""
    import torch._dynamo
    monkeypatch.setenv('TORCH_COMPILE_DISABLE', '0')
    with torch._dynamo.config.patch(disable=False):
        yield


@pytest.fixture(scope='session')
def data_root():
    """The regression data folder: $MMGAL_DATA_ROOT, else ../shared/data.

    Missing data fails the tests that need it (no silent skip)."""
    root = os.environ.get('MMGAL_DATA_ROOT') or osp.join(
        REPO, '..', 'shared', 'data')
    assert osp.isdir(root), (
        f'regression data folder {root} not found; set MMGAL_DATA_ROOT')
    return root


@pytest.fixture(scope='session')
def digits_root(tmp_path_factory):
    """scikit-learn's digits as an MMPretrain image folder (made once)."""
    from make_digits import make_digits_images
    root = str(tmp_path_factory.mktemp('digits'))
    make_digits_images(root)
    return root


@pytest.fixture(scope='session')
def tiny_coco(tmp_path_factory):
    """(root, annotation file) of a tiny COCO-format set (made once)."""
    from tiny_coco import make_tiny_coco
    root = str(tmp_path_factory.mktemp('tiny_coco'))
    return root, make_tiny_coco(root, num_images=6)
