"""From a photo to ages: faces found where they were pasted, the same ages in PyTorch, ONNX and
TFLite, training's preprocessing reproduced, the command's outputs, and every --model form."""
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ab.nn import api
from ab.nn.dataset import utkface
from ab.nn.dataset.cache import decode_resized
from ab.nn.face import verify
from ab.nn.face.template import TemplateMissing, default_path
from ab.nn.face.template.__main__ import measure
from ab.nn.predict import AgeEstimator
from ab.nn.predict import __main__ as cli
from ab.nn.predict import metadata, models
from ab.nn.transform._pipeline import ImagePipeline
from ab.nn.workspace import Workspace
from tests import helpers, photo
from tests.crafted import declaring
from tests.test_predict_paths import snapshot
from tests.test_sweep_cli import run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trial(tmp_path_factory):
    """A trial folder with model.pth, meta.json, model.onnx and model_fp32.tflite (about a minute)."""
    with photo.installed(tmp_path_factory.mktemp("trial")) as base:
        yield photo.make_trial_folder(base / "out" / photo.CONFIG / "0")


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    real = photo.real_data_or_skip()
    return measure(real, images=40, progress=False)[0]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    real = photo.real_data_or_skip()
    folder = tmp_path_factory.mktemp("scenes")
    return folder, photo.scenes(folder, real)


@pytest.mark.real_data
def test_one_and_two_faces_are_found_where_they_were_pasted(trial, template, scenes):
    folder, extents = scenes
    estimator = AgeEstimator.from_model(trial, runtime="tflite", template=template, threads=1)
    for name, pasted in extents.items():
        faces = estimator.predict(folder / name)
        assert len(faces) == len(pasted), name
        for extent in pasted:
            best = max(faces, key=lambda face: photo.iou(face.box, extent))
            assert photo.iou(best.box, extent) > 0.35, (name, best.box, extent)
            assert 0 < best.age < 116 and best.score > 0.5 and best.crop.size == (200, 200)


@pytest.mark.real_data
def test_every_runtime_gives_the_same_ages(trial, template, scenes):
    folder, _ = scenes
    results = {}
    for runtime in ("torch", "onnx", "tflite"):
        estimator = AgeEstimator.from_model(trial, runtime=runtime, template=template, threads=1)
        results[runtime] = [estimator.predict(folder / name) for name in ("one.jpg", "two.jpg")]
    for runtime in ("onnx", "tflite"):
        for image, reference in zip(results[runtime], results["torch"]):
            assert [f.box for f in image] == [f.box for f in reference]  # one detector for all
            assert np.abs(np.array([f.age for f in image]) - [f.age for f in reference]).max() < 1e-3, runtime
    ages = [f.age for image in results["torch"] for f in image]
    assert np.ptp(ages) > 0.01  # the faces differ, so would a wrong crop or layout


def test_preprocessing_is_training_s_exactly():
    """An aligned 200x200 crop is fed as the decode-once cache and the evaluation transform feed a
    200x200 training image: PIL bilinear resize, [0, 1], ImageNet mean/std, NCHW."""
    rng = np.random.default_rng(0)
    crop = Image.fromarray(rng.integers(0, 256, (200, 200, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    crop.save(buffer, format="PNG")
    for size in (64, 96):
        trained = ImagePipeline(utkface.IMAGENET_NORM, size)(
            torch.from_numpy(decode_resized(buffer.getvalue(), size).copy()).permute(2, 0, 1)).numpy()
        info = metadata.ModelInfo(size, *utkface.IMAGENET_NORM)
        assert np.array_equal(info.preprocess([crop])[0], trained)


@pytest.mark.real_data
def test_json_output_has_the_documented_schema(trial, template, scenes, tmp_path, capsys):
    folder, _ = scenes
    template_file = template.save(tmp_path / "template.json")
    assert cli.main([str(folder / "two.jpg"), "--model", str(trial), "--runtime", "onnx", "--json",
                     "--template", str(template_file), "--threads", "1"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["runtime"] == "onnx" and document["detector"] == "blazeface-back"
    settings = document["detector_settings"]  # the face check is on by default and says so
    assert settings["min_score"] == 0.5 and settings["check"]["min_presence"] == verify.MIN_PRESENCE
    model = document["model"]
    assert model["input_size"] == photo.SIZE and model["mean"] == [0.485, 0.456, 0.406]
    assert model["trial_id"] == photo.TRIAL_ID and model["config"] == photo.CONFIG and model["age_range"] == [0, 116]
    assert document["template"]["align_points"] == ["right_eye", "left_eye", "nose_tip", "mouth"]
    assert document["summary"] == {"images": 1, "faces": 2, "without_face": 0, "unreadable": 0}
    (image,) = document["images"]
    assert image["error"] is None and (image["width"], image["height"]) == (640, 480)
    for face in image["faces"]:
        assert set(face) == {"box", "landmarks", "score", "age"}
        assert len(face["box"]) == 4 and set(face["landmarks"]) == {"right_eye", "left_eye", "nose_tip", "mouth",
                                                                      "right_ear", "left_ear"}
        assert all(len(p) == 2 for p in face["landmarks"].values()) and 0 < face["score"] <= 1
        assert isinstance(face["age"], float)


@pytest.mark.real_data
def test_annotated_images_are_written(trial, template, scenes, tmp_path, capsys):
    folder, _ = scenes
    template_file = template.save(tmp_path / "template.json")
    out = tmp_path / "annotated"
    assert cli.main([str(folder), "--model", str(trial), "--out", str(out), "--template", str(template_file),
                     "--quiet"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and all("\tbox " in line and "\tage " in line for line in lines)
    for name in ("one.jpg", "two.jpg"):
        written = out / folder.name / name
        original, drawn = Image.open(folder / name), Image.open(written)
        assert drawn.size == original.size
        assert np.abs(np.asarray(drawn, float) - np.asarray(original, float)).max() > 100  # boxes and labels


def test_a_folder_with_a_corrupt_file_and_a_faceless_image_goes_on(trial, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg" * 20)
    (folder / "empty.png").write_bytes(b"")
    photo.background(seed=7).save(folder / "nobody.png")
    (folder / "notes.txt").write_text("not an image, not looked at")
    template_file = photo.generated_template().save(tmp_path / "template.json")
    code = cli.main([str(folder), str(tmp_path / "missing.jpg"), "--model", str(trial), "--json", "--template",
                     str(template_file), "--quiet"])
    captured = capsys.readouterr()
    assert code == 1  # some files could not be read; the others were
    document = json.loads(captured.out)
    by_name = {r["file"].rsplit("/", 1)[-1]: r for r in document["images"]}
    assert set(by_name) == {"broken.jpg", "empty.png", "nobody.png", "missing.jpg"}
    assert "not a readable image" in by_name["broken.jpg"]["error"]
    assert "not a readable image" in by_name["empty.png"]["error"]
    assert "no such file" in by_name["missing.jpg"]["error"]
    assert by_name["nobody.png"]["error"] is None and by_name["nobody.png"]["faces"] == []
    assert document["summary"] == {"images": 4, "faces": 0, "without_face": 1, "unreadable": 3}
    assert captured.err.count("skipped ") == 3
    assert cli.main([str(folder / "nobody.png"), "--model", str(trial), "--template", str(template_file)]) == 0
    assert "no face found" in capsys.readouterr().out


def test_without_a_template_it_says_how_to_measure_one(trial, tmp_path, capsys):
    with pytest.raises(TemplateMissing, match="python -m ab.nn.face.template"):
        AgeEstimator.from_model(trial, workspace=Workspace.resolve(tmp_path))
    assert cli.main(["x.jpg", "--model", str(trial), "--root", str(tmp_path)]) == 2
    assert "python -m ab.nn.face.template" in capsys.readouterr().err
    photo.generated_template().save(default_path(Workspace.resolve(tmp_path)))
    assert AgeEstimator.from_model(trial, workspace=Workspace.resolve(tmp_path)).runtime_name == "tflite"


def test_metadata_travels_with_each_file_form(trial, tmp_path):
    from_onnx = metadata.from_onnx(trial / "model.onnx")
    from_meta = metadata.from_meta_json(trial)
    assert (from_onnx.input_size, from_onnx.mean, from_onnx.std) == (from_meta.input_size, from_meta.mean, from_meta.std)
    assert from_onnx.age_range == (0.0, 116.0) and from_onnx.provenance["trial_id"] == photo.TRIAL_ID
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(trial / "model_fp32.tflite", alone)
    with pytest.raises(metadata.MetadataError, match="carries no metadata"):
        models.resolve(str(alone / "model_fp32.tflite"))
    shutil.copy(trial / "meta.json", alone)
    resolved = models.resolve(str(alone / "model_fp32.tflite"))
    assert resolved.info.input_size == photo.SIZE and set(resolved.files) == {"tflite"}
    assert models.resolve(str(trial / "model.onnx")).runtime(None) == "onnx"
    with pytest.raises(models.ModelNotFound, match="cannot run in torch"):
        models.resolve(str(trial / "model.onnx")).runtime("torch")
    assert set(models.resolve(str(trial)).files) == {"torch", "onnx", "tflite"}
    with pytest.raises(models.ModelNotFound, match="no such file or folder"):
        models.resolve(str(tmp_path / "nothing.onnx"))
    (tmp_path / "weights.bin").write_bytes(b"0")
    with pytest.raises(models.ModelNotFound, match="not a model file"):
        models.resolve(str(tmp_path / "weights.bin"))


def test_best_and_trial_references_find_the_trial_s_files(trial, root, utk_dir):
    """A real (tiny) training run records the trial; best:<config> and trial:<id> find its files.
    (``trial`` keeps the test model's workspace active: from_model(workspace=ws) rebuilds the torch model under
    the active workspace, not ws.)"""
    helpers.write_model(root, photo.MODEL_NAME, photo.PHOTO_AGE)
    assert run(root, utk_dir, "-c", photo.CONFIG, "-t", "1", "-e", "1", "-p", '{"lr": 0.001, "batch": 16}',
               "--save_pth_weights") == 0
    ws = Workspace.resolve(root)
    trial_id = int(api.trials(db=ws.db_url).id.iloc[0])
    best = models.resolve(f"best:{photo.CONFIG}", ws)
    by_id = models.resolve(f"trial:{trial_id}", ws)
    assert best.files == by_id.files == {"torch": root / "out" / photo.CONFIG / str(trial_id)}  # named by trial id
    assert best.info.provenance["trial_id"] == trial_id and best.info.input_size == 64
    for reference, message in ((f"trial:{trial_id + 100}", "no trial"), ("trial:x", "is a number"),
                               ("best:age-regression_utkface_mae_Nothing", "no trained trial")):
        with pytest.raises(models.ModelNotFound, match=message):
            models.resolve(reference, ws)
    photo.generated_template().save(default_path(ws))
    estimator = AgeEstimator.from_model(f"trial:{trial_id}", workspace=ws, threads=1)
    assert estimator.runtime_name == "torch" and estimator.predict(photo.background()) == []


def test_photos_are_turned_upright_by_their_exif_orientation(tmp_path):
    from ab.nn.predict import ImageUnreadable
    from ab.nn.predict.estimator import open_photo

    image = Image.new("RGB", (30, 20), (200, 10, 10))
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to view"
    image.save(tmp_path / "sideways.jpg", exif=exif.tobytes())
    assert open_photo(tmp_path / "sideways.jpg").size == (20, 30)
    assert open_photo((tmp_path / "sideways.jpg").read_bytes()).size == (20, 30)
    assert open_photo(Image.open(tmp_path / "sideways.jpg")).size == (20, 30)
    with pytest.raises(ImageUnreadable, match="not a readable image"):
        open_photo(b"GIF89a broken")


def test_out_receives_every_annotated_image_and_nothing_outside_it_changes(trial, tmp_path, capsys, monkeypatch):
    """Inputs named through ``..``, by absolute and relative path, through a symlink, twice by one
    name; a folder symlink inside --out pointing out of it and a file symlink at an output's name."""
    work, outside = tmp_path / "work", tmp_path / "outside"
    for name, seed in (("photos/a.png", 1), ("photos/sub/b.jpg", 2), ("other/a.png", 3)):
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        photo.background(seed=seed).save(work / name)
    outside.mkdir()
    photo.background(seed=4).save(outside / "secret.png")
    os.symlink(outside / "secret.png", work / "photos" / "link.png")
    out = tmp_path / "out"
    out.mkdir()
    os.symlink(outside, out / "photos")
    os.symlink(outside / "secret.png", out / "a.png")
    template_file = photo.generated_template().save(tmp_path / "template.json")
    before = snapshot(tmp_path, skip=out)
    monkeypatch.chdir(work)
    code = cli.main([str(work / "photos" / ".."), "photos", str((work / "other" / "a.png").resolve()), "photos/a.png",
                     "--model", str(trial), "--out", str(out), "--json", "--template", str(template_file), "--quiet",
                     "--threads", "1"])
    document = json.loads(capsys.readouterr().out)
    assert snapshot(tmp_path, skip=out) == before  # inputs and the symlinked secret: byte-identical
    written = sorted(str(Path(r["annotated"]).relative_to(out)) for r in document["images"] if "annotated" in r)
    assert written == ["a-1.png", "a.png", "work/other/a.png", "work/photos/a.png", "work/photos/link.png",
                       "work/photos/sub/b.jpg"]  # two inputs named a.png: a.png and a-1.png, none overwritten
    refused = [r for r in document["images"] if r["error"]]  # the photos/ folder of --out is a symlink: refused
    assert len(refused) == 3 and all("a symlink or a file is in the way" in r["error"] for r in refused)
    assert document["summary"]["unwritten"] == 3 and code == 1
    assert not (out / "a.png").is_symlink() and not (outside / "a.png").exists()


def test_huge_images_are_per_file_errors_and_the_json_stays_whole(trial, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    photo.background(seed=5).save(folder / "nobody.png")
    (folder / "a100mp.png").write_bytes(declaring("PNG", 10000, 10000))   # Pillow would decode it whole
    (folder / "b192mp.jpg").write_bytes(declaring("JPEG", 16000, 12000))  # Pillow raises DecompressionBombError
    template_file = photo.generated_template().save(tmp_path / "template.json")
    common = ["--model", str(trial), "--json", "--template", str(template_file), "--quiet", "--threads", "1"]
    assert cli.main([str(folder), *common]) == 1
    document = json.loads(capsys.readouterr().out)
    by_name = {Path(r["file"]).name: r for r in document["images"]}
    assert "10000x10000 is 100,000,000 pixels, more than the cap of 70,000,000" in by_name["a100mp.png"]["error"]
    assert "refused by Pillow before decoding" in by_name["b192mp.jpg"]["error"]
    assert by_name["nobody.png"]["error"] is None and by_name["nobody.png"]["faces"] == []
    assert document["summary"] == {"images": 3, "faces": 0, "without_face": 1, "unreadable": 2}
    width, height = Image.open(folder / "nobody.png").size
    assert cli.main([str(folder / "nobody.png"), *common, "--max-pixels", str(width * height - 1)]) == 1
    (record,) = json.loads(capsys.readouterr().out)["images"]
    assert f"more than the cap of {width * height - 1:,}" in record["error"]
