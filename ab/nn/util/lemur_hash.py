"""LEMUR's content ids (``ab.nn.util.Util.uuid4`` in nn-dataset 2.2.11): the md5 of ``str(obj)`` with
every whitespace character removed. Model names of generated code, code-table ids, hyperparameter
uids and stat ids are all made this way, so ids computed here equal LEMUR's for the same input."""
from __future__ import annotations

import hashlib
import re

_WHITESPACE = re.compile(r"\s")


def lemur_md5(obj) -> str:
    return hashlib.md5(_WHITESPACE.sub("", str(obj)).encode()).hexdigest()
