"""The image cache removes the temporary files of builds that died on this machine, and no other: on a
folder shared between hosts a pid that is dead here may be another host's build still writing."""
import os
import shutil
import subprocess
import sys

import pytest

from ab.nn.dataset import utkface
from ab.nn.dataset.settings import DataSettings
from ab.nn.transform import norm_64
from ab.nn.util import processes


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_build_removes_only_this_machines_dead_writers_files(utk_dir, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    pid = _dead_pid()
    dead_here = processes.temp_path(cache / "a.u8", pid=pid)
    alive_here = processes.temp_path(cache / "b.u8", pid=os.getppid())
    other_host = cache / f"c.u8{processes.TEMP}{'0' * 12}-{pid}"  # the same pid, written by another machine
    unknown = cache / f"d.u8.tmp{pid}"  # a name from before writers named their machine: whose, nobody knows
    for path in (dead_here, alive_here, other_host, unknown):
        path.write_bytes(b"x" * 100)
    assert dead_here.name.startswith(f"a.u8{processes.TEMP}{processes.machine()}-")
    norm = utkface.IMAGENET_NORM
    utkface.load(utk_dir, cache, norm_64.transform(norm), norm_64.eval_transform(norm), DataSettings(), progress=False)
    assert list(cache.glob("*.u8"))  # the build ran
    assert not dead_here.exists()
    assert alive_here.exists() and other_host.exists() and unknown.exists()


def test_a_file_from_another_pid_namespace_is_not_this_machines(tmp_path):
    """Two containers on one kernel share the boot id, not their pids: a pid dead here may be alive there."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare here")
    pid = _dead_pid()
    script = (f"from pathlib import Path; from ab.nn.util import processes; "
              f"processes.temp_path(Path({str(tmp_path / 'a.u8')!r}), pid={pid}).write_bytes(b'x')")
    done = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", script],
                          capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        pytest.skip(f"this machine does not allow a new pid namespace: {done.stderr.strip()[-200:]}")
    [theirs] = tmp_path.glob("a.u8*")
    assert theirs.name != processes.temp_path(tmp_path / "a.u8", pid=pid).name  # another machine's name
    assert not processes.abandoned(theirs)
    assert processes.abandoned(processes.temp_path(tmp_path / "a.u8", pid=pid))  # the same pid, written here
