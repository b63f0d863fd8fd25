"""backend.atomic_write: the one helper every result, checkpoint, key and connection file goes through."""

from __future__ import annotations

import os
import stat

import pytest

from backend import atomic_write
from backend.atomic_write import atomic_path, write_atomic


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_writes_replace_the_file_and_leave_nothing_beside_it(tmp_path):
    target = tmp_path / "sub" / "result.json"
    write_atomic(target, "first")                       # the directory is created
    write_atomic(target, b"second")
    assert target.read_bytes() == b"second"
    assert os.listdir(target.parent) == ["result.json"]


@pytest.mark.skipif(os.name == "nt", reason="POSIX modes")
def test_mode_is_exact_and_default_follows_the_umask(tmp_path):
    old = os.umask(0o077)                                # a umask that would strip what we ask for
    try:
        write_atomic(tmp_path / "public", b"x", mode=0o644)
        write_atomic(tmp_path / "default", b"x")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "public") == 0o644
    assert _mode(tmp_path / "default") == 0o600          # 0o666 & ~0o077
    write_atomic(tmp_path / "secret", b"key", mode=0o600)
    assert _mode(tmp_path / "secret") == 0o600


def test_a_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "checkpoint.pt"
    write_atomic(target, b"old checkpoint")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half a ne")
            raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"old checkpoint"
    assert os.listdir(tmp_path) == ["checkpoint.pt"]


def test_file_and_directory_are_fsynced_before_and_after_the_rename(tmp_path, monkeypatch):
    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(atomic_write.os, "fsync", lambda fd: calls.append(("fsync", os.fstat(fd).st_mode)) or real_fsync(fd))
    monkeypatch.setattr(atomic_write.os, "replace", lambda a, b: calls.append(("replace", None)) or real_replace(a, b))
    write_atomic(tmp_path / "f", b"data")
    kinds = [(name, None if mode is None else stat.S_ISDIR(mode)) for name, mode in calls]
    expected = [("fsync", False), ("replace", None)] + ([("fsync", True)] if os.name != "nt" else [])
    assert kinds == expected
