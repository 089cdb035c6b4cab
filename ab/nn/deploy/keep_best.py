"""``--keep-best-only``: after a sweep, the artifact files of every trial but the best are deleted."""
from __future__ import annotations

import logging
from pathlib import Path

from ab.nn.config import Config
from ab.nn.deploy.options import DELETED, OK
from ab.nn.stat import ranking
from ab.nn.stat.store import StatStore
from ab.nn.util import system
from ab.nn.util.paths import inside

log = logging.getLogger(__name__)


def keep_best_only(store: StatStore, config: Config, data_key: str, out_dir: Path) -> list[Path]:
    """Delete the artifact files of every trial of ``config`` on the data ``data_key`` but the best (the
    ranking's ``best_set``: within the study's latency constraint; the whole Pareto front of a
    two-objective study); rows stay, marked. Only files of this machine (the row's host) under this
    workspace's ``out_dir`` are touched; a path from the database that leads elsewhere is left alone,
    whatever it names. Returns the files deleted."""
    with store.transaction() as session:
        keep = ranking.best_set(session, config.name, data_key)
    here = system.host()
    deleted = []
    for row in store.exports_of(store.trial_ids(config, data_key)):
        if row.trial_id in keep or row.status != OK or not row.path or row.host not in (None, here):
            continue
        path = inside(row.path, out_dir)
        if path is None:
            log.warning("keep-best-only: %s is outside %s; left alone", row.path, out_dir)
            continue
        path.unlink(missing_ok=True)
        store.update_export(row.id, status=DELETED)
        deleted.append(path)
    for folder in {p.parent for p in deleted}:
        if folder.is_dir() and folder != out_dir.resolve() and not any(folder.iterdir()):
            folder.rmdir()
    return deleted
