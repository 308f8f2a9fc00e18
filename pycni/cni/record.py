"""A minimal record base for the per-call path.

`dataclasses` costs ~13 ms of a frozen plugin's start-up (it imports `inspect`, which imports
`ast`, `dis`, `tokenize`, ...) — as much as the interpreter itself. Records here are classes
with `__slots__` and an explicit `__init__`; this base gives them value equality and a readable
repr, and refuses attribute assignment after `__init__` (set with `_init`).
"""

from __future__ import annotations


class Record:
    __slots__: tuple[str, ...] = ()

    def _init(self, **values: object) -> None:
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and all(
            getattr(self, name) == getattr(other, name) for name in self.__slots__
        )

    def __hash__(self) -> int:
        return hash(tuple(_hashable(getattr(self, name)) for name in self.__slots__))

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({fields})"


def _hashable(value: object) -> object:
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    return value
