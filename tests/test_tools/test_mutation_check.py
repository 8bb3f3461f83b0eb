"""tools/mutation_check.py applies a named breakage to a copy of the
repository and reports the test that catches it; every listed mutant
still applies to today's code (the whole check, ~6 minutes, is recorded
in docs/results/mutation.md)."""
import os.path as osp

import pytest

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
import mutation_check  # noqa: E402


def test_every_mutant_applies_exactly_once_to_the_code():
    for m in mutation_check.MUTANTS:
        with open(osp.join(REPO, m.path)) as f:
            assert f.read().count(m.old) == 1, m.name
        for test in m.tests:
            assert osp.isfile(osp.join(REPO, test)), (m.name, test)


@pytest.mark.slow
def test_a_mutant_is_applied_to_a_copy_and_caught(tmp_path):
    rows = mutation_check.main(['--only', 'remainder-sign', '--jobs', '1',
                                '--out', str(tmp_path / 'm.md')])
    assert rows[0]['caught'] and rows[0]['by'].startswith(
        'tests/test_core/test_gal_step.py::')
    # The repository itself is untouched.
    with open(osp.join(REPO, 'mmgal', 'core', 'gal_step.py')) as f:
        assert 'rem = change + eta * first' in f.read()
    assert '| remainder-sign |' in (tmp_path / 'm.md').read_text()
