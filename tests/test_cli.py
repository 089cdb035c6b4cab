"""``abnn``: the one command runs each tool exactly as ``python -m`` does."""
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from ab.nn import cli


def abnn(*args: str) -> subprocess.CompletedProcess:
    script = Path(sysconfig.get_path("scripts")) / "abnn"
    assert script.exists(), "the console script 'abnn' is not installed (setup.cfg's console_scripts)"
    return subprocess.run([str(script), *args], capture_output=True, text=True, timeout=600)


def module(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", name, *args], capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("command", ["train", "predict"])
def test_each_command_is_its_module(command):
    ours, theirs = abnn(command, "--help"), module(cli.COMMANDS[command][0], "--help")
    assert ours.returncode == theirs.returncode == 0, ours.stderr
    assert ours.stdout == theirs.stdout


def test_a_failing_command_keeps_its_exit_status(tmp_path):
    done = abnn("stat", "trials", "--db", str(tmp_path / "missing.db"))
    assert done.returncode != 0
    assert "missing.db" in done.stderr


def test_an_unknown_command_says_what_was_meant():
    done = abnn("trian")
    assert done.returncode == 2
    assert done.stderr.strip() == "abnn: unknown command 'trian'; did you mean 'train'?"
    assert "Traceback" not in done.stderr


def test_without_a_command_it_lists_them():
    done = abnn()
    assert done.returncode == 2
    assert all(name in done.stdout for name in cli.COMMANDS)
