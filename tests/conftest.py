import os

# One torch thread per test process and the trials it starts (set before anything imports torch): the suite
# runs in two xdist workers on two cores, and two threads each made every training step fight for them.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from tests import helpers  # noqa: E402

REAL_DATA = os.environ.get("LEMUR_TEST_UTKFACE") or os.environ.get("LEMUR_DATA")
"""The real images: `.ci/run` sets LEMUR_TEST_UTKFACE; a developer may set either variable."""


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch):
    """No test sees the developer's LEMUR_* settings; each sets what it needs."""
    for name in ("LEMUR_ROOT", "LEMUR_DATA", "LEMUR_DB"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing downloads: a missing dataset fails fast


@pytest.fixture
def root(tmp_path) -> Path:
    path = tmp_path / "ws"
    path.mkdir()
    return path


@pytest.fixture
def utk_dir(tmp_path) -> Path:
    folder = tmp_path / "utk" / "UTKFace"
    helpers.make_utkface(folder, count=60)
    return folder.parent


@pytest.fixture
def utk_dir_large(tmp_path) -> Path:
    """Enough images that a few epochs settle BatchNorm's running statistics (export fidelity)."""
    folder = tmp_path / "utk-large" / "UTKFace"
    helpers.make_utkface(folder, count=240)
    return folder.parent


@pytest.fixture
def tiny_model(root) -> str:
    """Model ``TinyAge`` in the test's workspace ``root`` (its nn/ folder): run the sweep with that root."""
    helpers.write_model(root, "TinyAge", helpers.TINY_MODEL)
    return "TinyAge"


@pytest.fixture
def real_utkface() -> Path:
    """The real images: required in CI (CI=true), skipped with a reason elsewhere."""
    folder = Path(REAL_DATA).expanduser() if REAL_DATA else None
    if folder is None or not folder.exists():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must provide the real UTKFace images: {helpers.REAL_DATA_MISSING}")
        pytest.skip(helpers.REAL_DATA_MISSING)
    return folder


@pytest.fixture
def postgres_url():
    """A fresh database on the PostgreSQL server `.ci/run` starts (LEMUR_TEST_PG_URL)."""
    url = os.environ.get("LEMUR_TEST_PG_URL")
    if not url:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI must provide a PostgreSQL server (scripts/postgres.sh sets LEMUR_TEST_PG_URL)")
        pytest.skip("no PostgreSQL server (source scripts/postgres.sh to start one)")
    yield helpers.new_postgres_database(url)


@pytest.fixture
def misbehaving(root, tmp_path, monkeypatch) -> str:
    """tests.helpers.MISBEHAVING as model ``Misbehaves`` in the test's workspace ``root``; set
    $AB_NN_FAULT_MISBEHAVE in the test (its files are in $AB_NN_FAULT_DIR). The module reads its
    environment when imported; a workspace file is imported once per path, so no test sees another test's
    import of it."""
    folder = tmp_path / "misbehaving"
    folder.mkdir()
    monkeypatch.setenv("AB_NN_FAULT_DIR", str(folder))
    helpers.write_model(root, "Misbehaves", helpers.MISBEHAVING)
    return "age-regression_utkface_mae_Misbehaves"
