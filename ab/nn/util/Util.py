"""LEMUR's ``ab.nn.util.Util`` helpers that NN-GPT's scripts import (``uuid4``, ``release_memory``,
``create_file``, ``read_py_file_as_string``), over this project's code. Nothing else of LEMUR's
module is here: its argument parser, training and ONNX helpers have their own homes in this project
(``ab.nn.train``, ``ab.nn.sweep``, ``ab.nn.deploy``)."""
from __future__ import annotations

import gc
from pathlib import Path

from ab.nn.util.lemur_hash import lemur_md5

__all__ = ["create_file", "read_py_file_as_string", "release_memory", "uuid4"]

uuid4 = lemur_md5
"""LEMUR's content id: the md5 of ``str(obj)`` without whitespace (the name ``check_nn`` gives code)."""


def release_memory() -> None:
    """LEMUR's: collect garbage and hand PyTorch's cached GPU memory back to the driver."""
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def create_file(file_dir, file_name, content: str = "") -> Path:
    """LEMUR's: write ``content`` to ``file_dir/file_name`` (replacing the file, creating the folder);
    returns the path."""
    path = Path(file_dir) / file_name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content or "", encoding="utf-8")
    return path


def read_py_file_as_string(file_path) -> str | None:
    """A Python file's source, or None when it cannot be read or does not parse (printing why, as LEMUR
    does). LEMUR imports the file to find out, running its code in the caller's process; here the code
    is only parsed: generated code runs in ``check_nn``'s child, never in the caller."""
    try:
        source = Path(file_path).read_text(encoding="utf-8")
        compile(source, str(file_path), "exec")
        return source
    except (OSError, SyntaxError, ValueError) as error:
        print(f"error when reading file: {error}")
        return None
