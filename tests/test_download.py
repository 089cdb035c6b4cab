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
