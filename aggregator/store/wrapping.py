"""StoreError from every public method of a store class, for any error of its database driver
(sqlite3, psycopg): the one wrapper both stores use. No I/O."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from ..config.secret import redact
from ..errors import StoreError

C = TypeVar("C", bound=type)


def cause(e: BaseException) -> str:
    """A driver's error as one line of a message, redacted: libpq's run over several
    ("connection refused" then "Is the server running on that host…?"), a log line must not."""
    return redact("; ".join(line.strip() for line in str(e).splitlines() if line.strip()))


_WRAPPED = "_raises_store_error"  # set on a method once wrapped


def raising_store_error(driver_error: type[Exception]) -> Callable[[C], C]:
    """A class decorator: every public method of the class raises StoreError("<method> failed
    on <store>: <cause>") for any `driver_error`, chained and redacted (a driver may quote a
    connection parameter; redact() blanks every secret we know), reads as much as writes.
    Done once here rather than by hand in each method, so that a new method cannot forget it.
    The store names itself by its `path` (a file, or a URL without its password)."""

    def failure(what: str, store: Any, e: Exception) -> StoreError:
        return StoreError(f"{what} failed on {store.path}: {cause(e)}")

    def wrapped(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        what = name.replace("_", " ")
        if inspect.isgeneratorfunction(fn):
            # A generator's errors come while it is iterated (a page read by fetchmany), not
            # when it is called: the wrapper has to be a generator too.
            @functools.wraps(fn)
            def generator(self: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
                try:
                    yield from fn(self, *args, **kwargs)
                except driver_error as e:
                    raise failure(what, self, e) from e

            setattr(generator, _WRAPPED, True)
            return generator

        @functools.wraps(fn)
        def method(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return fn(self, *args, **kwargs)
            except driver_error as e:
                raise failure(what, self, e) from e

        setattr(method, _WRAPPED, True)
        return method

    def decorate(cls: C) -> C:
        # Inherited methods too (a mixin both stores share, store/common.py), each once:
        # a base class's methods, wrapped already by its own decorator, are marked so.
        for name in dir(cls):
            value = inspect.getattr_static(cls, name)
            public = not name.startswith("_") and inspect.isfunction(value)
            if public and not getattr(value, _WRAPPED, False):
                setattr(cls, name, wrapped(name, value))
        return cls

    return decorate
