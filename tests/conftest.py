import os
import sys
from pathlib import Path

import pytest

from tests import helpers

REAL_DATA = os.environ.get("LEMUR_TEST_UTKFACE") or os.environ.get("LEMUR_DATA")
"""The real images: `.ci/run` sets LEMUR_TEST_UTKFACE; a developer may set either variable."""


PACKAGE_MODEL_FIXTURES = {"tiny_model", "misbehaving"}


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(items):
    """Tests that write or list model files in ab/nn/nn/ share one xdist worker (``--dist loadgroup``),
    so that no other test sees a model file appear, vanish or fail to import half-way. A wrapper: the
    group must be set before xdist's own hook reads it."""
    for item in items:
        if PACKAGE_MODEL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.package_models)
        if item.get_closest_marker("package_models"):
            item.add_marker(pytest.mark.xdist_group("package-models"))
    return (yield)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    grouped = item.get_closest_marker("package_models") is not None
    if grouped and getattr(item.config.option, "loadgroup", False) and not item.nodeid.endswith("@package-models"):
        pytest.fail("xdist did not put this test in the package-models group (pytest-xdist issue 1386: "
                    "pytest 9.2 drops the group); install the versions of requirements/constraints.txt")
    helpers.models_writable = grouped


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
def tiny_model():
    helpers.write_model("TinyAge", helpers.TINY_MODEL)
    yield "TinyAge"
    helpers.remove_model("TinyAge")


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
def misbehaving(tmp_path, monkeypatch):
    """Installs tests.helpers.MISBEHAVING as model ``Misbehaves``; set $MISBEHAVE_HOW in the test. The
    module reads its environment when imported, so no test sees another test's import of it."""
    monkeypatch.setenv("MISBEHAVE_FLAG", str(tmp_path / "first-build-done"))
    sys.modules.pop("ab.nn.nn.Misbehaves", None)
    helpers.write_model("Misbehaves", helpers.MISBEHAVING)
    yield "age-regression_utkface_mae_Misbehaves"
    helpers.remove_model("Misbehaves")
    sys.modules.pop("ab.nn.nn.Misbehaves", None)
