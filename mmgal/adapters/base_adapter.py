from typing import Callable, Optional, Tuple, Type, Union

from mmengine.registry import Registry
from torch import Tensor, nn

GALForward = Callable[[Tensor, Callable[[Tensor], Tensor]], Tensor]

GAL_ADAPTERS = Registry('gal adapter', scope='mmgal',
                        locations=['mmgal.adapters'])


class BaseGALAdapter:
    """Knows where a head's output features z are and how to re-evaluate
    the head's z-dependent loss with the same targets.

    Subclasses list the head classes they support by name in
    ``supported_heads`` (subclasses of a listed head are supported too,
    unless ``match_subclasses`` is False) and
    implement :meth:`out_dim`, :meth:`install` and :meth:`remove`. Register
    one for your own head with ``@GAL_ADAPTERS.register_module()``.

    Args:
        head (nn.Module): The head (already unwrapped from DDP).
    """

    supported_heads: Tuple[str, ...] = ()
    match_subclasses: bool = True

    def __init__(self, head: nn.Module):
        self.head = head

    def out_dim(self) -> int:
        """Size of the last dimension of z."""
        raise NotImplementedError

    def install(self, gal_forward: GALForward) -> None:
        """Route z through ``gal_forward(z, loss_fn)`` during training."""
        raise NotImplementedError

    def remove(self) -> None:
        """Undo :meth:`install`."""
        raise NotImplementedError

    @classmethod
    def supports_class(cls, klass: type, head: nn.Module) -> bool:
        """Whether ``klass`` (``type(head)`` or one of its bases) is one
        this adapter handles."""
        return klass.__name__ in cls.supported_heads and (
            cls.match_subclasses or klass is type(head))


def supported_heads() -> Tuple[str, ...]:
    """Every head class name some registered adapter supports."""
    names = []
    for adapter in GAL_ADAPTERS.module_dict.values():
        suffix = ' (and subclasses)' if adapter.match_subclasses else ''
        names += [n + suffix for n in adapter.supported_heads]
    return tuple(dict.fromkeys(names))


def build_adapter(head: nn.Module,
                  adapter: Optional[Union[str, dict, Type]] = None
                  ) -> BaseGALAdapter:
    """The adapter named by ``adapter``, or the first registered adapter
    that supports the head's class (or one of its base classes)."""
    GAL_ADAPTERS.import_from_location()
    if adapter is not None:
        cfg = dict(type=adapter) if not isinstance(adapter, dict) else dict(
            adapter)
        cfg['head'] = head
        return GAL_ADAPTERS.build(cfg)
    # Most specific match first: walk the head's MRO.
    for klass in type(head).__mro__:
        for candidate in GAL_ADAPTERS.module_dict.values():
            if candidate.supports_class(klass, head):
                return candidate(head)
    raise ValueError(
        f'GALHook: no GAL adapter supports the head '
        f'{type(head).__name__}; supported heads: '
        f"{', '.join(supported_heads())}. Register a BaseGALAdapter "
        f'subclass in mmgal.adapters.GAL_ADAPTERS for your head.')
