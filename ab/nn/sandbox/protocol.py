"""Messages between the parent and a sandboxed child: JSON objects, each framed by its length (4 bytes,
big-endian), on a pair of pipes, in both directions (so either side may ask and the other answer).

Nothing but JSON crosses (never pickle), every message has a size cap, and the parent checks each
message it receives against a schema before it uses it: whatever the child sends ends as a
``ProtocolError`` with a one-line message, never as a crash of the parent or as code run in it.
The schema language is the small part of JSON Schema that messages need (see ``validate``).
"""
from __future__ import annotations

import json
import math
import os
import select
import struct
import time

from ab.nn.sandbox.errors import ProtocolError

MAX_MESSAGE = 1 << 20
"""Default cap on one message's JSON text, in bytes."""
_HEADER = struct.Struct(">I")
_CHUNK = 1 << 16


def encode(message: dict, limit: int = MAX_MESSAGE) -> bytes:
    if not isinstance(message, dict):
        raise ProtocolError(f"a message must be a JSON object, got {type(message).__name__}")
    try:
        text = json.dumps(message, allow_nan=False, separators=(",", ":")).encode("utf-8")
    except (TypeError, ValueError) as error:
        raise ProtocolError(f"the message is not plain JSON ({error})") from None
    if len(text) > limit:
        raise ProtocolError(f"a message of {len(text)} bytes, over the cap of {limit} bytes")
    return _HEADER.pack(len(text)) + text


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


MAX_DEPTH = 64
"""Deepest nesting of arrays and objects a message may have. Checked before parsing: json's C parser
recurses once per level, and where a library has raised the interpreter's recursion limit, a deep enough
message from a hostile child would overflow the parent's C stack (a crash, not an error)."""


def _depth(text: bytes) -> int:
    """The deepest nesting of ``[``/``{`` outside strings (a scan of the bytes, no parsing)."""
    if text.count(b"[") + text.count(b"{") <= MAX_DEPTH:
        return 0
    depth = deepest = 0
    in_string = escaped = False
    for byte in text:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


def decode(text: bytes) -> dict:
    if _depth(text) > MAX_DEPTH:
        raise ProtocolError(f"a malformed message (nested deeper than {MAX_DEPTH} levels)")
    try:
        value = json.loads(text.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        detail = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        raise ProtocolError(f"a malformed message ({detail})") from None
    if not isinstance(value, dict):
        raise ProtocolError(f"a JSON {type(value).__name__} where a message (an object) belongs")
    return value


class Channel:
    """One side's end of the two pipes: messages are read from ``read_fd`` and written to ``write_fd``.
    A ``deadline`` (``time.monotonic()``) bounds one read or write, ``TimeoutError`` when it passes; None
    waits as long as it takes. The file descriptors belong to the caller."""

    def __init__(self, read_fd: int, write_fd: int, limit: int = MAX_MESSAGE):
        self.read_fd, self.write_fd, self.limit = read_fd, write_fd, limit

    def send(self, message: dict, deadline: float | None = None) -> None:
        data = memoryview(encode(message, self.limit))
        while data:
            _wait(self.write_fd, deadline, write=True)
            try:
                written = os.write(self.write_fd, data[:_CHUNK])
            except BlockingIOError:
                continue
            data = data[written:]

    def receive(self, deadline: float | None = None) -> dict | None:
        """The next message, or None when the other side closed its end between two messages."""
        header = self._read(_HEADER.size, deadline, first=True)
        if header is None:
            return None
        (size,) = _HEADER.unpack(header)
        if size > self.limit:
            raise ProtocolError(f"a message of {size} bytes, over the cap of {self.limit} bytes")
        return decode(self._read(size, deadline, first=False) or b"")

    def _read(self, size: int, deadline: float | None, first: bool) -> bytes | None:
        parts, got = [], 0
        while got < size:
            _wait(self.read_fd, deadline, write=False)
            try:
                chunk = os.read(self.read_fd, min(size - got, _CHUNK))
            except BlockingIOError:
                continue
            if not chunk:
                if first and got == 0:
                    return None
                raise ProtocolError(f"a message cut off after {got} of {size} bytes")
            parts.append(chunk)
            got += len(chunk)
        return b"".join(parts)


def _wait(fd: int, deadline: float | None, write: bool) -> None:
    timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
    ready = select.select([], [fd], [], timeout)[1] if write else select.select([fd], [], [], timeout)[0]
    if not ready:
        raise TimeoutError("no message before the deadline")


_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}
_KEYWORDS = {"type", "enum", "properties", "required", "additionalProperties", "items", "minItems", "maxItems",
             "maxProperties", "maxLength", "minimum", "maximum"}


def _is(value, kind: str) -> bool:
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return isinstance(value, _TYPES[kind])


def validate(value, schema: dict, where: str = "message") -> None:
    """Check a decoded message against ``schema``: ``type`` (a name or a list of names: object, array,
    string, integer, number, boolean, null), ``enum``, ``properties``, ``required``,
    ``additionalProperties`` (False, or a schema for the other values), ``items``, ``minItems``,
    ``maxItems``, ``maxProperties``, ``maxLength``, ``minimum``, ``maximum``. Raises ``ProtocolError``
    naming the first place that differs."""
    unknown = set(schema) - _KEYWORDS
    if unknown:
        raise ValueError(f"schema keywords not supported: {', '.join(sorted(unknown))}")
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else kinds
        if not any(_is(value, kind) for kind in kinds):
            raise ProtocolError(f"{where}: expected {' or '.join(kinds)}, got {type(value).__name__}")
    if "enum" in schema and not any(value == option and type(value) is type(option) for option in schema["enum"]):
        raise ProtocolError(f"{where}: {_short(value)} is not one of {schema['enum']}")
    if isinstance(value, str) and len(value) > schema.get("maxLength", math.inf):
        raise ProtocolError(f"{where}: a string of {len(value)} characters, at most {schema['maxLength']} allowed")
    if _is(value, "number"):
        if value < schema.get("minimum", -math.inf) or value > schema.get("maximum", math.inf):
            raise ProtocolError(f"{where}: {value} is outside [{schema.get('minimum')}, {schema.get('maximum')}]")
    if isinstance(value, list):
        if not schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", math.inf):
            raise ProtocolError(f"{where}: {len(value)} items, allowed {schema.get('minItems', 0)} to "
                                f"{schema.get('maxItems', 'any')}")
        for index, item in enumerate(value):
            if "items" in schema:
                validate(item, schema["items"], f"{where}[{index}]")
    if isinstance(value, dict):
        _validate_object(value, schema, where)


def _validate_object(value: dict, schema: dict, where: str) -> None:
    if len(value) > schema.get("maxProperties", math.inf):
        raise ProtocolError(f"{where}: {len(value)} keys, at most {schema['maxProperties']} allowed")
    missing = [key for key in schema.get("required", ()) if key not in value]
    if missing:
        raise ProtocolError(f"{where}: missing {', '.join(missing)}")
    properties, other = schema.get("properties", {}), schema.get("additionalProperties", True)
    for key, item in value.items():
        if key in properties:
            validate(item, properties[key], f"{where}.{key}")
        elif other is False:
            raise ProtocolError(f"{where}: unexpected key {_short(key)}")
        elif isinstance(other, dict):
            validate(item, other, f"{where}[{_short(key)}]")


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
