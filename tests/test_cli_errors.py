"""Every command stops on a bad argument with one line (``<prog>: error: ...`` and a pointer to
``--help``), never the usage block first, through the one shared parser (``ab.nn.util.arguments``)."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ab.nn import cli

PACKAGE = Path(cli.__file__).resolve().parent
pytestmark = pytest.mark.filterwarnings("ignore:.*found in sys.modules:RuntimeWarning")  # abnn re-runs a module


def test_a_bad_value_is_one_line_without_usage():
    done = subprocess.run([sys.executable, "-m", "ab.nn.train", "-e", "-2"], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == ["python -m ab.nn.train: error: argument -e/--epochs: must be a positive "
                                        "integer, got -2; python -m ab.nn.train --help lists the arguments"]


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_every_command_answers_an_unknown_flag_with_one_line(command, capsys):
    assert cli.main([command, "--no-such-flag"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert ": error: " in err
    assert err.rstrip().endswith("--help lists the arguments")
    assert "usage:" not in err


def test_every_parser_is_the_shared_one():
    """A new command that builds its own ``argparse.ArgumentParser`` would print the usage dump again."""
    own = [str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py")
           if path.name != "arguments.py" and re.search(r"ArgumentParser\(", path.read_text())]
    assert own == []
