"""The bubblewrap command line of a sandbox: what the child sees and who it runs as.

The child sees the system folders (``/usr``, ``/etc``, the ``/lib`` and ``/bin`` links), the Python
installation, the virtual environment, every folder on the parent's ``sys.path`` and the project, all
read-only; a new ``/proc`` and a minimal ``/dev``; a private, size-capped ``/tmp`` and ``/dev/shm``; an
empty, read-only home; the binds the caller names; and its scratch folder, the one place it may write
that the parent can see. The root folder itself is read-only. It has its own user, pid, network (no
interface but an unconfigured loopback), IPC and UTS namespaces, a new session, no capabilities, and
cannot make further user namespaces; it dies with its parent.

Run as a normal user, bubblewrap makes the user namespace itself. Run as root, the sandboxed code must
still get an unprivileged user, since the kernel does not apply RLIMIT_NPROC to root (and root of a user
namespace made by root is root): an outer, privileged bubblewrap makes the mounts, ``setpriv`` drops to
the sandbox user (``ab-nn-sandbox`` where ``scripts/setup.sh`` made it, else ``nobody``) with no
capabilities and no way to gain any, and an inner, unprivileged bubblewrap makes the user namespace.
"""
from __future__ import annotations

import os
import pwd
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

SANDBOX_USER = "ab-nn-sandbox"
FALLBACK_USER = "nobody"
INSIDE_ID = 65534
"""The uid and gid the code has inside its user namespace (``nobody``)."""
HOME = "/home/sandbox"
SYSTEM = ("usr", "etc", "bin", "sbin", "lib", "lib32", "lib64", "libx32")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Bind:
    """A host path the child sees at ``target`` (the same path by default), read-only unless ``writable``;
    ``device``: a device node the child may use (a GPU's), bound with its device access."""
    source: str | Path
    target: str | Path | None = None
    writable: bool = False
    device: bool = False

    @property
    def inside(self) -> str:
        return os.path.abspath(self.target if self.target is not None else self.source)


@dataclass(frozen=True)
class Identity:
    """The unprivileged user a root parent runs the sandbox as."""
    name: str
    uid: int
    gid: int


def sandbox_identity() -> Identity | None:
    """None when this process is not root (bubblewrap then runs as this user); else the sandbox user."""
    if os.geteuid() != 0:
        return None
    for name in (SANDBOX_USER, FALLBACK_USER):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        if entry.pw_uid != 0:
            return Identity(name, entry.pw_uid, entry.pw_gid)
    raise LookupError(f"no unprivileged user to run the sandbox as (neither {SANDBOX_USER} nor {FALLBACK_USER} "
                      f"exists; scripts/setup.sh creates {SANDBOX_USER})")


def project_root() -> Path:
    """The folder that holds this ``ab`` package (put on the child's PYTHONPATH)."""
    return Path(__file__).resolve().parents[3]


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def python_folders() -> list[str]:
    """The Python installation, the environment, the project and the folders on ``sys.path``: what the
    child's interpreter reads. Folders inside another one or inside the system folders are left out, and
    so is the caller's own script folder or working folder (``sys.path[0]``, unless ``python -P``), which
    the child does not import from: a script run from a private folder keeps it private."""
    system = [f"/{name}" for name in SYSTEM] + [os.path.realpath(f"/{name}") for name in SYSTEM]
    paths = sys.path if sys.flags.safe_path else sys.path[1:]
    found = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, str(project_root()),
             os.path.dirname(os.path.realpath(sys.executable)), *paths}
    folders: list[str] = []
    for path in sorted((os.path.abspath(p) for p in found if p and os.path.isabs(p)), key=len):
        if path == "/" or not os.path.exists(path):
            continue
        if any(_under(path, f) or _under(os.path.realpath(path), f) for f in system + folders):
            continue
        folders.append(path)
    return folders


def environment(extra: dict[str, str] | None, home: str) -> dict[str, str]:
    """The child's whole environment: nothing of the parent's but what is named here or in ``extra``."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": home, "LANG": "C.UTF-8", "TMPDIR": "/tmp",
           "PYTHONPATH": str(project_root()), "PYTHONDONTWRITEBYTECODE": "1", "PYTHONNOUSERSITE": "1",
           "XDG_CACHE_HOME": "/tmp/.cache", "MPLCONFIGDIR": "/tmp/.matplotlib"}
    for name, value in (extra or {}).items():
        if not _ENV_NAME.match(name) or "\0" in str(value):
            raise ValueError(f"sandbox: bad environment variable {name!r}")
        env[name] = str(value)
    return env


class _Mounts:
    """bubblewrap's mount arguments, with the folders above each target made first (mode 0755) where
    they lie on a new file system (the root, a tmpfs); a bind of a host folder at its own path already
    has the folders of the host below it."""

    def __init__(self):
        self.args: list[str] = []
        self.mirrors: dict[str, bool] = {"/": False}  # target -> whether it shows the host at that path

    def _parents(self, target: str) -> None:
        parts = target.strip("/").split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            folder = "/" + "/".join(parts[:depth])
            if folder in self.mirrors:
                continue
            holder = max((p for p in self.mirrors if _under(folder, p)), key=len)
            if not self.mirrors[holder]:
                self.args += ["--perms", "0755", "--dir", folder]
                self.mirrors[folder] = False

    def add(self, option: str, target: str, *values: str, mirror: bool = False) -> None:
        self._parents(target)
        self.args += [option, *values, target]
        self.mirrors[target] = mirror

    def tmpfs(self, target: str, size: int) -> None:
        self._parents(target)
        self.args += ["--perms", "1777", "--size", str(size), "--tmpfs", target]
        self.mirrors[target] = False


def gpu_binds() -> list[Bind]:
    """What CUDA needs to reach NVIDIA GPUs from a sandbox: the device nodes (``/dev/nvidia*``) and
    ``/sys`` read-only (the driver's PCI facts); empty on a machine without them."""
    nodes = sorted(str(p) for p in Path("/dev").glob("nvidia*") if p.is_char_device())
    nodes += sorted(str(p) for p in Path("/dev/nvidia-caps").glob("*") if p.is_char_device())
    return [Bind(node, device=True) for node in nodes] + ([Bind("/sys")] if nodes else [])


def mounts(binds: list[Bind], scratch: str, tmpfs_bytes: int) -> list[str]:
    m = _Mounts()
    m.add("--proc", "/proc")
    m.add("--dev", "/dev")
    m.tmpfs("/dev/shm", tmpfs_bytes)
    m.tmpfs("/tmp", tmpfs_bytes)
    for name in SYSTEM:
        path = f"/{name}"
        if os.path.islink(path):
            m.add("--symlink", path, os.readlink(path))
        elif os.path.isdir(path):
            m.add("--ro-bind", path, path, mirror=True)
    for folder in python_folders():
        m.add("--ro-bind", folder, folder, mirror=True)
    for bind in sorted(binds, key=lambda b: (b.writable, b.device)):
        source = os.path.abspath(bind.source)
        option = "--dev-bind" if bind.device else "--bind" if bind.writable else "--ro-bind"
        m.add(option, bind.inside, source, mirror=source == bind.inside)
    m.add("--bind", scratch, scratch, mirror=True)
    m.args += ["--perms", "0555", "--dir", HOME, "--remount-ro", "/"]
    return m.args


_NAMESPACES = ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
               "--die-with-parent", "--new-session"]
_USER_NAMESPACE = ["--unshare-user", "--disable-userns", "--uid", str(INSIDE_ID), "--gid", str(INSIDE_ID)]


def command(argv: list[str], env: dict[str, str], binds: list[Bind], scratch: str, tmpfs_bytes: int,
            identity: Identity | None) -> list[str]:
    """The full command that runs ``argv`` in a sandbox (``identity``: see ``sandbox_identity``)."""
    bwrap = shutil.which("bwrap") or "bwrap"
    setenv = ["--clearenv"] + [arg for name, value in env.items() for arg in ("--setenv", name, value)]
    outer = [bwrap, *_NAMESPACES, *setenv, *mounts(binds, scratch, tmpfs_bytes)]  # without --chdir: as
    # root without CAP_DAC_OVERRIDE, the outer one may not enter the scratch folder, which is the sandbox user's
    if identity is None:
        return [bwrap, *_USER_NAMESPACE, *outer[1:], "--chdir", scratch, "--", *argv]
    setpriv = shutil.which("setpriv") or "setpriv"
    drop = [setpriv, "--reuid", str(identity.uid), "--regid", str(identity.gid), "--clear-groups",
            "--bounding-set", "-all", "--inh-caps", "-all", "--no-new-privs", "--"]
    inner = [bwrap, *_USER_NAMESPACE, "--die-with-parent", "--dev-bind", "/", "/", "--chdir", scratch, "--"]
    privileges = ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    return [*outer[:1], *privileges, *outer[1:], "--", *drop, *inner, *argv]
