"""What can go wrong with a sandboxed run, as exceptions with a one-line message each: the caller
tells the code's fault (it timed out, exited, sent nonsense) from the machine's (no sandbox here, the
sandbox did not start)."""
from __future__ import annotations


class SandboxError(RuntimeError):
    """A sandboxed run failed; the message is one line."""


class SandboxUnavailable(SandboxError):
    """No working sandbox on this machine, and the caller did not pass ``unsafe=True``."""


class SandboxStartError(SandboxError):
    """The sandbox itself did not come up (before any code of the caller's module ran)."""


class ProtocolError(SandboxError):
    """A message that is malformed, over the size cap, against its schema, or not expected."""


class SandboxTimeout(SandboxError):
    """A time limit of the parent passed; the whole sandbox has been killed."""


class SandboxExited(SandboxError):
    """The sandboxed process ended (or was ended at a limit) before sending what was expected."""

    def __init__(self, message: str, code: int | None = None, stderr: str = ""):
        super().__init__(message)
        self.code = code
        self.stderr = stderr
