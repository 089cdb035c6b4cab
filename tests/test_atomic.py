"""``ab.nn.util.atomic``: a file is replaced whole or not at all, and a writer that fails leaves the old
file and no temporary one."""
import pytest

from ab.nn.util import atomic, processes


def test_text_bytes_and_a_writer_function_each_replace_the_file(tmp_path):
    path = tmp_path / "f.json"
    assert atomic.write(path, "é\n") == path and path.read_bytes() == "é\n".encode("utf-8")
    atomic.write(path, b"\x00\x01", durable=True)
    assert path.read_bytes() == b"\x00\x01"
    atomic.write(path, lambda out: out.write(b"streamed"))
    assert path.read_bytes() == b"streamed"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_a_writer_that_fails_midway_leaves_the_old_file_and_no_temporary_one(tmp_path):
    path = tmp_path / "f.json"
    path.write_text("old")

    def half(out):
        out.write(b"new, half of it")
        raise RuntimeError("the writer died")

    with pytest.raises(RuntimeError, match="died"):
        atomic.write(path, half)
    assert path.read_text() == "old" and list(tmp_path.iterdir()) == [path]


def test_the_temporary_file_names_its_writer(tmp_path):
    """So that the image cache's cleaner can tell an abandoned one (``processes.abandoned``)."""
    path = tmp_path / "f.bin"
    seen = []
    atomic.write(path, lambda out: seen.extend(p for p in tmp_path.iterdir() if p != path))
    assert seen == [processes.temp_path(path)] and not processes.abandoned(seen[0])
