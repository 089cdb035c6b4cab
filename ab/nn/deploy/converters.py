"""The two PyTorch -> TFLite converters and where each runs.

``onnx2tf`` converts the ONNX file in this interpreter's deployment worker. ``litert-torch``
(LEMUR's converter) converts the PyTorch model directly; it requires torch < 2.15, so it runs in
its own environment, found in this order: ``$LEMUR_LITERT_TORCH_PYTHON``, this interpreter when it
can import ``litert_torch``, the checkout's ``.venv-litert-torch`` (``scripts/setup_litert_torch.sh``).
"""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

ONNX2TF, LITERT_TORCH = "onnx2tf", "litert-torch"
CONVERTERS = (ONNX2TF, LITERT_TORCH)
PYTHON_ENV = "LEMUR_LITERT_TORCH_PYTHON"
ENV_FOLDER = ".venv-litert-torch"
SCRIPT = Path(__file__).with_name("litert_torch_convert.py")


class ConverterUnavailable(ValueError):
    """The converter asked for cannot run here; the message says how to make it available."""


def parse_converters(text: str) -> tuple[str, ...]:
    """``onnx2tf`` (default), ``litert-torch``, ``both``, or a comma list."""
    text = text.strip().lower()
    if text == "both":
        return CONVERTERS
    chosen = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [c for c in chosen if c not in CONVERTERS]
    if unknown or not chosen:
        raise ValueError(f"--converter: unknown converter(s) {', '.join(unknown) or repr(text)}; choose from "
                         f"{', '.join(CONVERTERS)} or both")
    return chosen


def available(chosen: tuple[str, ...]) -> tuple[str, ...]:
    """``chosen``, once each can run here; else the reason it cannot (before any trial trains)."""
    if LITERT_TORCH in chosen:
        litert_torch_python()
    return chosen


def family(converter) -> str:
    """``onnx2tf`` of ``onnx2tf 1.28.8``: the converter without its version (rows record both)."""
    return converter.split()[0] if isinstance(converter, str) and converter else ""


def litert_torch_python() -> str:
    explicit = os.environ.get(PYTHON_ENV)
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise ConverterUnavailable(f"${PYTHON_ENV}={explicit} is not an executable Python")
        return explicit
    if importlib.util.find_spec("litert_torch") is not None:
        return sys.executable
    checkout = Path(__file__).resolve().parents[3] / ENV_FOLDER / "bin" / "python"
    if checkout.is_file():
        return str(checkout)
    raise ConverterUnavailable(
        "litert-torch is not installed: it requires torch<2.15, so it lives in its own environment; "
        f"`bash scripts/setup_litert_torch.sh` makes {ENV_FOLDER} in the checkout, or name another one's "
        f"python in ${PYTHON_ENV}")


def litert_torch_command() -> list[str]:
    """How the deployment worker starts the litert-torch job (a plain script: see its docstring)."""
    return [litert_torch_python(), str(SCRIPT)]
