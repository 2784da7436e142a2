"""A name → object registry filled by decorators (in the style of timm's ``register_model``).

One instance per kind of pluggable thing: fusion models (``models.fusion``), PEFT methods (``models.adapters``) and
dataset adapters (``data.registry``)::

    FUSIONS: Registry[type[FusionModel]] = Registry("fusion method")
    register_fusion = FUSIONS.register

    @register_fusion("concat")
    class ConcatFusion(...): ...

    FUSIONS.lookup("concat")  # unknown name → UnknownNameError listing the registered ones

A registry is a read-only ``Mapping`` (``name in r``, ``r[name]``, ``list(r)``), in registration order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TypeVar

from medrepro.errors import ParamsError

__all__ = ["Registry", "UnknownNameError"]

T = TypeVar("T")


class UnknownNameError(ParamsError, ValueError):
    """A name that nothing registered (a params error; also a ``ValueError`` for callers that catch those)."""


class Registry(Mapping[str, T]):
    """Objects registered by name with ``@registry.register(name)``; read-only once filled.

    ``kind`` names the things in messages (``"fusion method"``); ``error`` is raised by :meth:`lookup` for an
    unknown name.
    """

    def __init__(self, kind: str, error: type[Exception] = UnknownNameError) -> None:
        self.kind = kind
        self._error = error
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator adding the decorated object under ``name``; returns the object unchanged.

        Registering another object under a taken name is an error, except a re-import of the same definition.
        """

        def add(obj: T) -> T:
            old = self._items.get(name)
            if old is not None and old is not obj and _qualified(old) != _qualified(obj):
                raise ValueError(f"{self.kind} {name!r} is already registered to {_qualified(old)}")
            self._items[name] = obj
            return obj

        return add

    def lookup(self, name: str) -> T:
        """The object registered under ``name``; an unknown name raises ``error`` naming the known ones (sorted)."""
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items))
            raise self._error(f"unknown {self.kind} {name!r}; choose one of {known}") from None

    def names(self) -> tuple[str, ...]:
        """Registered names, in registration order."""
        return tuple(self._items)

    def __getitem__(self, name: str) -> T:
        return self._items[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._items)})"


def _qualified(obj: object) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"
