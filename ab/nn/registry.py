"""Discovery of models, loaders, transforms and metrics: one ``.py`` file per entry, named by its stem.

Entries come from two places: the package's own folders (``ab/nn/nn/``, ``ab/nn/loader/``,
``ab/nn/transform/``, ``ab/nn/metric/``) and, after them, the same folders under the workspace root
(``<root>/nn/`` ...; the root of ``ab.nn.workspace.active``), where generated and contributed files
go without touching the installed package. On a name clash the package's file wins. Package
entries are imported by package name (``ab.nn.nn.<Name>``), workspace entries from their path.

Model files being checked by ``check_nn`` are *staged* (``staged``): entries of the registry for the
duration of a run, from a private folder, so that code that fails its check never lands in ``nn/``.

A name read from a config string or the command line is checked against the files in the
registry folders before anything is imported, so ``../../x`` or a dotted name can never reach
``importlib``. Importing a file runs its code with this process's rights: the sweep runs workspace and
staged models only in a sandboxed child (``ab.nn.sweep.isolation``) and learns about them from a
sandboxed probe (``ab.nn.model_probe``); only package entries are imported in the runner itself.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from ab.nn.util.lemur_hash import lemur_md5
from ab.nn.util.scoped import Scoped

_PACKAGE_ROOT = Path(__file__).resolve().parent
PACKAGE, WORKSPACE = "package", "workspace"


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


def workspace_directory(kind: Kind) -> Path:
    """The kind's folder under the active workspace root (it may not exist)."""
    from ab.nn import workspace

    return workspace.active.current().code_dir(kind.folder)


def _entries(directory: Path, kind: Kind) -> dict[str, Path]:
    """Entries of one folder; files starting with ``_`` are helpers, not entries."""
    if not directory.is_dir():
        return {}
    return {p.stem: p for p in directory.glob("*.py")
            if not p.stem.startswith("_") and kind.valid(p.stem) and p.is_file()}


staged = Scoped[dict]("staged model files", dict)
"""Model files that are entries for the duration of a run without being in any registry folder:
``{name: path}`` (``check_nn``'s code under check). They come after the workspace's, before the package's."""


def _files(kind: Kind) -> dict[str, Path]:
    """Every entry of a kind: the workspace's, the staged ones over them, the package's over all (the
    package wins)."""
    extra = {name: Path(file) for name, file in staged.current().items() if kind.valid(name)} if kind is MODEL else {}
    return _entries(workspace_directory(kind), kind) | extra | _entries(kind.directory, kind)


def names(kind: Kind) -> list[str]:
    """Every entry of a kind, sorted (package and workspace together)."""
    return sorted(_files(kind))


def origin(kind: Kind, name: str) -> str:
    """Where an entry comes from: ``package`` or ``workspace``."""
    return PACKAGE if path(kind, name).parent == kind.directory else WORKSPACE


def path(kind: Kind, name: str) -> Path:
    files = _files(kind) if isinstance(name, str) and kind.valid(name) else {}
    if name not in files:
        known = ", ".join(names(kind)) or "none"
        raise RegistryError(f"unknown {kind.label} {name!r} (no {kind.package.replace('.', '/')}/{name}.py and no "
                            f"{workspace_directory(kind)}/{name}.py; known: {known})")
    return files[name]


def load(kind: Kind, name: str) -> ModuleType:
    """Import a registry entry and check it has the attributes its LEMUR contract requires."""
    file = path(kind, name)
    try:
        if file.parent == kind.directory:
            module = importlib.import_module(f"{kind.package}.{name}")
        else:
            module = _import_file(kind, name, file)
    except Exception as error:  # a broken file is the contributor's error, reported by name
        raise RegistryError(f"{kind.label} {name!r} cannot be imported: {type(error).__name__}: {error}") from error
    missing = [attr for attr in kind.required if not hasattr(module, attr)]
    if missing:
        raise RegistryError(f"{kind.label} {name!r} lacks {', '.join(missing)} required by the LEMUR contract")
    return module


def _import_file(kind: Kind, name: str, file: Path) -> ModuleType:
    """A workspace file imported from its path, under a module name unique to its path and content
    (a changed file is imported afresh; the same file once per process)."""
    code = file.read_bytes()
    digest = hashlib.sha256(str(file.resolve()).encode() + b"\0" + code).hexdigest()[:16]
    module_name = f"_ab_nn_workspace_{kind.folder}_{name.replace('-', '_')}_{digest}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


def source(kind: Kind, name: str) -> str:
    return path(kind, name).read_text(encoding="utf-8")


def checksum(code: str) -> str:
    """LEMUR's code id: md5 of the code with all whitespace removed."""
    return lemur_md5(code)
