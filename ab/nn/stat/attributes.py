"""Gender and race labels for trials recorded before a trial stored them: which images trials were
judged on lack them, and filling those in from the data folder (``python -m ab.nn.stat attributes``).
Image ids are content ids, so any layout of the same images (folder, archive, parquet) serves."""
from __future__ import annotations

from collections import Counter
from dataclasses import replace

from sqlalchemy import and_, select

from ab.nn.dataset import DataError, utkface
from ab.nn.dataset.settings import DataSettings
from ab.nn.dataset.utkface.attributes import UNKNOWN
from ab.nn.stat import engine as engines
from ab.nn.stat.schema import ImageAttribute, Prediction, Trial
from ab.nn.stat.store import StatStore
from ab.nn.workspace import Workspace

READERS = {utkface.NAME: utkface.labels}
"""Datasets whose labels can be read again from their folder."""


def unlabelled(url: str) -> dict[tuple[str, str | None], set[str]]:
    """(dataset, split label) -> ids of the images trials were judged on that have no attribute row."""
    query = (select(Trial.dataset, Trial.split, Prediction.image_id).distinct()
             .join(Trial, Trial.id == Prediction.trial_id)
             .outerjoin(ImageAttribute, and_(ImageAttribute.dataset == Trial.dataset,
                                             ImageAttribute.image_id == Prediction.image_id))
             .where(Prediction.image_id.is_not(None), ImageAttribute.image_id.is_(None)))
    out: dict[tuple[str, str | None], set[str]] = {}
    with engines.engine(url, writer=False).connect() as connection:
        for dataset, split, image_id in connection.execute(query):
            out.setdefault((dataset, split), set()).add(image_id)
    return out


def backfill(ws: Workspace, progress: bool = False) -> list[dict]:
    """Read the labels of every image that trials were judged on and that has none yet, from the data
    folder of the workspace (as each trial's split settings read it: ``--align`` gives other ids), and
    store them. One row per (dataset, split): images missing, labels added, images not in the folder,
    and how many of those added have an unknown gender or race."""
    store = StatStore(ws.db_url)
    report = []
    for (dataset, split), wanted in sorted(unlabelled(ws.db_url).items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        row = {"dataset": dataset, "split": split, "missing": len(wanted), "added": 0, "not in folder": len(wanted),
               "unknown gender": 0, "unknown race": 0, "note": ""}
        reader = READERS.get(dataset)
        if reader is None:
            row["note"] = f"no label reader for dataset {dataset!r}"
            report.append(row)
            continue
        settings = replace(DataSettings.from_label(split), progress=progress)
        try:
            found = reader(ws.dataset_dir(dataset), ws.cache_dir(dataset), settings, ws.face_template_path)
        except (DataError, ValueError, OSError) as error:
            row["note"] = str(error).splitlines()[0][:200]
            report.append(row)
            continue
        pairs = [(image_id, found[image_id]) for image_id in sorted(wanted) if image_id in found]
        store.record_attributes(dataset, pairs)
        unknown = Counter()
        for _, attributes in pairs:
            unknown["gender"] += attributes.gender == UNKNOWN
            unknown["race"] += attributes.race == UNKNOWN
        row.update({"added": len(pairs), "not in folder": len(wanted) - len(pairs),
                    "unknown gender": unknown["gender"], "unknown race": unknown["race"]})
        report.append(row)
    return report
