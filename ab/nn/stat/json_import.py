"""Rebuild a statistics database from JSON: this project's mirror (``stat/train``, ``stat/trial``,
``stat/code``) or LEMUR's own ``stat/train/<config>/<epoch>.json`` files (``epoch_records`` says how
each record becomes rows).

Before anything is written, every folder name is validated and the accuracy scales of LEMUR's records
of an MAE metric are surveyed (``accuracy_scale.Evidence``): records without a raw MAE need the scale
given (``lemur_mae_scale``, ``--lemur-mae-scale``, no default), and records that imply different
scales refuse the import. Trials (``stat/trial/<config>.json``) are added as ``trial_merge`` says:
mapped by uid, Optuna's ids left to the reconciler, replica groups kept within the import, running
ones reclaimable. Then epoch records go in batches (one transaction of up to ``BATCH_RECORDS``
records), so memory stays flat however large the tree. A file that breaks a rule stops the import with
a ``BadRecord`` naming it; batches already committed stay, and importing again adds only what is
missing (rows are keyed by stat id and uid).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from tqdm.auto import tqdm

from ab.nn.config import Config
from ab.nn.stat import accuracy_scale, bulk, untrusted
from ab.nn.stat.epoch_records import EpochRecords, prm_value, raw_mae
from ab.nn.stat.json_tree import config_folders, epoch_files, read_records
from ab.nn.stat.mirror import code_dir
from ab.nn.stat.schema import Prm
from ab.nn.stat.store import StatStore
from ab.nn.stat.trial_merge import TRIAL, TrialMerger, derived_uid
from ab.nn.stat.untrusted import BadRecord

BATCH_RECORDS = 5000
"""Epoch records per transaction."""
_TRIALS_PER_TRANSACTION = 1000


@dataclass
class ImportSummary:
    records: int = 0
    """Epoch records added."""
    trials: int = 0
    """Trials added."""
    reclaimable: int = 0
    """Trials that were running at the source: added with a released lease, so the next runner reclaims them."""
    replica_links_dropped: int = 0
    """``replica_of`` links to a trial outside the import, set to NULL."""
    without_trial: int = 0
    """Epoch records of trials not in the import's ``stat/trial`` (running when the mirror was written), left out."""
    without_trial_example: str | None = None
    scales: str = ""
    """The accuracy scales of the LEMUR records of an MAE metric, and why."""

    def __str__(self) -> str:
        text = f"imported {self.records:,} epoch records and {self.trials:,} trials"
        if self.reclaimable:
            text += f" ({self.reclaimable:,} were running: reclaimable by the next runner)"
        if self.without_trial:
            text += (f"; {self.without_trial:,} epoch records of trials the import does not hold left out (e.g. "
                     f"{self.without_trial_example})")
        if self.replica_links_dropped:
            text += f"; {self.replica_links_dropped:,} replica links to trials outside the import set to NULL"
        if self.scales:
            text += f"; accuracy scale {self.scales}"
        return text


def survey(folders: list[tuple[Config, Path]]) -> accuracy_scale.Evidence:
    """The accuracy scales of the LEMUR records of an MAE metric (read before anything is written)."""
    evidence = accuracy_scale.Evidence()
    for config, folder in folders:
        if config.metrics[0] not in accuracy_scale.MAE_METRICS:
            continue
        for _, path in epoch_files(folder):
            for record in read_records(path):
                if "ab_nn" in record:
                    continue  # our mirror's records carry their scale
                raw = raw_mae(record)
                if raw is None:
                    evidence.add_without_raw(path)
                else:
                    evidence.add(accuracy_scale.implied(raw, untrusted.number(record.get("accuracy"), path,
                                                                               "accuracy")), path)
    return evidence


def import_tree(url: str, stat_dir: Path, progress: bool = True,
                lemur_mae_scale: float | None = None) -> ImportSummary:
    """Load every ``<config>/<epoch>.json`` under ``stat_dir`` (and the trials of ``stat/trial``, the code
    of ``stat/code``) into the database. Rows already present (same stat id, same trial uid) are left
    alone, so importing twice adds nothing. ``lemur_mae_scale`` is the scale of LEMUR records of an MAE
    metric that carry no raw MAE (no default: see ``accuracy_scale``)."""
    stat_dir = Path(stat_dir)
    folders = config_folders(stat_dir)
    evidence = survey(folders)
    evidence.check(lemur_mae_scale)
    store = StatStore(url)
    merger = TrialMerger(store)
    _import_trials(store, merger, stat_dir.parent / "trial")
    merger.link_replicas()
    records = EpochRecords(code_dir(stat_dir), merger.ids, lemur_mae_scale)
    added = 0
    with tqdm(total=len(folders), desc="importing", unit="config", disable=not progress) as bar:
        for batch in _batches(folders, bar):
            with store.transaction() as session:
                added += records.add(session, batch)
    store.advance_id_sequences()
    return ImportSummary(records=added, trials=len(merger.added), reclaimable=merger.released,
                         replica_links_dropped=merger.dropped, without_trial=records.without_trial,
                         without_trial_example=records.example, scales=evidence.summary(lemur_mae_scale))


def _batches(folders, bar) -> Iterator[list[tuple[Config, int, Path, list]]]:
    batch, size = [], 0
    for config, folder in folders:
        for epoch, path in epoch_files(folder):
            records = read_records(path)
            batch.append((config, epoch, path, records))
            size += len(records)
            if size >= BATCH_RECORDS:
                yield batch
                batch, size = [], 0
        bar.update()
    if batch:
        yield batch


def _trial_row(record: dict, where: str) -> dict:
    row = {c.name: untrusted.column_value(c, record[c.name], where) for c in TRIAL.columns if c.name in record}
    row["uid"] = row.get("uid") or derived_uid(record)
    return row


def _trial_prm(record: dict, where: str) -> list[dict]:
    values = record.get("prm_values")
    if not record.get("prm") or not values:
        return []
    if not isinstance(values, dict) or not all(prm_value(v) for v in values.values()):
        raise BadRecord(where, "prm_values is not a dict of numbers and strings")
    return [{"uid": record["prm"], "name": k, "value": v} for k, v in sorted(values.items())]


def _import_trials(store: StatStore, merger: TrialMerger, folder: Path) -> None:
    """Trials of ``stat/trial/<config>.json``; ids in the files -> ids here in ``merger.ids``."""
    if not folder.is_dir():
        return
    for path in sorted(p for p in folder.glob("*.json") if not p.name.startswith(".")):
        untrusted.config(path.stem, path)
        for chunk in bulk.chunks(read_records(path), _TRIALS_PER_TRANSACTION):
            with store.transaction() as session:
                rows, prm = [], []
                for record in chunk:
                    where = f"{path} (trial {untrusted.shown(record.get('id'))})"
                    rows.append(_trial_row(record, where))
                    prm.extend(_trial_prm(record, where))
                bulk.insert(session, Prm, prm)
                merger.add(session, rows, lambda row: f"{path} (trial {row.get('id')})")
