"""What every benchmark records beside its numbers, so that a table can be
made again: the command, the code's git commit, torch's and the machine's
versions, the thread count (pinned where results depend on it) and the
seeds."""
import os.path as osp
import platform
import subprocess
import sys
from typing import Optional, Sequence


def pin_threads(threads: Optional[int]) -> int:
    """Set torch's intra-op thread count (None: leave the machine's
    default) and return the count in use. Reductions split across threads
    sum in another order, so results depend on it."""
    import torch
    if threads is not None:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def git_commit() -> Optional[str]:
    """The checkout's commit (short hash, ``+dirty`` when tracked files
    differ from it), or None outside a git checkout."""
    root = osp.dirname(osp.dirname(osp.abspath(__file__)))

    def git(*args):
        return subprocess.run(['git', *args], cwd=root, capture_output=True,
                              text=True, timeout=30)

    try:
        head = git('rev-parse', '--short=7', 'HEAD')
        if head.returncode != 0:
            return None
        dirty = git('status', '--porcelain', '--untracked-files=no')
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ('+dirty' if dirty.stdout.strip() else '')


def record(script: str, argv: Optional[Sequence[str]], **extra) -> dict:
    """The command, commit, versions and thread count, plus ``extra``
    (seeds...)."""
    import numpy as np
    import torch
    args = list(argv) if argv is not None else sys.argv[1:]
    return dict(command=' '.join(['python', script] + args),
                commit=git_commit(),
                torch=torch.__version__, numpy=np.__version__,
                python=platform.python_version(),
                machine=platform.machine(), cpu=platform.processor(),
                cpu_capability=cpu_capability(),
                threads=torch.get_num_threads(), **extra)


def cpu_capability() -> Optional[str]:
    """The CPU kernels torch dispatches to here (``'AVX512'``, ``'AVX2'``,
    ``'DEFAULT'``...): the same seed gives other last bits with other
    kernels (MNIST-1D: 65.1 % with AVX512, 65.4 % with AVX2). To reproduce
    a table recorded with other kernels, run with
    ``ATEN_CPU_CAPABILITY=<its value, lower case>`` (e.g. ``avx2``)."""
    import torch
    try:
        return torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):
        return None


def header(meta: dict) -> str:
    """One markdown line naming what reproduces the table."""
    kernels = meta.get('cpu_capability')
    return (f"`{meta['command']}` (torch {meta['torch']}, "
            f"{meta['threads']} thread(s)"
            + (f', {kernels} CPU kernels' if kernels else '') + ')')
