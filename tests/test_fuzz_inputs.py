"""Fuzzing the doors for files from outside (hypothesis, a few thousand cases, derandomized so CI
sees the same ones): the image decoder every entry uses, and the readers of a bundle's
``pipeline.json``. Each input must give a result within bounds or the entry's one documented error:
``ImageUnreadable`` (``ImageTooLarge``) for images, ``BundleError`` for a bundle, ``MetadataError``
for a ``pipeline.json`` read as a ``.tflite`` file's sidecar."""
import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ab.nn.bundle.manifest import PIPELINE_FILE, BundleError, read_manifest
from ab.nn.dataset.decode import ImageTooLarge, ImageUnreadable, open_image
from ab.nn.predict import metadata
from tests.crafted import FORMATS, declaring, encoded
from tests.test_bundle_manifest import write_bundle

pytestmark = [pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning"),
              pytest.mark.filterwarnings("ignore:Tag data larger than file:UserWarning")]

CAP = 1_000_000  # a low cap keeps each case fast; the check is the same at any cap
FUZZ = settings(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
SEEDS = {fmt: encoded(fmt, size=(16, 12)) for fmt in FORMATS + ("MPO",)}


def _decoded_or_unreadable(data: bytes) -> None:
    try:
        image = open_image(data, limit=CAP)
    except ImageUnreadable:
        return
    assert image.mode == "RGB" and image.width * image.height <= CAP


@settings(FUZZ, max_examples=800)
@given(st.binary(max_size=4096))
def test_arbitrary_bytes(data):
    _decoded_or_unreadable(data)


@st.composite
def mutated(draw):
    """A real small image of an accepted format, truncated and/or with bytes overwritten."""
    data = bytearray(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    for _ in range(draw(st.integers(0, 8))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.integers(0, len(data)))])


@settings(FUZZ, max_examples=1500)
@given(mutated())
def test_truncated_and_corrupt_images(data):
    _decoded_or_unreadable(data)


@settings(FUZZ, max_examples=400)
@given(st.sampled_from(FORMATS), st.integers(1, 65535), st.integers(1, 65535))
def test_any_declared_size(fmt, width, height):
    if fmt == "WEBP":
        width, height = min(width, 16384), min(height, 16384)
    data = declaring(fmt, width, height)
    if width * height > CAP:
        with pytest.raises(ImageTooLarge):
            open_image(data, limit=CAP)
    else:
        _decoded_or_unreadable(data)


HOSTILE = [math.inf, -math.inf, math.nan, 10 ** 400, -(10 ** 400), 2 ** 63, 0, -1, "", "..", "../x", "/etc/passwd",
           "x" * 5000]
"""Values that break readers which trust types and ranges, drawn more often than chance would."""
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
                    | st.sampled_from(HOSTILE),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                                max_size=4),
                    max_leaves=20)


@pytest.fixture(scope="module")
def sound(tmp_path_factory):
    """A sound made-up bundle and its manifest."""
    folder = write_bundle(tmp_path_factory.mktemp("fuzz") / "bundle")
    return folder, json.loads((folder / PIPELINE_FILE).read_text())


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from _paths(inner, prefix + (key,))
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            yield from _paths(inner, prefix + (i,))


def _replaced(manifest, path, value, delete: bool):
    if not path:
        return value
    copy = json.loads(json.dumps(manifest))
    holder = copy
    for key in path[:-1]:
        holder = holder[key]
    if delete:
        del holder[path[-1]]
    else:
        holder[path[-1]] = value
    return copy


def _read_as_bundle(folder, text: str) -> None:
    """Read ``text`` as a bundle's pipeline.json and as a .tflite file's sidecar."""
    (folder / PIPELINE_FILE).write_text(text)
    try:
        metadata.for_tflite(folder / "model.tflite")
    except metadata.MetadataError:
        pass
    try:
        manifest = read_manifest(folder)
    except BundleError as error:
        assert "\n" not in str(error)
        return
    info = metadata.from_pipeline_json(folder / PIPELINE_FILE)  # a checked manifest always reads
    assert 1 <= info.input_size <= 4096 and all(math.isfinite(v) and v > 0 for v in info.std)
    for name in [*manifest["age_model"].values(), manifest["detector"]["file"]]:
        assert (folder / name).resolve().parent == folder.resolve() and name in manifest["files"]


@settings(FUZZ, max_examples=600)
@given(JSON | st.text(max_size=300))
def test_any_json_value_as_pipeline_json(sound, value):
    folder, _ = sound
    _read_as_bundle(folder, value if isinstance(value, str) else json.dumps(value))


@settings(FUZZ, max_examples=1200)
@given(st.data(), JSON, st.booleans())
def test_any_entry_of_a_sound_pipeline_json_replaced_or_removed(sound, data, value, delete):
    folder, manifest = sound
    paths = list(_paths(manifest))
    path = data.draw(st.sampled_from(paths))
    _read_as_bundle(folder, json.dumps(_replaced(manifest, path, value, delete and bool(path))))
