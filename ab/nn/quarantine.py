"""Quarantined models: model code that ``check_nn`` did not accept. Such code is kept in the statistics
database only (the ``nn`` table, with the reason as its trial's error), never in a registry folder, so
no sweep selects it. ``quarantined`` lists it; ``restore`` writes one model into the workspace's ``nn/``
folder, where the next sweep finds it (and trains it in the sandbox, like any workspace model).

    python -m ab.nn.quarantine [--root R] [--db URL]            # list
    python -m ab.nn.quarantine [--root R] --restore NAME        # write <root>/nn/NAME.py
"""
from __future__ import annotations

import sys
from pathlib import Path

from ab.nn import registry, workspace
from ab.nn.util import atomic
from ab.nn.util.arguments import Parser
from ab.nn.workspace import Workspace


def write_code(folder: Path, name: str, code: str) -> Path:
    """``<folder>/<name>.py`` holding ``code``, replaced atomically (a reader never sees half a file)."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{name}.py"
    if target.exists() and target.read_text(encoding="utf-8") == code:
        return target
    return atomic.write(target, code)


def quarantined(ws: Workspace) -> list[dict]:
    """Models whose code is in the database but in no registry folder (the package's or ``ws``'s) and whose
    last trial did not train: ``{name, trial, status, error}`` each (``error`` the first line of the
    reason), by name. Models imported with trained results (LEMUR records) are not quarantined."""
    from sqlalchemy import select

    from ab.nn.stat.schema import Nn, Trial
    from ab.nn.stat.states import TRAINED_STATES
    from ab.nn.stat.store import StatStore

    with workspace.active.use(ws):
        files = set(registry.names(registry.MODEL))
    found = []
    with StatStore(ws.db_url).transaction() as session:
        for name in session.scalars(select(Nn.name).order_by(Nn.name)):
            if name in files:
                continue
            last = session.scalars(select(Trial).where(Trial.nn == name).order_by(Trial.id.desc()).limit(1)).first()
            if last is None or last.status in TRAINED_STATES:
                continue
            found.append({"name": name, "trial": last.id, "status": last.status,
                          "error": (last.error or "").splitlines()[0] if last.error else None})
    return found


def restore(ws: Workspace, name: str) -> Path:
    """Write the quarantined model ``name`` into ``ws``'s ``nn/`` folder; its path. A ``ValueError`` when
    ``name`` is not quarantined."""
    from ab.nn.stat.schema import Nn
    from ab.nn.stat.store import StatStore

    if name not in {entry["name"] for entry in quarantined(ws)}:
        raise ValueError(f"{name!r} is not a quarantined model of {ws.db_url} (python -m ab.nn.quarantine lists them)")
    with StatStore(ws.db_url).transaction() as session:
        code = session.get(Nn, name).code
    return write_code(ws.code_dir(registry.MODEL.folder), name, code)


def main(argv=None) -> int:
    parser = Parser(prog="python -m ab.nn.quarantine", description=__doc__.split("\n\n")[0])
    workspace.add_arguments(parser, data=False)
    parser.add_argument("--restore", metavar="NAME", help="write the quarantined model NAME into <root>/nn/")
    args = parser.parse_args(argv)
    ws = workspace.from_arguments(args)
    if args.restore:
        try:
            print(restore(ws, args.restore))
        except ValueError as error:
            parser.exit(2, f"{parser.prog}: error: {error}\n")
        return 0
    for entry in quarantined(ws):
        print(f"{entry['name']:<44} trial {entry['trial']:<6} {entry['status']:<12} {entry['error'] or ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
