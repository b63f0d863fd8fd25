"""shared.keyfiles: the one loader of CurveZMQ key files, used by the server and by every client."""

from __future__ import annotations

import os

import pytest

from backend.server.security import create_keypair, load_server_keys
from shared.client import JobClient
from shared.keyfiles import load_public_key, load_secret_key

posix_only = pytest.mark.skipif(os.name == "nt", reason="POSIX modes")


def test_a_keypair_loads_back(tmp_path):
    public_file, secret_file = create_keypair(str(tmp_path), "alice")
    public, secret = load_secret_key(secret_file)
    assert len(public) == len(secret) == 40 and public != secret
    assert load_public_key(public_file) == load_public_key(secret_file) == public


def test_bad_key_files_are_clear_errors(tmp_path):
    public_file, secret_file = create_keypair(str(tmp_path), "bob")
    with pytest.raises(FileNotFoundError, match="backend keygen"):
        load_secret_key(tmp_path / "nobody.key_secret")
    with pytest.raises(FileNotFoundError, match="backend keygen"):
        load_public_key(tmp_path / "nobody.key")
    os.chmod(public_file, 0o600)
    with pytest.raises(ValueError, match="no secret key"):
        load_secret_key(public_file)


@posix_only
def test_server_and_client_refuse_a_secret_key_others_can_read(tmp_path):
    _, server_secret = create_keypair(str(tmp_path), "server")
    client_public, client_secret = create_keypair(str(tmp_path), "client")
    for path in (server_secret, client_secret):
        os.chmod(path, 0o640)
    with pytest.raises(PermissionError, match="chmod 600"):
        load_server_keys(server_secret, create=False)
    with pytest.raises(PermissionError, match="chmod 600"):
        JobClient.from_key_files("127.0.0.1", 1, str(tmp_path / "server.key"), client_secret)
    os.chmod(client_secret, 0o600)
    client = JobClient.from_key_files("127.0.0.1", 1, str(tmp_path / "server.key"), client_secret)
    client.close()
