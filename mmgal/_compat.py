"""Known conflicts of the mm stack with other installed packages.

No mm imports: this runs before the mm layer is imported.
"""
import importlib.metadata
from typing import Optional


def transformers_conflict() -> Optional[str]:
    """A message naming the cause and the fix when ``transformers`` >= 5 is
    installed, else None.

    MMPretrain 1.2.0's multimodal models subclass a class that transformers
    5 moved (``import mmpretrain`` fails with ``TypeError: NoneType takes no
    arguments``), and pytorch-optimizer imports transformers whenever it is
    installed.
    """
    try:
        version = importlib.metadata.version('transformers')
    except importlib.metadata.PackageNotFoundError:
        return None
    try:
        major = int(version.split('.')[0])
    except ValueError:
        return None
    if major < 5:
        return None
    return (f'transformers {version} is installed: MMPretrain 1.2.0 (its '
            'multimodal models) and pytorch-optimizer (which imports '
            'transformers when present) do not import next to transformers '
            ">= 5. Fix: pip install 'transformers<5' in this environment, "
            'or pip uninstall transformers if nothing else needs it.')
