"""Start a module of this project in a sandbox and talk to it: ``launch`` (a running ``Sandbox``) and
``call`` (one request, one reply).

The parent holds the limits that the child cannot lift: a watchdog thread kills the whole sandbox at
the wall-clock limit and when the unique memory (PSS) of all its processes passes
``Limits.total_memory_bytes``; a ``receive`` with a timeout kills it too when nothing came in time.
Killing bubblewrap's own process ends everything in the sandbox (its pid namespace dies with it). The
child's stderr is drained by a thread that keeps the last 64 KiB, so a chatty child never blocks.

Launch from a thread that outlives the sandbox: the kernel's parent-death signal, which ends the
sandbox when the parent dies, follows the launching thread.
"""
from __future__ import annotations

import collections
import json
import os
import re
import secrets
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import BinaryIO

from ab.nn.sandbox import bwrap
from ab.nn.sandbox.bwrap import Bind
from ab.nn.sandbox.child import BOOT
from ab.nn.sandbox.errors import (ProtocolError, SandboxError, SandboxExited, SandboxStartError,
                                  SandboxTimeout)
from ab.nn.sandbox.limits import GiB, Limits, signal_reason
from ab.nn.sandbox.protocol import MAX_MESSAGE, Channel, validate
from ab.nn.util import tempdirs

START_SECONDS = 60.0
"""How long the child may take to say ``ready`` (Python's start on a loaded machine), within the wall limit."""
EXIT_SECONDS = 5.0
"""How long a child that closed its channel may take to exit before it is killed."""
WATCH_SECONDS = 0.25
MEMORY_SHARE = 0.02
"""The share of one core the watch may spend reading the child's memory. Reading the PSS of a process that
maps a large image cache takes the kernel about 0.1 s (a trial of the full UTKFace set at 96 px): read every
0.25 s, three runners' watches took a sixth of a 2-core machine from their trials."""
STDERR_TAIL = 64 * 1024
_READY = {"type": "object", "properties": {"type": {"enum": ["ready"]}}, "required": ["type"],
          "additionalProperties": False}


class Sandbox:
    """A module running in a sandbox (see ``launch``). ``scratch`` is its writable folder, ``sandboxed``
    is False only for a run that ``unsafe=True`` let go without one."""

    def __init__(self, process: subprocess.Popen, limits: Limits, scratch: Path, own_scratch: bool, sandboxed: bool,
                 max_message: int, echo: BinaryIO | None = None):
        self.process, self.limits, self.scratch, self.sandboxed = process, limits, scratch, sandboxed
        self._own_scratch = own_scratch
        self._echo = echo
        self._started = time.monotonic()
        self._killed: str | None = None  # why the parent killed it
        self._lock = threading.Lock()
        self._stderr = collections.deque()
        self._stderr_size = 0
        for stream in (process.stdin, process.stdout):
            os.set_blocking(stream.fileno(), False)
        self.channel = Channel(process.stdout.fileno(), process.stdin.fileno(), max_message)
        self._closed = threading.Event()
        self._threads = [threading.Thread(target=self._drain, name=f"sandbox-{process.pid}-stderr", daemon=True),
                         threading.Thread(target=self._watch, name=f"sandbox-{process.pid}-watch", daemon=True)]
        for thread in self._threads:
            thread.start()

    # -- talking -------------------------------------------------------------------------------------
    @property
    def deadline(self) -> float:
        return self._started + self.limits.wall_seconds

    def send(self, message: dict) -> None:
        """Send one message; a child that stopped reading or ended is a ``SandboxError``."""
        try:
            self.channel.send(message, self.deadline)
        except TimeoutError:
            self._kill("wall")
            raise self._ended("") from None
        except OSError as error:  # BrokenPipeError: it ended or closed its end
            raise self._ended(f"stopped reading its messages ({type(error).__name__})") from None

    def receive(self, schema: dict, timeout: float | None = None) -> dict:
        """The next message, checked against ``schema``. At the wall limit, or ``timeout`` seconds from
        now if sooner, the sandbox is killed and ``SandboxTimeout`` raised; a malformed, oversize or
        schema-breaking message kills it and raises ``ProtocolError``; an end of the child before a
        message raises ``SandboxExited`` (or ``SandboxTimeout`` if the wall limit ended it)."""
        deadline = self.deadline if timeout is None else min(self.deadline, time.monotonic() + timeout)
        try:
            message = self.channel.receive(deadline)
        except TimeoutError:
            wall = deadline >= self.deadline
            self._kill("wall" if wall else f"no message within {timeout:g} s")
            raise self._ended("") from None
        except ProtocolError as error:
            self._kill("protocol")
            raise ProtocolError(f"the sandboxed process sent {error}") from None
        except OSError as error:
            raise self._ended(f"its channel broke ({type(error).__name__})") from None
        if message is None:
            raise self._ended("")
        try:
            validate(message, schema)
        except ProtocolError as error:
            self._kill("protocol")
            raise ProtocolError(f"the sandboxed process sent a bad message: {error}") from None
        return message

    def request(self, message: dict, schema: dict, timeout: float | None = None) -> dict:
        """Send ``message`` with a fresh ``id`` and return the reply, which must carry the same ``id``."""
        ident = secrets.token_hex(16)
        self.send({**message, "id": ident})
        reply = self.receive(schema, timeout)
        if reply.get("id") != ident:
            self._kill("protocol")
            raise ProtocolError(f"the sandboxed process sent a reply to an unknown request (id "
                                f"{json.dumps(reply.get('id'))[:40]})")
        return reply

    # -- ending --------------------------------------------------------------------------------------
    def close(self) -> None:
        """Kill whatever still runs in the sandbox, reap it, and remove the scratch folder if ours."""
        self._kill(None)
        self.process.wait()
        self._closed.set()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=5)
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            try:
                stream.close()
            except OSError:
                pass
        if self._own_scratch:
            tempdirs.remove_tree(self.scratch)

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def killed(self) -> str | None:
        """Why the parent killed the sandbox (``wall``, ``memory``, ``protocol``, ``closed``, ``no message within
        N s``), None while it was not killed for a reason."""
        with self._lock:
            return self._killed

    def kill(self, reason: str) -> None:
        """End the whole sandbox now (``reason`` is what ``killed`` then says, unless another came first)."""
        self._kill(reason)

    @property
    def stderr(self) -> str:
        with self._lock:
            return b"".join(self._stderr)[-STDERR_TAIL:].decode("utf-8", "replace")

    def _kill(self, reason: str | None) -> None:
        with self._lock:
            if self._killed is None and reason is not None:
                self._killed = reason
        try:
            if self.sandboxed:
                self.process.kill()  # bubblewrap: the pid namespace, and everything in it, dies with it
            else:
                os.killpg(self.process.pid, signal.SIGKILL)  # its session's group, left or not by its leader
        except (ProcessLookupError, PermissionError):
            pass

    def _ended(self, what: str) -> SandboxError:
        """The exception for a child that ended (or was ended) before the expected message."""
        try:
            code = self.process.wait(EXIT_SECONDS)
        except subprocess.TimeoutExpired:  # closed its channel but goes on
            self._kill("closed")
            code = self.process.wait()
        tail = _last_line(self.stderr)
        killed = self._killed
        if killed == "wall":
            return SandboxTimeout(f"the wall-clock limit of {self.limits.wall_seconds:g} s passed; the sandbox was "
                                  f"killed")
        if killed and killed.startswith("no message"):
            return SandboxTimeout(f"{killed}; the sandbox was killed")
        if killed == "memory":
            return SandboxExited(f"the sandbox's processes passed the memory limit of "
                                 f"{self.limits.total_memory_bytes / GiB:g} GiB together and were killed", code, self.stderr)
        if killed == "closed":
            return ProtocolError("the sandboxed process closed its channel but did not exit")
        number = -code if code < 0 else code - 128 if code > 128 else None
        how = signal_reason(number, self.limits) if number else f"exited with code {code}"
        what = what or "ended before sending the expected message"
        return SandboxExited(f"the sandboxed process {what}: {how}" + (f" (last stderr line: {tail})" if tail else ""),
                             code, self.stderr)

    # -- threads -------------------------------------------------------------------------------------
    def _drain(self) -> None:
        fd = self.process.stderr.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                return
            if not chunk:
                return
            if self._echo is not None:
                _echo(self._echo, chunk)
            with self._lock:
                self._stderr.append(chunk)
                self._stderr_size += len(chunk)
                while self._stderr_size - len(self._stderr[0]) >= STDERR_TAIL:
                    self._stderr_size -= len(self._stderr.popleft())

    def _watch(self) -> None:
        from ab.nn.util.processes import unique_memory  # psutil: not at import (a system Python may launch too)

        total = self.limits.total_memory_bytes
        next_read = 0.0
        while not self._closed.wait(WATCH_SECONDS):
            if self.process.poll() is not None:
                return
            now = time.monotonic()
            if now >= self.deadline:
                self._kill("wall")
                return
            if total is None or now < next_read:
                continue
            spent = time.thread_time()
            used = unique_memory(self.process.pid)
            next_read = now + (time.thread_time() - spent) / MEMORY_SHARE
            if used > total:
                self._kill("memory")
                return


_UNSAFE_OUTPUT = re.compile(rb"\x1b(?!\[[0-9;?]*[A-Za-z])|[\x00-\x08\x0b\x0c\x0e-\x1a\x1c-\x1f\x7f]")
"""What the child may not send to the parent's terminal: control characters but tab, newline and carriage
return, and escape sequences other than CSI ones (cursor moves and erasing, which progress bars use)."""


def _echo(stream: BinaryIO, chunk: bytes) -> None:
    try:
        stream.write(_UNSAFE_OUTPUT.sub(b"?", chunk))
        stream.flush()
    except (OSError, ValueError):
        pass


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    line = "".join(c if c.isprintable() else "?" for c in (lines[-1] if lines else ""))
    return line if len(line) <= 300 else line[:297] + "..."


def launch(module: str, args: tuple[str, ...] | list[str] = (), *, limits: Limits = Limits(),
           binds: tuple[Bind, ...] | list[Bind] = (), env: dict[str, str] | None = None,
           scratch: str | Path | None = None, unsafe: bool = False,
           max_message: int = MAX_MESSAGE, echo: BinaryIO | None = None) -> Sandbox:
    """Run ``python -m module args...`` in a sandbox and return it once the child said ``ready``.

    ``binds`` are extra host paths the child sees (read-only unless ``Bind(..., writable=True)``);
    ``scratch`` is its writable folder (a new temporary folder, removed on ``close``, when None; as root,
    the folder and writable binds are given to the sandbox user); ``env`` adds environment variables
    to a scrubbed environment; ``echo`` gets the child's stderr as it comes (control characters other
    than tab, newline, carriage return and CSI escape sequences replaced), for progress bars. Where no
    sandbox can be had, ``SandboxUnavailable`` is raised unless ``unsafe=True``: then the module runs as
    a plain child process (its own session, killed as a group) with the same limits but the process
    count, and ``sandboxed`` is False."""
    from ab.nn.sandbox.availability import require

    sandboxed = require(unsafe).ok
    return start(module, args, limits=limits, binds=binds, env=env, scratch=scratch, sandboxed=sandboxed,
                 max_message=max_message, echo=echo)


def start(module: str, args=(), *, limits: Limits = Limits(), binds=(), env=None, scratch=None,
          sandboxed: bool = True, max_message: int = MAX_MESSAGE, echo: BinaryIO | None = None,
          inherit_env: bool = False) -> Sandbox:
    """``launch`` without the availability check: ``sandboxed=False`` runs a plain child process, with
    this process's environment if ``inherit_env`` (for trusted code: the package's own models), else a
    scrubbed one. ``available`` uses it for its trial launch, the trial runner for package models."""
    if inherit_env and sandboxed:
        raise ValueError("inherit_env is for plain child processes of trusted code, not for a sandbox")
    own = scratch is None
    folder = tempdirs.make("sandbox") if own else Path(scratch).absolute()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        process = _popen(module, list(args), limits, list(binds), env, folder, sandboxed, max_message, inherit_env)
    except BaseException:
        if own:
            tempdirs.remove_tree(folder)
        raise
    box = Sandbox(process, limits, folder, own, sandboxed, max_message, echo)
    try:
        box.receive(_READY, timeout=START_SECONDS)
    except SandboxError as error:
        box.close()
        raise SandboxStartError(f"the sandbox did not start ({error})") from None
    except BaseException:
        box.close()
        raise
    return box


def _popen(module, args, limits, binds, env, folder, sandboxed, max_message, inherit_env) -> subprocess.Popen:
    if not sandboxed:
        limits = limits.replace(processes=None)  # RLIMIT_NPROC would count every process of this user
    python = [sys.executable, "-s", "-P", "-c", BOOT, json.dumps(limits.to_json()), str(max_message), module, *args]
    if not sandboxed:
        child_env = _inherited(env) if inherit_env else bwrap.environment(env, str(folder))
        return subprocess.Popen(python, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=child_env, cwd=folder, start_new_session=True, close_fds=True)
    identity = bwrap.sandbox_identity()
    if identity is not None:
        for bind in binds:
            if not bind.writable and not bind.device:
                _require_readable(Path(bind.source), identity)
        for path in [folder, *(Path(b.source) for b in binds if b.writable)]:
            os.chown(path, identity.uid, identity.gid)
    command = bwrap.command(python, bwrap.environment(env, bwrap.HOME), binds, str(folder), limits.tmpfs_bytes,
                            identity)
    return subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"},
                            start_new_session=True, close_fds=True)


def _require_readable(path: Path, identity: bwrap.Identity) -> None:
    """A read-only bind the sandbox user cannot read would fail inside the child with a bare
    PermissionError; say here which folder and what to do (root's ``os.access`` cannot tell)."""
    try:
        st = path.stat()
    except OSError as error:
        raise SandboxStartError(f"cannot give the sandbox {path}: {error.strerror}") from None
    shift = 6 if st.st_uid == identity.uid else 3 if st.st_gid == identity.gid else 0
    needed = 0o5 if stat.S_ISDIR(st.st_mode) else 0o4
    if (st.st_mode >> shift) & needed != needed:
        kind = "folder" if stat.S_ISDIR(st.st_mode) else "file"
        raise SandboxStartError(f"the sandbox user {identity.name} (uid {identity.uid}) cannot read the {kind} "
                                f"{path} (mode {stat.S_IMODE(st.st_mode):04o}, owner uid {st.st_uid}): the "
                                f"sandbox reads it as that user: make it readable by others (chmod o+rX)")


def _inherited(extra: dict[str, str] | None) -> dict[str, str]:
    """This process's environment for a trusted child, which must import this project however this
    process did (its ``python -P`` does not put the working folder on its path)."""
    env = {**os.environ, **(extra or {})}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(bwrap.project_root()), env.get("PYTHONPATH")) if p)
    return env


def call(module: str, request: dict, schema: dict, args=(), **options) -> dict:
    """Launch ``module``, send it ``request`` (with a fresh ``id``), return its reply (checked against
    ``schema`` and carrying the same ``id``) and kill the sandbox. ``options`` are ``launch``'s."""
    with launch(module, args, **options) as box:
        return box.request(request, schema)
