"""Reads from the statistics database: parameterised SQLAlchemy Core only, never string-built SQL."""
from __future__ import annotations

from typing import Iterable, Sequence

from sqlalchemy import Select, and_, func, or_, select

from ab.nn.stat import engine as engines
from ab.nn.stat.schema import Export, Latency, Metric, Nn, Prediction, Prm, Stat, StatMetric, Transform, Trial

_CHUNK = 500


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


def _rows(url: str, query: Select) -> list[dict]:
    with engines.engine(url, writer=False).connect() as connection:
        return [dict(row._mapping) for row in connection.execute(query)]


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
              unique_nn: bool = False, status=None, trial_id=None) -> list[dict]:
    test_mae = StatMetric.__table__.alias("test_mae")
    query = (
        select(Stat.id, Stat.task, Stat.dataset, Stat.metric, Metric.code.label("metric_code"),
               Metric.id.label("metric_id"), Stat.nn, Nn.code.label("nn_code"), Nn.id.label("nn_id"),
               Stat.epoch, Stat.accuracy, Stat.duration, Stat.prm.label("prm_id"),
               Transform.code.label("transform_code"), Transform.id.label("transform_id"), Stat.transform,
               Stat.mae, test_mae.c.value.label("test_mae"), Stat.trial_id, Trial.status, Trial.error,
               Trial.epoch_max, Trial.seed, Trial.split, Trial.data_key, Trial.study, Trial.number)
        .select_from(Stat)
        .outerjoin(Nn, Nn.name == Stat.nn)
        .outerjoin(Metric, Metric.name == Stat.metric)
        .outerjoin(Transform, Transform.name == Stat.transform)
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
    return rows


def trial_rows(url: str, *, config=None, task=None, dataset=None, metric=None, nn=None, status=None,
               study=None, trial_id=None, data_key=None) -> list[dict]:
    query = _where(select(*Trial.__table__.c), _filter(Trial.config, config), _filter(Trial.task, task),
                   _filter(Trial.dataset, dataset), _filter(Trial.metric, metric), _filter(Trial.nn, nn),
                   _filter(Trial.status, status), _filter(Trial.study, study), _filter(Trial.id, trial_id),
                   _filter(Trial.data_key, data_key))
    rows = _rows(url, query.order_by(Trial.id))
    prms = prm_dicts(url, (r["prm"] for r in rows))
    for row in rows:
        row["prm_id"] = row.pop("prm")
        row["prm"] = prms.get(row["prm_id"], {})
    return rows


def metric_rows(url: str, *, config=None, nn=None, split=None, name=None, trial_id=None) -> list[dict]:
    query = (select(Stat.trial_id, Trial.config, Stat.nn, Stat.epoch, StatMetric.split, StatMetric.name,
                    StatMetric.value, StatMetric.stat_id)
             .select_from(StatMetric).join(Stat, Stat.id == StatMetric.stat_id)
             .outerjoin(Trial, Trial.id == Stat.trial_id))
    query = _where(query, _filter(Trial.config, config), _filter(Stat.nn, nn), _filter(StatMetric.split, split),
                   _filter(StatMetric.name, name), _filter(Stat.trial_id, trial_id))
    return _rows(url, query.order_by(Stat.trial_id, Stat.epoch, StatMetric.split, StatMetric.name))


def export_rows(url: str, *, trial_id=None, config=None, nn=None, format=None, precision=None, status=None) -> list[dict]:
    query = select(*Export.__table__.c, Trial.config, Trial.nn, Trial.number).join(Trial, Trial.id == Export.trial_id)
    query = _where(query, _filter(Export.trial_id, trial_id), _filter(Trial.config, config), _filter(Trial.nn, nn),
                   _filter(Export.format, format), _filter(Export.precision, precision),
                   _filter(Export.status, status))
    return _rows(url, query.order_by(Export.trial_id, Export.id))


def latency_rows(url: str, *, trial_id=None, config=None, nn=None, runtime=None, threads=None,
                 status=None) -> list[dict]:
    query = (select(*Latency.__table__.c, Export.format, Export.precision, Trial.config, Trial.nn, Trial.number)
             .join(Export, Export.id == Latency.export_id).join(Trial, Trial.id == Latency.trial_id))
    query = _where(query, _filter(Latency.trial_id, trial_id), _filter(Trial.config, config), _filter(Trial.nn, nn),
                   _filter(Latency.runtime, runtime), _filter(Latency.threads, threads),
                   _filter(Latency.status, status))
    return _rows(url, query.order_by(Latency.trial_id, Latency.export_id, Latency.threads))


def prediction_rows(url: str, *, trial_id=None, split=None) -> list[dict]:
    query = _where(select(*Prediction.__table__.c), _filter(Prediction.trial_id, trial_id),
                   _filter(Prediction.split, split))
    return _rows(url, query.order_by(Prediction.trial_id, Prediction.split, Prediction.position))


def trial_id_range(url: str) -> tuple[int, int] | None:
    rows = _rows(url, select(func.min(Trial.id).label("low"), func.max(Trial.id).label("high")))
    return (rows[0]["low"], rows[0]["high"]) if rows and rows[0]["low"] is not None else None
