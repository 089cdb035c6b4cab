"""LEMUR's ``JoinConf`` (``ab/nn/util/db/Query.py`` of nn-dataset 2.2.11): ``data(sql=JoinConf(...))``
picks several models at once, for prompts that show an LLM more than one network.

Implemented over the rows ``data()`` selected (its filters and ``max_rows`` apply first, as in LEMUR):

* ``num_joint_nns > 1`` without ``same_columns``/``diff_columns`` (LEMUR's variable-N path): the
  best row of each model (accuracy, then the earlier epoch, then the name), the ``num_joint_nns``
  best models, best first, with ``rn`` (always 1);
* otherwise (LEMUR's pairwise path): every row, in random order, with up to ``num_joint_nns - 1``
  other rows that share ``same_columns``, differ in ``diff_columns`` and, with ``enhance_nn``, are more
  accurate; their columns get the suffixes ``_2``, ``_3`` ... (``matched_id`` for the first match,
  ``matched_id_3`` ... for the next). LEMUR fails with ``KeyError`` for ``num_joint_nns > 2`` on this
  path and may match a row with itself; here a row never matches itself and any ``num_joint_nns``
  works. The random order is LEMUR's ``ORDER BY RANDOM()``; ``seed`` (an addition) makes it repeatable.
* ``similarity_mode="anchor_band_db_minhash"`` needs LEMUR's MinHash signatures of model code
  (``nn_minhash``, from ``datasketch``), which this project does not compute: a one-line error.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Optional

SUPPORTED_COLUMNS = ("task", "dataset", "metric", "nn", "epoch")
SIM_BANDS = {"very_high": (0.98, 1.0000001), "high": (0.95, 0.98), "medium": (0.85, 0.95), "low": (0.60, 0.85),
             "very_low_near": (0.30, 0.60), "very_low_far": (0.0, 0.30)}
MATCHED = ("nn", "nn_code", "metric", "metric_code", "transform_code", "prm_id", "accuracy", "duration", "epoch")
"""The columns of a matched row that the pairwise path adds (with ``_<k>``), as LEMUR does, then ``prm_<k>``."""


@dataclass(frozen=True)
class JoinConf:
    num_joint_nns: int
    same_columns: Optional[tuple[str, ...]] = None
    diff_columns: Optional[tuple[str, ...]] = None
    enhance_nn: Optional[bool] = None
    task: Optional[str] = None
    dataset: Optional[str] = None
    metric: Optional[str] = None
    similarity_mode: str = "none"
    anchor_nn: Optional[str] = None
    similarity_band: Optional[str] = None
    min_arch_jaccard: float = 0.0
    max_arch_jaccard: float = 1.0
    overfetch_factor: int = 10
    seed: Optional[int] = None  # ab.nn: the pairwise path's random order, repeatable

    supported_columns = SUPPORTED_COLUMNS

    def validate(self) -> None:
        """LEMUR's checks, with LEMUR's messages."""
        if int(self.num_joint_nns) < 1:
            raise ValueError("'num_joint_nns' must be >= 1.")
        for name, columns in (("diff_columns", self.diff_columns), ("same_columns", self.same_columns)):
            for c in columns or ():
                if c not in self.supported_columns:
                    raise ValueError(f"Unsupported column name in {name}: {c}")
        if self.enhance_nn is not None and not isinstance(self.enhance_nn, bool):
            raise ValueError("'enhance_nn' must be boolean.")
        if int(self.overfetch_factor) < 1:
            raise ValueError("'overfetch_factor' must be >= 1.")
        if self.similarity_mode not in ("none", "anchor_band_db_minhash"):
            raise ValueError("similarity_mode must be 'none' or 'anchor_band_db_minhash'.")
        if self.similarity_band is not None and self.similarity_band not in SIM_BANDS:
            raise ValueError(f"Invalid similarity_band: {self.similarity_band}")


def apply(sql: JoinConf, rows: list[dict], max_rows: int | None = None) -> list[dict]:
    """``rows`` (``data()``'s, as dicts) joined as ``sql`` says."""
    sql.validate()
    if sql.similarity_mode == "anchor_band_db_minhash":
        raise ValueError("similarity_mode='anchor_band_db_minhash' needs LEMUR's MinHash signatures of model code "
                         "(table nn_minhash), which ab.nn does not compute; use similarity_mode='none'")
    rows = [r for r in rows if all(getattr(sql, c) in (None, "", r[c]) for c in ("task", "dataset", "metric"))]
    if sql.num_joint_nns > 1 and not sql.same_columns and not sql.diff_columns:
        return _best_models(rows, int(sql.num_joint_nns))
    joined = _pairwise(sql, rows)
    return joined[:max_rows] if max_rows else joined


def _accuracy(row: dict) -> float:
    value = row.get("accuracy")
    return float("-inf") if value is None or value != value else value


def _best_models(rows: list[dict], n: int) -> list[dict]:
    best: dict[str, dict] = {}
    for row in sorted(rows, key=lambda r: (-_accuracy(r), r["epoch"], r["nn"])):
        best.setdefault(row["nn"], row)
    chosen = sorted(best.values(), key=lambda r: -_accuracy(r))[:n]
    return [_with_rn(row) for row in chosen]


def _with_rn(row: dict) -> dict:
    out = {k: v for k, v in row.items() if k != "prm"}
    out["rn"] = 1
    out["prm"] = row.get("prm")
    return out


def _pairwise(sql: JoinConf, rows: list[dict]) -> list[dict]:
    order = list(rows)
    random.Random(sql.seed).shuffle(order)
    same = tuple(sql.same_columns or ())
    groups: dict[tuple, list[dict]] = {}
    for row in order:
        groups.setdefault(tuple(row[c] for c in same), []).append(row)
    wanted = int(sql.num_joint_nns) - 1
    out = []
    for row in order:
        matches = []
        for other in groups[tuple(row[c] for c in same)]:
            if len(matches) == wanted:
                break
            if other is row or any(other[c] == row[c] for c in sql.diff_columns or ()):
                continue
            if sql.enhance_nn and not _accuracy(other) > _accuracy(row):
                continue
            matches.append(other)
        out.append(_joined(row, matches, wanted))
    return out


def _joined(row: dict, matches: list[dict], wanted: int) -> dict:
    """The row with its matches' columns; with ``num_joint_nns == 1`` LEMUR still adds the (empty)
    ``_2`` columns, but no ``prm_2``."""
    out = {k: v for k, v in row.items() if k != "prm"}
    for k in range(2, max(wanted, 1) + 2):
        match = matches[k - 2] if k - 2 < len(matches) else None
        out["matched_id" if k == 2 else f"matched_id_{k}"] = match["id"] if match else None
        for column in MATCHED:
            out[f"{column}_{k}"] = match.get(column) if match else None
    out["prm"] = row.get("prm")
    for k in range(2, wanted + 2):
        match = matches[k - 2] if k - 2 < len(matches) else None
        out[f"prm_{k}"] = match.get("prm", {}) if match else {}
    return out
