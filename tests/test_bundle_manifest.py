"""A bundle's pipeline.json is checked before anything in the bundle is used: files only inside the
bundle, only when listed with a matching sha256; every other entry checked for type and range; one
BundleError naming the entry. (A made-up bundle: no model is built, so these run in seconds.)"""
import ast
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ab.nn.bundle.manifest import MAX_MANIFEST_BYTES, PIPELINE_FILE, BundleError, read_manifest
from ab.nn.predict import __main__ as predict_cli
from ab.nn.predict import models
from tests import photo

ROOT = Path(__file__).resolve().parents[1]


def write_bundle(folder: Path, edit=None) -> Path:
    """A bundle of made-up model bytes whose pipeline.json is the writer's, changed by ``edit``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, size in (("age_model.tflite", 3000), ("age_model.onnx", 2000), ("face_detector.tflite", 1000)):
        (folder / name).write_bytes(os.urandom(size))
    manifest = {
        "format": "ab.nn photo-to-age bundle", "version": 1,
        "age_model": {"tflite": "age_model.tflite", "onnx": "age_model.onnx"}, "tflite_layout": "NHWC",
        "input": {"input_size": 64, "layout": "NCHW", "color": "RGB", "mean": [0.485, 0.456, 0.406],
                  "std": [0.229, 0.224, 0.225], "scale": 255},
        "age_range": [0.0, 116.0], "crop_size": 200, "template": photo.generated_template().to_json(), "refine": True,
        "detector": {"model": "back", "file": "face_detector.tflite"}, "provenance": {"trial_id": 1},
        "files": {p.name: {"sha256": hashlib.sha256(p.read_bytes()).hexdigest(), "bytes": p.stat().st_size}
                  for p in sorted(folder.iterdir())},
    }
    if edit is not None:
        edit(manifest, folder)
    (folder / PIPELINE_FILE).write_text(json.dumps(manifest))
    return folder


def test_a_sound_bundle_resolves_to_its_own_files(tmp_path):
    bundle = write_bundle(tmp_path / "b")
    resolved = models.resolve(str(bundle))
    assert resolved.files == {"tflite": bundle / "age_model.tflite", "onnx": bundle / "age_model.onnx"}
    assert resolved.detector["file"] == "face_detector.tflite" and resolved.info.input_size == 64


def _outside(tmp_path: Path) -> Path:
    target = tmp_path / "outside.tflite"
    target.write_bytes(b"weights from elsewhere")
    return target


def _list(manifest, folder, name):
    data = (folder / name).read_bytes() if (folder / name).exists() else b""
    manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


HOSTILE = {
    "absolute age model": (lambda m, f: m["age_model"].update(tflite=str(_outside(f.parent))),
                           "age_model['tflite']: '/"),
    "age model up a folder": (lambda m, f: m["age_model"].update(onnx="../outside.tflite"),
                              "age_model['onnx']: '../outside.tflite' is not a plain file name"),
    "absolute detector": (lambda m, f: m["detector"].update(file=str(_outside(f.parent))), "detector.file: '/"),
    "unlisted detector": (lambda m, f: ((f / "other.tflite").write_bytes(b"x"), m["detector"].update(
        file="other.tflite")), "detector.file: 'other.tflite' is not listed under files with a sha256"),
    "listed path up a folder": (lambda m, f: (_outside(f.parent), m["files"].update(
        {"../outside.tflite": {"sha256": "0" * 64, "bytes": 22}})), "files['../outside.tflite']"),
    "listed symlink out": (lambda m, f: ((f / "link.tflite").symlink_to(_outside(f.parent)), _list(m, f, "link.tflite"),
                                         m["detector"].update(file="link.tflite")), "link.tflite is a symlink"),
    "torch checkpoint": (lambda m, f: ((f / "model.pth").write_bytes(b"pickle"), _list(m, f, "model.pth"),
                                       m["age_model"].update(torch="model.pth")),
                         "age_model['torch']: a bundle carries tflite or onnx age models only"),
    "no sha256": (lambda m, f: m["files"]["age_model.onnx"].pop("sha256"), "files['age_model.onnx']: no sha256"),
    "altered file": (lambda m, f: (f / "age_model.onnx").write_bytes(os.urandom(2000)),
                     "age_model.onnx does not match its sha256"),
    "missing file": (lambda m, f: (f / "age_model.onnx").unlink(), "age_model.onnx is missing"),
    "wrong size": (lambda m, f: m["files"]["age_model.onnx"].update(bytes=10 ** 12),
                   "age_model.onnx does not match its sha256"),
    "huge input": (lambda m, f: m["input"].update(input_size=10 ** 9), "input.input_size: expected a whole number"),
    "NaN mean": (lambda m, f: m["input"].update(mean=[float("nan"), 0, 0]), "input.mean: expected a finite number"),
    "zero std": (lambda m, f: m["input"].update(std=[0, 1, 1]), "input.std: every value must be positive"),
    "unknown detector": (lambda m, f: m["detector"].update(model=["back"]), "detector.model"),
    "unlisted face check": (lambda m, f: ((f / "check.tflite").write_bytes(b"x"), m["detector"].update(
        check={"file": "check.tflite", "min_presence": 0.5})), "detector.check.file: 'check.tflite' is not listed"),
    "face check mesh points": (lambda m, f: m["detector"].update(check={
        "file": "face_detector.tflite", "min_presence": 0.5, "max_disagreement": 0.3, "roi_scale": 1.5,
        "mesh_points": [[33, 133], [263, 362], [1, 1], [13, 9999]]}), "detector.check.mesh_points"),
    "face check threshold": (lambda m, f: m["detector"].update(check={"file": "face_detector.tflite",
                                                                      "min_presence": 1.5}),
                             "detector.check.min_presence: expected a number in [0, 1)"),
    "template index": (lambda m, f: m["template"].update(align_points=[0, 99]), "template: size, align_points"),
    "template garbage": (lambda m, f: m.update(template="x"), "template: not an alignment template"),
    "newer version": (lambda m, f: m.update(version=2), "version: 2 is not 1"),
    "age calibration out of order": (lambda m, f: m.update(age_calibration={
        "method": "inverse", "images": 100, "predicted": [50.0, 10.0], "calibrated": [40.0, 20.0]}),
        "age_calibration: a calibration's predicted ages must increase"),
    "not a bundle": (lambda m, f: m.update(format="something else"), "not a ab.nn photo-to-age bundle"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_pipeline_json_is_refused_naming_the_entry(tmp_path, case, capsys):
    edit, message = HOSTILE[case]
    bundle = write_bundle(tmp_path / "b", edit)
    with pytest.raises(BundleError) as refused:
        read_manifest(bundle)
    assert message in str(refused.value) and "\n" not in str(refused.value)
    assert predict_cli.main(["photo.jpg", "--model", str(bundle)]) == 2  # the command: one line, exit 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]


def test_pipeline_json_itself_must_be_a_small_regular_file(tmp_path):
    bundle = write_bundle(tmp_path / "b")
    text = (bundle / PIPELINE_FILE).read_text()
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(text)
    (bundle / PIPELINE_FILE).unlink()
    (bundle / PIPELINE_FILE).symlink_to(elsewhere)
    with pytest.raises(BundleError, match="a regular file, not a symlink"):
        read_manifest(bundle)
    (bundle / PIPELINE_FILE).unlink()
    (bundle / PIPELINE_FILE).write_text(text[:-1] + "," + '"pad": "' + "x" * MAX_MANIFEST_BYTES + '"}')
    with pytest.raises(BundleError, match="larger than 1,048,576 bytes"):
        read_manifest(bundle)
    (bundle / PIPELINE_FILE).write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(BundleError, match="no readable pipeline.json"):
        read_manifest(bundle)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module} | \
        {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}


def test_predict_and_the_bundle_writer_no_longer_import_each_other_in_a_cycle():
    manifest = _imports(ROOT / "ab" / "nn" / "bundle" / "manifest.py")
    assert not [m for m in manifest if m.startswith(("ab.nn.predict", "ab.nn.bundle"))]
    for path in (ROOT / "ab" / "nn" / "predict").glob("*.py"):
        assert "ab.nn.bundle.writer" not in _imports(path), path.name
    loaded = subprocess.run([sys.executable, "-c", "import sys, ab.nn.bundle.manifest; "
                             "print(' '.join(m for m in sys.modules if m.startswith('ab.nn.')))"],
                            capture_output=True, text=True, check=True).stdout.split()
    assert not [m for m in loaded if m.startswith(("ab.nn.predict", "ab.nn.bundle.writer"))], loaded
