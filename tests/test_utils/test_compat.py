"""A clear message where transformers >= 5 breaks the mm stack's imports."""
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def fake_transformers(root, version):
    """A 'transformers' that fails on import as the real 5.x does next to
    MMPretrain 1.2.0, with package metadata saying ``version``."""
    pkg = root / 'transformers'
    pkg.mkdir()
    (pkg / '__init__.py').write_text(
        "raise TypeError('NoneType takes no arguments')\n")
    meta = root / f'transformers-{version}.dist-info'
    meta.mkdir()
    (meta / 'METADATA').write_text(
        f'Metadata-Version: 2.1\nName: transformers\nVersion: {version}\n')


def import_mmgal(root):
    env = dict(os.environ,
               PYTHONPATH=os.pathsep.join([str(root), REPO]))
    return subprocess.run([sys.executable, '-c', 'import mmgal'],
                          capture_output=True, text=True, env=env)


def test_transformers_5_gives_a_message_naming_cause_and_fix(tmp_path):
    fake_transformers(tmp_path, '5.0.0')
    res = import_mmgal(tmp_path)
    assert res.returncode != 0
    assert 'ImportError: import mmgal failed (TypeError: NoneType takes no ' \
        'arguments). transformers 5.0.0 is installed' in res.stderr
    assert "pip install 'transformers<5'" in res.stderr


def test_other_import_errors_are_not_relabelled(tmp_path):
    fake_transformers(tmp_path, '4.46.0')
    res = import_mmgal(tmp_path)
    assert res.returncode != 0
    assert 'TypeError: NoneType takes no arguments' in res.stderr
    assert 'transformers<5' not in res.stderr


@pytest.mark.parametrize('version, conflict', [('4.57.1', False),
                                               ('5.0.0', True),
                                               ('5.2.0.dev0', True)])
def test_transformers_conflict_by_version(monkeypatch, version, conflict):
    import importlib.metadata

    from mmgal._compat import transformers_conflict
    monkeypatch.setattr(importlib.metadata, 'version', lambda name: version)
    assert (transformers_conflict() is not None) == conflict
