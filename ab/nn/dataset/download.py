"""Download dataset files with ``requests``: progress bar, resume, size bound, SHA-256 check, atomic rename.

``python -m ab.nn.dataset.download utkface [--to DIR] [--revision REV]`` fetches the parquet files of
the Hugging Face dataset LEMUR reads (``nu-delta/utkface``, split ``train``); ``--url URL --sha256 HEX
[--bytes N]`` fetches any archive instead. The UTKFace loader calls the same download on first use when
it finds no images (``--no-download`` turns that off). Without a network the error says which files to
put where.

**Revision.** The files are taken at one commit of the dataset, and every URL names that commit, never
a branch: ``--revision`` if given, else the commit recorded in the data folder's ``SOURCE.json`` by an
earlier download, else ``UTKFACE_REVISION`` below, else the commit ``main`` points to at the first
download (said on stderr, and recorded in ``SOURCE.json`` for every later download of that folder). A
commit the Hub answers with must be the one asked for. ``UTKFACE_REVISION`` is not filled in yet: the
machines this was written on cannot reach the Hub, and a commit that cannot be checked is not written
down here. Pin it once known: ``python -m ab.nn.dataset.download utkface`` prints the commit it used.

**Size and checksum.** The Hub states each file's size and SHA-256 (its LFS object) before a byte is
downloaded; a file without them is refused. A download stops as soon as more bytes arrive than stated
(or than ``MAX_FILE_BYTES``, or ``--max-bytes``, for a file whose size is not known), before the hash
is computed, and a file that needs more space than the disk has free is refused before it starts. A
finished file must match its SHA-256, or it is deleted and the download fails. The checksums come from
the same Hub as the files: they catch a broken transfer or a mirror whose bytes differ from what the
API states, not a Hub that lies about both. ``$HF_ENDPOINT`` (as in ``huggingface_hub``) points at
another Hub, e.g. a mirror.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import quote, urlparse

import requests
from tqdm.auto import tqdm

from ab.nn.util.digest import sha256_of
from ab.nn.util.filelock import locked
from ab.nn.util.arguments import Parser

CHUNK = 1 << 16
ENDPOINT_ENV = "HF_ENDPOINT"
DEFAULT_ENDPOINT = "https://huggingface.co"
CONNECT_SECONDS = 5.0   # an unreachable Hub is known at once: the download fails fast offline
READ_SECONDS = 30.0
MANIFEST = "SOURCE.json"
MAX_FILE_BYTES = 4 << 30
"""Largest file downloaded when its size is not known beforehand (``--url`` without ``--bytes``);
a stated size above it is refused too."""
MAX_INFO_BYTES = 16 << 20
"""Largest answer of the Hub's API read (the file list of one commit)."""
COMMIT = re.compile(r"[0-9a-f]{40}")
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\.parquet")


@dataclass(frozen=True)
class RemoteFile:
    url: str
    name: str
    sha256: str | None = None
    size: int | None = None  # bytes, as the source states them before the download


@dataclass(frozen=True)
class HubDataset:
    """The parquet files of one split of a Hugging Face dataset, at one commit."""

    repo: str
    split: str = "train"
    revision: str | None = None  # a commit; None: main's commit at the first download (then SOURCE.json's)

    def __post_init__(self):
        if self.revision is not None and not COMMIT.fullmatch(self.revision):
            raise ValueError(f"{self.repo}: a pinned revision is a 40-digit commit hash, not {self.revision!r}")


UTKFACE_REVISION: str | None = None
"""The commit of ``nu-delta/utkface`` this code downloads; not known yet (see the module's docstring)."""
UTKFACE = HubDataset("nu-delta/utkface", revision=UTKFACE_REVISION)
SOURCES: dict[str, HubDataset] = {"utkface": UTKFACE}


class DownloadError(RuntimeError):
    """A download that could not complete; the message says why and what to do instead."""


class DownloadTooLarge(DownloadError):
    """More bytes than stated (or than the cap), or more than the disk has free: stopped, not retried."""


def endpoint() -> str:
    return (os.environ.get(ENDPOINT_ENV) or DEFAULT_ENDPOINT).rstrip("/")


def _info(dataset: HubDataset, revision: str, base: str) -> dict:
    url = f"{base}/api/datasets/{dataset.repo}/revision/{quote(revision, safe='')}"
    try:
        with requests.get(url, params={"blobs": "true"}, timeout=(CONNECT_SECONDS, READ_SECONDS),
                          stream=True) as response:
            response.raise_for_status()
            body = bytearray()
            for chunk in response.iter_content(CHUNK):
                body += chunk
                if len(body) > MAX_INFO_BYTES:
                    raise DownloadError(f"the Hub's answer for {dataset.repo}@{revision} is larger than "
                                        f"{MAX_INFO_BYTES:,} bytes; refused")
        info = json.loads(body)
    except (requests.exceptions.RequestException, ValueError, RecursionError) as error:
        raise DownloadError(f"cannot reach the Hugging Face Hub for {dataset.repo}@{revision}: "
                            f"{_reason(error)}") from None
    if not isinstance(info, dict):
        raise DownloadError(f"the Hub's answer for {dataset.repo}@{revision} is not a JSON object")
    return info


def _split_files(info: dict, split: str, prefix: str = "") -> list[dict]:
    """Parquet files of ``split``: ``data/train-*.parquet`` style names, or files under ``prefix``."""
    found = []
    siblings = info.get("siblings")
    for sibling in siblings if isinstance(siblings, list) else ():
        name = sibling.get("rfilename") if isinstance(sibling, dict) else None
        if not isinstance(name, str):
            continue
        path = PurePosixPath(name)
        if path.suffix != ".parquet":
            continue
        if prefix and name.startswith(prefix) or not prefix and (path.name.startswith(f"{split}-")
                                                                  or split in path.parts[:-1]):
            found.append(sibling)
    return sorted(found, key=lambda s: s["rfilename"])


def _remote(dataset: HubDataset, base: str, commit: str, sibling: dict) -> RemoteFile:
    """A listed file with the name, size and SHA-256 the Hub states for it; anything missing or odd
    is refused (the name becomes a path here, the size bounds the download)."""
    rfilename = sibling["rfilename"]
    name = PurePosixPath(rfilename).name
    lfs = sibling.get("lfs") if isinstance(sibling.get("lfs"), dict) else {}
    sha256, size = lfs.get("sha256"), lfs.get("size", sibling.get("size"))
    if not _FILE_NAME.fullmatch(name) or ".." in PurePosixPath(rfilename).parts:
        raise DownloadError(f"{dataset.repo} lists a file named {rfilename!r:.100}; refused")
    if not isinstance(sha256, str) or not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise DownloadError(f"the Hub gives no SHA-256 for {dataset.repo}/{rfilename}; an unverifiable download "
                            f"is refused")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise DownloadError(f"the Hub gives no size for {dataset.repo}/{rfilename}; an unbounded download is "
                            f"refused")
    return RemoteFile(f"{base}/datasets/{dataset.repo}/resolve/{commit}/{quote(rfilename)}", name, sha256, size)


def hub_files(dataset: HubDataset, revision: str | None = None) -> tuple[str, list[RemoteFile]]:
    """``(commit, files)`` of a dataset split at ``revision`` (default: its pinned one, else ``main``):
    its own parquet files, else the Hub's parquet conversion (``refs/convert/parquet``) of that split.
    Every file carries the size and SHA-256 the Hub records for it; one without is refused, and so is
    an answer for another commit than the one asked for."""
    base = endpoint()
    wanted = revision or dataset.revision or "main"
    asked = wanted
    info = _info(dataset, asked, base)
    files = _split_files(info, dataset.split)
    if not files:
        asked = "refs/convert/parquet"
        info = _info(dataset, asked, base)
        files = _split_files(info, dataset.split, prefix=f"default/{dataset.split}/")
    commit = info.get("sha")
    if not isinstance(commit, str) or not COMMIT.fullmatch(commit) or not files:
        raise DownloadError(f"{dataset.repo}@{wanted} has no parquet files of split {dataset.split!r} at a commit")
    if COMMIT.fullmatch(asked) and commit != asked:
        raise DownloadError(f"asked the Hub for {dataset.repo}@{asked}, it answered with commit {commit}; refused")
    remotes = [_remote(dataset, base, commit, sibling) for sibling in files]
    names = [r.name for r in remotes]
    if len(set(names)) != len(names):
        raise DownloadError(f"{dataset.repo}@{commit} lists two parquet files of one name; refused")
    return commit, remotes


def _recorded_revision(manifest: Path) -> str | None:
    """The commit an earlier download of this folder recorded, if any."""
    if not manifest.exists():
        return None
    try:
        recorded = json.loads(manifest.read_text())
    except (OSError, ValueError, RecursionError) as error:
        raise DownloadError(f"{manifest} is not readable ({_reason(error)}); delete it to download again") from None
    revision = recorded.get("revision") if isinstance(recorded, dict) else None
    if not isinstance(revision, str) or not COMMIT.fullmatch(revision):
        raise DownloadError(f"{manifest} records no commit (40 hex digits); delete it to download again")
    return revision


def fetch(dataset: HubDataset, folder: Path, progress: bool = True, revision: str | None = None) -> Path:
    """Download a dataset split's parquet files into ``folder/data/`` (under a lock: workers starting
    together download once) at ``revision`` if given, else at the commit of ``folder/SOURCE.json``,
    else at the pinned one, else at ``main``'s; the commit, sizes and checksums are (re)written to
    ``SOURCE.json``."""
    folder = Path(folder)
    with locked(folder / ".download.lock"):
        manifest = folder / MANIFEST
        wanted = revision or _recorded_revision(manifest)
        commit, remotes = hub_files(dataset, wanted)
        if wanted is None and dataset.revision is None:
            print(f"{dataset.repo}: no revision is pinned in this code; taking the latest commit, {commit} "
                  f"(recorded in {manifest})", file=sys.stderr)
        for remote in remotes:
            download(remote, folder / "data", progress=progress)
        manifest.write_text(json.dumps({"repo": dataset.repo, "split": dataset.split, "revision": commit,
                                        "files": [{"name": r.name, "sha256": r.sha256, "bytes": r.size}
                                                  for r in remotes]}, indent=1))
    return manifest


def download(remote: RemoteFile, folder: Path, retries: int = 3, timeout: float = 30.0,
             progress: bool = True, max_bytes: int = MAX_FILE_BYTES) -> Path:
    """Fetch ``remote`` into ``folder``; a partial ``.part`` file is resumed with an HTTP Range
    request, the download stops once more bytes arrive than ``remote.size`` (else ``max_bytes``),
    and the file only gets its final name after its size and checksum matched."""
    limit = remote.size if remote.size is not None else max_bytes
    if limit > max_bytes:
        raise DownloadError(f"{remote.name}: {limit:,} bytes stated, more than the cap of {max_bytes:,} bytes "
                            f"(--max-bytes)")
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / remote.name
    if target.is_file() and (remote.size is None or target.stat().st_size == remote.size) \
            and (remote.sha256 is None or sha256_of(target) == remote.sha256):
        return target
    partial = folder / f"{remote.name}.part"
    if partial.exists() and partial.stat().st_size > limit:
        partial.unlink()
    try:
        for attempt in range(retries + 1):
            try:
                _fetch(remote, partial, timeout, progress, limit)
                break
            except requests.exceptions.HTTPError as error:
                raise DownloadError(f"cannot download {remote.url}: {_reason(error)}") from error
            except requests.exceptions.RequestException as error:  # dropped or refused: resume from .part
                if attempt == retries:
                    raise DownloadError(f"cannot download {remote.url} after {retries + 1} attempts: "
                                        f"{_reason(error)}") from error
                time.sleep(0.2 * 2 ** attempt)
    except DownloadTooLarge:
        partial.unlink(missing_ok=True)
        raise
    except OSError as error:  # the disk filled up after all: leave nothing behind
        partial.unlink(missing_ok=True)
        raise DownloadError(f"{remote.name}: cannot write into {folder} ({error.strerror or error}); the partial "
                            f"file was deleted") from None
    digest = sha256_of(partial)
    if remote.sha256 is not None and digest != remote.sha256:
        partial.unlink()
        raise DownloadError(f"{remote.name}: checksum mismatch (expected {remote.sha256}, got {digest}); "
                            f"the partial file was deleted, run again")
    if remote.sha256 is None:
        print(f"{remote.name}: sha256 {digest} (pin it with --sha256)", file=sys.stderr)
    os.replace(partial, target)
    return target


def _reason(error: Exception) -> str:
    """What went wrong, in words: a connection failure's nested urllib3 text says it least clearly."""
    if isinstance(error, requests.exceptions.ConnectionError):
        host = urlparse(getattr(error.request, "url", "") or "").hostname or "the server"
        text = str(error)
        if "NameResolutionError" in text or "Name or service not known" in text or "Failed to resolve" in text:
            return f"no network: the name {host} cannot be resolved"
        if "Connection refused" in text:
            return f"{host} refused the connection"
    if isinstance(error, requests.exceptions.Timeout):
        return "the connection timed out"
    text = " ".join(str(error).split())
    return text if len(text) < 200 else text[:200] + "..."


def _content_length(response) -> int | None:
    try:
        value = int(response.headers.get("Content-Length", ""))
    except ValueError:
        return None
    return value if value >= 0 else None


def _fetch(remote: RemoteFile, partial: Path, timeout: float, progress: bool, limit: int) -> None:
    """One request for the rest of ``remote``; raises a ``requests`` error when the connection drops
    (the caller resumes) and ``DownloadTooLarge`` when the answer would pass ``limit``."""
    have = partial.stat().st_size if partial.exists() else 0
    headers = {"Accept-Encoding": "identity", **({"Range": f"bytes={have}-"} if have else {})}
    with requests.get(remote.url, stream=True, timeout=timeout, headers=headers) as response:
        if response.status_code == 416:  # already complete
            return
        response.raise_for_status()
        if have and response.status_code != 206:  # the server ignored the range: start over
            have = 0
        length = _content_length(response)
        announced = length + have if length is not None else None
        if announced is not None and (announced > limit or remote.size is not None and announced != remote.size):
            raise DownloadTooLarge(f"{remote.name}: the server sends {announced:,} bytes, "
                                   f"{'' if remote.size is None else f'the source stated {remote.size:,} and '}the "
                                   f"cap is {limit:,}; refused before downloading")
        free = shutil.disk_usage(partial.parent).free
        if (announced if announced is not None else limit) - have > free:
            needed = (announced if announced is not None else limit) - have
            raise DownloadTooLarge(f"{remote.name}: needs {needed:,} bytes, {partial.parent} has {free:,} free")
        total = remote.size if remote.size is not None else announced
        written = have
        with open(partial, "ab" if have else "wb") as out, tqdm(total=total, initial=have, unit="B", unit_scale=True,
                                                                desc=remote.name, disable=not progress) as bar:
            for chunk in response.iter_content(CHUNK):
                written += len(chunk)
                if written > limit:
                    raise DownloadTooLarge(f"{remote.name}: the server sent more than the {limit:,} bytes "
                                           f"{'stated' if remote.size is not None else 'of the cap'}; stopped and "
                                           f"deleted")
                out.write(chunk)
                bar.update(len(chunk))
        if total is not None and written < total:
            raise requests.exceptions.ConnectionError(f"connection dropped at {written} of {total} bytes")


def cli(argv=None) -> int:
    from ab.nn.dataset.utkface import FORMATS
    from ab.nn.workspace import Workspace

    p = Parser(prog="python -m ab.nn.dataset.download", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", choices=sorted(SOURCES))
    p.add_argument("--to", default=None, help="target folder (default: <root>/data/<dataset>)")
    p.add_argument("--revision", default=None, help="commit (or branch) of the Hugging Face dataset")
    p.add_argument("--url", default=None, help="download this URL instead (e.g. a UTKFace.tar.gz mirror)")
    p.add_argument("--sha256", default=None, help="expected SHA-256 of the --url file")
    p.add_argument("--bytes", type=int, default=None, help="expected size of the --url file: a download stops "
                                                           "as soon as more arrives")
    p.add_argument("--max-bytes", type=int, default=MAX_FILE_BYTES,
                   help=f"largest file downloaded (default {MAX_FILE_BYTES:,})")
    p.add_argument("--root", default=None, help="workspace root")
    args = p.parse_args(argv)
    if args.bytes is not None and args.bytes < 0 or args.max_bytes < 1:
        p.error("--bytes and --max-bytes must be positive")
    folder = Path(args.to) if args.to else Workspace.resolve(args.root).root / "data" / args.dataset
    try:
        if args.url:
            name = Path(args.url.split("?")[0]).name
            remote = RemoteFile(args.url, name if name not in ("", ".", "..") else "download", args.sha256, args.bytes)
            print(download(remote, folder, max_bytes=args.max_bytes))
        else:
            manifest = fetch(SOURCES[args.dataset], folder, revision=args.revision)
            recorded = json.loads(manifest.read_text())
            print(f"{recorded['repo']} at commit {recorded['revision']}: {len(recorded['files'])} file(s) in "
                  f"{folder / 'data'} (recorded in {manifest})")
    except DownloadError as error:
        accepted = "\n  - ".join(FORMATS)
        p.exit(1, f"{p.prog}: error: {error}\nWithout a network, put one of these in {folder} by hand:\n"
                  f"  - {accepted}\n")
    return 0


if __name__ == "__main__":
    sys.exit(cli())
