"""Remote mode: CurveZMQ encryption + client authentication against an allow-list of public keys."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time

import pytest

from shared.client import AuthError, JobClient, ServerError
from tests.server_fixtures import REPO, tiny


def keygen(directory, *names, check=True):
    r = subprocess.run([sys.executable, "-m", "backend", "keygen", *names, "--dir", str(directory)],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def test_keygen_writes_owner_only_secret_keys(tmp_path):
    keygen(tmp_path / "k", "alice")
    mode = lambda p: stat.S_IMODE(os.stat(p).st_mode)   # noqa: E731
    assert mode(tmp_path / "k" / "alice.key_secret") == 0o600
    assert mode(tmp_path / "k" / "alice.key") == 0o644
    assert mode(tmp_path / "k") == 0o700
    r = keygen(tmp_path / "k", "alice", check=False)          # never overwrite a key silently
    assert r.returncode == 1 and "--force" in r.stderr


def test_curve_known_keys_accepted_unknown_refused_jobs_isolated(server_factory, tmp_path):
    keys, allowed = tmp_path / "keys", tmp_path / "allowed"
    keygen(keys, "server", "alice", "bob", "mallory")
    allowed.mkdir()
    for name in ("alice", "bob"):
        shutil.copy(keys / f"{name}.key", allowed)
    s = server_factory("curve", args=["--workers", "0", "--curve", "--server-key", str(keys / "server.key_secret"),
                                      "--allowed-clients", str(allowed)])
    conn = json.load(open(s.connection_file))
    assert conn["curve"] is True and conn["key"] is None and len(conn["server_public_key"]) == 40

    def client(name, server_key="server", timeout=10.0):
        return JobClient.from_key_files("127.0.0.1", s.port, str(keys / f"{server_key}.key"),
                                        str(keys / f"{name}.key_secret"), timeout=timeout)

    alice, bob = client("alice"), client("bob")
    info = alice.info()
    alice_public = open(keys / "alice.key").read().split('public-key = "')[1][:40]
    assert info["auth"] == "curve" and info["owner"] == f"curve:{alice_public}"
    job = alice.submit(tiny())
    assert [j["job_id"] for j in alice.list_jobs()] == [job]
    assert bob.list_jobs() == []                              # the owner is the client's key
    for call in (bob.status, bob.cancel, bob.result):
        with pytest.raises(ServerError) as e:
            call(job)
        assert e.value.code == "not_found"
    with pytest.raises(ServerError) as e:                    # remote clients can't name server paths
        alice.submit(tiny(model="/etc"))
    assert e.value.field == "model"

    mallory = client("mallory")
    with pytest.raises(AuthError, match="refused"):
        mallory.info()
    mallory.close()
    wrong_server = client("alice", server_key="bob", timeout=3.0)   # a server that isn't who we think
    with pytest.raises((AuthError, TimeoutError)):
        wrong_server.info()
    wrong_server.close()
    plain = JobClient(f"tcp://127.0.0.1:{s.port}", b"k" * 32, timeout=2.0)   # no CURVE at all
    # Never served: the reply times out, or, when libzmq has already dropped the failed handshake's pipe
    # (no peer left to queue for), the send itself reports the server unreachable: a race, both right.
    with pytest.raises((TimeoutError, ConnectionError)):
        plain.info()
    plain.close()

    shutil.copy(keys / "mallory.key", allowed)                # the allow-list is re-read while running
    deadline = time.monotonic() + 15
    while True:
        m = client("mallory", timeout=3.0)
        try:
            assert m.info()["owner"].startswith("curve:") and m.list_jobs() == []
            break
        except (AuthError, TimeoutError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
        finally:
            m.close()
    alice.cancel(job)
    alice.close()
    bob.close()
