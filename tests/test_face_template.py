"""The alignment template: measured from training crops only, saved in the workspace, read back;
and the in-the-wild loader aligning its images with it, as inference does."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ab.nn.dataset import splits, utkface
from ab.nn.dataset.cache import decode_resized, open_or_build
from ab.nn.dataset.settings import DataSettings
from ab.nn.dataset.sources import WildSource
from ab.nn.face import template as tpl
from ab.nn.face.template import Template, TemplateMissing
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
    assert tpl.main(["--root", str(tmp_path), "--data-dir", str(real_utkface), "--images", "40", "--quiet"]) == 0
    template = Template.load(tpl.default_path(Workspace.resolve(tmp_path)))
    assert template.images >= 38 and template.provenance["sampled"] == 40
    (rx, ry), (lx, ly), (nx, ny), (mx, my) = template.mean[:4]
    assert rx < nx < lx and ry < ny < my and abs(ry - ly) < 10  # eyes level, nose below, mouth lower
    assert 60 < lx - rx < 100 and all(s < 15 for s in np.ravel(template.std[:4]))
    assert "paper/42 training part" in template.provenance["source"]
    entries, _, _ = tpl.training_crops(Path(real_utkface), DataSettings(), 40)
    split = utkface.plan(Path(real_utkface), tmp_path / "ids", DataSettings(), progress=False)
    train = {split.catalog.entries[i].name for i in split.parts["train"]}
    assert {e.name for e in entries} <= train  # never an evaluation or test image


@pytest.mark.real_data
def test_the_wild_loader_aligns_like_inference(real_utkface, tmp_path):
    """In-the-wild images (a real face pasted into a scene, a landmark list): aligned with the
    template, the cached pixels are close to the original aligned crop; the landmark box is not."""
    template = tpl.measure(real_utkface, images=40, progress=False)[0]
    template_path = template.save(tmp_path / "template.json")
    root = tmp_path / "wild"
    (root / "part1").mkdir(parents=True)
    crops = photo.real_crops(real_utkface, 4, seed=5)
    lines = []
    for i, path in enumerate(crops):
        scene = photo.background(seed=i)
        matrix = photo.paste(scene, Image.open(path).convert("RGB"), 220, 150 + 40 * i, 80, [10, -12, 0, 16][i])
        name = helpers.utk_name(20 + i, 0, 0, i)
        scene.save(root / "part1" / name, quality=95)
        corners = np.array([[40, 40], [160, 40], [160, 170], [40, 170]], float) @ matrix[:, :2].T + matrix[:, 2]
        lines.append(name + " " + " ".join(f"{v:.1f}" for v in corners.ravel()))
    (root / "landmark_list_part1.txt").write_text("\n".join(lines) + "\n")

    def cached(source):
        entries = source.entries()
        cache = open_or_build(source, entries, 64, tmp_path / f"cache-{source.template is not None}", progress=False)
        return entries, cache.array(), cache.failures

    entries, aligned, failures = cached(WildSource(root, template=template_path))
    _, boxed, _ = cached(WildSource(root))
    assert not failures and len(entries) == 4
    assert WildSource(root, template=template_path).fingerprint() != WildSource(root).fingerprint()
    errors = []
    for row, path in enumerate(crops):
        original = decode_resized(path.read_bytes(), 64).astype(float)
        errors.append((np.abs(aligned[row].astype(float) - original).mean(),
                       np.abs(boxed[row].astype(float) - original).mean()))
    assert all(a < b for a, b in errors) and np.mean([a for a, _ in errors]) < 20, errors
