"""UTKFace on first use: with no images and a reachable Hub, the runner's early data check downloads
LEMUR's parquet files (a local HTTP server stands in for the Hugging Face Hub), once, before any trial;
at one recorded commit, each file checked against the SHA-256 the Hub gives; --no-download and an
unreachable Hub keep the message saying where to put the files."""
import hashlib
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ab.nn import api
from ab.nn.dataset import download, utkface
from ab.nn.dataset.settings import DataSettings
from tests import helpers
from tests.test_sweep_cli import CONFIG, run

COMMIT = "0123456789abcdef0123456789abcdef01234567"
FILE = "data/train-00000-of-00001.parquet"


def _parquet(count: int = 40) -> bytes:
    ages = helpers.ages_like_utkface(count)
    images = []
    for i, age in enumerate(ages):
        buffer = io.BytesIO()
        helpers.make_face(age, size=24, seed=i).save(buffer, format="JPEG", quality=85)
        images.append({"bytes": buffer.getvalue(), "path": f"{i}.jpg"})
    sink = io.BytesIO()
    pq.write_table(pa.table({"image": images, "age": ages}), sink)
    return sink.getvalue()


class Hub(BaseHTTPRequestHandler):
    payload = b""
    files: dict = {}       # revision -> {rfilename: bytes}
    claimed: dict = {}     # rfilename -> the SHA-256 the API states (by default, the real one)
    sizes: dict = {}       # rfilename -> the size the API states (by default, the real one; None: none)
    seen: list = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        url = urlparse(self.path)
        type(self).seen.append(url.path)
        prefix = "/api/datasets/nu-delta/utkface/revision/"
        if url.path.startswith(prefix):
            revision = url.path[len(prefix):].replace("%2F", "/")
            files = self.files.get(revision)
            if files is None:
                return self._send(404, b"{}")
            siblings = [{"rfilename": "README.md", "size": 10}]
            siblings += [{"rfilename": name, "size": self.sizes.get(name, len(body)),
                          "lfs": {"sha256": self.claimed.get(name, hashlib.sha256(body).hexdigest()),
                                  "size": self.sizes.get(name, len(body))}}
                         for name, body in files.items()]
            return self._send(200, json.dumps({"sha": COMMIT if revision in ("main", COMMIT) else "f" * 40,
                                               "siblings": siblings}).encode())
        for revision in (COMMIT, "f" * 40):
            start = f"/datasets/nu-delta/utkface/resolve/{revision}/"
            if url.path.startswith(start):
                files = self.files[COMMIT if revision == COMMIT else "refs/convert/parquet"]
                body = files.get(url.path[len(start):])
                if body is not None:
                    begin = int(self.headers["Range"].split("=")[1].split("-")[0]) if "Range" in self.headers else 0
                    return self._send(206 if begin else 200, body[begin:])
        self._send(404, b"not found")

    def _send(self, code: int, body: bytes):
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def hub(monkeypatch):
    body = _parquet()
    Hub.files, Hub.claimed, Hub.sizes, Hub.seen = {"main": {FILE: body}, COMMIT: {FILE: body}}, {}, {}, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    yield Hub
    server.shutdown()


def test_the_first_sweep_downloads_the_data_before_any_trial(hub, root, tmp_path):
    empty = tmp_path / "utkface"
    empty.mkdir()
    assert run(root, empty, "-c", CONFIG, "-t", "1", "--max-samples", "8") == 0
    assert (empty / "data" / "train-00000-of-00001.parquet").read_bytes() == hub.files[COMMIT][FILE]
    manifest = json.loads((empty / "SOURCE.json").read_text())
    assert manifest["revision"] == COMMIT and manifest["files"][0]["sha256"] == hashlib.sha256(
        hub.files[COMMIT][FILE]).hexdigest()
    downloads = [p for p in hub.seen if p.startswith("/datasets/")]
    assert downloads == [f"/datasets/nu-delta/utkface/resolve/{COMMIT}/{FILE}"]  # once, at the resolved commit
    assert api.trials(db=root / "db" / "ab.nn.db").status.tolist() == ["complete"]
    assert run(root, empty, "-c", CONFIG, "-t", "2", "--max-samples", "8") == 0
    assert len([p for p in hub.seen if p.startswith("/datasets/")]) == 1  # the images are there now


def test_a_later_download_keeps_the_recorded_commit(hub, tmp_path):
    folder = tmp_path / "utkface"
    folder.mkdir()
    (folder / "SOURCE.json").write_text(json.dumps({"revision": COMMIT}))
    hub.files["main"] = {}  # main moved on: the recorded commit is still the one fetched
    source = utkface.available(folder, DataSettings(progress=False))
    assert source.kind == "parquet" and f"/api/datasets/nu-delta/utkface/revision/{COMMIT}" in hub.seen
    assert "/api/datasets/nu-delta/utkface/revision/main" not in hub.seen


def test_the_hubs_parquet_conversion_when_the_dataset_has_no_parquet_files(hub, tmp_path):
    hub.files = {"main": {}, "refs/convert/parquet": {"default/train/0000.parquet": hub.files[COMMIT][FILE],
                                                     "default/test/0000.parquet": b"not this split"}}
    folder = tmp_path / "utkface"
    assert utkface.available(folder, DataSettings(progress=False)).kind == "parquet"
    assert sorted(p.name for p in (folder / "data").iterdir()) == ["0000.parquet"]
    assert json.loads((folder / "SOURCE.json").read_text())["revision"] == "f" * 40


def test_a_file_that_does_not_match_the_hubs_checksum_is_refused(hub, tmp_path):
    hub.claimed = {FILE: "0" * 64}
    folder = tmp_path / "utkface"
    with pytest.raises(utkface.DataNotFound, match="checksum mismatch") as error:
        utkface.available(folder, DataSettings(progress=False))
    assert str(error.value).startswith(f"no UTKFace images in {folder}")
    assert not list((folder / "data").glob("*.parquet")) and not (folder / "SOURCE.json").exists()


def test_no_download_keeps_the_message_and_asks_nothing(hub, root, tmp_path, capsys):
    empty = tmp_path / "nothing"
    empty.mkdir()
    with pytest.raises(SystemExit, match="2"):
        run(root, empty, "-c", CONFIG, "-t", "1", "--no-download")
    out = capsys.readouterr()
    assert out.err.count(f"no UTKFace images in {empty}") == 1 and "automatic download" not in out.err
    assert len(out.err.strip().splitlines()) == 1
    assert hub.seen == [] and api.trials(db=root / "db" / "ab.nn.db").empty


def test_offline_the_download_fails_at_once_with_the_message(root, tmp_path, capsys):
    """The conftest points HF_ENDPOINT at a closed port: no network."""
    empty = tmp_path / "nothing"
    empty.mkdir()
    with pytest.raises(SystemExit, match="2"):
        run(root, empty, "-c", CONFIG, "-t", "1")
    text = capsys.readouterr().err
    assert text.count(f"no UTKFace images in {empty}") == 1 and "UTKFace.tar.gz" in text
    assert "automatic download failed too (cannot reach the Hugging Face Hub" in text
    assert "refused the connection" in text and len(text.strip().splitlines()) == 1
    assert api.trials(db=root / "db" / "ab.nn.db").empty


def test_the_download_command_prints_the_commit(hub, tmp_path, capsys):
    assert download.cli(["utkface", "--to", str(tmp_path / "d")]) == 0
    assert COMMIT in capsys.readouterr().out


def test_a_revision_pinned_in_the_code_is_the_only_one_asked_for(hub, tmp_path, capsys):
    hub.files["main"] = {}  # main moved on: the pin still names the commit
    download.fetch(download.HubDataset("nu-delta/utkface", revision=COMMIT), tmp_path, progress=False)
    assert [p for p in hub.seen if "/revision/" in p] == [f"/api/datasets/nu-delta/utkface/revision/{COMMIT}"]
    assert [p for p in hub.seen if "/resolve/" in p] == [f"/datasets/nu-delta/utkface/resolve/{COMMIT}/{FILE}"]
    assert "no revision is pinned" not in capsys.readouterr().err
    with pytest.raises(ValueError, match="40-digit commit"):
        download.HubDataset("nu-delta/utkface", revision="main")


def test_without_a_pin_main_is_resolved_to_a_commit_and_said(hub, tmp_path, capsys):
    assert download.UTKFACE.revision == download.UTKFACE_REVISION
    download.fetch(download.HubDataset("nu-delta/utkface"), tmp_path, progress=False)
    assert f"no revision is pinned in this code; taking the latest commit, {COMMIT}" in capsys.readouterr().err
    assert all(f"/resolve/{COMMIT}/" in p for p in hub.seen if p.startswith("/datasets/"))


def test_an_answer_for_another_commit_is_refused(hub, tmp_path):
    other = "a" * 40
    hub.files[other] = hub.files[COMMIT]  # the fake Hub answers "f" * 40 for it
    with pytest.raises(download.DownloadError, match=f"asked the Hub for nu-delta/utkface@{other}, it answered"):
        download.fetch(download.HubDataset("nu-delta/utkface", revision=other), tmp_path, progress=False)
    assert not (tmp_path / "data").exists()


def test_a_file_larger_than_the_hub_states_is_stopped_and_nothing_is_kept(hub, tmp_path):
    hub.sizes = {FILE: 1000}
    with pytest.raises(download.DownloadTooLarge, match="the source stated 1,000"):
        download.fetch(download.UTKFACE, tmp_path, progress=False)
    assert list((tmp_path / "data").iterdir()) == [] and not (tmp_path / "SOURCE.json").exists()


@pytest.mark.parametrize("sizes, names, message", [
    ({FILE: None}, None, "no size"),
    ({}, {"data/../train-0.parquet": b"x"}, "lists a file named"),
    ({}, {"data/train-\n.parquet": b"x"}, "lists a file named"),
    ({}, {"data/train-0.parquet": b"x", "data/train/train-0.parquet": b"y"}, "two parquet files of one name"),
])
def test_hub_listings_that_would_leave_the_bounds_are_refused(hub, tmp_path, sizes, names, message):
    hub.sizes = sizes
    if names is not None:
        hub.files = {"main": names, COMMIT: names}
    with pytest.raises(download.DownloadError, match=message):
        download.fetch(download.UTKFACE, tmp_path, progress=False)
    assert not (tmp_path / "data").exists()


def test_a_hub_answer_too_large_or_a_broken_record_is_a_clear_error(hub, tmp_path, monkeypatch):
    (tmp_path / "SOURCE.json").write_text("{not json")
    with pytest.raises(download.DownloadError, match="SOURCE.json is not readable"):
        download.fetch(download.UTKFACE, tmp_path, progress=False)
    (tmp_path / "SOURCE.json").write_text(json.dumps({"revision": "../../etc"}))
    with pytest.raises(download.DownloadError, match="records no commit"):
        download.fetch(download.UTKFACE, tmp_path, progress=False)
    (tmp_path / "SOURCE.json").unlink()
    monkeypatch.setattr(download, "MAX_INFO_BYTES", 100)
    with pytest.raises(download.DownloadError, match="larger than 100 bytes"):
        download.fetch(download.UTKFACE, tmp_path, progress=False)
    assert hub.seen and not [p for p in hub.seen if p.startswith("/datasets/")]
