"""Who the models fail, for the report: each compared model's group numbers on the test part (its best
trial with its training-seed replicas, and the latest AgeMoE mixture), and the tables made of them."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ab.nn.stat import comparison, frames as stat_frames
from ab.nn.config import Config
from ab.nn.dataset.utkface.attributes import UNKNOWN
from ab.nn.report import tables

BY = ("age_group", "gender", "race")
SPLIT = "test"


@dataclass
class Entry:
    """One model as the report shows it: ``frames`` holds ``api.groups`` for each of ``BY``; ``true`` and
    ``predicted`` are every replica's test predictions, pooled."""

    label: str
    trial_ids: list[int]
    frames: dict[str, pd.DataFrame]
    true: np.ndarray
    predicted: np.ndarray
    labelled: bool = True  # gender and race labels are stored for its images

    def value(self, by: str, group: str, metric: str) -> pd.Series:
        frame = self.frames[by]
        return frame[(frame.group == group) & (frame.metric == metric)].iloc[0]


@dataclass
class Collected:
    entries: list[Entry] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def labelled(self) -> list[Entry]:
        return [e for e in self.entries if e.labelled]


def _models(db, key: str) -> list[tuple[str, list[int]]]:
    best = tables.best_trials(db, data_key=key)
    best = best[~best.config.str.endswith("_AgeMoE")] if not best.empty else best
    if best.empty:
        return []
    every = stat_frames.trials(config=list(best.config), data_key=key, db=db)
    out = []
    for trial in best.sort_values(["eval_mae", "id"]).itertuples():
        ids = tables.replicas_of(trial, every)
        name = Config.parse(trial.config).nn
        out.append((f"{name} ({len(ids)} seeds)" if len(ids) > 1 else name, ids))
    return out


def collect(db, key: str, mixtures: pd.DataFrame) -> Collected:
    """Group numbers of each model of data key ``key`` and of its latest AgeMoE mixture; a model whose
    test predictions are not stored is named in ``notes`` instead."""
    wanted = _models(db, key)
    if not mixtures.empty:
        wanted.append(("AgeMoE", [int(mixtures.id.max())]))
    out = Collected()
    for label, ids in wanted:
        try:
            frames = {by: comparison.groups(ids, by=by, split=SPLIT, db=db) for by in BY}
        except (LookupError, ValueError) as error:
            out.notes.append(f"{label}: no group numbers ({str(error).split(';')[0]})")
            continue
        rows = stat_frames.predictions(trial_id=ids, split=SPLIT, db=db)
        attrs = frames["race"].attrs
        entry = Entry(label, ids, frames, rows.age.to_numpy(np.float64), rows.predicted.to_numpy(np.float64),
                      labelled=attrs["unrecorded"] < attrs["images"])
        if not entry.labelled:
            out.notes.append(f"{label}: no gender or race labels stored for its images (trials {ids}); "
                             f"`python -m ab.nn.stat attributes` reads them from the data folder")
        out.entries.append(entry)
    return out


def _cell(row: pd.Series, digits: int = 2, percent: bool = False) -> str:
    if row.value != row.value:
        return "-"
    scale, unit = (100.0, "%") if percent else (1.0, "")
    interval = f" [{row.low * scale:.{digits}f}, {row.high * scale:.{digits}f}]" if row.low == row.low else ""
    return f"{row.value * scale:.{digits}f}{unit}{interval}"


def _gap(entry: Entry, by: str) -> str:
    row = entry.value(by, "gap", "std_mae")
    if row.value != row.value:
        return "-"
    return f"{_cell(row)} ({row.highest} - {row.lowest})"


def caption(key: str, collected: Collected, what: str) -> str:
    """The line above a table: what it shows, on which data key and part, with how many images."""
    images = collected.entries[0].frames["age_group"].attrs["images"] if collected.entries else 0
    return f"{what} Data key `{key}`, {SPLIT} part ({images:,} images); 95 % intervals in brackets."


def summary(collected: Collected) -> pd.DataFrame:
    """One row per model: MAE, age-standardised race and gender gaps, minors' false-adult and adults'
    false-minor rate at 18, and the bias of ages 70+."""
    rows = []
    for e in collected.entries:
        rows.append({"model": e.label, "trials": ", ".join(map(str, e.trial_ids)),
                     "MAE": _cell(e.value("age_group", "all", "mae")),
                     "race gap (age-std. MAE)": _gap(e, "race") if e.labelled else "-",
                     "gender gap (age-std. MAE)": _gap(e, "gender") if e.labelled else "-",
                     "minors predicted 18+": _cell(e.value("age_group", "all", "false_adult@18"), 1, True),
                     "adults predicted < 18": _cell(e.value("age_group", "all", "false_minor@18"), 1, True),
                     "bias 70+": _bias(e, "70+")})
    return pd.DataFrame(rows)


def _bias(entry: Entry, group: str) -> str:
    frame = entry.frames["age_group"]
    row = frame[(frame.group == group) & (frame.metric == "bias")]
    return _cell(row.iloc[0]) if not row.empty else "-"


def by_group(collected: Collected, by: str) -> pd.DataFrame:
    """Rows: the groups of ``by`` (gender or race); per model its age-standardised MAE and its MAE."""
    entries = collected.labelled
    if not entries:
        return pd.DataFrame()
    groups = [g for g in entries[0].frames[by].group.unique() if g not in ("all", "gap")]
    rows = []
    for group in groups:
        row = {by: group, "n": int(entries[0].value(by, group, "mae").n)}
        for e in entries:
            row[f"{e.label} age-std. MAE"] = _cell(e.value(by, group, "std_mae")) if group != UNKNOWN else "-"
            row[f"{e.label} MAE"] = _cell(e.value(by, group, "mae"))
        rows.append(row)
    return pd.DataFrame(rows)


def minors(collected: Collected) -> pd.DataFrame:
    """Rows: the thresholds; per model the share of those under it predicted at or over it, and the share
    of those at or over it predicted under it."""
    rows = []
    for threshold in (13, 18, 21):
        row = {"age threshold": threshold}
        for e in collected.entries:
            row[f"{e.label}: under predicted over"] = _cell(e.value("age_group", "all", f"false_adult@{threshold}"),
                                                             1, True)
            row[f"{e.label}: over predicted under"] = _cell(e.value("age_group", "all", f"false_minor@{threshold}"),
                                                            1, True)
        rows.append(row)
    return pd.DataFrame(rows)
