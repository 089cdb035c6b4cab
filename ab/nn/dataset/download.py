"""Download dataset files with ``requests``: progress bar, resume, SHA-256 check, atomic rename.

``python -m ab.nn.dataset.download utkface [--to DIR] [--url URL --sha256 HEX]``. Without a
network the error says which files to put where by hand.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests
from tqdm.auto import tqdm

from ab.nn.util.digest import sha256_of

CHUNK = 1 << 16


@dataclass(frozen=True)
class RemoteFile:
    url: str
    name: str
    sha256: str | None = None


SOURCES: dict[str, tuple[RemoteFile, ...]] = {
    # The parquet layout LEMUR reads (Hugging Face dataset nu-delta/utkface). Its checksum is not
    # published; a download without one prints the digest so the next can be pinned with --sha256.
    "utkface": (RemoteFile("https://huggingface.co/datasets/nu-delta/utkface/resolve/main/data/"
                           "train-00000-of-00001.parquet", "train-00000-of-00001.parquet"),),
}


class DownloadError(RuntimeError):
    """A download that could not complete; the message says why and what to do instead."""


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
    p.add_argument("--url", default=None, help="download this URL instead (e.g. a UTKFace.tar.gz mirror)")
    p.add_argument("--sha256", default=None, help="expected SHA-256 of the file")
    p.add_argument("--root", default=None, help="workspace root")
    args = p.parse_args(argv)
    folder = Path(args.to) if args.to else Workspace.resolve(args.root).root / "data" / args.dataset
    remotes = SOURCES[args.dataset]
    if args.url:
        remotes = (RemoteFile(args.url, Path(args.url.split("?")[0]).name or "download", args.sha256),)
    elif args.sha256:
        remotes = (RemoteFile(remotes[0].url, remotes[0].name, args.sha256),)
    try:
        for remote in remotes:
            print(download(remote, folder))
    except DownloadError as error:
        accepted = "\n  - ".join(FORMATS)
        p.exit(1, f"{p.prog}: error: {error}\nWithout a network, put one of these in {folder} by hand:\n"
                  f"  - {accepted}\n")
    return 0


if __name__ == "__main__":
    sys.exit(cli())
