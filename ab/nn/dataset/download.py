"""Download dataset files with ``requests``: progress bar, resume, SHA-256 check, atomic rename.

``python -m ab.nn.dataset.download utkface [--to DIR] [--revision REV]`` fetches the parquet files of
the Hugging Face dataset LEMUR reads (``nu-delta/utkface``, split ``train``); ``--url URL --sha256 HEX``
fetches any archive instead. The UTKFace loader calls the same download on first use when it finds no
images (``--no-download`` turns that off). Without a network the error says which files to put where.

**Revision and checksums.** The files are taken at one commit of the dataset: ``UTKFACE.revision`` when
it is pinned, else the commit ``main`` points to at the first download, which is written to
``SOURCE.json`` in the data folder and used by every later download (a resumed or repeated one) of that
folder. Each file must match the SHA-256 the Hub records for it at that commit (its LFS object id),
or it is deleted and the download fails. No commit is pinned in this code yet: the machines this was
written on cannot reach the Hub, and a commit or hash that cannot be checked is not written down here.
Pin it once known: ``python -m ab.nn.dataset.download utkface`` prints the commit it used.
``$HF_ENDPOINT`` (as in ``huggingface_hub``) points at another Hub, e.g. a mirror.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import quote

import requests
from tqdm.auto import tqdm

from ab.nn.util.digest import sha256_of
from ab.nn.util.filelock import locked

CHUNK = 1 << 16
ENDPOINT_ENV = "HF_ENDPOINT"
DEFAULT_ENDPOINT = "https://huggingface.co"
CONNECT_SECONDS = 5.0   # an unreachable Hub is known at once: the download fails fast offline
READ_SECONDS = 30.0
MANIFEST = "SOURCE.json"


@dataclass(frozen=True)
class RemoteFile:
    url: str
    name: str
    sha256: str | None = None


@dataclass(frozen=True)
class HubDataset:
    """The parquet files of one split of a Hugging Face dataset, at one commit."""

    repo: str
    split: str = "train"
    revision: str | None = None  # a commit; None: main's commit at the first download (then SOURCE.json's)


UTKFACE = HubDataset("nu-delta/utkface")
SOURCES: dict[str, HubDataset] = {"utkface": UTKFACE}


class DownloadError(RuntimeError):
    """A download that could not complete; the message says why and what to do instead."""


def endpoint() -> str:
    return (os.environ.get(ENDPOINT_ENV) or DEFAULT_ENDPOINT).rstrip("/")


def _info(dataset: HubDataset, revision: str, base: str) -> dict:
    url = f"{base}/api/datasets/{dataset.repo}/revision/{quote(revision, safe='')}"
    try:
        response = requests.get(url, params={"blobs": "true"}, timeout=(CONNECT_SECONDS, READ_SECONDS))
        response.raise_for_status()
        return response.json()
    except (requests.exceptions.RequestException, ValueError) as error:
        raise DownloadError(f"cannot reach the Hugging Face Hub for {dataset.repo}@{revision}: "
                            f"{_reason(error)}") from None


def _split_files(info: dict, split: str, prefix: str = "") -> list[dict]:
    """Parquet files of ``split``: ``data/train-*.parquet`` style names, or files under ``prefix``."""
    found = []
    for sibling in info.get("siblings") or ():
        name = sibling.get("rfilename", "")
        path = PurePosixPath(name)
        if path.suffix != ".parquet":
            continue
        if prefix and name.startswith(prefix) or not prefix and (path.name.startswith(f"{split}-")
                                                                  or split in path.parts[:-1]):
            found.append(sibling)
    return sorted(found, key=lambda s: s["rfilename"])


def hub_files(dataset: HubDataset, revision: str | None = None) -> tuple[str, list[RemoteFile]]:
    """``(commit, files)`` of a dataset split at ``revision`` (default: its pinned one, else ``main``):
    its own parquet files, else the Hub's parquet conversion (``refs/convert/parquet``) of that split.
    Every file carries the SHA-256 the Hub records for it; one without is refused."""
    base = endpoint()
    wanted = revision or dataset.revision or "main"
    info = _info(dataset, wanted, base)
    files = _split_files(info, dataset.split)
    if not files:
        info = _info(dataset, "refs/convert/parquet", base)
        files = _split_files(info, dataset.split, prefix=f"default/{dataset.split}/")
    commit = info.get("sha")
    if not commit or not files:
        raise DownloadError(f"{dataset.repo}@{wanted} has no parquet files of split {dataset.split!r}")
    remotes = []
    for sibling in files:
        sha256 = (sibling.get("lfs") or {}).get("sha256")
        if not sha256:
            raise DownloadError(f"the Hub gives no SHA-256 for {dataset.repo}/{sibling['rfilename']}; an unverifiable "
                                f"download is refused")
        remotes.append(RemoteFile(f"{base}/datasets/{dataset.repo}/resolve/{commit}/{quote(sibling['rfilename'])}",
                                  PurePosixPath(sibling["rfilename"]).name, sha256))
    return commit, remotes


def fetch(dataset: HubDataset, folder: Path, progress: bool = True, revision: str | None = None) -> Path:
    """Download a dataset split's parquet files into ``folder/data/`` (under a lock: workers starting
    together download once) at the commit of ``folder/SOURCE.json`` if there is one, else at
    ``revision``/the pinned one/``main``; the commit and checksums are (re)written to ``SOURCE.json``."""
    folder = Path(folder)
    with locked(folder / ".download.lock"):
        manifest = folder / MANIFEST
        recorded = json.loads(manifest.read_text()) if manifest.exists() else {}
        commit, remotes = hub_files(dataset, revision or recorded.get("revision"))
        for remote in remotes:
            download(remote, folder / "data", progress=progress)
        manifest.write_text(json.dumps({"repo": dataset.repo, "split": dataset.split, "revision": commit,
                                        "files": [{"name": r.name, "sha256": r.sha256} for r in remotes]}, indent=1))
    return manifest


def download(remote: RemoteFile, folder: Path, retries: int = 3, timeout: float = 30.0,
             progress: bool = True) -> Path:
    """Fetch ``remote`` into ``folder``; a partial ``.part`` file is resumed with an HTTP Range
    request, and the file only gets its final name after its checksum matched."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / remote.name
    if target.exists() and (remote.sha256 is None or sha256_of(target) == remote.sha256):
        return target
    partial = folder / f"{remote.name}.part"
    for attempt in range(retries + 1):
        try:
            _fetch(remote.url, partial, timeout, progress)
            break
        except requests.exceptions.HTTPError as error:
            raise DownloadError(f"cannot download {remote.url}: {_reason(error)}") from error
        except requests.exceptions.RequestException as error:  # dropped or refused: resume from .part
            if attempt == retries:
                raise DownloadError(f"cannot download {remote.url} after {retries + 1} attempts: "
                                    f"{_reason(error)}") from error
            time.sleep(0.2 * 2 ** attempt)
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
    text = str(error)
    return text if len(text) < 200 else text[:200] + "..."


def _fetch(url: str, partial: Path, timeout: float, progress: bool) -> None:
    have = partial.stat().st_size if partial.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    with requests.get(url, stream=True, timeout=timeout, headers=headers) as response:
        if response.status_code == 416:  # already complete
            return
        response.raise_for_status()
        if have and response.status_code != 206:  # the server ignored the range: start over
            have = 0
        total = response.headers.get("Content-Length")
        total = int(total) + have if total is not None else None
        mode = "ab" if have else "wb"
        with open(partial, mode) as out, tqdm(total=total, initial=have, unit="B", unit_scale=True,
                                              desc=partial.name[:-5], disable=not progress) as bar:
            for chunk in response.iter_content(CHUNK):
                out.write(chunk)
                bar.update(len(chunk))
        if total is not None and partial.stat().st_size < total:
            raise requests.exceptions.ConnectionError(
                f"connection dropped at {partial.stat().st_size} of {total} bytes")


def cli(argv=None) -> int:
    from ab.nn.dataset.utkface import FORMATS
    from ab.nn.workspace import Workspace

    p = argparse.ArgumentParser(prog="python -m ab.nn.dataset.download", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", choices=sorted(SOURCES))
    p.add_argument("--to", default=None, help="target folder (default: <root>/data/<dataset>)")
    p.add_argument("--revision", default=None, help="commit (or branch) of the Hugging Face dataset")
    p.add_argument("--url", default=None, help="download this URL instead (e.g. a UTKFace.tar.gz mirror)")
    p.add_argument("--sha256", default=None, help="expected SHA-256 of the --url file")
    p.add_argument("--root", default=None, help="workspace root")
    args = p.parse_args(argv)
    folder = Path(args.to) if args.to else Workspace.resolve(args.root).root / "data" / args.dataset
    try:
        if args.url:
            print(download(RemoteFile(args.url, Path(args.url.split("?")[0]).name or "download", args.sha256), folder))
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
