"""Components by name. ``@register`` a :class:`~atoll.jobs.component.Component` subclass
and job files can use it; the runner never needs to know it exists.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from atoll.jobs.component import Component

_REGISTRY: dict[str, type["Component"]] = {}
_BUILTINS_LOADED = False


def register(cls: type["Component"]) -> type["Component"]:
    """Class decorator: make ``cls`` usable as ``component: cls.name`` in job files."""
    if not getattr(cls, "name", ""):
        raise TypeError(f"{cls.__name__} needs a class attribute 'name'")
    other = _REGISTRY.get(cls.name)
    if other is not None and other is not cls and other.__qualname__ != cls.__qualname__:
        raise TypeError(f"component name {cls.name!r} is taken by {other.__module__}.{other.__qualname__}")
    _REGISTRY[cls.name] = cls
    return cls


def _builtins() -> None:
    global _BUILTINS_LOADED
    if not _BUILTINS_LOADED:
        _BUILTINS_LOADED = True
        importlib.import_module("atoll.jobs.components")


def find(name: str) -> type["Component"] | None:
    _builtins()
    return _REGISTRY.get(name)


def get(name: str) -> type["Component"]:
    cls = find(name)
    if cls is None:
        raise KeyError(f"unknown component {name!r}; known: {', '.join(names())}")
    return cls


def names() -> list[str]:
    _builtins()
    return sorted(_REGISTRY)


def load_plugin(module: str) -> None:
    """Import a module that registers components (``plugins:`` in a job file)."""
    importlib.import_module(module)
