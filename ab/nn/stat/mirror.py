"""LEMUR's JSON mirror of the statistics: ``stat/train/<config>/<epoch>.json``.

Each file is LEMUR's list of trial records for that epoch: the hyperparameters, ``accuracy``,
``duration`` (ns), ``uid`` and ``metric_<name>`` at the top level, LEMUR-style diagnostics under
``train_stat``, and what LEMUR lacks (the stat and trial ids, every metric on eval and test, the raw
MAE and its accuracy scale, the checksums of the code) under ``ab_nn``, a dict, which LEMUR's
importer drops. A record imported from LEMUR's own JSON is written back as it was read (its
diagnostics at the top level, its ``train_stat`` as written), so LEMUR's importer gets the same rows
from the mirror as from the original. Finished trials themselves, failed ones included, are listed
in ``stat/trial/<config>.json``, and every code version in ``stat/code/<kind>/<id>.json``, outside the
folder LEMUR's importer walks.

The database is the source of truth and the mirror is derived from it, never part of a commit: when a
trial finishes, the transaction that records its end also queues it in ``outbox``, and ``flush`` (run by
the runner after each trial and when it starts, and by ``python -m ab.nn.stat check --repair``) adds its
records to the files afterwards. A mirror that cannot be written (full disk, permissions) leaves the
entry queued with its error and the trial's outcome as recorded. Every file is replaced atomically
(written beside it, flushed to disk, renamed), so a crash leaves the old file or the new one, never a
torn one; a file that does not parse (written by something else) is rewritten from the database, never
spliced into; records already present (a flush cut short before its entry was marked done) are not
added twice. ``export-json`` rewrites every file from the database, best accuracy first as LEMUR sorts
them. ``ab.nn.stat.json_import`` rebuilds a database from such files.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from ab.nn.config import Config
from ab.nn.stat import engine as engines
from ab.nn.stat.schema import CodeVersion, Outbox, Prm, Stat, StatMetric, TrainStat, Trial
from ab.nn.util import atomic, system
from ab.nn.util.filelock import locked

log = logging.getLogger(__name__)

TRAIN_STAT_COLUMNS = [c.name for c in TrainStat.__table__.c if c.name != "stat_id"]
TRIAL_COLUMNS = [c.name for c in Trial.__table__.c]
CODE_KINDS = ("nn", "transform", "metric")


class Malformed(ValueError):
    """A mirror file that is not a JSON list (written or cut short by something other than this module)."""


def _json_value(value):
    return value.isoformat() if isinstance(value, datetime) else value


def _prm(session: Session, uid: str | None) -> dict:
    return {p.name: p.value for p in session.scalars(select(Prm).where(Prm.uid == uid))} if uid else {}


def epoch_record(session: Session, stat: Stat) -> dict:
    metrics: dict[str, dict] = {}
    for m in session.scalars(select(StatMetric).where(StatMetric.stat_id == stat.id)):
        metrics.setdefault(m.split, {})[m.name] = m.value
    lemur = json.loads(stat.extra) if stat.extra else None  # a record imported from LEMUR's JSON
    record = _prm(session, stat.prm)
    record.update({k: v for k, v in metrics.get("eval", {}).items() if k.startswith("metric_")})
    if lemur is not None:
        record.update(lemur.get("record") or {})
    record.update(accuracy=stat.accuracy, duration=stat.duration, uid=stat.prm)
    if lemur is None:
        train = session.get(TrainStat, stat.id)
        record["train_stat"] = {c: getattr(train, c) for c in TRAIN_STAT_COLUMNS} if train else {}
        record["train_stat"]["mae"] = stat.mae
    elif lemur.get("train_stat") is not None:
        record["train_stat"] = lemur["train_stat"]
    record["ab_nn"] = {"stat_id": stat.id, "trial_id": stat.trial_id, "metrics": metrics, "mae": stat.mae,
                       "accuracy_scale": stat.accuracy_scale,
                       "code": {"nn": stat.nn_code_id, "transform": stat.transform_code_id,
                                "metric": stat.metric_code_id}}
    if lemur is not None:
        record["ab_nn"]["lemur"] = lemur
    return record


def code_dir(stat_dir: Path) -> Path:
    """``stat/code/`` beside ``stat/train/`` (``stat_dir`` is the ``train`` folder)."""
    return stat_dir.parent / "code"


def write_code(session: Session, stat_dir: Path, ids: dict[str, set]) -> int:
    """Write the code versions named in ``ids`` (kind -> checksums) to ``stat/code/<kind>/<id>.json``
    where missing (a file's content never changes: its name is its checksum); returns files written."""
    written = 0
    for kind, wanted in ids.items():
        folder = code_dir(stat_dir) / kind
        missing = [i for i in wanted if i and not (folder / f"{i}.json").exists()]
        if not missing:
            continue
        folder.mkdir(parents=True, exist_ok=True)
        for version in session.scalars(select(CodeVersion).where(CodeVersion.kind == kind,
                                                                 CodeVersion.id.in_(missing))):
            _write(folder / f"{version.id}.json", {"kind": kind, "id": version.id, "name": version.name,
                                                   "code": version.code})
            written += 1
    return written


def _code_ids(stats) -> dict[str, set]:
    return {kind: {getattr(stat, f"{kind}_code_id") for stat in stats} for kind in CODE_KINDS}


def _trial_record(session: Session, trial: Trial) -> dict:
    record = {c: _json_value(getattr(trial, c)) for c in TRIAL_COLUMNS}
    record["prm_values"] = _prm(session, record["prm"])
    return record


def _dump(records: list[dict]) -> str:
    return ",\n".join(json.dumps(r, indent=1, default=str) for r in records)


def _write(path: Path, records: list[dict] | dict) -> Path:
    """Replace ``path`` whole, flushed to disk: the mirror is a record others read."""
    text = json.dumps(records, indent=1) if isinstance(records, dict) else (
        "[\n" + _dump(records) + "\n]" if records else "[]")
    return atomic.write(path, text, durable=True)


def read_list(path: Path) -> list:
    """A mirror file's records; ``Malformed`` when it is not a JSON list."""
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise Malformed(f"{path} is not valid JSON ({error})") from None
    if not isinstance(records, list):
        raise Malformed(f"{path} holds a JSON {type(records).__name__}, not a list")
    return records


def _identity(record) -> tuple | None:
    """What makes a record the same record: its stat id (epoch files) or its trial uid (trial lists);
    ``None`` for a record that has neither (it is never taken for another)."""
    if not isinstance(record, dict):
        return None
    lemur = record.get("ab_nn")
    key = ("stat", lemur.get("stat_id")) if isinstance(lemur, dict) else ("trial", record.get("uid"))
    return key if key[1] is not None else None


def _append(path: Path, records: list[dict]) -> None:
    """Add ``records`` to the JSON list in ``path`` (the whole file replaced atomically), leaving out
    those it already holds; ``Malformed`` when the file is not a JSON list."""
    if not records:
        return
    present = read_list(path) if path.exists() and path.stat().st_size else []
    known = {_identity(r) for r in present} - {None}
    _write(path, present + [r for r in records if _identity(r) is None or _identity(r) not in known])


def trial_file(stat_dir: Path, config: Config) -> Path:
    """``stat/trial/<config>.json`` beside ``stat/train/`` (``stat_dir`` is the ``train`` folder)."""
    return stat_dir.parent / "trial" / f"{config.name}.json"


def append_trial(url: str, stat_dir: Path, trial_id: int) -> None:
    """Add a finished trial to the mirror: its epochs' records to ``<epoch>.json`` and the trial to
    ``stat/trial/<config>.json``; reads only this trial's rows. A file that does not parse is rewritten
    from the database instead (which includes this trial)."""
    with Session(engines.engine(url, writer=False)) as session:
        trial = session.get(Trial, trial_id)
        config = Config.parse(trial.config)
        by_epoch: dict[int, list[dict]] = {}
        stats = session.scalars(select(Stat).where(Stat.trial_id == trial_id).order_by(Stat.epoch)).all()
        for stat in stats:
            by_epoch.setdefault(stat.epoch, []).append(epoch_record(session, stat))
        trial_record = _trial_record(session, trial)
        write_code(session, stat_dir, _code_ids(stats))
    folder = stat_dir / config.name
    folder.mkdir(parents=True, exist_ok=True)
    for epoch, records in by_epoch.items():
        with locked(folder / ".lock"):
            try:
                _append(folder / f"{epoch}.json", records)
                continue
            except Malformed as error:
                log.warning("JSON mirror: %s; rewriting it from the database", error)
        write_epoch(url, stat_dir, config, epoch)
    path = trial_file(stat_dir, config)
    path.parent.mkdir(parents=True, exist_ok=True)
    with locked(path.parent / ".lock"):
        try:
            _append(path, [trial_record])
            return
        except Malformed as error:
            log.warning("JSON mirror: %s; rewriting it from the database", error)
    write_trials(url, stat_dir, config)


def write_epoch(url: str, stat_dir: Path, config: Config, epoch: int) -> Path:
    """Rewrite one ``<epoch>.json`` from the database, best accuracy first (atomic, under a folder lock)."""
    folder = stat_dir / config.name
    folder.mkdir(parents=True, exist_ok=True)
    with locked(folder / ".lock"):
        with Session(engines.engine(url, writer=False)) as session:
            stats = session.scalars(select(Stat).where(
                Stat.task == config.task, Stat.dataset == config.dataset, Stat.metric == config.metric,
                Stat.nn == config.nn, Stat.epoch == epoch)).all()
            records = [epoch_record(session, stat) for stat in stats]
            write_code(session, stat_dir, _code_ids(stats))
        records.sort(key=lambda r: (-(r["accuracy"] if r["accuracy"] is not None else float("-inf")),
                                    r["ab_nn"]["stat_id"]))
        return _write(folder / f"{epoch}.json", records)


def write_trials(url: str, stat_dir: Path, config: Config) -> Path:
    """Rewrite the list of every finished trial of ``config`` with its outcome."""
    path = trial_file(stat_dir, config)
    path.parent.mkdir(parents=True, exist_ok=True)
    with locked(path.parent / ".lock"):
        with Session(engines.engine(url, writer=False)) as session:
            trials = session.scalars(select(Trial).where(Trial.config == config.name, Trial.status != "running")
                                     .order_by(Trial.id)).all()
            records = [_trial_record(session, t) for t in trials]
        return _write(path, records)


def export_tree(url: str, stat_dir: Path) -> int:
    """Write every config's trial list and epoch files (and mark what was queued for the mirror before
    this began as done: the files now hold it); returns the number of files written."""
    with Session(engines.engine(url, writer=False)) as session:
        queued = session.scalar(select(func.max(Outbox.id)))
        keys = session.execute(select(Stat.task, Stat.dataset, Stat.metric, Stat.nn, Stat.epoch).distinct()).all()
        configs = set(session.scalars(select(Trial.config).distinct()))
    for name in sorted(configs):
        write_trials(url, stat_dir, Config.parse(name))
    for task, dataset, metric, nn, epoch in keys:
        write_epoch(url, stat_dir, Config(task, dataset, metric, nn), epoch)
    if queued is not None:
        with engines.engine(url, writer=True).begin() as connection:
            connection.execute(update(Outbox).where(Outbox.id <= queued, Outbox.done_at.is_(None))
                               .values(done_at=datetime.now(timezone.utc)))
    return len(keys) + len(configs)


@dataclass
class Flushed:
    done: int = 0
    errors: list[str] = field(default_factory=list)  # one line per entry that failed (it stays queued)

    def __str__(self) -> str:
        text = f"{self.done} trial(s) mirrored"
        return text + (f"; {len(self.errors)} still queued: {self.errors[0]}" if self.errors else "")


def flush(url: str, stat_dir: Path, host: str | None = None, limit: int | None = None) -> Flushed:
    """Write what ``outbox`` queued for this host's mirror (oldest first) and mark each done; a failure is
    recorded on its entry (attempts, error) and the entry stays queued for the next flush."""
    host = host or system.host()
    result = Flushed()
    engine = engines.engine(url, writer=True)
    with Session(engine) as session:
        query = select(Outbox.id, Outbox.trial_id).where(Outbox.kind == "mirror", Outbox.done_at.is_(None),
                                                         Outbox.host == host).order_by(Outbox.id)
        pending = session.execute(query.limit(limit) if limit else query).all()
    for entry_id, trial_id in pending:
        try:
            append_trial(url, stat_dir, trial_id)
        except Exception as error:  # the mirror's failure is never the trial's
            message = f"trial {trial_id}: {type(error).__name__}: {error}".splitlines()[0][:500]
            result.errors.append(message)
            log.warning("JSON mirror: %s (queued; `python -m ab.nn.stat check --repair` retries it)", message)
            with engine.begin() as connection:
                connection.execute(update(Outbox).where(Outbox.id == entry_id).values(
                    attempts=Outbox.attempts + 1, last_error=message))
            continue
        with engine.begin() as connection:
            connection.execute(update(Outbox).where(Outbox.id == entry_id).values(
                done_at=datetime.now(timezone.utc), attempts=Outbox.attempts + 1, last_error=None))
        result.done += 1
    return result


def malformed_files(stat_dir: Path) -> list[Path]:
    """Mirror files (epoch files and trial lists) that are not JSON lists."""
    bad = []
    for path in sorted(list(stat_dir.glob("*/*.json")) + list((stat_dir.parent / "trial").glob("*.json"))):
        try:
            read_list(path)
        except Malformed:
            bad.append(path)
    return bad


def rewrite(url: str, stat_dir: Path, path: Path) -> None:
    """Rewrite one mirror file (an epoch file or a trial list) from the database."""
    if path.parent.name == "trial" and path.parent.parent == stat_dir.parent:
        write_trials(url, stat_dir, Config.parse(path.stem))
    else:
        write_epoch(url, stat_dir, Config.parse(path.parent.name), int(path.stem))
