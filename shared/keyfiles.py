"""CurveZMQ key files, as ``python -m backend keygen NAME`` writes them: ``NAME.key`` holds the
public key (share it), ``NAME.key_secret`` the public and the secret key (keep it; owner-only).

One loader for the server (its own secret key) and every client (the CLI, the Blender add-on):
the same checks and the same messages on both ends. A secret key file that other users can read
is refused, as ssh refuses such a private key: anyone who read it can pose as its owner.
"""

from __future__ import annotations

import os
import stat
import sys

KEYGEN_HINT = "create one with `python -m backend keygen NAME`"


def is_private(path: str | os.PathLike) -> bool:
    """No group or other permission bits (always true on Windows: per-user profile directories,
    POSIX modes don't apply)."""
    if sys.platform.startswith("win"):
        return True
    return not (os.stat(path).st_mode & (stat.S_IRWXG | stat.S_IRWXO))


def load_public_key(path: str | os.PathLike) -> bytes:
    """The public key (Z85, 40 bytes) of a ``.key`` or ``.key_secret`` file."""
    import zmq.auth

    if not os.path.isfile(path):
        raise FileNotFoundError(f"no key file at {path} ({KEYGEN_HINT})")
    public, _ = zmq.auth.load_certificate(os.fspath(path))
    if not public:
        raise ValueError(f"{path} holds no public key")
    return public


def load_secret_key(path: str | os.PathLike) -> tuple[bytes, bytes]:
    """(public, secret) keys of a ``.key_secret`` file readable by its owner only."""
    import zmq.auth

    if not os.path.isfile(path):
        raise FileNotFoundError(f"no key file at {path} ({KEYGEN_HINT})")
    if not is_private(path):
        raise PermissionError(f"{path} is readable by other users: chmod 600 it")
    public, secret = zmq.auth.load_certificate(os.fspath(path))
    if not secret:
        raise ValueError(f"{path} holds no secret key (use the .key_secret file, not the .key one)")
    return public, secret
