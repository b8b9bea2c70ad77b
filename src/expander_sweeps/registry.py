"""A named registry of plug-in objects (mask methods, graph quantities): one place for the rules
every registry keeps. Standard library only: the spec reads registries in every process."""

from __future__ import annotations

from typing import Generic, TypeVar

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Objects by name, in registration order (the built-in ones first). `kind` names them in
    errors ("mask method"); `why_identifier` says what the name becomes, so it must be one."""

    def __init__(self, kind: str, why_identifier: str):
        self.kind, self._why = kind, why_identifier
        self._items: dict[str, T] = {}

    def add(self, name: str, item: T, replace: bool = False) -> T:
        """A name already taken is an error unless `replace`: a plug-in must not silently change
        what an existing study's trials meant."""
        if not name.isidentifier():
            raise ValueError(f"a {self.kind}'s name is a Python identifier ({self._why}), but got {name!r}")
        if name in self._items and not replace:
            raise ValueError(f"{self.kind} {name!r} is already registered; choose another name")
        self._items[name] = item
        return item

    def remove(self, name: str) -> None:
        self._items.pop(name, None)

    def get(self, name: str) -> T:
        """The object, or KeyError naming the known ones."""
        if name not in self._items:
            raise KeyError(f"no {self.kind} {name!r}; known: {', '.join(self._items)}")
        return self._items[name]

    def names(self) -> tuple[str, ...]:
        return tuple(self._items)

    def items(self) -> tuple[T, ...]:
        return tuple(self._items.values())
