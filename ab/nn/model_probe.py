"""What a model file is, learnt without importing it here: ``probe(path)`` imports the file in a
sandbox (``ab.nn.sandbox``) and returns ``ModelFacts``, which it reported as JSON.

The facts: whether the file satisfies LEMUR's model contract (``supported_hyperparameters()`` giving
names, class ``Net`` with ``train_setup``, ``learn`` and ``forward``) and why not, the names
``supported_hyperparameters()`` gives, and what the file declares of ab.nn's extensions:
``search_space()`` (see ``ab.nn.sweep.hyperparameters``), ``pretrained_available()``, and
``supported_input_sizes()``, the input sizes the model can take (each a side in pixels, or a
``(height, width)`` pair). Whatever the code does (fails to import, hangs, exits, lies in its reply,
forges one) ends as ``ModelFacts.error``; only a machine without a sandbox (``SandboxUnavailable``,
unless ``unsafe=True``) or a sandbox that did not start (``SandboxStartError``) raises.

The reply is what the code says of itself: a file may lie about its hyperparameters, which is no
worse than a file that declares them wrongly; it cannot reach anything outside the sandbox.
"""
from __future__ import annotations

import importlib.util
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from ab.nn import sandbox
from ab.nn.util import faults
from ab.nn.sandbox.limits import GiB, MiB

PROBE_LIMITS = sandbox.Limits(wall_seconds=120, cpu_seconds=120, memory_bytes=4 * GiB, address_space_bytes=16 * GiB,
                              total_memory_bytes=6 * GiB, file_size_bytes=64 * MiB, processes=128, open_files=256,
                              tmpfs_bytes=64 * MiB)
"""Enough to import torch, torchvision and a model file on a loaded machine."""
ERROR_CHARS = 1000
_NAME = {"type": "string", "maxLength": 200}
_SCALAR = {"type": ["string", "number", "boolean", "null"], "maxLength": 200}
_RULE = {"type": "object", "additionalProperties": False,
         "properties": {"choices": {"type": "array", "minItems": 1, "maxItems": 1000, "items": _SCALAR},
                        "low": {"type": "number"}, "high": {"type": "number"}, "log": {"type": "boolean"}}}
_SIZE = {"type": "array", "minItems": 2, "maxItems": 2, "items": {"type": "integer", "minimum": 1, "maximum": 1 << 16}}
FACTS_SCHEMA = {"type": "object", "additionalProperties": False,
                "required": ["type", "id", "error", "supported_hyperparameters", "search_space", "pretrained_available",
                             "input_sizes"],
                "properties": {"type": {"enum": ["facts"]}, "id": {"type": "string", "maxLength": 64},
                               "error": {"type": ["string", "null"], "maxLength": ERROR_CHARS + 100},
                               "supported_hyperparameters": {"type": ["array", "null"], "maxItems": 1000, "items": _NAME},
                               "search_space": {"type": ["object", "null"], "maxProperties": 1000,
                                                "additionalProperties": _RULE},
                               "pretrained_available": {"type": ["boolean", "null"]},
                               "input_sizes": {"type": ["array", "null"], "maxItems": 1000, "items": _SIZE}}}
"""The reply the parent accepts (``ab.nn.sandbox.protocol.validate``)."""


@dataclass(frozen=True)
class ModelFacts:
    path: str
    error: str | None
    """None when the file satisfies the model contract; else why not, one line."""
    supported_hyperparameters: frozenset[str] | None = None
    search_space: dict | None = None
    """``{name: {"choices": [...]}}`` or ``{name: {"low": x, "high": y, "log": bool}}``; None when not declared."""
    pretrained_available: bool | None = None
    """None when the file does not declare ``pretrained_available()``."""
    input_sizes: tuple[tuple[int, int], ...] | None = None
    """``(height, width)`` pairs, sorted; None when the file does not declare ``supported_input_sizes()``."""
    sandboxed: bool = True
    """False only when ``unsafe=True`` let the probe run without a sandbox."""

    @property
    def ok(self) -> bool:
        return self.error is None

    @classmethod
    def of_module(cls, path: str | Path, module) -> "ModelFacts":
        """The facts of a module imported in this process (the package's own, trusted models): what the
        probe would report of its file, read the same way; ``sandboxed`` is False."""
        return _facts(str(path), read(module), sandboxed=False)

    def to_json(self) -> dict:
        return {"path": self.path, "error": self.error, "sandboxed": self.sandboxed,
                "supported_hyperparameters": None if self.supported_hyperparameters is None
                else sorted(self.supported_hyperparameters),
                "search_space": self.search_space, "pretrained_available": self.pretrained_available,
                "input_sizes": None if self.input_sizes is None else [list(s) for s in self.input_sizes]}


def probe(path: str | Path, *, limits: sandbox.Limits = PROBE_LIMITS, binds=(), env: dict | None = None,
          unsafe: bool = False) -> ModelFacts:
    """Import the model file at ``path`` in a sandbox and report what it is. ``binds`` and ``env`` add to
    what the sandbox sees: by default the torch hub cache (read-only, with ``TORCH_HOME``), so that
    ``pretrained_available()`` answers as it would here, and a fault test's settings, as a trial gets them
    (``ab.nn.util.faults.passed``)."""
    file = Path(path).absolute()
    if file.suffix != ".py" or not file.is_file():
        raise ValueError(f"probe: {file} is not a Python file")
    hub_binds, hub_env = torch_hub()
    fault_env, handshake = faults.passed()
    fault_binds = [sandbox.Bind(handshake.resolve(), target=handshake, writable=True)] if handshake else []
    box = sandbox.launch("ab.nn.model_probe", limits=limits, binds=[sandbox.Bind(file), *hub_binds, *fault_binds,
                                                                    *binds],
                         env={**hub_env, **fault_env, **(env or {})}, unsafe=unsafe)
    with box:
        try:
            reply = box.request({"type": "probe", "path": str(file)}, FACTS_SCHEMA)
        except sandbox.SandboxError as error:  # the code's doing: it hung, exited or sent nonsense
            return ModelFacts(str(file), f"probing the code failed: {error}", sandboxed=box.sandboxed)
    return _facts(str(file), reply, box.sandboxed)


def torch_hub() -> tuple[list, dict]:
    """The torch hub cache, read-only, where the sandbox's torch looks for it."""
    hub = _hub_dir()
    if hub.name != "hub" or not hub.is_dir():
        return [], {}
    return [sandbox.Bind(hub)], {"TORCH_HOME": str(hub.parent)}



def _hub_dir() -> Path:
    """``torch.hub.get_dir()`` without importing torch where this process has not (a runner): the folder
    torch documents, ``$TORCH_HOME/hub``, ``TORCH_HOME`` defaulting to ``$XDG_CACHE_HOME/torch`` and that
    to ``~/.cache``; where torch is loaded, its own answer (``torch.hub.set_dir`` may have moved it)."""
    loaded = sys.modules.get("torch.hub")
    if loaded is not None:
        return Path(loaded.get_dir())
    cache = os.getenv("XDG_CACHE_HOME", "~/.cache")
    return Path(os.path.expanduser(os.getenv("TORCH_HOME", os.path.join(cache, "torch")))) / "hub"


def _one_line(text: str) -> str:
    line = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return line if len(line) <= ERROR_CHARS else line[:ERROR_CHARS - 3] + "..."


def _facts(path: str, reply: dict, sandboxed: bool) -> ModelFacts:
    error = reply["error"]
    space = reply["search_space"]
    for name, rule in (space or {}).items():
        if "choices" not in rule and not {"low", "high"} <= set(rule):
            error = error or f"search_space(): {name!r} needs 'choices' or 'low'/'high'"
    sizes = reply["input_sizes"]
    names = reply["supported_hyperparameters"]
    return ModelFacts(path, None if error is None else _one_line(error),
                      None if names is None else frozenset(names), space, reply["pretrained_available"],
                      None if sizes is None else tuple(sorted({(h, w) for h, w in sizes})), sandboxed)


# -- inside the sandbox: runs the model file's code ----------------------------------------------------
def contract_error(module) -> str | None:
    """Why a model module breaks LEMUR's model contract, or None."""
    supported = getattr(module, "supported_hyperparameters", None)
    if not callable(supported):
        return "the code defines no supported_hyperparameters() (LEMUR's model contract)"
    names = supported()
    if isinstance(names, (str, bytes)) or not all(isinstance(n, str) for n in names):
        return f"supported_hyperparameters() must give names (strings), got {names!r}"
    net = getattr(module, "Net", None)
    if not isinstance(net, type):
        return "the code defines no class Net (LEMUR's model contract)"
    missing = [m for m in ("train_setup", "learn", "forward") if not callable(getattr(net, m, None))]
    if missing:
        return f"Net has no {', '.join(missing)} (LEMUR's model contract)"
    return None


def _scalar(value):
    if value is None or isinstance(value, (bool, int, str)) or isinstance(value, float) and math.isfinite(value):
        return value
    raise ValueError(f"choice {value!r} is not a string, number, boolean or None")


def declared_space(module) -> dict | None:
    """The module's ``search_space()`` as plain JSON, None when it declares none."""
    space = getattr(module, "search_space", None)
    if space is None:
        return None
    found = {}
    for name, rule in dict(space()).items():
        if not isinstance(rule, dict) or not (("choices" in rule and list(rule["choices"])) or {"low", "high"} <= set(rule)):
            raise ValueError(f"search_space(): {name!r} needs 'choices' or 'low'/'high', got {rule!r}")
        if "choices" in rule:
            found[str(name)] = {"choices": [_scalar(c) for c in rule["choices"]]}
        else:
            found[str(name)] = {"low": float(rule["low"]), "high": float(rule["high"]), "log": bool(rule.get("log", False))}
    return found


def declared_sizes(module) -> list[list[int]] | None:
    sizes = getattr(module, "supported_input_sizes", None)
    if sizes is None:
        return None
    found = []
    for size in sizes():
        pair = (size, size) if isinstance(size, int) else tuple(size)
        if len(pair) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in pair):
            raise ValueError(f"supported_input_sizes(): {size!r} is not a side or a (height, width) pair of pixels")
        found.append([int(pair[0]), int(pair[1])])
    return found


def read(module) -> dict:
    """An imported model module's facts, as plain JSON (this calls the module's functions); a function
    that raises, raises."""
    facts = {"error": contract_error(module), "supported_hyperparameters": None}
    if facts["error"] is None:
        facts["supported_hyperparameters"] = sorted(str(n) for n in module.supported_hyperparameters())
    facts["search_space"] = declared_space(module)
    available = getattr(module, "pretrained_available", None)
    facts["pretrained_available"] = None if available is None else bool(available())
    facts["input_sizes"] = declared_sizes(module)
    return facts


def inspect(path: str) -> dict:
    """Import the file and read its facts (this runs its code: only in a sandbox)."""
    try:
        spec = importlib.util.spec_from_file_location(f"_ab_nn_probed_{Path(path).stem.replace('-', '_')}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return read(module)
    except BaseException as raised:  # the code's own failure is the answer
        return {"error": f"{type(raised).__name__}: {raised}".strip()[:ERROR_CHARS], "supported_hyperparameters": None,
                "search_space": None, "pretrained_available": None, "input_sizes": None}


def _serve() -> None:
    from ab.nn.sandbox import child

    channel = child.channel()
    request = channel.receive()
    channel.send({"type": "facts", "id": request["id"], **inspect(request["path"])})
    os._exit(0)  # nothing the model code left behind (threads, atexit hooks) runs after the reply


if __name__ == "__main__":
    _serve()
