"""A bundle's ``pipeline.json``, read and checked before anything in the bundle is used: the one
reader, for ``predict`` (which imports this module and nothing else of ``ab.nn.bundle``) and for
the writer.

A bundle is trusted no further than its checks go. Every file it uses (the age models, the detector)
must be named by a plain file name (no folder, no ``..``, not absolute), listed under ``files`` with
its size and sha256, present in the bundle folder as a regular file (not a symlink) of that size
and content. ``pipeline.json`` itself is at most ``MAX_MANIFEST_BYTES`` and every value predict
reads from it is checked for type and range here, so that anything else is refused with one
``BundleError`` naming the entry.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

from ab.nn.face.detect import MODELS
from ab.nn.face.template import Template
from ab.nn.util.digest import sha256_of

PIPELINE_FILE = "pipeline.json"
FORMAT = "ab.nn photo-to-age bundle"
VERSION = 1
RUNTIMES = ("tflite", "onnx")
"""Age-model files a bundle may carry (a PyTorch checkpoint is never loaded from a bundle)."""
MAX_MANIFEST_BYTES = 1 << 20
MAX_INPUT_SIZE = 4096
_SHA256 = re.compile(r"[0-9a-f]{64}")


class BundleError(ValueError):
    """A bundle that cannot be written or trusted; the message says why, naming the entry."""


def _plain_name(name, where: str) -> str:
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name \
            or "\0" in name or name != name.strip():
        raise BundleError(f"{where}: {name!r} is not a plain file name inside the bundle")
    return name


def _number(value, where: str) -> float:
    try:
        number = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
    except OverflowError:
        number = math.nan
    if not math.isfinite(number):
        raise BundleError(f"{where}: expected a finite number, got {value!r:.40}")
    return number


def _numbers(values, count: int, where: str) -> list[float]:
    if not isinstance(values, list) or len(values) != count:
        raise BundleError(f"{where}: expected a list of {count} numbers, got {values!r:.80}")
    return [_number(v, where) for v in values]


def _object(values, where: str) -> dict:
    if not isinstance(values, dict):
        raise BundleError(f"{where}: expected an object, got {type(values).__name__}")
    return values


def _check_files(folder: Path, files) -> None:
    """Every listed file is a regular file inside ``folder`` with its recorded size and sha256."""
    for name, entry in files.items():
        where = f"{PIPELINE_FILE} files[{name!r}]"
        _plain_name(name, where)
        entry = _object(entry, where)
        sha256, size = entry.get("sha256"), entry.get("bytes")
        if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
            raise BundleError(f"{where}: no sha256 (64 lowercase hex digits)")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise BundleError(f"{where}: no size in bytes")
        path = folder / name
        if path.is_symlink():
            raise BundleError(f"{folder}: {name} is a symlink; a bundle's files must lie in its folder")
        if not path.is_file():
            raise BundleError(f"{folder}: {name} is missing")
        if path.stat().st_size != size or sha256_of(path) != sha256:
            raise BundleError(f"{folder}: {name} does not match its sha256 in {PIPELINE_FILE} (altered or truncated)")


def _listed(name, files: dict, where: str) -> str:
    _plain_name(name, where)
    if name not in files:
        raise BundleError(f"{PIPELINE_FILE} {where}: {name!r} is not listed under files with a sha256")
    return name


def _check_model_entries(manifest: dict) -> None:
    files = manifest["files"]
    age_model = _object(manifest.get("age_model"), f"{PIPELINE_FILE} age_model")
    if not age_model:
        raise BundleError(f"{PIPELINE_FILE} age_model: names no model file")
    for runtime, name in age_model.items():
        if runtime not in RUNTIMES:
            raise BundleError(f"{PIPELINE_FILE} age_model[{runtime!r}]: a bundle carries {' or '.join(RUNTIMES)} "
                              f"age models only")
        _listed(name, files, f"age_model[{runtime!r}]")
    detector = _object(manifest.get("detector"), f"{PIPELINE_FILE} detector")
    if not isinstance(detector.get("model"), str) or detector["model"] not in MODELS:
        raise BundleError(f"{PIPELINE_FILE} detector.model: {detector.get('model')!r:.80} is not one of "
                          f"{', '.join(MODELS)}")
    _listed(detector.get("file"), files, "detector.file")
    if detector.get("check") is not None:
        check = _object(detector["check"], f"{PIPELINE_FILE} detector.check")
        _listed(check.get("file"), files, "detector.check.file")
        if not 0 <= _number(check.get("min_presence"), f"{PIPELINE_FILE} detector.check.min_presence") < 1:
            raise BundleError(f"{PIPELINE_FILE} detector.check.min_presence: expected a number in [0, 1)")
        if not _number(check.get("max_disagreement"), f"{PIPELINE_FILE} detector.check.max_disagreement") > 0:
            raise BundleError(f"{PIPELINE_FILE} detector.check.max_disagreement: expected a positive number")
        if not 0 < _number(check.get("roi_scale"), f"{PIPELINE_FILE} detector.check.roi_scale") <= 10:
            raise BundleError(f"{PIPELINE_FILE} detector.check.roi_scale: expected a number in (0, 10]")
        points = check.get("mesh_points")
        if not isinstance(points, list) or len(points) != 4 or not all(
                isinstance(pair, list) and len(pair) == 2 and all(type(i) is int and 0 <= i < 468 for i in pair)
                for pair in points):
            raise BundleError(f"{PIPELINE_FILE} detector.check.mesh_points: expected 4 pairs of mesh vertices "
                              f"(0-467), got {points!r:.80}")


def _check_input(manifest: dict) -> None:
    spec = _object(manifest.get("input"), f"{PIPELINE_FILE} input")
    size = spec.get("input_size")
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_INPUT_SIZE:
        raise BundleError(f"{PIPELINE_FILE} input.input_size: expected a whole number in 1..{MAX_INPUT_SIZE}, "
                          f"got {size!r:.80}")
    _numbers(spec.get("mean"), 3, f"{PIPELINE_FILE} input.mean")
    if any(v <= 0 for v in _numbers(spec.get("std"), 3, f"{PIPELINE_FILE} input.std")):
        raise BundleError(f"{PIPELINE_FILE} input.std: every value must be positive")
    if spec.get("color", "RGB") not in ("RGB", "BGR"):
        raise BundleError(f"{PIPELINE_FILE} input.color: expected RGB or BGR, got {spec.get('color')!r:.80}")
    if manifest.get("age_range") is not None:
        low, high = _numbers(manifest["age_range"], 2, f"{PIPELINE_FILE} age_range")
        if not low < high:
            raise BundleError(f"{PIPELINE_FILE} age_range: {low:g} is not below {high:g}")
    if manifest.get("age_calibration") is not None:
        from ab.nn.stat.calibration import AgeCalibration

        try:
            AgeCalibration.from_json(manifest["age_calibration"])
        except ValueError as error:
            raise BundleError(f"{PIPELINE_FILE} age_calibration: {error}") from None
    if not isinstance(manifest.get("refine", True), bool):
        raise BundleError(f"{PIPELINE_FILE} refine: expected true or false")
    if not isinstance(manifest.get("provenance", {}), dict):
        raise BundleError(f"{PIPELINE_FILE} provenance: expected an object")


def _check_template(manifest: dict) -> None:
    try:
        template = Template.from_json(manifest.get("template"), f"{PIPELINE_FILE} template")
    except (ValueError, TypeError, AttributeError, OverflowError) as error:
        raise BundleError(str(error) if isinstance(error, ValueError) else
                          f"{PIPELINE_FILE} template: not an alignment template") from None
    points = len(template.keypoints)
    if not 1 <= template.size <= MAX_INPUT_SIZE or any(not 0 <= i < points for i in template.align_points) \
            or any(len(p) != 2 or not all(map(math.isfinite, p)) for p in template.mean):
        raise BundleError(f"{PIPELINE_FILE} template: size, align_points or mean out of range")


def read_manifest(folder: Path) -> dict:
    """``pipeline.json`` of a bundle, after checking its entries and every file it lists (see the
    module's docstring). Raises ``BundleError`` and nothing else for any content of the folder."""
    folder = Path(folder)
    path = folder / PIPELINE_FILE
    try:
        if path.is_symlink() or not path.is_file():
            raise BundleError(f"{folder}: no {PIPELINE_FILE} (a regular file, not a symlink)")
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise BundleError(f"{path}: larger than {MAX_MANIFEST_BYTES:,} bytes")
        manifest = json.loads(path.read_bytes())
    except BundleError:
        raise
    except (OSError, ValueError, RecursionError) as error:
        raise BundleError(f"{folder}: no readable {PIPELINE_FILE} ({type(error).__name__}: {error})") from None
    return check_manifest(manifest, folder)


def check_manifest(manifest, folder: Path) -> dict:
    """``manifest`` (the parsed ``pipeline.json`` of the bundle in ``folder``) if every entry is
    valid and every listed file matches; else ``BundleError``."""
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{Path(folder) / PIPELINE_FILE}: not a {FORMAT}")
    if manifest.get("version") != VERSION or isinstance(manifest.get("version"), bool):
        raise BundleError(f"{PIPELINE_FILE} version: {manifest.get('version')!r:.40} is not {VERSION}, the version "
                          f"this code reads")
    _object(manifest.get("files"), f"{PIPELINE_FILE} files")
    _check_model_entries(manifest)
    _check_input(manifest)
    _check_template(manifest)
    crop = manifest.get("crop_size", manifest["template"].get("size"))
    if isinstance(crop, bool) or not isinstance(crop, int) or not 1 <= crop <= MAX_INPUT_SIZE:
        raise BundleError(f"{PIPELINE_FILE} crop_size: expected a whole number in 1..{MAX_INPUT_SIZE}")
    _check_files(Path(folder), manifest["files"])
    return manifest
