import os
from pathlib import Path

import pytest

from tests import helpers

REAL_DATA = os.environ.get("LEMUR_TEST_UTKFACE") or os.environ.get("LEMUR_DATA")
"""The real images: `.ci/run` sets LEMUR_TEST_UTKFACE; a developer may set either variable."""


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch):
    """No test sees the developer's LEMUR_* settings; each sets what it needs."""
    for name in ("LEMUR_ROOT", "LEMUR_DATA", "LEMUR_DB"):
        monkeypatch.delenv(name, raising=False)


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
