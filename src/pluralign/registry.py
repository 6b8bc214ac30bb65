"""One registry type for every pluggable kind of thing: name -> object.

    METRICS: Registry[DistMetric] = Registry("metric", field="metric")

    @METRICS.register("emd")
    def emd(p, q, ordinal=True): ...

    METRICS.get("emd")       # the object; an unknown name raises PluralignError naming the choices
    METRICS.names()          # sorted names, for --help and error messages

Entries are added by a decorator (:meth:`Registry.register`) or a call (:meth:`Registry.add`); a
name registered twice by different code is refused (:class:`RegistryError`), while the same
definition registered again (its module reloaded) replaces the old entry. Two kinds of laziness:
``Registry(..., modules=[...])`` imports those modules (which register their entries) on the first
lookup, and :meth:`Registry.add_lazy` names an entry whose object is imported from ``"module:attr"``
(or made by a function) the first time it is asked for, once.

A registry reads like a read-only dict: ``name in reg``, ``reg[name]`` (KeyError when unknown),
iteration over names in registration order, ``len``, ``keys()``, ``values()``, ``items()``.
"""

from __future__ import annotations

import importlib
from typing import Callable, Generic, Iterator, Sequence, TypeVar

from pluralign.errors import PluralignError

T = TypeVar("T")


class RegistryError(ValueError):
    """A name registered twice in one registry."""


def _origin(obj) -> str:
    """Where ``obj`` was defined: module.qualname of a function or class, else the object itself."""
    if hasattr(obj, "__qualname__"):
        return f"{getattr(obj, '__module__', '?')}.{obj.__qualname__}"
    return repr(obj)


def _same_definition(old, new) -> bool:
    """``new`` is ``old`` again (e.g. its module reloaded): the same function or class by
    module and name, or an equal value."""
    if hasattr(old, "__qualname__") and hasattr(new, "__qualname__"):
        return _origin(old) == _origin(new)
    return old == new


class Registry(Generic[T]):
    def __init__(self, kind: str, *, field: str | None = None, modules: Sequence[str] = ()):
        """``kind``: what the entries are, in messages ("optimizer", "adapter method");
        ``field``: the option an unknown name is reported against; ``modules``: imported on the
        first lookup so that they register their entries."""
        self.kind = kind
        self.field = field
        self._modules = tuple(modules)
        self._modules_loaded = not self._modules
        self._entries: dict[str, T] = {}
        self._lazy: dict[str, str | Callable[[], T]] = {}

    # ------------------------------------------------------------------ adding
    def add(self, name: str, obj: T) -> T:
        """Register ``obj`` under ``name``; returns ``obj``."""
        if not isinstance(name, str) or not name:
            raise RegistryError(f"a {self.kind} needs a non-empty name, got {name!r}")
        if name in self._lazy:
            raise RegistryError(f"{self.kind} {name!r} is already registered (lazily, from {self._lazy[name]!r})")
        old = self._entries.get(name)
        if old is not None and old is not obj and not _same_definition(old, obj):
            raise RegistryError(f"{self.kind} {name!r} is registered twice: {_origin(old)} and {_origin(obj)}")
        self._entries[name] = obj
        return obj

    def register(self, name: str | None = None) -> Callable[[T], T]:
        """Decorator: register the decorated object under ``name`` (default: its ``name``
        attribute, as prompt methods and optimizers carry)."""

        def deco(obj: T) -> T:
            key = name if name is not None else getattr(obj, "name", None)
            return self.add(key, obj)

        return deco

    def add_lazy(self, name: str, target: str | Callable[[], T]) -> None:
        """Register ``name`` without loading it: ``target`` is ``"module:attr"`` or a function
        returning the object; it is loaded on the first lookup of ``name``, once."""
        if name in self._entries or name in self._lazy:
            raise RegistryError(f"{self.kind} {name!r} is registered twice")
        self._lazy[name] = target

    # ------------------------------------------------------------------ looking up
    def _load_modules(self) -> None:
        if not self._modules_loaded:
            self._modules_loaded = True  # first: the modules' own registrations look names up too
            try:
                for mod in self._modules:
                    importlib.import_module(mod)
            except BaseException:
                self._modules_loaded = False  # tried again at the next lookup
                raise

    def _resolve(self, name: str) -> T:
        target = self._lazy[name]
        if callable(target):
            obj = target()
        else:
            mod, _, attr = target.partition(":")
            obj = getattr(importlib.import_module(mod), attr)
        self._entries[name] = obj
        del self._lazy[name]
        return obj

    def names(self) -> list[str]:
        """Every registered name, sorted (for --help and error messages)."""
        return sorted(self)

    def get(self, name: str) -> T:
        """The entry ``name``; an unknown name raises :class:`PluralignError` listing the choices."""
        try:
            return self[name]
        except KeyError:
            raise PluralignError(f"unknown {self.kind} {name!r} (available: {', '.join(self.names())})",
                                 field=self.field) from None

    def __getitem__(self, name: str) -> T:
        self._load_modules()
        if name in self._entries:
            return self._entries[name]
        if name in self._lazy:
            return self._resolve(name)
        raise KeyError(name)

    def __contains__(self, name) -> bool:
        self._load_modules()
        return name in self._entries or name in self._lazy

    def __iter__(self) -> Iterator[str]:
        self._load_modules()
        return iter([*self._entries, *self._lazy])

    def __len__(self) -> int:
        self._load_modules()
        return len(self._entries) + len(self._lazy)

    def keys(self) -> list[str]:
        return list(self)

    def values(self) -> list[T]:
        return [self[k] for k in self]

    def items(self) -> list[tuple[str, T]]:
        return [(k, self[k]) for k in self]

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self)})"


__all__ = ["Registry", "RegistryError"]
