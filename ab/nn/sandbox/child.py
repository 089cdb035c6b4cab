"""The sandboxed side: ``main`` is what the launcher starts inside the sandbox, ``channel`` is how the
module it runs talks to the parent.

``main`` sets the rlimits, takes the message pipes off stdin and stdout (stdin then reads nothing and
stdout goes to stderr, so that a ``print`` in the caller's module or in code it imports cannot break a
message), says ``ready`` to the parent, and only then runs the module as ``__main__`` with the given
arguments. Everything up to ``ready`` is this project's own code.
"""
from __future__ import annotations

import ctypes
import json
import os
import runpy
import signal
import sys

from ab.nn.sandbox.limits import Limits, apply
from ab.nn.sandbox.protocol import Channel

BOOT = "from ab.nn.sandbox.child import main; main()"
"""The ``python -c`` program that starts a sandboxed module: ``BOOT LIMITS-JSON MAX-MESSAGE MODULE ARGS...``."""
_channel: Channel | None = None


def channel() -> Channel:
    """The channel to the parent (only in a process started by ``main``)."""
    if _channel is None:
        raise RuntimeError("not running in a sandbox started by ab.nn.sandbox (no channel to a parent)")
    return _channel


def _die_with_parent() -> None:
    """Linux's parent-death signal: bubblewrap sets it too; a run without a sandbox has only this."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def main(argv: list[str] | None = None) -> None:
    global _channel
    limits_json, cap, module, *args = sys.argv[1:] if argv is None else argv
    _die_with_parent()
    apply(Limits.from_json(json.loads(limits_json)))
    read_fd, write_fd = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    _channel = Channel(read_fd, write_fd, int(cap))
    _channel.send({"type": "ready"})
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
