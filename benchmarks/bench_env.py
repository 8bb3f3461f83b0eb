"""What every benchmark records beside its numbers, so that a table can be
made again: the command, torch's and the machine's versions, the thread
count (pinned where results depend on it) and the seeds."""
import platform
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


def record(script: str, argv: Optional[Sequence[str]], **extra) -> dict:
    """The command, versions and thread count, plus ``extra`` (seeds...)."""
    import numpy as np
    import torch
    args = list(argv) if argv is not None else sys.argv[1:]
    return dict(command=' '.join(['python', script] + args),
                torch=torch.__version__, numpy=np.__version__,
                python=platform.python_version(),
                machine=platform.machine(), cpu=platform.processor(),
                threads=torch.get_num_threads(), **extra)


def header(meta: dict) -> str:
    """One markdown line naming what reproduces the table."""
    return (f"`{meta['command']}` (torch {meta['torch']}, "
            f"{meta['threads']} thread(s))")
