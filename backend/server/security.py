"""Keys, connection file, CurveZMQ helpers and the state-dir lock."""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import socket
import sys

from backend.atomic_write import write_atomic
from shared import PROTOCOL_VERSION
from shared.keyfiles import is_private, load_secret_key
from shared.protocol import SIGNATURE_SCHEME


def private_dir(path: str) -> str:
    """Create ``path`` (and parents) readable only by its owner."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    try:
        os.chmod(path, 0o700)
    except OSError:  # pragma: no cover - e.g. a mount that ignores modes
        pass
    return path


def load_or_create_hmac_key(state_dir: str) -> bytes:
    """The local-mode HMAC key, kept across restarts so connected clients keep working."""
    path = os.path.join(state_dir, "hmac.key")
    try:
        if is_private(path):
            key = open(path, "rb").read().strip()
            if len(key) >= 32:
                return key
    except FileNotFoundError:
        pass
    key = secrets.token_hex(32).encode("ascii")
    write_atomic(path, key + b"\n", mode=0o600)
    return key


def is_loopback(host: str) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(a[4][0]).is_loopback
                       for a in socket.getaddrinfo(host, None))
        except OSError:
            return False


def bind_endpoint(host: str, port: int) -> str:
    if host in ("*", "0.0.0.0", ""):
        return f"tcp://*:{port}"
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"


def local_endpoint(host: str, port: int) -> str:
    """How a client on this machine reaches the server."""
    if host in ("*", "0.0.0.0", "", "::"):
        return f"tcp://127.0.0.1:{port}"
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"


def write_connection_file(path: str, *, host: str, port: int, key: bytes | None, curve_public_key: str | None,
                          state_dir: str, server_version: str) -> dict:
    info = {
        "transport": "tcp",
        "ip": host,
        "port": port,
        "endpoint": local_endpoint(host, port),
        "key": key.decode("ascii") if key else None,
        "signature_scheme": SIGNATURE_SCHEME,
        "protocol_version": PROTOCOL_VERSION,
        "server_version": server_version,
        "curve": curve_public_key is not None,
        "server_public_key": curve_public_key,
        "pid": os.getpid(),
        "state_dir": os.path.abspath(state_dir),
    }
    write_atomic(path, json.dumps(info, indent=2), mode=0o600)
    return info


# ---- CurveZMQ keys ----------------------------------------------------------------------------
def create_keypair(directory: str, name: str, *, force: bool = False) -> tuple[str, str]:
    """``name.key`` (public, share it) and ``name.key_secret`` (0600) in ``directory``."""
    import zmq.auth

    private_dir(directory)
    public_file = os.path.join(directory, f"{name}.key")
    secret_file = os.path.join(directory, f"{name}.key_secret")
    if not force and (os.path.exists(public_file) or os.path.exists(secret_file)):
        raise FileExistsError(f"{public_file} or {secret_file} exists (use --force to overwrite)")
    old = os.umask(0o077)  # create_certificates doesn't chmod the secret: don't let it be readable at all
    try:
        public_file, secret_file = zmq.auth.create_certificates(directory, name)
    finally:
        os.umask(old)
    os.chmod(secret_file, 0o600)
    os.chmod(public_file, 0o644)
    return public_file, secret_file


def load_server_keys(secret_file: str, *, create: bool) -> tuple[bytes, bytes]:
    if not os.path.exists(secret_file):
        if not create:
            raise FileNotFoundError(f"no server key at {secret_file} (python -m backend keygen server)")
        name = os.path.basename(secret_file)
        if name.endswith(".key_secret"):
            name = name[: -len(".key_secret")]
        create_keypair(os.path.dirname(os.path.abspath(secret_file)), name)
    return load_secret_key(secret_file)


def allowed_keys_signature(directory: str) -> tuple:
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except FileNotFoundError:
        return ()
    return tuple((e.name, e.stat().st_mtime_ns, e.stat().st_size) for e in entries if e.name.endswith(".key"))


# ---- one server per state dir -------------------------------------------------------------------
class StateLock:
    def __init__(self, state_dir: str):
        self.path = os.path.join(state_dir, "server.lock")
        self.fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if sys.platform.startswith("win"):
                import msvcrt

                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            else:
                import fcntl

                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            other = os.read(fd, 32).decode("ascii", "replace").strip()
            os.close(fd)
            raise RuntimeError(f"another server (pid {other or '?'}) is using {os.path.dirname(self.path)}") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode("ascii"))
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
