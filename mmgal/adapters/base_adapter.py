from typing import (Callable, List, Optional, Sequence, Tuple, Type,
                    Union)

from mmengine.registry import Registry
from torch import Tensor, nn

# gal_forward(z, loss_fn, grouped=False) -> surrogate loss (GALOptimWrapper).
GALForward = Callable[..., Tensor]

GAL_ADAPTERS = Registry('gal adapter', scope='mmgal',
                        locations=['mmgal.adapters'])


class BaseGALAdapter:
    """Where a head's output features z are, and its z-dependent loss with
    the same targets. Subclasses name their heads in ``supported_heads``
    (and their subclasses, unless ``match_subclasses`` is False), implement
    :meth:`out_dim`, :meth:`install` and :meth:`remove`, and register with
    ``@GAL_ADAPTERS.register_module()``.

    Args:
        head (nn.Module): The head (already unwrapped from DDP).
    """

    supported_heads: Tuple[str, ...] = ()
    match_subclasses: bool = True

    def __init__(self, head: nn.Module):
        self.head = head

    def out_dim(self) -> Optional[int]:
        """z's last dimension, or None (sized by the first z)."""
        raise NotImplementedError

    def install(self, gal_forward: GALForward) -> None:
        """Route z through ``gal_forward(z, loss_fn)`` during training."""
        raise NotImplementedError

    def remove(self) -> None:
        """Undo :meth:`install`."""
        raise NotImplementedError

    @classmethod
    def supports_class(cls, klass: type, head: nn.Module) -> bool:
        """Whether ``klass`` (in ``type(head)``'s MRO) is handled here."""
        return klass.__name__ in cls.supported_heads and (
            cls.match_subclasses or klass is type(head))


def supported_heads() -> Tuple[str, ...]:
    """Every head class name some registered adapter supports."""
    names = []
    for adapter in GAL_ADAPTERS.module_dict.values():
        suffix = ' (and subclasses)' if adapter.match_subclasses else ''
        names += [n + suffix for n in adapter.supported_heads]
    return tuple(dict.fromkeys(names))


def adapter_class_for(
    head: nn.Module,
    candidates: Optional[Sequence[Type[BaseGALAdapter]]] = None
) -> Optional[Type[BaseGALAdapter]]:
    """The adapter class (among ``candidates``, default: all registered)
    for ``head``'s class, most specific first, or None."""
    if candidates is None:
        GAL_ADAPTERS.import_from_location()
        candidates = list(GAL_ADAPTERS.module_dict.values())
    for klass in type(head).__mro__:
        for candidate in candidates:
            if candidate.supports_class(klass, head):
                return candidate
    return None


def find_supported_heads(
    model: nn.Module,
    adapter: Optional[Union[str, dict, Type]] = None
) -> List[Tuple[str, nn.Module]]:
    """``(path, module)`` of each outermost submodule an adapter (or only
    ``adapter``) supports."""
    candidates = None if adapter is None else [_adapter_class(adapter)]
    found: List[Tuple[str, nn.Module]] = []
    for path, module in model.named_modules():
        if any(path.startswith(p + '.') for p, _ in found):
            continue
        if adapter_class_for(module, candidates) is not None:
            found.append((path, module))
    return found


def _adapter_class(adapter: Union[str, dict, Type]) -> Type:
    name = adapter.get('type') if isinstance(adapter, dict) else adapter
    klass = GAL_ADAPTERS.get(name) if isinstance(name, str) else name
    if klass is None:
        raise KeyError(f'{name!r} is not in the GAL_ADAPTERS registry; '
                       f'registered: {sorted(GAL_ADAPTERS.module_dict)}')
    return klass


def build_adapter(head: nn.Module,
                  adapter: Optional[Union[str, dict, Type]] = None
                  ) -> BaseGALAdapter:
    """The adapter ``adapter`` names, or the one for the head's class."""
    GAL_ADAPTERS.import_from_location()
    if adapter is not None:
        cfg = dict(type=adapter) if not isinstance(adapter, dict) else dict(
            adapter)
        klass = cfg['type'] = _adapter_class(adapter)
        if klass.supported_heads and adapter_class_for(head,
                                                       [klass]) is None:
            raise ValueError(
                f'GALHook: adapter {klass.__name__} does not support the head '
                f'{type(head).__name__}; it supports '
                f"{', '.join(klass.supported_heads)}. Leave adapter=None to "
                'pick the adapter by the head\'s class.')
        cfg['head'] = head
        return GAL_ADAPTERS.build(cfg)
    candidate = adapter_class_for(head)
    if candidate is not None:
        return candidate(head)
    raise ValueError(
        f'GALHook: no GAL adapter supports the head '
        f'{type(head).__name__}; supported heads: '
        f"{', '.join(supported_heads())}. Register a BaseGALAdapter "
        f'subclass in mmgal.adapters.GAL_ADAPTERS for your head.')
