"""Lazy package fronts: names that load their module on first use, so that importing a package
(or a light module inside it) stays cheap."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_getattr(package: str, names: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: ``names`` maps each public name to the
    submodule (relative to ``package``) that defines it; the value is cached in the package."""
    import sys

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{module}", package), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__


class LazyPattern:
    """A regular expression compiled on first use: ``LazyPattern(r"...").match(text)``.

    Module-level ``re.compile`` calls cost ~0.3 ms each at import; most of them serve code that
    a given machine never runs (RAPL zone names where there is no RAPL)."""

    __slots__ = ("_compiled", "_flags", "_pattern")

    def __init__(self, pattern: str, flags: int = 0) -> None:
        self._pattern = pattern
        self._flags = flags
        self._compiled: Any = None

    def __getattr__(self, name: str) -> Any:  # match, search, sub, fullmatch, pattern...
        if self._compiled is None:
            import re

            self._compiled = re.compile(self._pattern, self._flags)
        return getattr(self._compiled, name)


class LazyLogger:
    """``logging.getLogger(name)``, with ``logging`` imported on the first call: importing it
    costs ~5 ms of a first ``start()``, and a run that warns of nothing never needs it."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:  # warning, debug, info, isEnabledFor...
        import logging

        return getattr(logging.getLogger(self._name), attr)
