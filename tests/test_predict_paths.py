"""predict's outputs stay inside --out: names made from the inputs never climb out, symlinks inside
--out are never followed out of it, no output overwrites another or an input."""
import os
from pathlib import Path, PurePosixPath

import pytest
from PIL import Image

from ab.nn.predict.paths import OutputFolder, OutputRefused, walk


def snapshot(root: Path, skip: Path | None = None) -> dict:
    """Every file, folder and symlink under ``root`` (but ``skip``) with its bytes or target."""
    found = {}
    for folder, folders, files in os.walk(root):
        for name in folders + files:
            path = Path(folder) / name
            if skip is not None and (path == skip or skip in path.parents):
                continue
            key = str(path.relative_to(root))
            found[key] = ("link", os.readlink(path)) if path.is_symlink() else \
                ("dir", None) if path.is_dir() else ("file", path.read_bytes())
    return found


def _image(color=(200, 30, 30)) -> Image.Image:
    return Image.new("RGB", (8, 6), color)


@pytest.fixture
def tree(tmp_path):
    """in/photos/{x.png, sub/y.jpg}, in/other/x.png, outside/secret.png; in/photos/link.png -> secret."""
    for name in ("in/photos/x.png", "in/photos/sub/y.jpg", "in/other/x.png", "outside/secret.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        _image().save(tmp_path / name)
    os.symlink(tmp_path / "outside" / "secret.png", tmp_path / "in" / "photos" / "link.png")
    return tmp_path


def test_a_folder_given_as_dot_dot_is_named_by_its_real_name(tree, monkeypatch):
    names = dict((str(file), str(name)) for file, name in walk([str(tree / "in" / "photos" / "..")]))
    assert all(not name.startswith("..") and name.startswith("in/") for name in names.values())
    assert sorted(names.values()) == ["in/other/x.png", "in/photos/link.png", "in/photos/sub/y.jpg",
                                      "in/photos/x.png"]
    monkeypatch.chdir(tree / "in" / "photos")
    assert {str(name) for _, name in walk([".", ".."])} >= {"photos/x.png", "in/other/x.png"}
    assert [(str(f), str(n)) for f, n in walk(["missing/.."])] == [("missing/..", "image")]


def test_every_output_lands_inside_out_and_nothing_outside_changes(tree):
    out = tree / "out"
    out.mkdir()
    os.symlink(tree / "outside", out / "photos")                      # a folder symlink inside --out
    os.symlink(tree / "outside" / "secret.png", out / "x.png")       # a file symlink at an output's name
    before = snapshot(tree, skip=out)
    inputs = walk([str(tree / "in" / "photos" / ".."), str(tree / "in" / "photos"),
                   str((tree / "in" / "other" / "x.png").resolve()), str(tree / "in" / "photos" / "x.png")])
    folder = OutputFolder(out, [file for file, _ in inputs])
    written, refused = [], []
    for file, name in inputs:
        try:
            written.append(folder.save(_image((0, 0, 255)), name))
        except OutputRefused as error:
            refused.append(str(error))
    assert snapshot(tree, skip=out) == before  # the inputs, the symlinked secret: byte-identical
    assert len(refused) == 3 and all("photos/" in r and "a symlink or a file is in the way" in r for r in refused)
    for path in written:
        assert out.resolve() in path.resolve().parents and not path.is_symlink()
    relative = sorted(str(p.relative_to(out)) for p in written)
    assert relative == ["in/other/x.png", "in/photos/link.png", "in/photos/sub/y.jpg", "in/photos/x.png",
                        "x-1.png", "x.png"]  # two inputs named x.png: two outputs, none overwritten
    assert not (out / "x.png").is_symlink() and Image.open(out / "x.png").getpixel((0, 0)) == (0, 0, 255)
    assert Image.open(tree / "outside" / "secret.png").getpixel((0, 0)) == (200, 30, 30)


def test_an_input_inside_out_is_never_written_over(tree):
    photos = tree / "in" / "photos"
    original = (photos / "x.png").read_bytes()
    inputs = walk([str(photos)])
    folder = OutputFolder(photos.parent, [file for file, _ in inputs])  # --out is the folder above the photos
    written = {str(name): folder.save(_image((0, 255, 0)), name) for _, name in inputs}
    assert (photos / "x.png").read_bytes() == original
    assert written["photos/x.png"] == photos / "x-1.png"
    assert written["photos/sub/y.jpg"] == photos / "sub" / "y-1.jpg"
    assert Image.open(photos / "sub" / "y-1.jpg").format == "JPEG"


def test_a_folder_swapped_for_a_symlink_during_the_run_is_not_followed(tree):
    out = tree / "out"
    folder = OutputFolder(out)
    folder.save(_image(), PurePosixPath("a/b/first.png"))
    (out / "a" / "b" / "first.png").unlink()
    (out / "a" / "b").rmdir()
    os.symlink(tree / "outside", out / "a" / "b")  # planted between two writes
    with pytest.raises(OutputRefused, match="a/b/second.png"):
        folder.save(_image(), PurePosixPath("a/b/second.png"))
    assert sorted(p.name for p in (tree / "outside").iterdir()) == ["secret.png"]


def test_names_are_kept_inside_even_when_given_by_hand(tree):
    folder = OutputFolder(tree / "out")
    assert folder.save(_image(), PurePosixPath("../../escape.gif")) == tree / "out" / "escape.png"
    assert folder.save(_image(), PurePosixPath("/etc/passwd")) == tree / "out" / "etc" / "passwd.png"
    with pytest.raises(OutputRefused, match="no name"):
        folder.save(_image(), PurePosixPath(".."))
    assert not (tree / "escape.png").exists() and not list(tree.glob("*.png"))


def test_an_out_that_is_a_file_is_refused(tree):
    with pytest.raises(OutputRefused, match="cannot create the folder|not a folder"):
        OutputFolder(tree / "in" / "photos" / "x.png")


def test_out_itself_may_be_a_symlink_to_the_folder_chosen(tree):
    (tree / "chosen").mkdir()
    (tree / "link").symlink_to(tree / "chosen")
    assert OutputFolder(tree / "link").save(_image(), PurePosixPath("a.png")) == tree / "link" / "a.png"
    assert (tree / "chosen" / "a.png").is_file()
