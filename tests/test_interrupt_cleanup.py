"""An interrupted sweep ends clean: one line, no "resource_tracker ... leaked semaphore" warning (the
trial's DataLoader workers hold no semaphore registered with a tracker that outlives them), no
traceback, nothing of the trial outlives the runner, and the trial is recorded interrupted."""
import signal
import sqlite3
import subprocess
import sys
import time

import psutil

from tests import helpers

CONFIG = "age-regression_utkface_mae_MobileAgeNet"


def _trial_workers(runner: psutil.Process) -> list[psutil.Process]:
    """The trial process's own children (its DataLoader workers), once it has some."""
    try:
        return [w for trial in runner.children() if "resource_tracker" not in " ".join(trial.cmdline())
                for w in trial.children()]
    except psutil.Error:
        return []


def test_sigterm_mid_epoch_leaks_no_semaphore_and_leaves_no_process(root, tmp_path):
    data = tmp_path / "utk" / "UTKFace"
    helpers.make_utkface(data, count=120)
    runner = subprocess.Popen(
        [sys.executable, "-m", "ab.nn.train", "--root", str(root), "--data-dir", str(data.parent), "-c", CONFIG,
         "-f", "norm_64", "--min-batch-binary-power", "3", "-b", "3", "-e", "100", "-t", "1", "--pretrained", "0",
         "--export", "none", "-w", "2", "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    process = psutil.Process(runner.pid)
    deadline = time.monotonic() + 300
    while len(workers := _trial_workers(process)) < 2:  # training has started: the semaphores exist
        assert runner.poll() is None and time.monotonic() < deadline, runner.communicate()
        time.sleep(0.5)
    trial = workers[0].parent()
    runner.send_signal(signal.SIGTERM)
    out, err = runner.communicate(timeout=120)
    assert runner.returncode == 128 + signal.SIGTERM, err
    assert "leaked semaphore" not in err and "Traceback" not in err, err
    assert err.strip() == ("interrupted by SIGTERM: the running trial is recorded as interrupted; run the same "
                           "command to continue")
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in (trial, *workers))
    with sqlite3.connect(root / "db" / "ab.nn.db") as con:
        assert con.execute("select status from trial").fetchall() == [("interrupted",)]
