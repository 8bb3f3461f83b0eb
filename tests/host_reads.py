"""Counting the ways a tensor's value reaches Python (each a device sync on
a GPU), for the tests that show GAL's step makes none."""
import torch

HOST_READS = ('__bool__', 'item', 'tolist', '__float__', '__int__',
              '__index__', 'numpy', 'cpu')


def count_host_reads(monkeypatch) -> list:
    """Patch every method in ``HOST_READS`` through ``monkeypatch`` to log
    its name, and return the log (a list the calls append to); undone
    with ``monkeypatch.undo()``."""
    reads = []
    for name in HOST_READS:
        orig = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name,
                            lambda self, *a, _o=orig, _n=name, **k:
                            reads.append(_n) or _o(self, *a, **k))
    return reads
