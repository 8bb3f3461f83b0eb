import subprocess
import sys

CODE = r'''
import sys

class BlockMM:
    """Make the mm stack look uninstalled."""
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('mmengine', 'mmcv', 'mmdet', 'mmpretrain'):
            raise ModuleNotFoundError(f'No module named {name!r}', name=name)
        return None

sys.meta_path.insert(0, BlockMM())
import mmgal
from mmgal.regression import GALSettings, fit_regressor
from sklearn.datasets import load_diabetes
X, y = load_diabetes(return_X_y=True)
res = fit_regressor(X[:100], y[:100], (8, ), epochs=2, batch_size=50,
                    lr=1e-2, seed=0, gal=GALSettings(arch=(4, )))
assert len(res.history['adopt_rate']) == 2
assert not any(m.split('.')[0] in ('mmengine', 'mmcv', 'mmdet', 'mmpretrain')
               for m in sys.modules)
print('standalone ok')
'''


def test_core_and_regression_run_without_the_mm_stack():
    res = subprocess.run([sys.executable, '-c', CODE], capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert 'standalone ok' in res.stdout
