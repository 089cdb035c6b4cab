"""Labels from UTKFace file names: ``age_gender_race_datetime.jpg.chip.jpg``.

The real set has a few malformed names (a missing race field, a space before the extension, a
missing dot). A name is accepted when its age is unambiguous: the first field is a whole number
of years in range and every other field that is present is valid for its position.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

MAX_AGE = 120
_EXTENSION = re.compile(r"\.?(jpe?g|png)(\.chip\.(jpe?g|png))?$", re.IGNORECASE)
_TIMESTAMP = re.compile(r"^\d{8,20}$")


@dataclass(frozen=True)
class Label:
    age: int
    gender: int | None
    race: int | None


class Unparseable(ValueError):
    """A file name whose age cannot be read without guessing; ``reason`` is a short category."""

    def __init__(self, name: str, reason: str):
        super().__init__(f"{name}: {reason}")
        self.reason = reason


def parse(name: str) -> Label:
    stem = _EXTENSION.sub("", name.strip()).replace(" ", "")
    fields = stem.split("_")
    if not fields[0].isdigit():
        raise Unparseable(name, "no age field")
    age = int(fields[0])
    if age > MAX_AGE:
        raise Unparseable(name, "age out of range")
    rest = fields[1:]
    if rest and _TIMESTAMP.match(rest[-1]):
        rest = rest[:-1]
    if not 1 <= len(fields) - 1 <= 3 or len(rest) > 2:
        raise Unparseable(name, "wrong number of fields")
    gender = race = None
    if len(rest) >= 1:
        if rest[0] not in ("0", "1"):
            raise Unparseable(name, "bad gender field")
        gender = int(rest[0])
    if len(rest) == 2:
        if rest[1] not in ("0", "1", "2", "3", "4"):
            raise Unparseable(name, "bad race field")
        race = int(rest[1])
    return Label(age=age, gender=gender, race=race)
