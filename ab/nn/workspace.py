"""Where runtime files live: the one place that knows the workspace layout.

Everything the tool writes goes under a workspace root (never inside the installed package):
``db/ab.nn.db``, ``data/<dataset>/``, ``out/``, the LEMUR JSON mirror ``stat/train/``, and the
workspace's own model, transform, metric and loader files (``nn/``, ``transform/``, ``metric/``,
``loader/``; ``ab.nn.registry`` finds them after the package's).
The root is ``--root``, else ``$LEMUR_ROOT``, else the current directory.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ab.nn.util.scoped import Scoped

ROOT_ENV = "LEMUR_ROOT"
DATA_ENV = "LEMUR_DATA"
DB_ENV = "LEMUR_DB"


@dataclass(frozen=True)
class Workspace:
    root: Path
    db: str | None = None
    data_dir: Path | None = None

    @classmethod
    def resolve(cls, root: str | os.PathLike | None = None, db: str | None = None,
                data_dir: str | os.PathLike | None = None) -> "Workspace":
        """Explicit arguments win over environment variables, which win over defaults; ``root`` may be a
        ``Workspace``, whose settings stand where ``db``/``data_dir`` are not given."""
        if isinstance(root, Workspace):
            return cls(root=root.root, db=db or root.db,
                       data_dir=Path(data_dir).expanduser().resolve() if data_dir else root.data_dir)
        root = Path(root or os.environ.get(ROOT_ENV) or os.getcwd()).expanduser().resolve()
        db = db or os.environ.get(DB_ENV) or None
        data = data_dir or os.environ.get(DATA_ENV) or None
        return cls(root=root, db=db, data_dir=Path(data).expanduser().resolve() if data else None)

    @property
    def db_path(self) -> Path:
        return self.root / "db" / "ab.nn.db"

    @property
    def db_url(self) -> str:
        return self.db or f"sqlite:///{self.db_path}"

    def dataset_dir(self, dataset: str) -> Path:
        """Folder of one dataset's source files.

        An explicit data folder (``--data-dir`` / ``$LEMUR_DATA``) is used as the dataset's own
        folder, unless it holds a sub-folder named after the dataset.
        """
        if self.data_dir is not None:
            nested = self.data_dir / dataset
            return nested if nested.is_dir() else self.data_dir
        return self.root / "data" / dataset

    def cache_dir(self, dataset: str) -> Path:
        """Writable cache folder of a dataset (the data folder itself may be read-only)."""
        return self.root / "data" / dataset / "cache"

    @property
    def face_template_path(self) -> Path:
        """The face alignment template measured on this workspace's UTKFace training crops
        (``python -m ab.nn.face.template``); never committed, it is derived from the images."""
        return self.root / "data" / "utkface" / "align_template.json"

    @property
    def out_dir(self) -> Path:
        return self.root / "out"

    def trial_dir(self, config: str, trial: int | str) -> Path:
        return self.out_dir / config / str(trial)

    def code_dir(self, folder: str) -> Path:
        """The workspace's folder of registry files of one kind (``nn``, ``transform``, ``metric``,
        ``loader``)."""
        return self.root / folder

    @property
    def stat_train_dir(self) -> Path:
        return self.root / "stat" / "train"

    @property
    def report_dir(self) -> Path:
        return self.root / "report"


active = Scoped[Workspace]("workspace", Workspace.resolve)
"""The workspace of the running sweep; outside a sweep, the one resolved from the environment."""


def of(root: Workspace | str | os.PathLike | None) -> Workspace:
    """The workspace a ``root=`` argument names: a ``Workspace`` as it is; a path as the workspace rooted
    there, with its own ``db/``, ``out/`` and ``data/`` (``$LEMUR_DB`` and ``$LEMUR_DATA`` describe the
    environment's workspace, not one named explicitly); None: the active one."""
    if root is None:
        return active.current()
    if isinstance(root, Workspace):
        return root
    return Workspace(root=Path(root).expanduser().resolve())


def home_of(url: str) -> Path | None:
    """The root of the workspace whose database is ``url`` (``sqlite:///<root>/db/ab.nn.db``), so that a
    caller who names only the database finds the trials' files beside it; None for any other URL."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    path = Path(parsed.database).expanduser().resolve()
    return path.parent.parent if path.name == "ab.nn.db" and path.parent.name == "db" else None


def add_arguments(parser, data: bool = True) -> None:
    """The workspace options every command shares: ``--root``, ``--db`` and (optionally) ``--data-dir``."""
    parser.add_argument("--root", default=None, help="workspace root for db/, data/, out/, stat/; "
                                                     f"unset: ${ROOT_ENV}, else the current directory")
    parser.add_argument("--db", default=None, type=_db_argument, help="SQLAlchemy URL of the statistics database; "
                                                   f"unset: ${DB_ENV}, else sqlite:///<root>/db/ab.nn.db")
    if data:
        parser.add_argument("--data-dir", default=None, help="folder of the dataset's files; "
                                                             f"unset: ${DATA_ENV}, else <root>/data/<dataset>")


def check_db(url: str) -> None:
    """An SQLite URL given by the user must name a file in an existing folder: a typo would otherwise
    create a stray folder (``sqlite:///x/y.db`` is relative to the current directory; four slashes
    make it absolute)."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception as error:
        raise ValueError(f"--db {url!r} is not a database URL ({error}); e.g. sqlite:////abs/path/ab.nn.db or "
                         f"postgresql+psycopg://user@host/db") from None
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:") \
            and not parsed.query.get("uri"):
        folder = Path(parsed.database).expanduser().absolute().parent
        if not folder.is_dir():
            raise ValueError(f"--db {url}: there is no folder {folder} for the database file "
                             f"({'relative to the current directory; ' if not Path(parsed.database).is_absolute() else ''}"
                             f"create it first, or use sqlite://// with an absolute path)")


def _db_argument(url: str) -> str:
    import argparse

    try:
        check_db(url)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix(f"--db {url}: ")) from None
    return url


def from_arguments(args) -> Workspace:
    """The workspace of a command's ``--root``/``--db``/``--data-dir``."""
    return Workspace.resolve(args.root, args.db, getattr(args, "data_dir", None))
