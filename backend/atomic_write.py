"""Atomic file writes: whoever reads ``path`` sees the old file or the whole new one, never a part,
also after a kill or a power loss mid-write. Used for job results, checkpoints, the connection
file and keys (the server reads them back after a crash).

How: write a temporary file in the same directory (so the rename stays on one file system), fsync
it, rename it over ``path`` (``os.replace``: atomic on POSIX and Windows), then fsync the directory
so the rename itself is on disk (POSIX only; Windows has no directory handles to sync).
``mode`` (e.g. 0o600 for secrets) is set on the temporary file before any byte is written, so the
data is never readable with looser permissions; without it the file gets the usual umask mode.
"""

from __future__ import annotations

import os
import secrets
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def write_atomic(path: str | os.PathLike, data: bytes | str, *, mode: int | None = None) -> None:
    """Replace ``path`` with ``data`` (str is written as UTF-8) atomically and durably."""
    with atomic_path(path, mode=mode) as tmp:
        with open(tmp, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)


@contextmanager
def atomic_path(path: str | os.PathLike, *, mode: int | None = None) -> Iterator[Path]:
    """A temporary path beside ``path`` for writers that want a file name (``torch.save``): on a
    clean exit of the block the file is fsynced and renamed over ``path``; on an error it is removed
    and ``path`` is left as it was. The parent directory is created if needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 if mode is None else mode)
    try:
        if mode is not None and hasattr(os, "fchmod"):
            os.fchmod(fd, mode)              # the umask may have dropped bits the caller asked for
    finally:
        os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    if sys.platform.startswith("win"):
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
