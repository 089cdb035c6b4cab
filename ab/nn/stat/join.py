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
* ``similarity_mode="anchor_band_db_minhash"`` (LEMUR's curriculum selection): up to ``num_joint_nns``
  models whose code's estimated Jaccard similarity to the anchor model's code (``anchor_jaccard``,
  from the MinHash signatures of ``ab.nn.stat.code_similarity``) lies in ``similarity_band`` (else in
  [``min_arch_jaccard``, ``max_arch_jaccard``)), each by its best row, the most accurate first (then
  the more similar, the name, the earlier epoch). Without ``anchor_nn`` the anchor is the most
  accurate model (of the first 50) with enough models in the band, as in LEMUR; none found, or an
  anchor without a signature, is LEMUR's error. The first row carries LEMUR's ``diversity_meta``
  (``{"curriculum_meta": {mode, anchor_nn, auto_anchor, band, min_j, max_j}}``); ``anchor_nn`` on
  every row is an addition.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Optional

SUPPORTED_COLUMNS = ("task", "dataset", "metric", "nn", "epoch")
SIM_BANDS = {"very_high": (0.98, 1.0000001), "high": (0.95, 0.98), "medium": (0.85, 0.95), "low": (0.60, 0.85),
             "very_low_near": (0.30, 0.60), "very_low_far": (0.0, 0.30)}
ANCHOR_BAND = "anchor_band_db_minhash"
AUTO_ANCHOR_CANDIDATES = 50
"""LEMUR's ``max_trials``: how many of the most accurate models are tried as the anchor."""
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
        if self.similarity_mode not in ("none", ANCHOR_BAND):
            raise ValueError("similarity_mode must be 'none' or 'anchor_band_db_minhash'.")
        if self.similarity_mode == ANCHOR_BAND:
            if self.anchor_nn is not None and not isinstance(self.anchor_nn, str):
                raise ValueError("anchor_nn must be a string if provided.")
            low, high = self.band()
            if not 0.0 <= low <= high <= 1.0000001:
                raise ValueError(f"Invalid arch band: min={low}, max={high}")
        if self.similarity_band is not None and self.similarity_band not in SIM_BANDS:
            raise ValueError(f"Invalid similarity_band: {self.similarity_band}")

    def band(self) -> tuple[float, float]:
        """The [low, high) range of Jaccard similarity to the anchor: the named band, else the two bounds."""
        if self.similarity_band is None:
            return float(self.min_arch_jaccard), float(self.max_arch_jaccard)
        if self.similarity_band not in SIM_BANDS:
            raise ValueError(f"Invalid similarity_band: {self.similarity_band}")
        return SIM_BANDS[self.similarity_band]


def apply(sql: JoinConf, rows: list[dict], max_rows: int | None = None,
          signatures: dict[str, bytes] | None = None) -> list[dict]:
    """``rows`` (``data()``'s, as dicts) joined as ``sql`` says; ``signatures`` (code signatures by model
    name, ``code_similarity.ensure``) are what the anchor-band mode compares."""
    sql.validate()
    rows = [r for r in rows if all(getattr(sql, c) in (None, "", r[c]) for c in ("task", "dataset", "metric"))]
    if sql.similarity_mode == ANCHOR_BAND:
        return _anchor_band(sql, rows, signatures or {})
    if sql.num_joint_nns > 1 and not sql.same_columns and not sql.diff_columns:
        return _best_models(rows, int(sql.num_joint_nns))
    joined = _pairwise(sql, rows)
    return joined[:max_rows] if max_rows else joined


def _accuracy(row: dict) -> float:
    value = row.get("accuracy")
    return float("-inf") if value is None or value != value else value


def _best_per_model(rows: list[dict]) -> dict[str, dict]:
    """Each model's best row (accuracy, then the earlier epoch), the most accurate model first."""
    best: dict[str, dict] = {}
    for row in sorted(rows, key=lambda r: (-_accuracy(r), r["epoch"], r["nn"])):
        best.setdefault(row["nn"], row)
    return best


def _best_models(rows: list[dict], n: int) -> list[dict]:
    chosen = sorted(_best_per_model(rows).values(), key=lambda r: -_accuracy(r))[:n]
    return [_with_rn(row) for row in chosen]


def _anchor_band(sql: JoinConf, rows: list[dict], signatures: dict[str, bytes]) -> list[dict]:
    from ab.nn.stat.code_similarity import jaccard

    low, high = sql.band()
    wanted = int(sql.num_joint_nns)
    models = {nn: row for nn, row in _best_per_model(rows).items() if nn in signatures}

    def neighbours(anchor: str) -> list[tuple[dict, float]]:
        scored = ((row, jaccard(signatures[anchor], signatures[nn])) for nn, row in models.items() if nn != anchor)
        return [(row, j) for row, j in scored if low <= j < high]

    if sql.anchor_nn is not None:
        if sql.anchor_nn not in signatures:
            raise ValueError(f"anchor_nn='{sql.anchor_nn}' missing in nn_minhash")
        anchor, near = sql.anchor_nn, neighbours(sql.anchor_nn)
    else:
        if not models:
            raise ValueError("Could not auto-select anchor_nn — no nns with stored MinHash found for "
                             f"task={sql.task}, dataset={sql.dataset}, metric={sql.metric}")
        tried = list(models)[:AUTO_ANCHOR_CANDIDATES]
        for anchor in tried:
            near = neighbours(anchor)
            if len(near) >= wanted:
                break
        else:
            raise ValueError(f"Auto-anchor failed: no anchor among top {len(tried)} models has >= {wanted} "
                             f"neighbors in band [{low}, {high}) for task={sql.task}, dataset={sql.dataset}, "
                             f"metric={sql.metric}.")
    chosen = sorted(near, key=lambda p: (-_accuracy(p[0]), -p[1], p[0]["nn"], p[0]["epoch"]))[:wanted]
    out = []
    for row, j in chosen:
        joined = {k: v for k, v in row.items() if k != "prm"}
        joined |= {"anchor_jaccard": j, "anchor_nn": anchor, "prm": row.get("prm")}
        out.append(joined)
    if out:
        out[0]["diversity_meta"] = {"curriculum_meta": {
            "mode": ANCHOR_BAND, "anchor_nn": anchor, "auto_anchor": sql.anchor_nn is None,
            "band": sql.similarity_band, "min_j": low, "max_j": high}}
    return out


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
