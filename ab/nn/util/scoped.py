"""A setting with a process-wide default that a run can override for its own duration."""
from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class Scoped(Generic[T]):
    """``current()`` returns the value set by the innermost ``use(...)``, else ``default()``.

    LEMUR's loader contract (``loader(transform_fn, task)``) has no room for run settings such
    as the data folder or the split protocol; the runner sets them here instead.
    """

    def __init__(self, name: str, default: Callable[[], T]):
        self._var: ContextVar[T | None] = ContextVar(name, default=None)
        self._default = default

    def current(self) -> T:
        value = self._var.get()
        return self._default() if value is None else value

    @contextmanager
    def use(self, value: T) -> Iterator[T]:
        token = self._var.set(value)
        try:
            yield value
        finally:
            self._var.reset(token)
