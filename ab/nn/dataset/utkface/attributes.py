"""Gender and race of a UTKFace image, as its labels state them, and where each was read.

UTKFace labels every image in its file name, ``age_gender_race_datetime``: gender 0 male, 1 female;
race 0 White, 1 Black, 2 Asian, 3 Indian, 4 Others. LEMUR's parquet files (Hugging Face
``nu-delta/utkface``) carry them as columns (``gender``, ``ethnicity``), by name ("Female", "White")
or by the same codes. A label that is missing or is none of these is ``unknown``, and its ``*_from``
says why: nothing is inferred, so a group's count is what the labels say.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from ab.nn.dataset.utkface.names import Unparseable, parse

GENDERS = ("male", "female")
RACES = ("White", "Black", "Asian", "Indian", "Others")
UNKNOWN = "unknown"
COLUMNS = {"gender": ("gender", "sex"), "race": ("race", "ethnicity")}
"""Parquet columns that may hold each label, in the order they are looked for."""

_NAMES = {"gender": {**{str(i): g for i, g in enumerate(GENDERS)}, **{g: g for g in GENDERS}},
          "race": {**{str(i): r for i, r in enumerate(RACES)}, **{r.lower(): r for r in RACES}, "other": "Others"}}
FROM_NAME = "file name"


@dataclass(frozen=True)
class Attributes:
    """An image's labels; ``gender`` is one of ``GENDERS``, ``race`` one of ``RACES``, either may be
    ``UNKNOWN``. ``*_from``: where the value was read, or why it is unknown."""

    age: float
    gender: str
    race: str
    age_from: str
    gender_from: str
    race_from: str


def from_name(name: str, age: float) -> Attributes:
    """Labels from a UTKFace file name (a name without a gender or race field leaves that unknown)."""
    try:
        label = parse(name)
    except Unparseable as error:
        why = f"file name: {error.reason}"
        return Attributes(float(age), UNKNOWN, UNKNOWN, FROM_NAME, why, why)
    gender = (GENDERS[label.gender], FROM_NAME) if label.gender is not None else (UNKNOWN, "file name has no gender")
    race = (RACES[label.race], FROM_NAME) if label.race is not None else (UNKNOWN, "file name has no race")
    return Attributes(float(age), gender[0], race[0], FROM_NAME, gender[1], race[1])


def _column_value(kind: str, columns: Mapping[str, object]) -> tuple[str, str]:
    column = next((c for c in COLUMNS[kind] if c in columns), None)
    if column is None:
        return UNKNOWN, f"parquet has no {kind} column"
    value = columns[column]
    if value is None or (isinstance(value, float) and value != value):
        return UNKNOWN, f"parquet column {column!r} is empty"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    found = _NAMES[kind].get(str(value).strip().lower())
    if found is None:
        return UNKNOWN, f"parquet column {column!r}: unrecognised value {str(value)[:40]!r}"
    return found, f"parquet column {column!r}"


def from_columns(age: float, columns: Mapping[str, object]) -> Attributes:
    """Labels from a table row's columns (parquet): names or UTKFace's codes, case-insensitive."""
    gender, race = _column_value("gender", columns), _column_value("race", columns)
    return Attributes(float(age), gender[0], race[0], "parquet column", gender[1], race[1])


def of_entry(entry, age: float) -> Attributes:
    """An image's labels from its columns where its source has them (parquet), else from its name."""
    if entry.columns is not None:
        return from_columns(age, dict(entry.columns))
    return from_name(entry.name, age)
