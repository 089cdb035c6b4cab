"""Downloads against a local HTTP server: resume after a dropped connection, checksum, no network."""
import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ab.nn.dataset import download as dl

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


class Handler(BaseHTTPRequestHandler):
    drops_left = 0
    requests_seen: list = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        start = 0
        if "Range" in self.headers:
            start = int(self.headers["Range"].split("=")[1].split("-")[0])
        body = PAYLOAD[start:]
        type(self).requests_seen.append(start)
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body)))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        self.end_headers()
        if type(self).drops_left > 0:
            type(self).drops_left -= 1
            self.wfile.write(body[: len(body) // 3])
            self.wfile.flush()
            self.connection.close()  # drop mid-file
            return
        self.wfile.write(body)


@pytest.fixture
def server():
    Handler.drops_left, Handler.requests_seen = 0, []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/UTKFace.tar.gz"
    httpd.shutdown()


def test_download_resumes_after_a_dropped_connection(server, tmp_path):
    Handler.drops_left = 1
    good = hashlib.sha256(PAYLOAD).hexdigest()
    path = dl.download(dl.RemoteFile(server, "UTKFace.tar.gz", good), tmp_path, progress=False)
    assert path.read_bytes() == PAYLOAD and not (tmp_path / "UTKFace.tar.gz.part").exists()
    assert Handler.requests_seen[0] == 0 and Handler.requests_seen[1] > 0  # the second asked for the rest


def test_wrong_checksum_is_refused_and_nothing_is_left_behind(server, tmp_path):
    with pytest.raises(dl.DownloadError, match="checksum mismatch"):
        dl.download(dl.RemoteFile(server, "UTKFace.tar.gz", "0" * 64), tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_no_network_explains_what_to_do(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        dl.cli(["utkface", "--to", str(tmp_path), "--url", "http://127.0.0.1:9/UTKFace.tar.gz"])
    assert stopped.value.code == 1
    err = capsys.readouterr().err
    assert "cannot download" in err and "UTKFace.tar.gz" in err and "parquet" in err


class Endless(BaseHTTPRequestHandler):
    """Announces ``length`` bytes (or nothing) and then sends ``sends`` bytes (64 MiB: as good as
    never stopping, for a download that should stop after a few hundred kB)."""

    length: int | None = None
    sends = 0
    sent = 0

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.send_response(200)
        if self.length is not None:
            self.send_header("Content-Length", str(self.length))
        self.end_headers()
        block = b"\0" * 65536
        try:
            while type(self).sent < self.sends:
                self.wfile.write(block)
                type(self).sent += len(block)
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture
def endless():
    Endless.length, Endless.sends, Endless.sent = None, 64 << 20, 0
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Endless)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/part.parquet"
    httpd.shutdown()


def test_a_server_that_never_stops_is_cut_at_the_stated_size(endless, tmp_path):
    stated = 300_000
    with pytest.raises(dl.DownloadTooLarge, match="more than the 300,000 bytes stated"):
        dl.download(dl.RemoteFile(endless, "part.parquet", "0" * 64, stated), tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []  # stopped before the hash, nothing left
    assert Endless.sent < 32 << 20  # it stopped reading at once, not at the end of the stream


def test_without_a_stated_size_the_cap_bounds_the_download(endless, tmp_path):
    with pytest.raises(dl.DownloadTooLarge, match="more than the 200,000 bytes of the cap"):
        dl.download(dl.RemoteFile(endless, "part.parquet"), tmp_path, progress=False, max_bytes=200_000)
    assert list(tmp_path.iterdir()) == []


def test_a_length_other_than_the_stated_one_is_refused_before_downloading(endless, tmp_path):
    Endless.length, Endless.sends = 10_000_000, 10_000_000
    with pytest.raises(dl.DownloadTooLarge, match="sends 10,000,000 bytes, the source stated 1,000"):
        dl.download(dl.RemoteFile(endless, "part.parquet", "0" * 64, 1000), tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_a_file_larger_than_the_disk_has_free_is_refused_before_it_starts(endless, tmp_path):
    import shutil

    free = shutil.disk_usage(tmp_path).free
    Endless.length, Endless.sends = free + 1, 0
    with pytest.raises(dl.DownloadTooLarge, match="free"):
        dl.download(dl.RemoteFile(endless, "part.parquet", "0" * 64, free + 1), tmp_path, progress=False,
                    max_bytes=free + 1)
    assert list(tmp_path.iterdir()) == []


def test_a_stated_size_over_the_cap_is_refused_without_a_request(endless, tmp_path):
    with pytest.raises(dl.DownloadError, match="more than the cap"):
        dl.download(dl.RemoteFile(endless, "part.parquet", "0" * 64, 10 ** 12), tmp_path, progress=False)
    assert Endless.sent == 0 and list(tmp_path.iterdir()) == []


def test_the_size_bound_cli_flags(server, tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        dl.cli(["utkface", "--to", str(tmp_path), "--url", server, "--bytes", "1000"])
    assert stopped.value.code == 1 and "sends 1,048,576 bytes, the source stated 1,000" in capsys.readouterr().err
    good = hashlib.sha256(PAYLOAD).hexdigest()
    assert dl.cli(["utkface", "--to", str(tmp_path), "--url", server, "--sha256", good,
                   "--bytes", str(len(PAYLOAD))]) == 0
    assert (tmp_path / "UTKFace.tar.gz").read_bytes() == PAYLOAD
