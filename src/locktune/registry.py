"""Registries by name: adding an image tower, text tower, pair source or benchmark is adding one file."""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

from locktune.errors import LocktuneError

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> factory map whose lookup error lists every valid name."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._entries[name] = entry
            return entry

        return add

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise LocktuneError(f"unknown {self.kind} '{name}'; valid: {', '.join(self.names())}")
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries
