"""The alignment template: measured from training crops only, saved in the workspace, read back;
and the in-the-wild loader aligning its images with it, as inference does."""
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ab.nn import api, train
from ab.nn.dataset import splits, utkface
from ab.nn.dataset.cache import decode_resized, open_or_build
from ab.nn.dataset.identity import DataMismatch
from ab.nn.dataset.settings import DataSettings
from ab.nn.dataset.sources import WildSource
from ab.nn.dataset.trial_data import load_judged
from ab.nn.face import template as tpl
from ab.nn.face.aligner import TemplateAlignment
from ab.nn.face.template import Template, TemplateMissing
from ab.nn.face.template import __main__ as measuring
from ab.nn.moe import __main__ as moe_cli
from ab.nn.workspace import Workspace
from tests import helpers, photo


def test_summary_is_the_mean_and_spread_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    points = np.array([[60, 60], [140, 60], [100, 100], [100, 145], [20, 80], [180, 80]], float)
    sample = points + rng.normal(0, 3, (50, 6, 2))
    template = tpl.summarise(sample, "blazeface-back", {"source": "generated"})
    assert np.allclose(template.mean, sample.mean(axis=0), atol=1e-3)
    assert np.allclose(template.std, sample.std(axis=0), atol=1e-3) and template.images == 50
    assert template.points.shape == (4, 2)
    path = template.save(tmp_path / "t.json")
    assert Template.load(path) == template
    assert "right_eye" in tpl.table(template) and "| no |" in tpl.table(template)


def test_missing_and_broken_templates_say_what_to_do(tmp_path):
    with pytest.raises(TemplateMissing, match="python -m ab.nn.face.template"):
        Template.load(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text(json.dumps({"mean": [[1, 2]]}))
    with pytest.raises(ValueError, match="not an alignment template"):
        Template.load(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="summarise|no landmarks"):
        tpl.summarise(np.zeros((0, 6, 2)), "blazeface-back", {})
    assert tpl.default_path(Workspace.resolve(tmp_path)) == tmp_path / "data" / "utkface" / "align_template.json"


@pytest.mark.real_data
def test_measured_on_training_crops_only_and_written_to_the_workspace(real_utkface, tmp_path):
    assert measuring.main(["--root", str(tmp_path), "--data-dir", str(real_utkface), "--images", "40", "--quiet"]) == 0
    template = Template.load(tpl.default_path(Workspace.resolve(tmp_path)))
    assert template.images >= 38 and template.provenance["sampled"] == 40
    (rx, ry), (lx, ly), (nx, ny), (mx, my) = template.mean[:4]
    assert rx < nx < lx and ry < ny < my and abs(ry - ly) < 10  # eyes level, nose below, mouth lower
    assert 60 < lx - rx < 100 and all(s < 15 for s in np.ravel(template.std[:4]))
    assert "paper/42 training part" in template.provenance["source"]
    entries, _, _ = measuring.training_crops(Path(real_utkface), DataSettings(), 40)
    split = utkface.plan(Path(real_utkface), tmp_path / "ids", DataSettings(), progress=False)
    train = {split.catalog.entries[i].name for i in split.parts["train"]}
    assert {e.name for e in entries} <= train  # never an evaluation or test image


def wild_photos(real: Path, root: Path, ages: list[int], seed: int = 5) -> list[Path]:
    """UTKFace's in-the-wild layout made of real aligned crops pasted into generated scenes (turned by
    up to 16 degrees), named with ``ages``, with a landmark list of the crops' corners: the crops used."""
    (root / "part1").mkdir(parents=True)
    crops = photo.real_crops(real, len(ages), seed=seed)
    lines = []
    for i, (path, age) in enumerate(zip(crops, ages)):
        scene = photo.background(seed=i)
        matrix = photo.paste(scene, Image.open(path).convert("RGB"), 220, 150 + 40 * (i % 4), 80,
                             [10, -12, 0, 16][i % 4])
        name = helpers.utk_name(age, 0, 0, i)
        scene.save(root / "part1" / name, quality=95)
        corners = np.array([[40, 40], [160, 40], [160, 170], [40, 170]], float) @ matrix[:, :2].T + matrix[:, 2]
        lines.append(name + " " + " ".join(f"{v:.1f}" for v in corners.ravel()))
    (root / "landmark_list_part1.txt").write_text("\n".join(lines) + "\n")
    return crops


@pytest.mark.real_data
def test_the_wild_loader_aligns_like_inference(real_utkface, tmp_path):
    """In-the-wild images (a real face pasted into a scene, a landmark list): aligned with the
    template, the cached pixels are close to the original aligned crop; the landmark box is not."""
    template = measuring.measure(real_utkface, images=40, progress=False)[0]
    template_path = template.save(tmp_path / "template.json")
    root = tmp_path / "wild"
    crops = wild_photos(real_utkface, root, [20, 21, 22, 23])

    def cached(source):
        entries = source.entries()
        cache = open_or_build(source, entries, 64, tmp_path / f"cache-{source.alignment is not None}", progress=False)
        return entries, cache.array(), cache.failures

    alignment = TemplateAlignment(template_path)
    entries, aligned, failures = cached(WildSource(root, alignment=alignment))
    _, boxed, _ = cached(WildSource(root))
    assert not failures and len(entries) == 4
    assert WildSource(root, alignment=alignment).fingerprint() != WildSource(root).fingerprint()
    other_detector = dataclasses.replace(template, detector="blazeface-short").save(tmp_path / "short.json")
    assert TemplateAlignment(other_detector).recipe() != alignment.recipe()
    assert WildSource(root).recipe() is None
    errors = []
    for row, path in enumerate(crops):
        original = decode_resized(path.read_bytes(), 64).astype(float)
        errors.append((np.abs(aligned[row].astype(float) - original).mean(),
                       np.abs(boxed[row].astype(float) - original).mean()))
    assert all(a < b for a, b in errors) and np.mean([a for a, _ in errors]) < 20, errors


FAST = ["-c", "age-regression_utkface_mae_MobileAgeNet", "-e", "1", "-t", "1", "-f", "norm_64", "-w", "0",
        "--quiet", "--pretrained", "0", "--export", "none", "--in-process", "-p", '{"batch": 8, "lr": 0.001}']


@pytest.mark.real_data
def test_train_align_trains_on_aligned_photos_under_their_own_data_key(real_utkface, tmp_path, capsys):
    """``--align``: the sweep aligns the in-the-wild photos onto the workspace's template; the split
    is recorded as aligned, the data key differs from the landmark-box crops of the same photos, a
    recorded trial's data is rebuilt aligned, and a changed template is refused as other data."""
    wild, root = tmp_path / "wild", tmp_path / "ws"
    wild_photos(real_utkface, wild, helpers.ages_like_utkface(30))
    ws = Workspace.resolve(root, data_dir=wild)
    template = measuring.measure(real_utkface, images=40, progress=False)[0]
    template.save(ws.face_template_path)

    assert train.cli(["--root", str(root), "--data-dir", str(wild), *FAST, "--align"]) == 0
    assert train.cli(["--root", str(root), "--data-dir", str(wild), *FAST]) == 0
    trials = api.trials(db=root / "db" / "ab.nn.db").set_index("id")
    aligned, boxed = trials.iloc[0], trials.iloc[1]
    assert (aligned.status, boxed.status) == ("complete", "complete")
    assert (aligned.split, boxed.split) == ("paper/42+aligned", "paper/42")
    assert aligned.data_key != boxed.data_key and aligned.test_digest != boxed.test_digest
    assert aligned.n_train + aligned.n_eval + aligned.n_test == 30  # every pasted face found

    assert train.cli(["--root", str(root), "--data-dir", str(wild), *FAST, "--align", "-t", "2"]) == 0
    assert moe_cli.cli(["fit", "--experts", "trial:1", "trial:3", "--steps", "20", "--root", str(root),
                        "--data-dir", str(wild), "--align"]) == 0
    mixture = api.trials(db=root / "db" / "ab.nn.db").set_index("id").iloc[-1]
    assert (mixture.split, mixture.data_key) == ("paper/42+aligned", aligned.data_key)

    row = {**aligned.to_dict(), "id": int(trials.index[0])}
    data = load_judged(row, ws, "norm_64")
    assert data.identity.settings.align and data.identity.key == aligned.data_key
    shifted = Template(mean=tuple((x + 6, y) for x, y in template.mean), std=template.std,
                       detector=template.detector, images=template.images)
    shifted.save(ws.face_template_path)
    with pytest.raises(DataMismatch):
        load_judged(row, ws, "norm_64")


@pytest.mark.real_data
def test_train_align_refuses_aligned_crops_and_a_missing_template(real_utkface, utk_dir, tmp_path, capsys):
    wild, root = tmp_path / "wild", tmp_path / "ws"
    wild_photos(real_utkface, wild, [20, 30, 40, 50])

    def refused(data) -> str:
        """A data problem stops the run before any trial: one line on stderr, exit status 2."""
        with pytest.raises(SystemExit) as stopped:
            train.cli(["--root", str(root), "--data-dir", str(data), *FAST, "--align"])
        assert stopped.value.code == 2
        return capsys.readouterr().err

    assert "no alignment template at" in refused(wild)
    Workspace.resolve(root).face_template_path.parent.mkdir(parents=True, exist_ok=True)
    Workspace.resolve(root).face_template_path.write_text("{}")
    assert "not an alignment template" in refused(wild)
    assert "which are aligned already" in refused(utk_dir)
    assert not (root / "db" / "ab.nn.db").exists() or api.trials(db=root / "db" / "ab.nn.db").empty
