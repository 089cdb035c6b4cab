"""A model file's ``supported_input_sizes()``: the runner samples only the transforms of those sizes, and
says before any trial when a model can take none of the transforms offered."""
import sqlite3

import pytest

from ab.nn import registry, train
from ab.nn.sweep import input_sizes
from ab.nn.sweep.models import describe
from ab.nn.workspace import Workspace, active
from tests import helpers

QUICK = ["--min_batch_binary_power", "4", "-b", "4", "--min_learning_rate", "1e-4", "-l", "1e-3", "-w", "0",
         "--quiet", "--pretrained", "0", "--export", "none", "--in-process", "--unsafe", "-e", "1"]
"""No ``-f``: the transform is sampled. In the test's process (``--unsafe``: the tests' workspace models)."""
SIZE_96 = {"norm_96", "norm_96_aug", "norm_96_flip"}


def sized(sizes) -> str:
    return helpers.TINY_MODEL + f"\n\ndef supported_input_sizes():\n    return {sizes!r}\n"


def config(nn: str) -> str:
    return f"age-regression_utkface_mae_{nn}"


def sweep(root, data, *args) -> int:
    return train.cli(["--root", str(root), "--data-dir", str(data), *QUICK, *args])


def transforms(root) -> list[str]:
    with sqlite3.connect(root / "db" / "ab.nn.db") as con:
        return [r[0] for r in con.execute("select value from prm where name='transform'")]


def test_a_transform_size_is_read_from_the_package_transform_and_workspace_code_is_not_imported(root, tmp_path):
    marker = tmp_path / "imported"
    folder = Workspace.resolve(root).code_dir(registry.TRANSFORM.folder)
    folder.mkdir(parents=True)
    (folder / "ws_norm_96.py").write_text(f"open({str(marker)!r}, 'w').close()\nimage_size = 96\n"
                                          f"def transform(norm):\n    return None\n")
    with active.use(Workspace.resolve(root)):
        assert input_sizes.transform_size("norm_64") == (64, 64)
        assert input_sizes.transform_size("norm_160_aug") == (160, 160)
        assert input_sizes.transform_size("ws_norm_96") is None
        assert input_sizes.allowed(["norm_64", "norm_96_flip", "ws_norm_96"], [(96, 96)]) == ["norm_96_flip",
                                                                                            "ws_norm_96"]
        assert input_sizes.allowed(["norm_64", "norm_224"], None) == ["norm_64", "norm_224"]
    assert not marker.exists()


def test_the_package_64_pixel_designs_declare_64_only():
    for nn in ("SSRNet", "C3AE"):
        assert describe(nn).input_sizes == ((64, 64),)
    assert describe("MobileAgeNet").input_sizes is None  # any size: every transform


def test_only_transforms_of_the_declared_sizes_are_sampled(root, utk_dir):
    helpers.write_model(root, "Tiny96", sized([96]))
    assert sweep(root, utk_dir, "-c", config("Tiny96"), "-t", "4") == 0
    drawn = transforms(root)
    assert len(drawn) == 4 and set(drawn) <= SIZE_96  # ignoring the declaration: 4 of 15, in 3 of them p=0.0016


def test_dry_run_shows_the_transforms_each_config_samples(root, utk_dir, capsys):
    helpers.write_model(root, "Tiny96", sized([96]))
    helpers.write_model(root, "TinyAny", helpers.TINY_MODEL)
    assert sweep(root, utk_dir, "-c", config("Tiny96"), config("TinyAny"), "-t", "1", "--dry-run") == 0
    lines = capsys.readouterr().out.splitlines()
    shown = [line.strip() for line in lines if line.strip().startswith("transform:")]
    assert shown[0] == "transform: one of ['norm_96', 'norm_96_aug', 'norm_96_flip'] (the model takes 96x96 px)"
    assert all(name in shown[1] for name in ("norm_64", "norm_224_aug", "norm_96_flip"))


def test_a_fixed_transform_the_model_cannot_take_is_a_one_line_error(root, utk_dir, capsys):
    helpers.write_model(root, "Tiny96", sized([96]))
    for fixed in (["-p", '{"transform": "norm_224"}'], ["-f", "norm_224"]):
        with pytest.raises(SystemExit) as stopped:
            sweep(root, utk_dir, "-c", config("Tiny96"), "-t", "1", *fixed)
        assert stopped.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "Tiny96 takes 96x96 px inputs only" in err[0] and "224x224 px" in err[0]


def test_a_model_taking_none_of_the_sizes_gives_up_before_any_trial(root, utk_dir, capsys):
    helpers.write_model(root, "Tiny300", sized([300, (64, 48)]))
    assert sweep(root, utk_dir, "-c", config("Tiny300"), "-t", "1") != 0
    out = capsys.readouterr().out
    assert "gave up: Tiny300 takes 64x48 or 300x300 px inputs only" in out and "128x128" in out
    with sqlite3.connect(root / "db" / "ab.nn.db") as con:
        assert con.execute("select count(*) from trial").fetchone()[0] == 0


def test_a_study_that_sampled_other_choices_stops_and_says_to_fix_one(root, utk_dir, capsys):
    helpers.write_model(root, "TinyLate", helpers.TINY_MODEL)
    assert sweep(root, utk_dir, "-c", config("TinyLate"), "-t", "1", "-p", '{"batch": 4}') == 0
    helpers.write_model(root, "TinyLate", sized([96]))  # declared after its study sampled from all 15
    capsys.readouterr()
    assert sweep(root, utk_dir, "-c", config("TinyLate"), "-t", "-1", "-p", '{"batch": 4}') != 0
    assert "fix one with -f" in capsys.readouterr().out
    assert sweep(root, utk_dir, "-c", config("TinyLate"), "-t", "-1", "-f", "norm_96", "-p", '{"batch": 4}') == 0
    with sqlite3.connect(root / "db" / "ab.nn.db") as con:
        assert con.execute("select count(*) from trial where status='failed'").fetchone()[0] == 0
    assert transforms(root)[-1] == "norm_96"


def test_transforms_kept_out_of_searches_are_never_drawn_but_run_when_fixed(root, utk_dir, capsys):
    assert not input_sizes.searched("norm_96_bg") and input_sizes.searched("norm_96_aug")
    helpers.write_model(root, "TinyAny", helpers.TINY_MODEL)
    assert sweep(root, utk_dir, "-c", config("TinyAny"), "-t", "1", "--dry-run") == 0
    shown = next(line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("transform:"))
    drawn = set(shown.split("[", 1)[1].split("]", 1)[0].replace("'", "").split(", "))
    # the 15 a search drew before background replacement existed: its studies keep their choices
    assert drawn == {f"norm_{side}{kind}" for side in (64, 96, 128, 160, 224) for kind in ("", "_flip", "_aug")}
    for fixed in (["-f", "norm_64_bg"], ["-p", '{"transform": "norm_64_bg"}']):
        assert sweep(root, utk_dir, "-c", config("TinyAny"), "-t", "-1", *fixed) == 0
    assert transforms(root) == ["norm_64_bg", "norm_64_bg"]
    with sqlite3.connect(root / "db" / "ab.nn.db") as con:
        saved = {r[0] for r in con.execute("select name from transform")}
    assert "norm_64_bg" in saved
