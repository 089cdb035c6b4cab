"""Schema revisions by Alembic: databases of every schema before Alembic upgrade and keep their data, a
new database gets every table, only the runner and ``upgrade`` change a schema, and a database newer
than the code is refused."""
import shutil
import sqlite3
from pathlib import Path

import optuna
import pytest
import sqlalchemy as sa
from alembic import command

from ab.nn import api
from ab.nn.stat import __main__ as stat_cli, engine as engines, versions
from ab.nn.stat.store import StatStore
from tests import helpers

FIXTURES = Path(__file__).parent / "fixtures"
CONFIG = "age-regression_utkface_mae_MobileAgeNet"
SQLITE_SCHEMAS = [("schema_v1_c61659d", 1), ("schema_v1", 1), ("schema_v2_9d8acf7", 2), ("schema_v3_9f28b26", 3),
                  ("schema_v3_1e1c1bb", 3), ("schema_v4_a3ffae2", 4), ("schema_v4_80f1b0c", 4),
                  ("schema_v4_7699e82", 4)]
"""Every schema the code before Alembic wrote (the commits that changed ab/nn/stat/schema.py), with the
version its migrations recorded; the last is the schema of the code just before Alembic."""
POSTGRES_SCHEMAS = [("schema_v1_f2e5451", 1), ("schema_v4_7699e82", 4)]
PAPER, PAPER_8, LEMUR_RANDOM = "004854e36b57", "28c8d328e0ab", "cfd33c933b57"
"""Data keys of utkface paper/42, paper/42 at 8 samples and lemur-random/42 (no part digests), as
ab.nn.dataset.identity computed them on 6 December 2026."""


def _sqlite(path: Path) -> str:
    return f"sqlite:///{path}"


def _old_database(url: str, fixture: str, version: int) -> None:
    """The schema of ``fixture`` with three trials (two on paper/42, one a smoke run, and one on lemur/42)
    and what that schema's code had filled in by its ``version``."""
    made = sa.create_engine(url)
    with made.begin() as connection:
        for statement in (FIXTURES / fixture).read_text().split(";\n"):
            body = "\n".join(line for line in statement.splitlines() if not line.startswith("--")).strip()
            if body:
                connection.exec_driver_sql(body)
        tables = sa.MetaData()
        tables.reflect(connection)

        def insert(table_name: str, /, **values) -> None:
            table = tables.tables.get(table_name)
            if table is not None:
                connection.execute(table.insert().values({k: v for k, v in values.items() if k in table.c}))

        for kind, checksum in (("nn", "abc"), ("metric", "def"), ("transform", "ghi")):
            name = {"nn": "MobileAgeNet", "metric": "mae", "transform": "norm_64"}[kind]
            insert(kind, name=name, code="code", id=checksum)
            if version >= 4:
                insert("code_version", kind=kind, id=checksum, name=name, code="code")
        insert("prm", uid="u1", name="lr", value=0.001)
        for tid, split, cap, mae in ((1, "paper/42", None, 6.1), (2, "paper/42", 8, 3.0), (3, "lemur/42", None, 5.0)):
            insert("trial", id=tid, config=CONFIG, task="age-regression", dataset="utkface", metric="mae",
                   nn="MobileAgeNet", transform="norm_64", prm="u1", study=CONFIG, number=tid - 1, status="complete",
                   seed=42, split=split, epoch_max=1, epochs_done=1, max_samples=cap, eval_accuracy=1 - mae / 20,
                   eval_mae=mae, **({"data_key": f"recorded{tid}", "split_seed": 42} if version >= 2 else {}),
                   **({"uid": f"uid{tid}"} if version >= 3 else {}))
            insert("stat", id=f"s{tid}", accuracy=1 - mae / 20, epoch=1, duration=10, task="age-regression",
                   dataset="utkface", nn="MobileAgeNet", transform="norm_64", metric="mae", prm="u1", trial_id=tid,
                   mae=mae, **({"nn_code_id": "abc", "transform_code_id": "ghi", "metric_code_id": "def",
                                "accuracy_scale": 20.0} if version >= 4 else {}))
            insert("stat_metric", stat_id=f"s{tid}", split="eval", name="mae", value=mae)
        insert("export", id=1, trial_id=1, format="onnx", precision="fp32", status="ok", path="out/1/model.onnx")
    made.dispose()


def _rows(url: str) -> dict[str, list[dict]]:
    made = sa.create_engine(url)
    with made.connect() as connection:
        tables = sa.MetaData()
        tables.reflect(connection)
        rows = {name: sorted((dict(r._mapping) for r in connection.execute(sa.select(table))),
                             key=lambda row: [str(row[c.name]) for c in table.primary_key])
                for name, table in tables.tables.items()}
    made.dispose()
    return rows


def _revision(url: str) -> list[str]:
    made = sa.create_engine(url)
    with made.connect() as connection:
        present = sa.inspect(connection).has_table(versions.VERSION_TABLE)
        found = [r[0] for r in connection.execute(sa.text(f"select version_num from {versions.VERSION_TABLE}"))] \
            if present else []
    made.dispose()
    return found


def _check_matches_the_models(url: str) -> None:
    """Alembic's autogenerate finds nothing to do: the upgraded database is what schema.py declares."""
    with engines.engine(url).connect() as connection:
        command.check(versions.alembic_config(connection))


def _upgrades_and_keeps_its_data(url: str, fixture: str, version: int) -> None:
    _old_database(url, fixture, version)
    before = _rows(url)
    engines.dispose_all()
    assert versions.upgrade(url) == (f"the schema before Alembic (version {version})", f"revision {versions.head()}")
    after = _rows(url)
    assert _revision(url) == [versions.head()]
    legacy = before.pop("ab_nn_schema", [])
    assert after["ab_nn_schema"][:len(legacy)] == legacy and max(r["version"] for r in after["ab_nn_schema"]) == 4
    renamed = version < 4  # the old lemur split was random_split 70/30: renamed, with a new data key
    for table, rows in before.items():
        assert len(after[table]) == len(rows), table
        for old, new in zip(rows, after[table]):
            changed = {"split", "data_key"} if table == "trial" and old["split"] == "lemur/42" and renamed else set()
            assert {k: v for k, v in old.items() if v is not None and k not in changed} == \
                {k: new[k] for k, v in old.items() if v is not None and k not in changed}, table
    trials = {r["id"]: r for r in after["trial"]}
    assert {i: t["split"] for i, t in trials.items()} == \
        {1: "paper/42", 2: "paper/42", 3: "lemur-random/42" if renamed else "lemur/42"}
    keys = [PAPER, PAPER_8] if version == 1 else ["recorded1", "recorded2"]
    assert [trials[i]["data_key"] for i in (1, 2, 3)] == keys + [LEMUR_RANDOM if renamed else "recorded3"]
    assert {t["split_seed"] for t in trials.values()} == {42}
    uids = {t["uid"] for t in trials.values()}
    assert uids == {"uid1", "uid2", "uid3"} if version >= 3 else (len(uids) == 3 and all(len(u) == 32 for u in uids))
    assert {(s["nn_code_id"], s["transform_code_id"], s["metric_code_id"], s["accuracy_scale"])
            for s in after["stat"]} == {("abc", "ghi", "def", 20.0)}
    assert {(c["kind"], c["id"]) for c in after["code_version"]} == {("nn", "abc"), ("metric", "def"),
                                                                     ("transform", "ghi")}
    _check_matches_the_models(url)


@pytest.mark.parametrize("fixture, version", SQLITE_SCHEMAS)
def test_every_schema_before_alembic_upgrades_and_keeps_its_data(tmp_path, fixture, version):
    _upgrades_and_keeps_its_data(_sqlite(tmp_path / "old.db"), f"{fixture}.sqlite.sql", version)


@pytest.mark.postgres
@pytest.mark.parametrize("fixture, version", POSTGRES_SCHEMAS)
def test_postgresql_databases_before_alembic_upgrade_and_keep_their_data(postgres_url, fixture, version):
    _upgrades_and_keeps_its_data(postgres_url, f"{fixture}.postgresql.sql", version)


def test_an_upgraded_version_1_database_ranks_within_its_data_keys(tmp_path):
    path = tmp_path / "old.db"
    _old_database(_sqlite(path), "schema_v1.sqlite.sql", 1)
    versions.upgrade(_sqlite(path))
    assert list(api.ranked_trials(config=CONFIG, db=path).id) == [1]  # not the lucky smoke run (MAE 3.0)
    assert list(api.ranked_trials(config=CONFIG, all_data=True, db=path).id) == [2, 3, 1]
    assert list(api.ranked_trials(config=CONFIG, data_key=LEMUR_RANDOM, db=path).id) == [3]
    assert api.data(with_code=True, db=path).nn_code.eq("code").all()


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_a_new_database_gets_every_table_beside_optunas(tmp_path, request, backend):
    url = request.getfixturevalue("postgres_url") if backend == "postgresql" else _sqlite(tmp_path / "new" / "a.db")
    if backend == "sqlite":
        (tmp_path / "new").mkdir()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.create_study(storage=url, study_name="theirs")  # Optuna's tables and alembic_version first
    optunas = {t: rows for t, rows in _rows(url).items()}
    assert versions.upgrade(url) == ("no tables", f"revision {versions.head()}")
    assert versions.upgrade(url)[0] == f"revision {versions.head()}"  # the second finds nothing to do
    after = _rows(url)
    assert {t: after[t] for t in optunas} == optunas  # Optuna's tables and version row untouched
    assert optuna.load_study(study_name="theirs", storage=url).study_name == "theirs"
    _check_matches_the_models(url)
    StatStore(url)  # at this code's revision: stores open it
    versions.require_current(url)


def test_upgrade_command_prints_from_which_to_which_revision(tmp_path, capsys):
    path = tmp_path / "old.db"
    _old_database(_sqlite(path), "schema_v3_9f28b26.sqlite.sql", 3)
    assert stat_cli.cli(["upgrade", "--db", _sqlite(path)]) == 0
    assert capsys.readouterr().out.strip() == \
        f"{_sqlite(path)}: the schema before Alembic (version 3) -> revision {versions.head()}"
    assert stat_cli.cli(["upgrade", "--root", str(tmp_path / "ws")]) == 0  # a new workspace's database
    assert capsys.readouterr().out.strip() == \
        f"{_sqlite(tmp_path / 'ws' / 'db' / 'ab.nn.db')}: no tables -> revision {versions.head()}"
    assert stat_cli.cli(["upgrade", "--db", _sqlite(path)]) == 0
    assert capsys.readouterr().out.strip() == f"{_sqlite(path)}: already at revision {versions.head()}"


def test_reads_and_stores_refuse_an_outdated_database_and_change_nothing(tmp_path, capsys):
    path = tmp_path / "old.db"
    _old_database(_sqlite(path), "schema_v4_7699e82.sqlite.sql", 4)
    before = _rows(_sqlite(path))
    for call in (lambda: api.trials(db=path), lambda: StatStore(_sqlite(path)),
                 lambda: versions.require_current(_sqlite(path))):
        with pytest.raises(versions.Outdated) as refused:
            call()
        message = str(refused.value)
        assert "\n" not in message and "the schema before Alembic (version 4)" in message
        assert f"python -m ab.nn.stat upgrade --db {_sqlite(path)}" in message and versions.head() in message
    with pytest.raises(SystemExit) as exited:
        stat_cli.cli(["trials", "--db", _sqlite(path)])
    assert exited.value.code == 2 and "python -m ab.nn.stat upgrade" in capsys.readouterr().err
    assert _rows(_sqlite(path)) == before and _revision(_sqlite(path)) == []
    with pytest.raises(versions.Outdated, match="no statistics database at"):
        StatStore(_sqlite(tmp_path / "missing.db"))
    assert not (tmp_path / "missing.db").exists()


def test_a_trial_child_never_upgrades(tmp_path):
    """The runner upgrades before it starts trials; a trial process that finds an outdated database
    (another machine's runner has not upgraded it) refuses it rather than upgrading it."""
    from ab.nn.config import Config
    from ab.nn.dataset.settings import DataSettings
    from ab.nn.sweep.isolation import run_isolated
    from ab.nn.sweep.trial_spec import TrialSpec
    from ab.nn.workspace import Workspace

    path = tmp_path / "old.db"
    _old_database(_sqlite(path), "schema_v2_9d8acf7.sqlite.sql", 2)
    before = _rows(_sqlite(path))
    spec = TrialSpec(config=Config.parse(CONFIG), prm={"transform": "norm_64", "lr": 0.01, "batch": 4, "epoch": 1},
                     trial_id=1, db_url=_sqlite(path), workspace=Workspace(tmp_path / "ws"), data=DataSettings(),
                     seed=0)
    with pytest.raises(versions.Outdated):
        run_isolated(spec)
    assert _rows(_sqlite(path)) == before and _revision(_sqlite(path)) == []


NOTE = """
    with op.batch_alter_table("trial", recreate="always") as batch:
        batch.add_column(sa.Column("note", sa.Text(), nullable=True))
        batch.create_index("ix_trial_note", ["note"])
    op.execute("UPDATE trial SET note = 'from ' || split")
"""
"""A later revision: a column on ``trial`` and data for it, in batch mode with the table copied (as SQLite
needs for most changes) while ``stat`` rows point at it."""


def _newer_code(tmp_path: Path, monkeypatch, upgrade: str = NOTE) -> str:
    """The revisions of this code plus one that a later version adds, doing ``upgrade``."""
    scripts = tmp_path / "scripts"
    shutil.copytree(versions.SCRIPTS, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    (scripts / "versions" / "20261207_0a1b2c3d4e5f_later.py").write_text(
        f'from alembic import op\nimport sqlalchemy as sa\n\nrevision = "0a1b2c3d4e5f"\n'
        f'down_revision = "{versions.head()}"\nbranch_labels = None\ndepends_on = None\n\n\n'
        f'def upgrade() -> None:{upgrade}')
    monkeypatch.setattr(versions, "SCRIPTS", scripts)
    return "0a1b2c3d4e5f"


@pytest.mark.parametrize("upgrade, error", [
    ("\n    op.add_column('trial', sa.Column('note', sa.Text()))\n    op.execute('UPDATE trial SET nowhere = 1')\n",
     "nowhere"),
    ("\n    op.execute('DELETE FROM trial WHERE id = 1')\n", "foreign key points nowhere")])
def test_a_failing_revision_leaves_the_database_as_it_was(tmp_path, monkeypatch, upgrade, error):
    """All revisions of an upgrade are one transaction; with SQLite's foreign keys off during it, a
    revision that leaves stat rows pointing at a deleted trial is refused."""
    url = _sqlite(tmp_path / "old.db")
    _old_database(url, "schema_v4_7699e82.sqlite.sql", 4)
    versions.upgrade(url)
    before, ours = _rows(url), versions.head()
    _newer_code(tmp_path, monkeypatch, upgrade)
    with pytest.raises(Exception, match=error):
        versions.upgrade(url)
    assert _rows(url) == before and _revision(url) == [ours]


def test_a_later_revision_upgrades_on_top_and_older_code_refuses_its_database(tmp_path, monkeypatch, capsys):
    url = _sqlite(tmp_path / "old.db")
    _old_database(url, "schema_v1.sqlite.sql", 1)
    ours = versions.head()
    newer = _newer_code(tmp_path, monkeypatch)
    assert versions.upgrade(url) == ("the schema before Alembic (version 1)", f"revision {newer}")
    rows = _rows(url)
    assert {t["note"] for t in rows["trial"]} == {"from paper/42", "from lemur-random/42"}
    assert len(rows["stat"]) == 3
    with sqlite3.connect(tmp_path / "old.db") as con:
        assert con.execute("PRAGMA foreign_key_check").fetchall() == []
        assert con.execute("PRAGMA foreign_keys").fetchone() == (0,)  # a plain connection's default
    with engines.engine(url).connect() as connection:
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1  # ours are back on
    monkeypatch.undo()  # this code again: the database is newer than it
    for call in (lambda: versions.upgrade(url), lambda: versions.require_current(url), lambda: StatStore(url),
                 lambda: api.trials(db=url)):
        with pytest.raises(versions.TooNew) as refused:
            call()
        assert "\n" not in str(refused.value) and newer in str(refused.value) and ours in str(refused.value)
    with pytest.raises(SystemExit) as exited:
        stat_cli.cli(["upgrade", "--db", url])
    err = capsys.readouterr().err
    assert exited.value.code == 2
    assert newer in err and ours in err and len(err.strip().splitlines()) == 1
    assert _revision(url) == [newer]


def test_the_revisions_have_one_head_and_import_nothing_from_ab_nn():
    """Revisions are frozen: code they import could change what an old revision does."""
    assert versions.head()
    for revision in (versions.SCRIPTS / "versions").glob("*.py"):
        imports = [line for line in revision.read_text().splitlines() if line.startswith(("import ", "from "))]
        assert not [line for line in imports if "ab.nn" in line or line.startswith("from ab")], revision.name


def test_processes_opening_one_new_sqlite_database_together_all_succeed(tmp_path):
    url = _sqlite(tmp_path / "together.db")
    assert helpers.open_together(url, 6) == ["ok"] * 6
    assert _revision(url) == [versions.head()]
    assert len(_rows(url)["ab_nn_schema"]) == 1


def test_listing_configs_of_a_new_workspace_creates_no_database(tmp_path, capsys):
    from ab.nn import train

    assert train.cli(["--list-configs", "--root", str(tmp_path)]) == 0
    assert CONFIG in capsys.readouterr().out
    assert not (tmp_path / "db" / "ab.nn.db").exists()
