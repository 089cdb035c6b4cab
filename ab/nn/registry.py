"""Discovery of models, loaders, transforms and metrics: one ``.py`` file per entry, named by its stem.

A name read from a config string or the command line is checked against the files in the
registry folder before anything is imported, so ``../../x`` or a dotted name can never reach
``importlib``. Model files are code and run with the user's rights; only put trusted files there.
"""
from __future__ import annotations

import hashlib
import importlib
import re
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

_PACKAGE_ROOT = Path(__file__).resolve().parent


class RegistryError(LookupError):
    """An unknown or unusable registry entry; the message is one line and names it."""


@dataclass(frozen=True)
class Kind:
    folder: str
    label: str
    required: tuple[str, ...]
    in_config: bool = True  # named inside config strings, so no "_" in names

    def valid(self, name: str) -> bool:
        return bool((_CONFIG_NAME if self.in_config else _NAME).match(name))

    @property
    def package(self) -> str:
        return f"ab.nn.{self.folder}"

    @property
    def directory(self) -> Path:
        return _PACKAGE_ROOT / self.folder


MODEL = Kind("nn", "model", ("supported_hyperparameters", "Net"))
LOADER = Kind("loader", "dataset loader", ("loader",))
TRANSFORM = Kind("transform", "transform", ("transform",), in_config=False)
METRIC = Kind("metric", "metric", ("create_metric",))
KINDS = (MODEL, LOADER, TRANSFORM, METRIC)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")
_CONFIG_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9\-]*$")


def names(kind: Kind) -> list[str]:
    """Every entry of a kind, sorted; files starting with ``_`` are helpers, not entries."""
    return sorted(p.stem for p in kind.directory.glob("*.py")
                  if not p.stem.startswith("_") and kind.valid(p.stem))


def path(kind: Kind, name: str) -> Path:
    if not isinstance(name, str) or not kind.valid(name) or name not in names(kind):
        known = ", ".join(names(kind)) or "none"
        raise RegistryError(f"unknown {kind.label} {name!r} (no {kind.package.replace('.', '/')}/{name}.py; known: {known})")
    return kind.directory / f"{name}.py"


def load(kind: Kind, name: str) -> ModuleType:
    """Import a registry entry and check it has the attributes its LEMUR contract requires."""
    path(kind, name)
    try:
        module = importlib.import_module(f"{kind.package}.{name}")
    except Exception as error:  # a broken file is the contributor's error, reported by name
        raise RegistryError(f"{kind.label} {name!r} cannot be imported: {type(error).__name__}: {error}") from error
    missing = [attr for attr in kind.required if not hasattr(module, attr)]
    if missing:
        raise RegistryError(f"{kind.label} {name!r} lacks {', '.join(missing)} required by the LEMUR contract")
    return module


def source(kind: Kind, name: str) -> str:
    return path(kind, name).read_text(encoding="utf-8")


def checksum(code: str) -> str:
    """LEMUR's code id: md5 of the code with all whitespace removed."""
    return hashlib.md5(re.sub(r"\s+", "", code).encode("utf-8")).hexdigest()
