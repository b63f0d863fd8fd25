"""End to end with the real engine ("tiny-random" model, tiny budgets) and real worker processes:
submit -> previews -> GLB, cancel mid-run, a killed worker, kill -9 of everything and a restart."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.server_fixtures import ServerProc, pid_alive, tiny

pytestmark = pytest.mark.slow
# One worker: "cpu" here; on a GPU box DREAMPROP_TEST_DEVICES=0 runs the same tests on CUDA device 0.
DEVICES = os.environ.get("DREAMPROP_TEST_DEVICES", "cpu")
EVENT_TIMEOUT = 300.0   # seconds without any event before a test gives up (a busy 2-core CI box is slow)
PNG, GLB = b"\x89PNG", b"glTF"


@pytest.fixture(scope="module")
def engine_server(tmp_path_factory):
    """One server with one CPU worker, shared by the tests (the last one kills it and restarts it)."""
    s = ServerProc(str(tmp_path_factory.mktemp("e2e") / "state"), args=["--devices", DEVICES])
    s.start()
    s.wait_workers_ready()
    yield s
    s.stop()


def watch(client, job, after_seq=0, until=None):
    """Collect a job's events (until a terminal one, or until ``until(event)`` is true)."""
    out = []
    for ev in client.events(job, after_seq=after_seq, timeout=EVENT_TIMEOUT):
        out.append(ev)
        if until is not None and until(ev):
            break
    return out


def test_submit_streams_previews_and_proxy_meshes_then_the_glb(engine_server):
    c = engine_server.client()
    lagging = engine_server.client()   # attached but never reading while the job runs: must not slow it
    t0 = time.monotonic()
    job = c.submit(tiny(steps=6, preview_interval=2, proxy_mesh_interval=4, checkpoint_interval=2))
    lagging.attach(job)
    events, first_preview = [], None
    for ev in c.events(job, timeout=EVENT_TIMEOUT):
        events.append(ev)
        if ev.msg_type == "progress" and ev.buffers and first_preview is None:
            first_preview = time.monotonic() - t0
    total = time.monotonic() - t0
    types = [e.msg_type for e in events]
    assert types[:2] == ["accepted", "started"] and types[-1] == "finished", types
    assert [e.seq for e in events] == sorted({e.seq for e in events})
    previews = [e for e in events if e.msg_type == "progress" and e.content["preview"]]
    assert [e.content["step"] for e in previews] == [2, 4, 6]
    assert all(e.buffers[0].startswith(PNG) for e in previews)
    assert all(e.content["total"] == 6 and "sds" in e.content["losses"] for e in previews)
    proxies = [e for e in events if e.msg_type == "proxy_mesh"]
    assert proxies and all(e.buffers[0].startswith(GLB) for e in proxies)
    fin = events[-1]
    assert fin.buffers[0].startswith(GLB) and fin.buffers[1].startswith(PNG)
    glb, metadata = c.result(job)
    assert glb == fin.buffers[0] and metadata["faces"] > 0
    assert c.result_message(job).buffers[1] == fin.buffers[1]          # turntable PNG: second buffer
    st = c.status(job)
    assert st["state"] == "finished" and st["progress"] == 1.0 and st["runs"] == 1
    with open(os.path.join(engine_server.state_dir, "jobs", job, "preview.png"), "rb") as f:
        assert f.read().startswith(PNG)
    late = watch(lagging, job)                                      # the lagging client still gets it all
    assert late[-1].msg_type == "finished" and late[-1].buffers[0] == glb
    assert [e.seq for e in late] == sorted({e.seq for e in late})
    print(f"\nsubmit -> first preview {first_preview:.2f} s (cold model load included); whole job {total:.1f} s")
    lagging.close()
    # refine the result: the worker starts from the parent's checkpoint (model already loaded)
    child = c.submit(tiny("the same chair, refined", steps=2, preview_interval=1), parent_job_id=job)
    assert watch(c, child)[-1].msg_type == "finished"
    st = c.status(child)
    assert st["parent_job_id"] == job and st["metadata"]["worker"]["model_cached"] is True
    c.close()


def test_cancel_mid_run(engine_server):
    c = engine_server.client()
    pid = engine_server.worker_pids()[0]
    job = c.submit(tiny(steps=2000, preview_interval=1, checkpoint_interval=0))
    cancelled_at = None
    events = []
    for ev in c.events(job, timeout=EVENT_TIMEOUT):
        events.append(ev)
        if ev.msg_type == "progress" and cancelled_at is None:
            assert c.cancel(job)["cancelled"] is True
            cancelled_at = ev.content["step"]
    assert events[-1].msg_type == "cancelled"
    st = c.status(job)
    assert st["state"] == "cancelled" and st["step"] < 2000
    deadline = time.monotonic() + 30     # the same worker takes the next job: no restart needed
    while c.info()["workers"][0]["state"] != "idle" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert c.info()["workers"][0]["state"] == "idle"
    assert engine_server.worker_pids() == [pid]
    assert c.info()["workers"][0]["model"] == "tiny-random"     # and it keeps its model loaded
    c.close()


def test_killed_worker_job_is_retried_from_its_checkpoint(engine_server):
    c = engine_server.client()
    old_pid = engine_server.worker_pids()[0]
    # 40 steps so the kill lands long before the end: with 8, a fast step let the worker checkpoint
    # its last step before the kill, leaving nothing to resume.
    job = c.submit(tiny(steps=40, preview_interval=2, checkpoint_interval=2))
    before = watch(c, job, until=lambda e: e.msg_type == "progress" and e.content["step"] >= 4)
    os.kill(old_pid, signal.SIGKILL)                     # as the OOM killer or a segfault would
    after = watch(c, job, after_seq=before[-1].seq)
    types = [e.msg_type for e in after]
    assert types[0] == "requeued" and "worker died" in after[0].content["reason"], types
    started = next(e for e in after if e.msg_type == "started")
    assert started.content["resumed"] is True and started.content["run"] == 2
    steps = [e.content["step"] for e in after if e.msg_type == "progress" and e.content["stage"] == "optimise"]
    assert steps and steps[0] >= 6                     # resumed from the step-4 checkpoint, not from 0
    assert types[-1] == "finished"
    st = c.status(job)
    assert st["crashes"] == 1 and st["runs"] == 2
    info = c.info()                                     # the server stayed up and replaced the worker
    assert info["workers"][0]["pid"] != old_pid and "SIGKILL" in info["workers"][0]["last_exit"]
    assert not pid_alive(old_pid)
    c.close()


def test_kill9_everything_then_restart_loses_nothing(engine_server):
    # The module's server (last test of the module: it is killed here and started again on its state
    # dir and port, healthy for the fixture's teardown); its worker is warm, as a crash finds it.
    s = engine_server
    s.wait_workers_ready()
    c = s.client()
    done = c.submit(tiny("finished before the crash", steps=1, preview_interval=1))
    running = c.submit(tiny("running at the crash", steps=40, preview_interval=2, checkpoint_interval=2))
    queued = c.submit(tiny("queued at the crash", steps=2, preview_interval=1))
    assert watch(c, done)[-1].msg_type == "finished"
    stream = c.events(running, timeout=EVENT_TIMEOUT)     # this client stays open across the crash
    seen = []
    for ev in stream:
        seen.append(ev)
        if ev.msg_type == "progress" and ev.content["step"] >= 4:
            break
    assert os.path.exists(os.path.join(s.state_dir, "jobs", running, "checkpoint.pt"))
    s.kill9(s.worker_pids())

    s.start()                                           # same state dir, same port
    after = list(stream)                                # re-attaches by itself, from the last seq it saw
    types = [e.msg_type for e in after]
    assert types[0] == "requeued" and after[0].content["reason"] == "server restarted", types
    assert min(e.seq for e in after) > seen[-1].seq
    started = next(e for e in after if e.msg_type == "started")
    assert started.content["resumed"] is True
    steps = [e.content["step"] for e in after if e.msg_type == "progress" and e.content["stage"] == "optimise"]
    assert steps and steps[0] >= 6 and types[-1] == "finished"    # resumed from a step->=4 checkpoint
    st = c.status(running)
    assert st["runs"] == 2 and st["crashes"] == 0 and st["state"] == "finished"
    with s.client() as fresh:                           # a new client sees everything too
        glb, _ = fresh.result(done)                     # finished before the crash: still fetchable
        assert glb.startswith(GLB)
        assert fresh.result(running)[0] == after[-1].buffers[0]
        # the job queued at the crash runs next (then we cancel it: its export would only cost time)
        started = watch(fresh, queued, until=lambda e: e.msg_type == "started")
        assert [e.msg_type for e in started] == ["accepted", "started"]
        fresh.cancel(queued)
        assert watch(fresh, queued, after_seq=started[-1].seq)[-1].msg_type == "cancelled"
    c.close()
