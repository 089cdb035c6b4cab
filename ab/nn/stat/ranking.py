"""Trained trials best first, as the report, ``deploy --best`` and the ``best:<config>`` references of
AgeMoE and predict choose them, and the data key each config is judged on by default."""
from __future__ import annotations

import pandas as pd

from ab.nn.stat.frames import trials
from ab.nn.stat.schema import TRAINED_STATES as TRAINED

DEFAULT_SPLIT = "paper/42"


def default_data_keys(frame: pd.DataFrame) -> dict[str, str]:
    """The data key each config is judged on unless another is asked for: the newest trial's key on the
    default split (``paper/42``) with every image, else on any split with every image, else the newest.
    A smoke run (``--max-samples``) therefore never displaces a real one."""
    keys = {}
    for config, group in frame.groupby("config"):
        full = group[group.max_samples.isna()]
        for candidates in (full[full.split == DEFAULT_SPLIT], full, group):
            if not candidates.empty:
                keys[config] = candidates.sort_values("id").data_key.iloc[-1]
                break
    return keys


def ranked_trials(config=None, data_key=None, all_data: bool = False, db=None) -> pd.DataFrame:
    """Trained trials (complete, or stopped early), best first by validation accuracy (LEMUR's
    selection metric; never the test split), ties to the earlier trial.

    Trials are comparable only on the same data: by default each config keeps its default data key
    (``default_data_keys``); ``data_key`` picks one, ``all_data=True`` mixes them (explicitly)."""
    rows = trials(config=config, status=TRAINED, data_key=data_key, db=db)
    if rows.empty:
        return rows
    if data_key is None and not all_data:
        keys = default_data_keys(rows)
        rows = rows[rows.data_key == rows.config.map(keys)]
    return rows.sort_values(["eval_accuracy", "id"], ascending=[False, True]).reset_index(drop=True)
