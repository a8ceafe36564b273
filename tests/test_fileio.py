"""Atomic writes and one-line error text: the shared helpers every writer uses."""

import errno
import os
import resource
import shutil
from collections import namedtuple

import pytest

from vidcls.errors import first_line
from vidcls.fileio import (
    append_whole,
    atomic_directory,
    atomic_file,
    atomic_files,
    leftovers,
    write_failure,
    write_text_atomic,
)


def test_atomic_file_replaces_only_on_success(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_file(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash while writing")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.json"]  # no temporary file left behind
    with atomic_file(target) as tmp:
        assert tmp.suffix == ".json" and tmp.parent == tmp_path  # writers pick the format by suffix
        tmp.write_text("new")
    assert target.read_text() == "new" and os.listdir(tmp_path) == ["out.json"]


def test_write_text_atomic_creates_parents(tmp_path):
    path = write_text_atomic(tmp_path / "a" / "b.txt", "x\n")
    assert path.read_text() == "x\n"


def test_atomic_directory_swaps_whole_directories(tmp_path):
    target = tmp_path / "last"
    with atomic_directory(target) as tmp:
        (tmp / "weights").write_text("1")
    with pytest.raises(KeyboardInterrupt), atomic_directory(target) as tmp:
        (tmp / "weights").write_text("2")
        raise KeyboardInterrupt
    assert (target / "weights").read_text() == "1"
    assert sorted(os.listdir(tmp_path)) == ["last"]
    with atomic_directory(target) as tmp:
        (tmp / "weights").write_text("3")
    assert (target / "weights").read_text() == "3" and sorted(os.listdir(tmp_path)) == ["last"]


def test_atomic_files_replace_a_set_together(tmp_path, monkeypatch):
    """An OpenVINO IR is two files: the set is replaced whole, the file a reader opens (the last) renamed last."""
    xml, bin_ = tmp_path / "m.xml", tmp_path / "m.bin"
    with atomic_files(bin_, xml) as (tmp_bin, tmp_xml):
        assert (tmp_bin.name, tmp_xml.name) == ("m.bin", "m.xml") and tmp_xml.parent != tmp_path  # names kept
        tmp_bin.write_text("bin 1")
        tmp_xml.write_text("xml 1")
    with pytest.raises(KeyboardInterrupt), atomic_files(bin_, xml) as (tmp_bin, tmp_xml):
        tmp_bin.write_text("bin 2")
        raise KeyboardInterrupt
    assert (bin_.read_text(), xml.read_text()) == ("bin 1", "xml 1") and sorted(os.listdir(tmp_path)) == ["m.bin",
                                                                                                         "m.xml"]
    renames = []
    replace = os.replace

    def dies_after_the_first_rename(source, target):
        renames.append(os.path.basename(target))
        if len(renames) > 1:
            raise KeyboardInterrupt  # kill -9 between the renames
        replace(source, target)

    monkeypatch.setattr(os, "replace", dies_after_the_first_rename)
    with pytest.raises(KeyboardInterrupt), atomic_files(bin_, xml) as (tmp_bin, tmp_xml):
        tmp_bin.write_text("bin 3")
        tmp_xml.write_text("xml 3")
    monkeypatch.setattr(os, "replace", replace)
    assert renames == ["m.bin", "m.xml"]
    assert not xml.exists()  # no .xml beside a new .bin: nothing a reader could open half-new
    assert leftovers(xml) == []
    with atomic_files(bin_, xml) as (tmp_bin, tmp_xml):
        tmp_bin.write_text("bin 4")
        tmp_xml.write_text("xml 4")
    assert (bin_.read_text(), xml.read_text()) == ("bin 4", "xml 4")


@pytest.mark.parametrize("given, expected", [
    (ValueError("first\nsecond"), "first"),
    (ValueError(""), "ValueError"),  # an empty message names the exception, never IndexError
    (EOFError(), "EOFError"),
    ("  \n  text  \nmore", "text"),
    ("", ""),
])
def test_first_line(given, expected):
    assert first_line(given) == expected


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def test_what_appears_has_the_permissions_of_a_plain_open(tmp_path, umask_027):
    """A writer that creates its file 0600 (safetensors does) and a temporary directory (0700, mkdtemp)
    still give files and folders the modes open() and mkdir() give under the umask; a replaced file
    keeps its own."""
    def private(path):
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))

    with atomic_file(tmp_path / "model.safetensors") as tmp:
        private(tmp)
    with atomic_directory(tmp_path / "last") as tmp:
        private(tmp / "weights")
    (tmp_path / "plain.txt").write_text("x")
    (tmp_path / "plain").mkdir()
    mode = {p.name: oct(p.stat().st_mode & 0o777) for p in tmp_path.iterdir()}
    assert mode["model.safetensors"] == mode["plain.txt"] == "0o640"
    assert mode["last"] == mode["plain"] == "0o750"
    os.chmod(tmp_path / "plain.txt", 0o604)
    with atomic_file(tmp_path / "plain.txt") as tmp:
        private(tmp)
    assert oct((tmp_path / "plain.txt").stat().st_mode & 0o777) == "0o604"


@pytest.fixture
def file_size_limit():
    """Writes past 4096 bytes fail as on a full disk, a real short write then an error (EFBIG: Python
    ignores SIGXFSZ), for this process until the test ends."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
    yield 4096
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def test_append_whole_cuts_a_short_write_back_off(tmp_path, file_size_limit):
    """metrics.jsonl was appended with open("a").write: a full disk left half a row, which the next
    --resume could not read (json.loads of a torn line)."""
    target = tmp_path / "metrics.jsonl"
    append_whole(target, "x" * (file_size_limit - 10) + "\n")
    with pytest.raises(OSError) as failed:
        append_whole(target, '{"epoch": 2, "train_loss": 1.0}\n')  # 10 bytes fit, then the write fails
    assert failed.value.errno == errno.EFBIG
    assert target.read_text() == "x" * (file_size_limit - 10) + "\n"  # the line is not there, not even half of it
    append_whole(target, "ok\n")
    assert target.read_text().endswith("\nok\n")


Usage = namedtuple("Usage", "total used free")


def test_write_failure_names_a_full_disk_even_without_an_errno(tmp_path, monkeypatch):
    """torch.save's error on a full disk has no errno (measured on a 200 KiB tmpfs); the free space tells."""
    torch_says = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
    assert write_failure(OSError(errno.ENOSPC, "No space left on device"), tmp_path) == \
        "the disk is full (No space left on device)"
    assert write_failure(OSError(errno.EACCES, "Permission denied"), tmp_path) == "Permission denied"
    assert write_failure(torch_says, tmp_path) == first_line(torch_says)  # space left: not a full disk
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(1 << 30, (1 << 30) - 4096, 4096))
    assert write_failure(torch_says, tmp_path) == "the disk is full (No space left on device)"
