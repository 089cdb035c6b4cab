"""A boundary for code we did not write: run a module of this project in a bubblewrap sandbox (read-only
system, Python environment and project; a private writable scratch folder; no network; its own user
and pid namespaces; rlimits; a parent-side wall clock), talking JSON over pipes (``protocol``).

``launch(module, ...)`` -> ``Sandbox`` (``send``, ``receive(schema)``, ``request``, ``close``);
``call(module, request, schema)`` for one request and reply; ``available()`` and ``require(unsafe)``
for machines without a sandbox. Inside, the module gets its channel from ``child.channel()``. The
threat model is in docs/guide/sandbox.md.
"""
from ab.nn.sandbox.availability import Availability, available, require
from ab.nn.sandbox.bwrap import Bind
from ab.nn.sandbox.errors import (ProtocolError, SandboxError, SandboxExited, SandboxStartError, SandboxTimeout,
                                  SandboxUnavailable)
from ab.nn.sandbox.launch import Sandbox, call, launch
from ab.nn.sandbox.limits import Limits

__all__ = ["Availability", "Bind", "Limits", "ProtocolError", "Sandbox", "SandboxError", "SandboxExited",
           "SandboxStartError", "SandboxTimeout", "SandboxUnavailable", "available", "call", "launch", "require"]
