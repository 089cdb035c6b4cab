"""A deployment worker started before its job is known (``worker.Worker(preload=...)``): it imports what it
preloads, says so, runs the job it is then handed, and ends when it is closed without one."""
import os

import pytest

from ab.nn.deploy import worker


def test_a_preloaded_worker_is_ready_then_runs_the_job_it_is_handed():
    started = worker.Worker(preload=("json", "ab.nn.deploy.inputs"))
    pid = started.process.pid
    assert started.ready(timeout=60)
    with pytest.raises(worker.WorkerFailed, match="KeyError: 'no-such-job'"):  # the job ran: its error came back
        started.finish({"kind": "no-such-job"})
    assert started.process.poll() is not None and not started.folder.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_a_worker_closed_without_a_job_ends_and_leaves_nothing():
    started = worker.Worker(preload=("json",))
    assert started.ready(timeout=60)
    started.close()
    assert started.process.returncode == 0 and not started.folder.exists()


def test_a_preload_that_fails_is_reported_when_the_job_is_handed():
    started = worker.Worker(preload=("no_such_module_anywhere",))
    assert started.ready(timeout=60) is False  # it died instead of getting ready
    with pytest.raises(worker.WorkerFailed, match="crashed \\(exit code 1\\).*No module named 'no_such_module_anywhere'"):
        started.finish({"kind": "convert"})
