"""Replace a dataset folder that an earlier call wrote, and nothing else."""
import os
import os.path as osp
import re
import shutil
import warnings
from typing import Sequence


def clear_generated(root: str, folders: Sequence[str], pattern: str,
                    maker: str) -> bool:
    """Remove ``root/<folder>`` for each of ``folders`` when every file in
    them matches ``pattern`` (a regex over the path relative to
    ``root/<folder>``, '/'-separated), i.e. when ``maker`` wrote them.

    Returns whether something was removed (the caller then writes the
    dataset afresh, so old files never stay beside new ones). Raises
    ``FileExistsError`` naming the first foreign file: a folder that holds
    anything else is not deleted.
    """
    regex = re.compile(pattern)
    present = [osp.join(root, f) for f in folders
               if osp.exists(osp.join(root, f))]
    for top in present:
        for dirpath, _, files in os.walk(top):
            for name in files:
                rel = osp.relpath(osp.join(dirpath, name), top).replace(
                    os.sep, '/')
                if not regex.fullmatch(rel):
                    raise FileExistsError(
                        f'{osp.join(top, rel)} was not written by {maker}; '
                        f'{maker} replaces only its own files. Choose an '
                        f'empty folder instead of {root!r}.')
    for top in present:
        shutil.rmtree(top)
    if present:
        warnings.warn(f'{maker}: replaced the dataset in {root} (the old '
                      f'files under {", ".join(folders)} were removed)',
                      stacklevel=3)
    return bool(present)
