"""The boundary for code we did not write (ab.nn.sandbox, ab.nn.model_probe), tried with hostile code.

Each hostile case is a real sandboxed probe of a model file, or, for what happens at run time, a real
sandboxed run of a small script (tests/sandboxed_script.py). Each must end as a clear failure within
its limit, and the file system outside the scratch folder must be byte-identical afterwards: the
``guard`` fixture hashes the project tree, a canary folder outside and a canary in the home folder
before and after every test (no test writes into the project: test models go into a workspace).
"""
from __future__ import annotations

import hashlib
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from ab.nn import model_probe, sandbox
from ab.nn.sandbox import protocol
from ab.nn.sandbox.bwrap import project_root
from ab.nn.sandbox.limits import MiB

PROJECT = project_root()
NOT_HASHED = {"__pycache__", ".pytest_cache", ".hypothesis", ".git", ".venv", ".venv-litert-torch", "db", "data", "out",
              "stat", "cache", "report"}
"""Written by the test run itself (hypothesis's example database by whichever worker runs its tests), by
version control or by a workspace in the project folder, or too large to hash (the environment is checked
by a write into it instead)."""
SLACK = 60.0
"""Seconds a run may take past its limit on a loaded machine (killing, reaping, Python's start)."""
QUICK = model_probe.PROBE_LIMITS.replace(wall_seconds=8)
SCRIPT = sandbox.Limits(wall_seconds=120, cpu_seconds=60, memory_bytes=1024 * MiB, address_space_bytes=4096 * MiB,
                        total_memory_bytes=2048 * MiB, file_size_bytes=4 * MiB, processes=64, open_files=64,
                        tmpfs_bytes=4 * MiB)
DONE = {"type": "object", "required": ["type", "id", "result", "error"], "additionalProperties": False,
        "properties": {"type": {"enum": ["done"]}, "id": {"type": "string"}, "result": {},
                       "error": {"type": ["string", "null"]}}}
CONTRACT = textwrap.dedent("""
    def supported_hyperparameters():
        return {"lr"}

    class Net:
        def train_setup(self, prm): pass
        def learn(self, data): pass
        def forward(self, x): return x
    """)
"""A model file's contract without torch: a hostile line above it is all that can make a probe fail."""


def _digests(folder: Path) -> dict[str, str]:
    found = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if d not in NOT_HASHED)
        for name in filenames:
            path = Path(dirpath) / name
            if name.endswith(".pyc"):
                continue
            data = os.readlink(path).encode() if path.is_symlink() else path.read_bytes()
            found[str(path)] = hashlib.sha256(data).hexdigest()
        found.update({str(Path(dirpath) / d): "folder" for d in dirnames})
    return found


@dataclass
class Guard:
    project: Path
    outside: Path
    canary: Path
    home: Path
    home_canary: Path
    models: Path

    def snapshot(self) -> dict:
        return {**_digests(self.project), **_digests(self.outside), **_digests(self.home)}

    def values(self, **extra) -> dict:
        """What a hostile template may name (``%(name)r``)."""
        return {"project": str(self.project), "readme": str(self.project / "README.md"),
                "package": str(self.project / "ab"), "evil_model": str(self.project / "ab/nn/nn/Evil.py"),
                "canary": str(self.canary), "outside_new": str(self.outside / "new.txt"),
                "home_canary": str(self.home_canary), "real_home_target": str(_real_home() / ".ab-nn-sandbox-evil"),
                **extra}


def _real_home() -> Path:
    return Path(pwd.getpwuid(os.geteuid()).pw_dir)


def _need_sandbox() -> None:
    found = sandbox.available()
    if not found.ok:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must have a sandbox (scripts/setup.sh installs bubblewrap): {found.reason}")
        pytest.skip(f"no sandbox on this machine: {found.reason}")


@pytest.fixture
def guard(tmp_path, monkeypatch):
    _need_sandbox()
    home, outside = tmp_path / "home", tmp_path / "outside"
    home.mkdir()
    outside.mkdir()
    (home / ".profile").write_text("the home canary\n")
    (outside / "canary.txt").write_text("the outside canary\n")
    monkeypatch.setenv("HOME", str(home))
    found = Guard(PROJECT, outside, outside / "canary.txt", home, home / ".profile", tmp_path / "models")
    found.models.mkdir()
    before = found.snapshot()
    yield found
    assert found.snapshot() == before, "a file outside the scratch folder changed"
    assert not (_real_home() / ".ab-nn-sandbox-evil").exists()
    assert not (PROJECT / "ab/nn/nn/Evil.py").exists()


def _model(guard: Guard, template: str, contract: bool = True, **extra) -> Path:
    path = guard.models / "Hostile.py"
    path.write_text(textwrap.dedent(template) % guard.values(**extra) + (CONTRACT if contract else ""))
    return path


def _probe(path: Path, limits=model_probe.PROBE_LIMITS) -> tuple[model_probe.ModelFacts, float]:
    started = time.monotonic()
    facts = model_probe.probe(path, limits=limits)
    return facts, time.monotonic() - started


_EARLIER_CHILDREN: set[int] = set()


@pytest.fixture(autouse=True)
def _earlier_children():
    """Children this test process had before the test (an earlier test's multiprocessing helper in the same
    worker, say) are not the sandbox's."""
    _EARLIER_CHILDREN.clear()
    _EARLIER_CHILDREN.update(p.pid for p in psutil.Process().children(recursive=True))
    yield


def _no_children_left() -> None:
    def alive() -> list[psutil.Process]:
        found = []
        for p in psutil.Process().children(recursive=True):
            try:
                if p.pid not in _EARLIER_CHILDREN and p.status() != psutil.STATUS_ZOMBIE:
                    found.append(p)
            except psutil.NoSuchProcess:
                pass
        return found

    deadline = time.monotonic() + 30
    while (left := alive()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"sandbox processes outlived it: {[p.pid for p in left]}"


# -- the probe with hostile model files ----------------------------------------------------------------
FILE_ATTACKS = {
    "deletes a canary outside": "import os\nos.remove(%(canary)r)\n",
    "deletes a project file": "import os\nos.remove(%(readme)r)\n",
    "deletes itself": "import os\nos.remove(__file__)\n",
    "deletes the project tree": "import shutil\nshutil.rmtree(%(package)r)\n",
    "writes a model into the project": "open(%(evil_model)r, 'w').write('x')\n",
    "writes into the Python environment": "import sysconfig\nopen(sysconfig.get_paths()['purelib'] + '/evil.pth', 'w')\n",
    "writes into its home": "import os\nopen(os.path.expanduser('~/.bashrc'), 'a').write('evil')\n",
    "writes into the caller's home": "open(%(home_canary)r, 'a').write('evil')\n",
    "writes into the user's real home": "open(%(real_home_target)r, 'w').write('evil')\n",
    "writes next to the outside canary": "open(%(outside_new)r, 'w').write('evil')\n",
}


@pytest.mark.parametrize("attack", list(FILE_ATTACKS))
def test_file_attacks_fail_and_change_nothing(guard, attack):
    facts, took = _probe(_model(guard, FILE_ATTACKS[attack]))
    assert not facts.ok and facts.sandboxed
    assert any(why in facts.error for why in ("Read-only file system", "No such file", "Permission denied")), facts.error
    assert took < model_probe.PROBE_LIMITS.wall_seconds


def test_a_socket_reaches_nothing(guard):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.setblocking(False)
        port = server.getsockname()[1]
        local, _ = _probe(_model(guard, "import socket\nsocket.create_connection(('127.0.0.1', %(port)d), 10)\n",
                                 port=port))
        remote, _ = _probe(_model(guard, "import socket\nsocket.create_connection(('1.1.1.1', 53), 10)\n"))
        with pytest.raises(BlockingIOError):
            server.accept()
    assert "ConnectionRefusedError" in local.error
    assert "Network is unreachable" in remote.error


def test_a_thousand_forks_hit_the_process_limit(guard):
    template = """
        import os, time
        for _ in range(1000):
            if os.fork() == 0:
                time.sleep(3600)
                os._exit(0)
        """
    facts, took = _probe(_model(guard, template))
    assert facts.error.startswith("BlockingIOError") and "Resource temporarily unavailable" in facts.error
    assert took < model_probe.PROBE_LIMITS.wall_seconds
    _no_children_left()


@pytest.mark.parametrize("template, why", [("bytearray(50 * 2 ** 30)\n", "MemoryError"),
                                           ("import mmap\nmmap.mmap(-1, 50 * 2 ** 30)\n", "Cannot allocate memory")],
                         ids=["private", "shared"])
def test_50_gb_are_refused(guard, template, why):
    facts, took = _probe(_model(guard, template))
    assert why in facts.error
    assert took < model_probe.PROBE_LIMITS.wall_seconds


SLEEPERS = {"at import": "import time\ntime.sleep(10 ** 6)\n" + CONTRACT,
            "in supported_hyperparameters": CONTRACT + "def supported_hyperparameters():\n"
                                                       "    import time\n    time.sleep(10 ** 6)\n",
            "in search_space": CONTRACT + "def search_space():\n    import time\n    time.sleep(10 ** 6)\n"}


@pytest.mark.parametrize("where", list(SLEEPERS))
def test_sleeping_forever_ends_at_the_wall_clock_limit(guard, where):
    facts, took = _probe(_model(guard, SLEEPERS[where], contract=False), QUICK)
    assert f"wall-clock limit of {QUICK.wall_seconds:g} s passed" in facts.error
    assert QUICK.wall_seconds - 1 < took < QUICK.wall_seconds + SLACK
    _no_children_left()


def test_spinning_ends_at_the_cpu_limit(guard):
    facts, took = _probe(_model(guard, "while True:\n    pass\n"), model_probe.PROBE_LIMITS.replace(cpu_seconds=2))
    assert "SIGXCPU: CPU time limit of 2 s hit" in facts.error
    assert took < model_probe.PROBE_LIMITS.wall_seconds


@pytest.mark.parametrize("template, why", [
    ("import os\nif __name__ != '_ab_nn_check_nn_probe':\n    os._exit(7)\n", "exited with code 7"),
    ("import os\nos._exit(0)\n", "exited with code 0"),
    ("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n", "killed by SIGSEGV"),
    ("raise SystemExit(3)\n", "SystemExit: 3")], ids=["os._exit(7) outside the probe", "os._exit(0)", "segfault",
                                                     "sys.exit"])
def test_exits_end_the_probe_not_the_caller(guard, template, why):
    facts, _ = _probe(_model(guard, template))
    assert why in facts.error


def test_a_crafted_result_file_is_never_read(guard):
    """The old probe read result.json, the old trial child a pickle: the model leaves both, and a pickle
    whose loading would create a marker file, where a reader might look; it declares no Net."""
    template = """
        import json, os, pickle
        class Payload:
            def __reduce__(self):
                return (open, (%(marker)r, "w"))
        for folder in (os.getcwd(), "/tmp"):
            with open(os.path.join(folder, "result.json"), "w") as f:
                json.dump({"error": None}, f)
            with open(os.path.join(folder, "outcome.pkl"), "wb") as f:
                pickle.dump(Payload(), f)
        def supported_hyperparameters():
            return {"lr"}
        """
    marker = guard.models / "unpickled"
    facts, _ = _probe(_model(guard, template, contract=False, marker=str(marker)))
    assert facts.error == "the code defines no class Net (LEMUR's model contract)"
    assert not marker.exists()


FORGE = """
    import os, stat
    def forge(data):
        for fd in map(int, os.listdir("/proc/self/fd")):
            try:
                if stat.S_ISFIFO(os.fstat(fd).st_mode):
                    os.write(fd, data)
            except OSError:
                pass
    forge(%(data)r)
    os._exit(0)
    """


def _frame(message: dict) -> bytes:
    return protocol.encode(message)


FORGERIES = {
    "a reply claiming success": (_frame({"type": "facts", "id": "0" * 32, "error": None,
                                         "supported_hyperparameters": ["lr"], "search_space": None,
                                         "pretrained_available": None, "input_sizes": None}),
                                 "a reply to an unknown request"),
    "an oversize length": (b"\xff\xff\xff\xff" + b"x" * 64, "over the cap of 1048576 bytes"),
    "malformed JSON": (b"\x00\x00\x00\x05{bad}", "a malformed message"),
    "a schema-breaking reply": (_frame({"type": "facts", "id": "0" * 32, "error": None,
                                        "supported_hyperparameters": [1, 2], "search_space": None,
                                        "pretrained_available": None, "input_sizes": None}),
                                "message.supported_hyperparameters[0]: expected string, got int"),
    "a cut-off message": (b"\x00\x00\x01\x00{", "a message cut off after 1 of 256 bytes"),
}


@pytest.mark.parametrize("forgery", list(FORGERIES))
def test_a_forged_message_is_a_clear_failure(guard, forgery):
    data, why = FORGERIES[forgery]
    facts, _ = _probe(_model(guard, FORGE, contract=False, data=data))
    assert not facts.ok and why in facts.error, facts.error


# -- the probe with honest model files -----------------------------------------------------------------
VALID = """
    import torch

    def supported_hyperparameters():
        return {"lr", "momentum", "width"}

    def search_space():
        return {"width": {"choices": [8, 16]}, "lr": {"low": 1e-4, "high": 0.1, "log": True}}

    def pretrained_available():
        return False

    def supported_input_sizes():
        return [96, (64, 48), 64]

    class Net(torch.nn.Module):
        def __init__(self, in_shape, out_shape, prm, device):
            super().__init__()
            self.head = torch.nn.Linear(in_shape[1], 1)
        def train_setup(self, prm): pass
        def learn(self, data): pass
        def forward(self, x): return self.head(x.mean((2, 3)))
    """


def test_a_valid_model_file_probes_correctly(guard):
    facts, _ = _probe(_model(guard, VALID, contract=False))
    assert facts.ok and facts.sandboxed
    assert facts.supported_hyperparameters == {"lr", "momentum", "width"}
    assert facts.search_space == {"width": {"choices": [8, 16]}, "lr": {"low": 1e-4, "high": 0.1, "log": True}}
    assert facts.pretrained_available is False
    assert facts.input_sizes == ((64, 48), (64, 64), (96, 96))
    assert json.loads(json.dumps(facts.to_json()))["input_sizes"] == [[64, 48], [64, 64], [96, 96]]


@pytest.mark.slow
def test_a_package_model_probes_as_it_imports(guard):
    from ab.nn.nn import ResNet18

    facts, _ = _probe(PROJECT / "ab/nn/nn/ResNet18.py")
    assert facts.ok
    assert facts.supported_hyperparameters == ResNet18.supported_hyperparameters()
    assert facts.search_space == ResNet18.search_space()
    assert facts.pretrained_available is ResNet18.pretrained_available()
    assert facts.input_sizes is None


@pytest.mark.parametrize("template, why", [
    ("def supported_hyperparameters():\n    return {'lr'}\n", "the code defines no class Net"),
    ("def supported_hyperparameters():\n    return [1]\nclass Net: pass\n", "must give names (strings), got [1]"),
    ("def supported_hyperparameters():\n    return {'lr'}\nclass Net:\n    def forward(self, x): return x\n",
     "Net has no train_setup, learn"),
    (CONTRACT + "def search_space():\n    return {'lr': {'low': 0.1}}\n", "'lr' needs 'choices' or 'low'/'high'"),
    (CONTRACT + "def supported_input_sizes():\n    return [0]\n", "0 is not a side or a (height, width) pair"),
    ("import no_such_module\n", "ModuleNotFoundError: No module named 'no_such_module'"),
    ("def f(:\n", "SyntaxError")], ids=["no Net", "names not strings", "no learn", "bad search space",
                                       "bad input size", "import error", "syntax error"])
def test_contract_failures_are_named(guard, template, why):
    facts, _ = _probe(_model(guard, template, contract=False))
    assert why in facts.error, facts.error


def test_a_path_that_is_no_python_file_is_refused(tmp_path):
    with pytest.raises(ValueError, match="is not a Python file"):
        model_probe.probe(tmp_path / "missing.py")


# -- sandboxed runs of a small script: run time -------------------------------------------------------
def _run(code: str, limits: sandbox.Limits = SCRIPT) -> dict:
    return sandbox.call("tests.sandboxed_script", {"type": "run", "code": textwrap.dedent(code)}, DONE, limits=limits)


def test_the_child_sees_a_scrubbed_read_only_world(guard, monkeypatch):
    monkeypatch.setenv("AB_NN_TEST_SECRET", "do not pass")
    code = """
        import os
        def attempt(path):
            try:
                open(path, "w").close()
                return "written"
            except OSError as error:
                return error.strerror
        result = {"env": sorted(os.environ), "uid": os.getuid(), "home": os.listdir(os.environ["HOME"]),
                  "cwd": os.getcwd(), "scratch": attempt("made-here"), "root": attempt("/evil"),
                  "project": attempt(%(readme)r), "outside": os.path.exists(%(outside)r),
                  "pid": os.getpid()}
        """ % {"readme": str(PROJECT / "README.md"), "outside": str(guard.outside)}
    with sandbox.launch("tests.sandboxed_script", limits=SCRIPT, env={"OMP_NUM_THREADS": "1"}) as box:
        result = box.request({"type": "run", "code": textwrap.dedent(code)}, DONE)["result"]
        assert result["cwd"] == str(box.scratch) and (box.scratch / "made-here").is_file()
    assert not box.scratch.exists()  # removed on close
    assert "AB_NN_TEST_SECRET" not in result["env"] and "OMP_NUM_THREADS" in result["env"]
    assert set(result["env"]) <= {"PATH", "HOME", "LANG", "TMPDIR", "PYTHONPATH", "PYTHONDONTWRITEBYTECODE",
                                  "PYTHONNOUSERSITE", "XDG_CACHE_HOME", "MPLCONFIGDIR", "OMP_NUM_THREADS", "PWD"}
    assert result["uid"] != 0 and result["home"] == [] and result["pid"] < 16
    assert result["scratch"] == "written" and result["root"] == result["project"] == "Read-only file system"
    assert result["outside"] is False


def test_sleeping_at_run_time_ends_at_the_wall_clock_limit(guard):
    started = time.monotonic()
    with pytest.raises(sandbox.SandboxTimeout, match="wall-clock limit of 8 s passed"):
        _run("import time\ntime.sleep(10 ** 6)\n", SCRIPT.replace(wall_seconds=8))
    assert 7 < time.monotonic() - started < 8 + SLACK
    _no_children_left()


def test_a_receive_timeout_kills_the_sandbox(guard):
    with sandbox.launch("tests.sandboxed_script", limits=SCRIPT) as box:
        box.send({"type": "run", "id": "1", "code": "import time\ntime.sleep(10 ** 6)\n"})
        started = time.monotonic()
        with pytest.raises(sandbox.SandboxTimeout, match="no message within 2 s; the sandbox was killed"):
            box.receive(DONE, timeout=2)
        assert time.monotonic() - started < 2 + SLACK
        assert box.process.poll() is not None
    _no_children_left()


def test_spinning_at_run_time_ends_at_the_cpu_limit(guard):
    with pytest.raises(sandbox.SandboxExited, match="SIGXCPU: CPU time limit of 2 s hit"):
        _run("while True:\n    pass\n", SCRIPT.replace(cpu_seconds=2))


@pytest.mark.parametrize("code, why", [
    ("open('big', 'wb').write(b'x' * (8 * 2 ** 20))", "File too large"),
    ("for i in range(8):\n    open(f'/tmp/{i}', 'wb').write(b'x' * 2 ** 20)", "No space left on device"),
    ("files = [open('/dev/null') for _ in range(1000)]", "Too many open files"),
    ("bytearray(50 * 2 ** 30)", "MemoryError"),
    ("import socket\nsocket.create_connection(('1.1.1.1', 443), 10)", "Network is unreachable"),
    ("import os, time\nfor _ in range(1000):\n    if os.fork() == 0:\n        time.sleep(3600)\n        os._exit(0)",
     "Resource temporarily unavailable")], ids=["file size", "tmpfs size", "open files", "50 GB", "socket", "forks"])
def test_run_time_limits_fail_clearly(guard, code, why):
    reply = _run(code)
    assert why in reply["error"], reply["error"]
    _no_children_left()


def test_the_memory_of_all_processes_together_is_watched(guard):
    code = """
        import os, time
        for _ in range(4):
            if os.fork() == 0:
                block = bytearray(300 * 2 ** 20)
                block[::4096] = b"x" * len(block[::4096])
                time.sleep(3600)
        time.sleep(3600)
        """
    with pytest.raises(sandbox.SandboxExited, match="passed the memory limit of 0.5 GiB together"):
        _run(code, SCRIPT.replace(total_memory_bytes=512 * MiB))
    _no_children_left()


def test_a_flood_on_stderr_does_not_block(guard):
    with sandbox.launch("tests.sandboxed_script", limits=SCRIPT) as box:
        code = "import sys\nfor _ in range(4096):\n    sys.stderr.write('x' * 1023 + '\\n')\nprint('printed')\nresult = 1"
        assert box.request({"type": "run", "code": code}, DONE)["result"] == 1
        assert len(box.stderr) <= 64 * 1024


def test_the_child_asks_and_the_parent_answers(guard):
    code = """
        channel.send({"type": "ask", "id": "q1", "question": "epochs?"})
        result = channel.receive()["answer"] * 2
        """
    ask = {"type": "object", "properties": {"type": {"enum": ["ask"]}, "id": {"type": "string"},
                                            "question": {"type": "string"}}}
    with sandbox.launch("tests.sandboxed_script", limits=SCRIPT) as box:
        box.send({"type": "run", "id": "r1", "code": textwrap.dedent(code)})
        question = box.receive(ask)
        box.send({"type": "answer", "id": question["id"], "answer": 21})
        assert box.receive(DONE)["result"] == 42


def _raw(text: bytes) -> bytes:
    return len(text).to_bytes(4, "big") + text


@pytest.mark.parametrize("data, error", [
    (_raw(b"[]"), "a JSON list where a message (an object) belongs"),
    (_raw(b'{"x": NaN}'), "a malformed message (NaN is not JSON)"),
    (_raw(b"[" * 65536), "a malformed message"),
    (_raw(b"\xff\xfe{}"), "a malformed message"),
    (b"\x40\x00\x00\x00", "a message of 1073741824 bytes, over the cap")],
    ids=["list", "NaN", "deep nesting", "not UTF-8", "oversize"])
def test_a_hostile_channel_raises_protocol_errors(guard, data, error):
    with pytest.raises(sandbox.ProtocolError, match=re.escape(f"the sandboxed process sent {error}")):
        _run(f"import os\nos.write(channel.write_fd, {data!r})\nimport time\ntime.sleep(60)")


def test_the_sandbox_dies_with_its_parent(guard, tmp_path):
    parent = textwrap.dedent("""
        import sys, time
        from ab.nn import sandbox
        box = sandbox.launch("tests.sandboxed_script", limits=sandbox.Limits(wall_seconds=600))
        box.send({"type": "run", "id": "1", "code": "import os, time\\nos.fork()\\ntime.sleep(3600)"})
        print(box.process.pid, flush=True)
        time.sleep(3600)
        """)
    process = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True)
    try:
        int(process.stdout.readline())
        time.sleep(2)
        tree = psutil.Process(process.pid).children(recursive=True)
        assert len(tree) >= 3  # bubblewrap, the script, its fork
    finally:
        process.kill()
        process.wait()
    gone, alive = psutil.wait_procs(tree, timeout=30)
    assert not alive, f"still running after their parent died: {[p.pid for p in alive]}"


def test_the_scratch_folder_is_removed_whatever_the_child_left(guard):
    code = """
        import os
        os.makedirs("locked/inner")
        open("locked/inner/file", "w").close()
        os.chmod("locked/inner", 0)
        os.chmod("locked", 0)
        os.symlink(%(canary)r, "link-to-canary")
        """ % {"canary": str(guard.canary)}
    with sandbox.launch("tests.sandboxed_script", limits=SCRIPT) as box:
        assert box.request({"type": "run", "code": textwrap.dedent(code)}, DONE)["error"] is None
    assert not box.scratch.exists() and guard.canary.is_file()


# -- machines without a sandbox ----------------------------------------------------------------------
@pytest.fixture
def no_bwrap(tmp_path, monkeypatch):
    """PATH without bubblewrap: the availability check finds none."""
    folder = tmp_path / "bin"
    folder.mkdir()
    with monkeypatch.context() as patch:
        patch.setenv("PATH", str(folder))
        yield sandbox.available(refresh=True)
    sandbox.available(refresh=True)


def test_without_a_sandbox_untrusted_code_is_refused_unless_unsafe(no_bwrap, tmp_path):
    assert not no_bwrap.ok and "bubblewrap (bwrap) is not installed" in no_bwrap.reason
    with pytest.raises(sandbox.SandboxUnavailable, match="pass unsafe=True"):
        sandbox.require()
    model = tmp_path / "Plain.py"
    model.write_text(CONTRACT)
    with pytest.raises(sandbox.SandboxUnavailable):
        model_probe.probe(model)
    facts = model_probe.probe(model, unsafe=True)
    assert facts.ok and not facts.sandboxed and facts.supported_hyperparameters == {"lr"}
    with sandbox.launch("tests.sandboxed_script", limits=SCRIPT, unsafe=True) as box:
        assert not box.sandboxed
        assert box.request({"type": "run", "code": "result = 6 * 7"}, DONE)["result"] == 42
        with pytest.raises(sandbox.SandboxTimeout, match="no message within 3 s"):
            box.request({"type": "run", "code": "import os, time\nos.fork()\ntime.sleep(600)"}, DONE, timeout=3)
    _no_children_left()


def test_the_command_line_says_whether_a_sandbox_is_available(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    here = subprocess.run([sys.executable, "-m", "ab.nn.sandbox"], capture_output=True, text=True, env=env)
    found = sandbox.available()
    assert here.returncode == (0 if found.ok else 1)
    assert here.stdout.startswith(f"sandbox: {'available' if found.ok else 'NOT available'}: ")
    (tmp_path / "bin").mkdir()
    without = subprocess.run([sys.executable, "-m", "ab.nn.sandbox", "--json"], capture_output=True, text=True,
                             env={**env, "PATH": str(tmp_path / "bin")})
    assert without.returncode == 1
    report = json.loads(without.stdout)
    assert report["available"] is False and "bubblewrap (bwrap) is not installed" in report["reason"]
    assert report["default_limits"]["processes"] == sandbox.Limits().processes


# -- the protocol on its own ---------------------------------------------------------------------------
def test_validate_names_the_first_difference():
    schema = {"type": "object", "required": ["a"], "additionalProperties": False,
              "properties": {"a": {"type": "array", "maxItems": 2, "items": {"type": "integer"}},
                             "b": {"type": ["string", "null"], "maxLength": 3}}}
    protocol.validate({"a": [1, 2], "b": None}, schema)
    for message, why in [({"a": [1, True]}, r"message.a\[1\]: expected integer, got bool"),
                         ({"a": [1, 2, 3]}, "message.a: 3 items"), ({}, "message: missing a"),
                         ({"a": [], "c": 1}, "unexpected key 'c'"), ({"a": [], "b": "long"}, "at most 3 allowed")]:
        with pytest.raises(sandbox.ProtocolError, match=why):
            protocol.validate(message, schema)
    with pytest.raises(ValueError, match="not supported: oneOf"):
        protocol.validate({}, {"oneOf": []})


def test_a_channel_reads_whole_messages_and_refuses_the_rest():
    read_fd, write_fd = os.pipe()
    try:
        channel = protocol.Channel(read_fd, write_fd, limit=64)
        channel.send({"n": 1})
        assert channel.receive() == {"n": 1}
        with pytest.raises(sandbox.ProtocolError, match="over the cap of 64 bytes"):
            channel.send({"n": "x" * 100})
        with pytest.raises(sandbox.ProtocolError, match="not plain JSON"):
            channel.send({"n": float("nan")})
        with pytest.raises(TimeoutError):
            channel.receive(deadline=time.monotonic() + 0.1)
        os.write(write_fd, b"\x00\x00\x00\x09{")
        os.close(write_fd)
        write_fd = None
        with pytest.raises(sandbox.ProtocolError, match="cut off after 1 of 9 bytes"):
            channel.receive()
        assert channel.receive() is None
    finally:
        os.close(read_fd)
        if write_fd is not None:
            os.close(write_fd)


# -- as a normal user ----------------------------------------------------------------------------------
def test_as_a_normal_user_the_process_limit_holds_too(tmp_path):
    """Root's runs are covered above; here the sandbox is made by an unprivileged user (bubblewrap's own
    user namespace), with the system's Python, which needs nothing but the standard library for this."""
    python, runuser = "/usr/bin/python3", shutil.which("runuser")
    if os.geteuid() != 0 or runuser is None or not os.access(python, os.X_OK):
        pytest.skip("needs root (to become a normal user), runuser and /usr/bin/python3")
    user = next((name for name in ("ab-nn-sandbox", "nobody") if _exists(name)), None)
    if subprocess.run([runuser, "-u", user, "--", "test", "-r", str(PROJECT / "ab/nn/sandbox/child.py")]).returncode:
        pytest.skip(f"the project is not readable by {user}")
    folder = Path(tempfile.mkdtemp(prefix="ab-nn-sandbox-user-"))
    try:
        folder.chmod(0o755)
        model = folder / "Forks.py"
        model.write_text(textwrap.dedent("""
            import os, time
            for _ in range(1000):
                if os.fork() == 0:
                    time.sleep(3600)
                    os._exit(0)
            """) + CONTRACT)
        model.chmod(0o644)
        program = ("import json; from ab.nn.model_probe import probe; from ab.nn.sandbox import available; "
                   f"print(json.dumps([available().reason, probe({str(model)!r}).to_json()]))")
        done = subprocess.run([runuser, "-u", user, "--", python, "-c", program], capture_output=True, text=True,
                              env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(PROJECT), "HOME": "/nonexistent"},
                              cwd=folder, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        reason, facts = json.loads(done.stdout)
        assert reason.endswith("unprivileged, in a user namespace of this user")
        assert facts["sandboxed"] and "Resource temporarily unavailable" in facts["error"]
    finally:
        shutil.rmtree(folder)


def _exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def test_a_folder_the_sandbox_user_cannot_read_is_named_before_the_child_starts(guard, tmp_path):
    """As root the sandbox runs as another user: a private data folder would fail inside the child with a
    bare PermissionError; the launcher names the folder and the fix, and a readable one is read."""
    if os.geteuid() != 0:
        pytest.skip("the sandbox runs as this user, who reads its own folders")
    data = tmp_path / "private"
    data.mkdir(mode=0o700)
    (data / "labels.txt").write_text("42\n")
    data.chmod(0o700)
    code = "result = open(%r).read()\n" % str(data / "labels.txt")
    with pytest.raises(sandbox.SandboxStartError, match=r"cannot read the folder .*private \(mode 0700, owner uid "
                                                        r"0\).*chmod o\+rX"):
        sandbox.launch("tests.sandboxed_script", limits=SCRIPT, binds=[sandbox.Bind(data)])
    data.chmod(0o755)
    with sandbox.launch("tests.sandboxed_script", limits=SCRIPT, binds=[sandbox.Bind(data)]) as box:
        assert box.request({"type": "run", "code": code}, DONE)["result"] == "42\n"


def test_deep_nesting_is_refused_before_parsing_whatever_the_recursion_limit():
    """A library that raises the recursion limit (several do) must not let a child's deeply nested message
    overflow the parent's C stack in json's parser: the depth is checked before parsing."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(10 ** 6)
    try:
        with pytest.raises(protocol.ProtocolError, match="nested deeper than 64 levels"):
            protocol.decode(b"[" * 1_000_000)
        assert protocol.decode(b'{"text": "' + b"[" * 1000 + b'"}') == {"text": "[" * 1000}  # inside a string
    finally:
        sys.setrecursionlimit(limit)


@pytest.mark.parametrize("env", [{}, {"TORCH_HOME": "~/elsewhere/torch"}, {"XDG_CACHE_HOME": "/var/cache/x"},
                                 {"TORCH_HOME": "/opt/t", "XDG_CACHE_HOME": "/var/cache/x"}])
def test_the_torch_hub_cache_a_sandbox_sees_is_torchs_own(env):
    """The hub cache is bound into every sandbox (pretrained weights); a runner finds it as torch documents
    it without importing torch, and must find the folder torch's ``get_dir`` names under each setting."""
    clean = {k: v for k, v in os.environ.items() if k not in ("TORCH_HOME", "XDG_CACHE_HOME")} | env
    ours = subprocess.run([sys.executable, "-c", "import sys; from ab.nn import model_probe; "
                           "print(model_probe._hub_dir(), 'torch' in sys.modules)"],
                          env=clean, capture_output=True, text=True, check=True).stdout.split()
    torchs = subprocess.run([sys.executable, "-c", "import torch.hub; print(torch.hub.get_dir())"], env=clean,
                            capture_output=True, text=True, check=True).stdout.strip()
    assert ours == [torchs, "False"]

