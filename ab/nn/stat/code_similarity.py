"""How alike two models' code is: LEMUR's MinHash signatures of model code (table ``nn_minhash``) and
the Jaccard estimate between two of them (LEMUR's SQLite function ``jaccard_blobs``), by which
``JoinConf(similarity_mode="anchor_band_db_minhash")`` picks models in a band of similarity to an anchor.

A signature is datasketch's MinHash (LEMUR's ``num_perm`` 128; datasketch's default seed, 1) of the
set of 7-token shingles (LEMUR's ``shingle_n``) of the code's Python tokens, with comments, docstrings
and layout left out, so that documentation and formatting do not make one architecture look like
another. It is packed as LEMUR packs it: 128 little-endian unsigned 32-bit values, 512 bytes.
LEMUR's shingle generator is not in the versions read (``lemur.md``), so signatures made here compare
with each other, not with those in a database LEMUR built.
"""
from __future__ import annotations

import io
import re
import struct
import tokenize
from datetime import datetime, timezone

import numpy as np
from tqdm.auto import tqdm

from ab.nn.stat import query

NUM_PERM = 128
SHINGLE_N = 7
SEED = 1
_PACK = f"<{NUM_PERM}I"
_SKIPPED = (tokenize.COMMENT, tokenize.NL, tokenize.ENCODING, tokenize.ENDMARKER)
_STATEMENT_START = (tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT)


def tokens(code: str) -> list[str]:
    """The code's tokens without comments, docstrings (a statement made of strings alone) and layout.
    Code that does not tokenize (a generator's output may not) falls back to its words and symbols."""
    try:
        found = [(t.type, t.string) for t in tokenize.generate_tokens(io.StringIO(code).readline)
                 if t.type not in _SKIPPED]
    except (tokenize.TokenError, SyntaxError):
        return re.findall(r"\w+|[^\w\s]", code)
    out, i = [], 0
    while i < len(found):
        kind = found[i][0]
        if kind == tokenize.STRING and (i == 0 or found[i - 1][0] in _STATEMENT_START):
            end = i
            while end < len(found) and found[end][0] == tokenize.STRING:
                end += 1
            if end == len(found) or found[end][0] == tokenize.NEWLINE:
                i = end
                continue
        if kind not in _STATEMENT_START:
            out.append(found[i][1])
        i += 1
    return out


def shingles(code: str, n: int = SHINGLE_N) -> set[str]:
    """Every run of ``n`` consecutive tokens (the whole code when it has fewer)."""
    words = tokens(code)
    if len(words) <= n:
        return {"\x1f".join(words)} if words else set()
    return {"\x1f".join(words[i:i + n]) for i in range(len(words) - n + 1)}


def signature(code: str) -> bytes | None:
    """The packed MinHash signature of ``code``; None for code without tokens (e.g. an empty row)."""
    from datasketch import MinHash

    found = shingles(code)
    if not found:
        return None
    minhash = MinHash(num_perm=NUM_PERM, seed=SEED)
    minhash.update_batch([s.encode("utf-8") for s in sorted(found)])
    return struct.pack(_PACK, *(int(v) for v in minhash.hashvalues))


def jaccard(a: bytes | None, b: bytes | None) -> float | None:
    """LEMUR's ``jaccard_blobs``: the share of equal values, an unbiased estimate of the Jaccard
    similarity of the two shingle sets (standard error at most 0.044 with 128 values)."""
    if a is None or b is None:
        return None
    if len(a) != len(b):
        raise ValueError(f"signatures of different lengths ({len(a)} and {len(b)} bytes) cannot be compared")
    return float(np.mean(np.frombuffer(a, "<u4") == np.frombuffer(b, "<u4")))


def ensure(url: str, names=None, progress: bool = True) -> dict[str, bytes]:
    """The signature of every model named (all models when ``names`` is None), by name. One missing, or
    made from another version of the code, is computed from the ``nn`` table's code and stored; a model
    without code (a name imported from LEMUR's JSON) has none, as in LEMUR."""
    from ab.nn.stat.store import StatStore

    kept = {row["nn"]: row for row in query.nn_minhash_rows(url, names)}
    out, computed, stale = {}, [], []
    for row in query.nn_code_rows(url, names):
        have = kept.get(row["name"])
        if have and (have["code_id"], have["num_perm"], have["shingle_n"]) == (row["id"], NUM_PERM, SHINGLE_N):
            out[row["name"]] = have["hashvalues"]
        else:
            stale.append(row)
    for row in tqdm(stale, desc="code signatures", unit="model", disable=not progress or len(stale) < 50,
                    leave=False):
        packed = signature(row["code"] or "")
        if packed is not None:
            out[row["name"]] = packed
            computed.append({"nn": row["name"], "num_perm": NUM_PERM, "shingle_n": SHINGLE_N, "hashvalues": packed,
                             "created_at": datetime.now(timezone.utc), "code_id": row["id"]})
    if computed:
        StatStore(url).save_signatures(computed)
    return out
