"""Known conflicts of the mm stack with other packages (no mm imports)."""
import importlib.metadata
from typing import Optional


def transformers_conflict() -> Optional[str]:
    """The cause and fix where ``transformers`` >= 5 is installed (MMPretrain
    1.2.0 then fails with ``TypeError: NoneType takes no arguments``), else
    None."""
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
