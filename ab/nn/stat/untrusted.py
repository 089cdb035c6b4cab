"""Names, ids and values read from files or databases this process did not write (a JSON mirror,
LEMUR's stat tree, another machine's database), checked before they become paths or rows.

A config folder name, a model, transform or metric name and a code id all end up as parts of paths
(``stat/train/<config>/``, ``stat/code/<kind>/<id>.json``, the registry's ``<name>.py``), so each
must pass the registry's and the config parser's name rules, fit in one path component, and hold
no NUL, newline or ``/``. Anything else that breaks a rule is a ``BadRecord``: one line, naming the
file (or table and row) it came from.
"""
from __future__ import annotations

import math
import re
from datetime import datetime

from sqlalchemy import BigInteger, Boolean, DateTime, Float, Integer, String, Text

from ab.nn import registry
from ab.nn.config import Config, ConfigError

MAX_NAME = 200
"""Characters of a model, transform or metric name (its file ``<name>.py`` must fit a path component)."""
MAX_COMPONENT = 255
"""Bytes of one path component on Linux filesystems: a config folder's name."""
INT32, INT64 = 2 ** 31, 2 ** 63
_CODE_ID = re.compile(r"[0-9a-f]{32}")


class BadRecord(ValueError):
    """Input that cannot be imported; ``where`` is the file (or source table and row) it came from."""

    def __init__(self, where, problem: str):
        self.where, self.problem = str(where), problem
        shown_where = self.where if self.where.isprintable() else repr(self.where)  # one line, whatever the name
        super().__init__(f"{shown_where}: {problem}")


def shown(value, limit: int = 60) -> str:
    """A value as it can stand in a one-line message: repr (newlines escaped), cut at ``limit``."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _plain(text) -> bool:
    return isinstance(text, str) and "\n" not in text and "\x00" not in text


def config(text, where) -> Config:
    """A config string (a folder name or a trial's ``config``) whose four parts are valid registry names."""
    if not _plain(text) or len(text.encode()) > MAX_COMPONENT:
        raise BadRecord(where, f"config {shown(text)} is not a folder name (task_dataset_metric_nn, at most "
                               f"{MAX_COMPONENT} bytes)")
    try:
        parsed = Config.parse(text)
    except ConfigError as error:
        raise BadRecord(where, str(error)) from None
    name(registry.MODEL, parsed.nn, where)
    name(registry.LOADER, parsed.dataset, where)
    for metric in parsed.metrics:
        name(registry.METRIC, metric, where)
    return parsed


def name(kind: registry.Kind, text, where) -> str:
    """A model, loader, transform or metric name by the registry's rules (``Kind.valid``)."""
    if not _plain(text) or len(text) > MAX_NAME or not kind.valid(text):
        raise BadRecord(where, f"{shown(text)} is not a valid {kind.label} name")
    return text


CODE_KINDS = {"nn": registry.MODEL, "transform": registry.TRANSFORM, "metric": registry.METRIC}
"""The code tables (``nn``, ``transform``, ``metric``; ``code_version.kind``) and the registry kind of their names."""


def code_name(table: str, text, where) -> str:
    """The name of a code-table row: a model or transform name, or a config's metric part (a comma list)."""
    if table not in CODE_KINDS:
        raise BadRecord(where, f"kind {shown(table)} is not one of {', '.join(CODE_KINDS)}")
    for part in text.split(",") if table == "metric" and isinstance(text, str) else [text]:
        name(CODE_KINDS[table], part, where)
    return text


def optional_name(kind: registry.Kind, text, where) -> str | None:
    """A name or nothing (``None``; LEMUR writes ``""`` for a missing transform)."""
    return None if text is None or text == "" else name(kind, text, where)


def code_id(value, where) -> str | None:
    """A code checksum (LEMUR's md5, 32 lowercase hex digits) or ``None``."""
    if value is None:
        return None
    if not isinstance(value, str) or not _CODE_ID.fullmatch(value):
        raise BadRecord(where, f"code id {shown(value)} is not an md5 checksum (32 hex digits)")
    return value


def epoch(stem: str) -> int | None:
    """The epoch of a file ``<epoch>.json`` (ASCII digits); ``None`` for other files, which LEMUR skips too."""
    if not (stem.isascii() and stem.isdigit()):
        return None
    value = int(stem)
    return value if 0 <= value < INT32 else None


def number(value, where, what: str) -> float | None:
    """A JSON number (not a boolean) as a float; non-finite values are stored as unknown."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadRecord(where, f"{what} {shown(value)} is not a number")
    value = float(value)
    return value if math.isfinite(value) else None


def integer(value, where, what: str, bound: int = INT64) -> int | None:
    """A JSON integer within ``[-bound, bound)`` (an integral float is taken as its integer)."""
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not -bound <= value < bound:
        raise BadRecord(where, f"{what} {shown(value)} is not an integer below {bound}")
    return value


def column_value(column, value, where):
    """A JSON value in the type of a table column (``where`` and the column name in the error)."""
    if value is None:
        return None
    what = f"column {column.name}"
    kind = column.type
    if isinstance(kind, DateTime):
        if isinstance(value, datetime):
            return value
        if not isinstance(value, str):
            raise BadRecord(where, f"{what}: {shown(value)} is not a date and time")
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            raise BadRecord(where, f"{what}: {shown(value)} is not an ISO date and time") from None
    if isinstance(kind, Boolean):
        if isinstance(value, bool) or value in (0, 1):
            return bool(value)
        raise BadRecord(where, f"{what}: {shown(value)} is not a boolean")
    if isinstance(kind, BigInteger):
        return integer(value, where, what)
    if isinstance(kind, Integer):
        return integer(value, where, what, INT32)
    if isinstance(kind, Float):
        return number(value, where, what)
    if isinstance(kind, (String, Text)):
        if not isinstance(value, str):
            raise BadRecord(where, f"{what}: {shown(value)} is not a string")
        return value
    return value  # JSON and other types: as the mirror wrote it


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def text_may_be_unstorable(text: str) -> bool:
    """Whether a JSON text may decode to a character no database text column can store: NUL (PostgreSQL's
    text cannot hold it) or half of a UTF-16 surrogate pair (no UTF-8 encoding), written as ``\\u`` escapes."""
    return "\x00" in text or "\\u0000" in text or _SURROGATE_ESCAPE.search(text) is not None


def unstorable(value) -> bool:
    """Whether a decoded JSON value holds such a character, in a key or a string anywhere in it."""
    if isinstance(value, str):
        return "\x00" in value or any("\ud800" <= c <= "\udfff" for c in value)
    if isinstance(value, dict):
        return any(unstorable(k) or unstorable(v) for k, v in value.items())
    if isinstance(value, list):
        return any(unstorable(v) for v in value)
    return False
