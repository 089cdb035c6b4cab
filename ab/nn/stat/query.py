"""Reads from the statistics database: parameterised SQLAlchemy Core only, never string-built SQL."""
from __future__ import annotations

from typing import Iterable, Sequence

from sqlalchemy import Select, and_, func, or_, select

from ab.nn.stat import engine as engines
from ab.nn.stat.schema import (CodeVersion, ConstantBaseline, Export, Latency, Nn, NnMinhash, NnStat, Prediction, Prm,
                               Stat, StatMetric, Trial)

_CHUNK = 500


class Rows(list):
    """Rows as dicts, with the query's column names (so that an empty result still has its columns)."""

    def __init__(self, rows=(), columns=()):
        super().__init__(rows)
        self.columns = list(columns)


def _filter(column, value):
    """Equality for a scalar, ``IN`` for a list/tuple/set; ``None`` means no filter."""
    if value is None:
        return None
    if isinstance(value, (list, tuple, set, frozenset)):
        return column.in_(list(value))
    return column == value


def _where(query: Select, *conditions) -> Select:
    conditions = [c for c in conditions if c is not None]
    return query.where(and_(*conditions)) if conditions else query


def _rows(url: str, query: Select) -> Rows:
    with engines.engine(url, writer=False).connect() as connection:
        result = connection.execute(query)
        return Rows((dict(row._mapping) for row in result), result.keys())


def prm_dicts(url: str, uids: Iterable[str | None]) -> dict[str, dict]:
    """Hyperparameter dicts of the given uids only (LEMUR loaded the whole table every time)."""
    uids = sorted({u for u in uids if u})
    out: dict[str, dict] = {u: {} for u in uids}
    for start in range(0, len(uids), _CHUNK):
        chunk = uids[start:start + _CHUNK]
        for row in _rows(url, select(Prm.uid, Prm.name, Prm.value).where(Prm.uid.in_(chunk))):
            out[row["uid"]][row["name"]] = row["value"]
    return out


def stat_rows(url: str, *, only_best_accuracy: bool = False, task=None, dataset=None, metric=None, nn=None,
              epoch=None, max_rows: int | None = None, nn_prefixes: Sequence[str] | None = None,
              unique_nn: bool = False, status=None, trial_id=None, with_code: bool = True) -> Rows:
    """LEMUR's ``data()`` rows. A row's code is the version its own code ids name (``code_version``), so
    rows of an older file, or imported without code, never show today's file of the same name. Each
    version's text is read once and shared by its rows (``code_texts``), where a join would copy it
    into every row (``benchmarks/data_code_columns.py``)."""
    test_mae = StatMetric.__table__.alias("test_mae")
    query = (
        select(Stat.id, Stat.task, Stat.dataset, Stat.metric, Stat.metric_code_id.label("metric_id"), Stat.nn,
               Stat.nn_code_id.label("nn_id"), Stat.epoch, Stat.accuracy, Stat.duration, Stat.prm.label("prm_id"),
               Stat.transform_code_id.label("transform_id"), Stat.transform,
               Stat.mae, test_mae.c.value.label("test_mae"), Stat.accuracy_scale, Stat.trial_id, Trial.status,
               Trial.error, Trial.epoch_max, Trial.seed, Trial.split, Trial.data_key, Trial.study)
        .select_from(Stat)
        .outerjoin(Trial, Trial.id == Stat.trial_id)
        .outerjoin(test_mae, and_(test_mae.c.stat_id == Stat.id, test_mae.c.split == "test",
                                  test_mae.c.name == "mae"))
    )
    prefix = None
    if nn_prefixes:
        prefix = or_(*[Stat.nn.startswith(p, autoescape=True) for p in nn_prefixes])
    query = _where(query, _filter(Stat.task, task), _filter(Stat.dataset, dataset), _filter(Stat.metric, metric),
                   _filter(Stat.nn, nn), _filter(Stat.epoch, epoch), _filter(Trial.status, status),
                   _filter(Stat.trial_id, trial_id), prefix)
    order = (Stat.task, Stat.dataset, Stat.metric, Stat.nn, Stat.epoch, Stat.id)
    if only_best_accuracy or unique_nn:
        group = [Stat.task, Stat.dataset, Stat.metric, Stat.nn] + ([] if unique_nn else [Stat.epoch])
        ranked = query.add_columns(func.row_number().over(
            partition_by=group, order_by=(Stat.accuracy.desc().nulls_last(), Stat.id)).label("_rank")).subquery()
        query = select(*[c for c in ranked.c if c.name != "_rank"]).where(ranked.c._rank == 1)
        order = tuple(ranked.c[c.key] for c in order)
    query = query.order_by(*order)
    if max_rows is not None:
        query = query.limit(int(max_rows))
    rows = _rows(url, query)
    prms = prm_dicts(url, (r["prm_id"] for r in rows))
    for row in rows:
        row["prm"] = prms.get(row["prm_id"], {})
    rows.columns.append("prm")
    if with_code:
        for kind in ("metric", "nn", "transform"):
            texts = code_texts(url, kind, (r[f"{kind}_id"] for r in rows))
            for row in rows:
                row[f"{kind}_code"] = texts.get(row[f"{kind}_id"])
            rows.columns.insert(rows.columns.index(f"{kind}_id"), f"{kind}_code")
    return rows


def code_texts(url: str, kind: str, ids: Iterable[str | None]) -> dict[str, str]:
    """The code of each given version of one kind (``nn``, ``transform``, ``metric``), one string per
    version."""
    ids = sorted({i for i in ids if i})
    found: dict[str, str] = {}
    for start in range(0, len(ids), _CHUNK):
        query = select(CodeVersion.id, CodeVersion.code).where(CodeVersion.kind == kind,
                                                               CodeVersion.id.in_(ids[start:start + _CHUNK]))
        found.update((row["id"], row["code"]) for row in _rows(url, query))
    return found


def nn_stat_rows(url: str, *, nn_name=None, prm_id=None, max_rows: int | None = None) -> Rows:
    query = _where(select(*NnStat.__table__.c), _filter(NnStat.nn_name, nn_name), _filter(NnStat.prm_id, prm_id))
    query = query.order_by(NnStat.nn_name, NnStat.prm_id)
    return _rows(url, query.limit(int(max_rows)) if max_rows else query)


def _by_names(url: str, query: Select, column, names) -> Rows:
    """``query`` for every name (all rows when ``names`` is None), asked in chunks of ``_CHUNK`` names."""
    if names is None:
        return _rows(url, query)
    names = sorted(set(names))
    found = Rows(columns=[c.name for c in query.selected_columns])
    for start in range(0, len(names), _CHUNK):
        found.extend(_rows(url, query.where(column.in_(names[start:start + _CHUNK]))))
    return found


def nn_code_rows(url: str, names=None) -> Rows:
    """Each model's current code and checksum (LEMUR's ``nn`` table)."""
    return _by_names(url, select(Nn.name, Nn.code, Nn.id).order_by(Nn.name), Nn.name, names)


def nn_minhash_rows(url: str, names=None) -> Rows:
    """The stored code signatures (LEMUR's ``nn_minhash`` table)."""
    return _by_names(url, select(*NnMinhash.__table__.c).order_by(NnMinhash.nn), NnMinhash.nn, names)


def nn_stat_sources(url: str, *, nn_name=None, prm_id=None) -> Rows:
    """The distinct (model, hyperparameter set, code id, transform, input shape) of recorded epochs:
    what the ``nn_stat`` row of a (model, hyperparameter set) can be computed from."""
    query = (select(Stat.nn, Stat.prm, Stat.nn_code_id, Stat.transform, Trial.in_shape).distinct()
             .select_from(Stat).outerjoin(Trial, Trial.id == Stat.trial_id).where(Stat.prm.is_not(None)))
    query = _where(query, _filter(Stat.nn, nn_name), _filter(Stat.prm, prm_id))
    return _rows(url, query.order_by(Stat.nn, Stat.prm))


def trial_rows(url: str, *, config=None, task=None, dataset=None, metric=None, nn=None, status=None,
               study=None, trial_id=None, data_key=None) -> Rows:
    query = _where(select(*Trial.__table__.c), _filter(Trial.config, config), _filter(Trial.task, task),
                   _filter(Trial.dataset, dataset), _filter(Trial.metric, metric), _filter(Trial.nn, nn),
                   _filter(Trial.status, status), _filter(Trial.study, study), _filter(Trial.id, trial_id),
                   _filter(Trial.data_key, data_key))
    rows = _rows(url, query.order_by(Trial.id))
    prms = prm_dicts(url, (r["prm"] for r in rows))
    for row in rows:
        row["prm_id"] = row.pop("prm")
        row["prm"] = prms.get(row["prm_id"], {})
    rows.columns = [c for c in rows.columns if c != "prm"] + ["prm_id", "prm"]
    return rows


def baseline_rows(url: str, *, data_key=None) -> Rows:
    query = _where(select(*ConstantBaseline.__table__.c), _filter(ConstantBaseline.data_key, data_key))
    return _rows(url, query.order_by(ConstantBaseline.data_key))


def metric_rows(url: str, *, config=None, nn=None, split=None, name=None, trial_id=None) -> Rows:
    query = (select(Stat.trial_id, Trial.config, Stat.nn, Stat.epoch, StatMetric.split, StatMetric.name,
                    StatMetric.value, StatMetric.stat_id)
             .select_from(StatMetric).join(Stat, Stat.id == StatMetric.stat_id)
             .outerjoin(Trial, Trial.id == Stat.trial_id))
    query = _where(query, _filter(Trial.config, config), _filter(Stat.nn, nn), _filter(StatMetric.split, split),
                   _filter(StatMetric.name, name), _filter(Stat.trial_id, trial_id))
    return _rows(url, query.order_by(Stat.trial_id, Stat.epoch, StatMetric.split, StatMetric.name))


def export_rows(url: str, *, trial_id=None, config=None, nn=None, format=None, precision=None, status=None) -> Rows:
    query = select(*Export.__table__.c, Trial.config, Trial.nn).join(Trial, Trial.id == Export.trial_id)
    query = _where(query, _filter(Export.trial_id, trial_id), _filter(Trial.config, config), _filter(Trial.nn, nn),
                   _filter(Export.format, format), _filter(Export.precision, precision),
                   _filter(Export.status, status))
    return _rows(url, query.order_by(Export.trial_id, Export.id))


def latency_rows(url: str, *, trial_id=None, config=None, nn=None, runtime=None, threads=None,
                 status=None) -> Rows:
    query = (select(*Latency.__table__.c, Export.format, Export.precision, Export.eval_mae, Export.test_mae,
                    Trial.config, Trial.nn, Trial.transform)
             .join(Export, Export.id == Latency.export_id).join(Trial, Trial.id == Latency.trial_id))
    query = _where(query, _filter(Latency.trial_id, trial_id), _filter(Trial.config, config), _filter(Trial.nn, nn),
                   _filter(Latency.runtime, runtime), _filter(Latency.threads, threads),
                   _filter(Latency.status, status))
    return _rows(url, query.order_by(Latency.trial_id, Latency.export_id, Latency.threads))


def prediction_rows(url: str, *, trial_id=None, split=None) -> Rows:
    query = _where(select(*Prediction.__table__.c), _filter(Prediction.trial_id, trial_id),
                   _filter(Prediction.split, split))
    return _rows(url, query.order_by(Prediction.trial_id, Prediction.split, Prediction.position))


def trial_id_range(url: str) -> tuple[int, int] | None:
    rows = _rows(url, select(func.min(Trial.id).label("low"), func.max(Trial.id).label("high")))
    return (rows[0]["low"], rows[0]["high"]) if rows and rows[0]["low"] is not None else None
