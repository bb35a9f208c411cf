"""One registry class for every family of interchangeable parts, and a config field naming one.

Solvers, ES variants, fitness shapings, plasticity rules, meta-solvers and learners each live in
a `Registry`; a config field typed `registry.field_type()` accepts only a registered name, so a
misspelled `--set es=nosuch` is refused before a run folder exists, and a part registered by a
user's own code can be chosen from the command line.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, Generic, TypeVar

from pydantic import AfterValidator

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind.

    >>> solvers = Registry("solver")
    >>> _ = solvers.register("plain", abs)
    >>> solvers.get("plain") is abs, solvers.names()
    (True, ['plain'])
    >>> solvers.get("nosuch")
    Traceback (most recent call last):
    ...
    ValueError: unknown solver 'nosuch'; choose one of: plain
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T, *, overwrite: bool = False) -> T:
        """Add `entry` under `name` (a duplicate name is an error unless `overwrite`)."""
        if not isinstance(name, str) or not name:
            raise TypeError(f"{self.kind} name must be a non-empty str, got {name!r}")
        if name in self._entries and not overwrite:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> T:
        """The entry called `name`; an unknown name is a `ValueError` listing the choices."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise ValueError(
                f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}"
            ) from None

    def pop(self, name: str) -> T:
        """Remove and return the entry called `name` (e.g. one a test registered)."""
        entry = self.get(name)
        del self._entries[name]
        return entry

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def validate(self, name: Any) -> str:
        """`name` if it is registered; otherwise the `ValueError` of `get` (pydantic shows it)."""
        self.get(name)
        return name

    def field_type(self) -> Any:
        """A pydantic type for config fields that name an entry: `es: ES_NAMES = "openai-es"`.

        The check runs when the config is validated, against the entries registered then.
        """
        return Annotated[str, AfterValidator(self.validate)]
