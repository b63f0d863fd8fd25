"""The server as a real process on loopback (no workers needed): validation, ownership, persistence,
shutdown and local security. The engine end-to-end tests are in test_server_e2e.py."""

from __future__ import annotations

import json
import os
import signal
import stat
import struct
import subprocess
import sys
import time

import pytest

from backend.server.local_pool import available_cores
from shared.client import ServerError
from shared.protocol import Session
from tests.helpers import free_port
from tests.server_fixtures import REPO, raw_dealer, tiny

GLB = b"glTF" + struct.pack("<II", 2, 28) + b"\x00" * 16


def test_info_reports_server_and_queue(queue_server):
    with queue_server.client() as c:
        info = c.info()
    assert info["protocol_version"] == "1.0" and info["server_version"]
    assert info["device"] == "cpu" and info["gpus"] == [] and info["auth"] == "hmac"
    assert info["owner"] == "local:local" and isinstance(info["queue_length"], int)
    assert "builtin" in info["models"] and info["workers"] == []


def test_connection_file_key_and_state_are_owner_only(queue_server):
    mode = lambda p: stat.S_IMODE(os.stat(p).st_mode)   # noqa: E731
    assert mode(queue_server.connection_file) == 0o600
    assert mode(os.path.join(queue_server.state_dir, "hmac.key")) == 0o600
    assert mode(os.path.join(queue_server.state_dir, "jobs.sqlite3")) == 0o600
    assert mode(queue_server.state_dir) == 0o700
    info = json.load(open(queue_server.connection_file))
    assert info["endpoint"] == f"tcp://127.0.0.1:{queue_server.port}" and len(info["key"]) == 64
    assert info["signature_scheme"] == "hmac-sha256" and info["curve"] is False


@pytest.mark.parametrize("settings,field", [
    ({"prompt": "x", "steps": -5}, "steps"),
    ({"prompt": "x", "stepz": 10}, "stepz"),
    ({"prompt": "x" * 501}, "prompt"),
    ({"prompt": "  "}, "prompt"),
    ({"prompt": "x", "guidance_scale": "lots"}, "guidance_scale"),
    ({"prompt": "x", "seed": 1.5}, "seed"),
    ({"prompt": "x", "lr": float("1e9")}, "lr"),
    ({"prompt": "x", "resolution_schedule": "64x1,32x1@0"}, "resolution_schedule"),
    ({"prompt": "x", "elevation_min": 50, "elevation_max": 10}, "elevation_min"),
    ({"prompt": "x", "sds_weighting": "magic"}, "sds_weighting"),
    ({"prompt": "x", "preview_size": 100000}, "preview_size"),
    ({"prompt": "x\x00"}, "prompt"),
    (["not", "an", "object"], "settings"),
])
def test_invalid_settings_are_answered_with_the_field(queue_server, settings, field):
    with queue_server.client(client_id="validation") as c:
        with pytest.raises(ServerError) as e:
            c.submit(settings)
        assert e.value.field == field and e.value.code == "invalid", e.value
        assert c.list_jobs() == []


def test_invalid_requests_are_answered_with_the_field(queue_server):
    with queue_server.client(client_id="validation2") as c:
        cases = [
            (lambda: c.submit(tiny(), init_mesh_glb=b"PK\x03\x04 not a glb"), "init_mesh"),
            (lambda: c.request("submit_request", {"settings": tiny()}, [GLB, GLB]), "buffers"),
            (lambda: c.submit(tiny(), parent_job_id="f" * 32), "parent_job_id"),
            (lambda: c.submit(tiny(), parent_job_id="../etc"), "parent_job_id"),
            (lambda: c.status("nope"), "job_id"),
            (lambda: c.status("0" * 32), "job_id"),
            (lambda: c.request("list_request", {"limit": 0}), "limit"),
            (lambda: c.request("list_request", {"states": ["bogus"]}), "states"),
            (lambda: c.request("attach_request", {"job_id": "0" * 32, "after_seq": -1}), "job_id"),
            (lambda: c.request("status_request", {"job_id": "0" * 32, "extra": 1}), "extra"),
            (lambda: c.request("submit_request", {"settings": tiny(), "attach": "yes"}), "attach"),
        ]
        for call, field in cases:
            with pytest.raises(ServerError) as e:
                call()
            assert e.value.field == field, (field, e.value)
        assert c.list_jobs() == []


def test_unknown_type_and_version_mismatch_get_clear_errors(queue_server):
    with queue_server.client() as c:
        with pytest.raises(ServerError) as e:
            c.request("frobnicate_request", {})
        assert e.value.code == "unknown_type"
    key = json.load(open(queue_server.connection_file))["key"]
    session = Session(key)
    ctx, sock = raw_dealer(f"tcp://127.0.0.1:{queue_server.port}")
    try:
        header = session.make_header("info_request")
        header["version"] = "99.0"
        sock.send_multipart(session.serialize("info_request", {}, header=header))
        assert sock.poll(10000)
        reply = session.deserialize(sock.recv_multipart())
        assert reply.header["reply_to"] == header["msg_id"]
        assert reply.content["error"] == "version_mismatch" and "99.0" in reply.content["message"]
        assert reply.content["server_protocol_version"] == "1.0"
    finally:
        sock.close()
        ctx.term()


def test_submit_status_list_cancel_and_event_replay(queue_server):
    with queue_server.client(client_id="lifecycle") as c:
        job = c.submit(tiny())
        st = c.status(job)
        assert st["state"] == "queued" and st["settings"]["steps"] == 20 and st["position"] >= 0
        assert st["settings"]["guidance_scale"] == 100.0            # stored with every default filled in
        assert [j["job_id"] for j in c.list_jobs()] == [job]
        assert c.cancel(job)["cancelled"] is True
        events = list(c.events(job, timeout=10))
        assert [(e.msg_type, e.seq) for e in events] == [("accepted", 1), ("cancelled", 2)]
        assert c.cancel(job)["cancelled"] is False
        with pytest.raises(ServerError) as e:
            c.result(job)
        assert e.value.code == "not_finished"
    with queue_server.client(client_id="lifecycle") as c2:   # a restarted client resumes where it was
        assert [e.msg_type for e in c2.events(job, timeout=10)] == ["accepted", "cancelled"]
    with queue_server.client(client_id="lifecycle") as c3:
        assert [e.msg_type for e in c3.events(job, after_seq=1, timeout=10)] == ["cancelled"]


def test_non_blocking_core(queue_server):
    with queue_server.client(client_id="nonblocking") as c:
        t0 = time.monotonic()
        assert c.poll(0) == []
        # Returns at once with nothing to read. The margin is wide (it takes ~1 ms) so a loaded
        # 2-core CI box cannot fail it; a poll that waited for a message would take seconds.
        assert time.monotonic() - t0 < 1.0
        mid = c.send("submit_request", {"settings": tiny(), "attach": True})
        got, deadline = [], time.monotonic() + 10
        while len(got) < 2 and time.monotonic() < deadline:
            got += c.poll(50)
        reply, accepted = got
        assert reply.msg_type == "submit_reply" and reply.reply_to == mid
        assert accepted.msg_type == "accepted" and accepted.job_id == reply.content["job_id"]
        c.cancel(reply.content["job_id"])


def test_resubmitted_request_with_same_token_is_one_job(queue_server):
    with queue_server.client(client_id="token") as c:
        a = c.submit(tiny(), client_token="tok-1")
        b = c.submit(tiny(), client_token="tok-1")
        assert a == b and len(c.list_jobs()) == 1
        c.cancel(a)


def test_two_clients_each_see_only_their_jobs(queue_server):
    with queue_server.client(client_id="alice") as a, queue_server.client(client_id="bob") as b:
        ja, jb = a.submit(tiny("alice's chair")), b.submit(tiny("bob's table"))
        assert [j["job_id"] for j in a.list_jobs()] == [ja]
        assert [j["job_id"] for j in b.list_jobs()] == [jb]
        for call in (b.status, b.cancel, b.result, lambda j: b.attach(j), lambda j: b.submit(tiny(), parent_job_id=j)):
            with pytest.raises(ServerError) as e:
                call(ja)
            assert e.value.code == "not_found"
        assert a.status(ja)["state"] == "queued"        # bob's cancel did nothing
        a.cancel(ja), b.cancel(jb)


def test_init_mesh_is_stored_with_the_job(queue_server):
    with queue_server.client(client_id="mesh") as c:
        job = c.submit(tiny(), init_mesh_glb=GLB)
        assert c.status(job)["has_init_mesh"] is True
        with open(os.path.join(queue_server.state_dir, "jobs", job, "init.glb"), "rb") as f:
            assert f.read() == GLB
        c.cancel(job)


def test_kill9_keeps_queued_jobs_sequence_numbers_and_key(server_factory):
    s = server_factory("kill9", args=["--workers", "0"])
    c = s.client()
    j1, j2 = c.submit(tiny("first")), c.submit(tiny("second"))
    s.kill9()
    s.start()
    assert c.info()["queue_length"] == 2          # the old client reconnects: same key, same port
    with s.client() as c2:
        jobs = {j["job_id"]: j for j in c2.list_jobs()}
        assert jobs[j1]["state"] == jobs[j2]["state"] == "queued"
        assert (jobs[j1]["position"], jobs[j2]["position"]) == (0, 1)
        c2.cancel(j1)
        assert [(e.msg_type, e.seq) for e in c2.events(j1, after_seq=1, timeout=10)] == [("cancelled", 2)]
    c.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_clean_shutdown_keeps_the_queue(server_factory, sig):
    s = server_factory(f"shutdown{int(sig)}", args=["--workers", "0"])
    with s.client() as c:
        job = c.submit(tiny())
    assert s.stop(sig) == 0
    assert not os.path.exists(s.connection_file)
    assert "server stopped; 1 job(s) queued" in s.log()
    s.start()
    with s.client() as c:
        assert c.status(job)["state"] == "queued"


def test_refuses_a_public_address_without_curve(tmp_path):
    cmd = [sys.executable, "-m", "backend", "serve", "--host", "0.0.0.0", "--port", str(free_port()),
           "--state-dir", str(tmp_path / "s"), "--workers", "0"]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "--curve" in r.stderr and "--insecure" in r.stderr
    assert not os.path.exists(tmp_path / "s" / "connection.json")


def test_one_server_per_state_dir(server_factory):
    s = server_factory("locked", args=["--workers", "0"])
    r = subprocess.run([sys.executable, "-m", "backend", "serve", "--port", str(free_port()), "--state-dir",
                        s.state_dir, "--workers", "0"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "another server" in r.stderr
    with s.client() as c:
        assert c.info()["queue_length"] == 0


def test_submit_cli(queue_server):
    def cli(*args):
        r = subprocess.run([sys.executable, "-m", "backend", "submit", "--connection-file", queue_server.connection_file,
                            "--client-id", "cli", *args], cwd=REPO, capture_output=True, text=True, timeout=60)
        return r.returncode, r.stdout, r.stderr

    rc, out, err = cli("a teapot", "--steps", "20", "--model", "tiny-random", "--view-dependent-prompt", "false",
                       "--no-wait", "--json")
    assert rc == 0, err
    job = json.loads(out)["job_id"]
    rc, out, _ = cli("--list", "--json")
    assert rc == 0 and [j["job_id"] for j in json.loads(out)] == [job]
    rc, out, _ = cli("--status", job, "--json")
    st = json.loads(out)
    assert st["settings"]["steps"] == 20 and st["settings"]["view_dependent_prompt"] is False
    rc, out, err = cli("a teapot", "--steps", "-5", "--no-wait")
    assert rc == 2 and "--steps" in err                      # checked before anything is sent
    rc, out, _ = cli("--cancel", job, "--json")
    assert rc == 0 and json.loads(out)["cancelled"] is True
    rc, out, err = cli("--result", job)
    assert rc == 1 and "not finished" in err


@pytest.mark.slow
@pytest.mark.parametrize("args,expected", [
    (["--worker-threads", "1"], 1),
    (["--workers", "2"], max(1, available_cores() // 2)),      # auto: the cores shared among the workers
], ids=["one-thread", "auto-shared"])
def test_workers_run_with_the_thread_count_they_are_given(server_factory, args, expected):
    s = server_factory("threads", args=["--devices", "cpu", *args])
    s.wait_workers_ready()
    with s.client() as c:
        workers = c.info()["workers"]
    assert workers and [w["threads"] for w in workers] == [expected] * len(workers)   # torch.get_num_threads()


def test_worker_threads_must_not_be_negative(tmp_path):
    r = subprocess.run([sys.executable, "-m", "backend", "serve", "--port", str(free_port()), "--state-dir",
                        str(tmp_path / "s"), "--worker-threads", "-1"], cwd=REPO, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and "--worker-threads" in r.stderr and "0 (all cores)" in r.stderr
