"""The render farm with a real Ray cluster (issue 17): ``ray.cluster_utils.Cluster`` starts several Ray
nodes on this machine (each its own raylet, object store and worker processes, as separate machines
would have), and a real ``python -m backend serve --ray ADDRESS`` drives them. CPU, the tiny-random
model, tiny budgets.

Every cluster runs on loopback: its nodes are started with node IP 127.0.0.1 (by default Ray binds and
talks to the machine's network address), and each test checks that no process it started (the Ray
nodes, their actors, the server) listens anywhere but on loopback.

Each node has one CPU, so each gets one actor; the machine has 2 cores shared with other work, so the
clusters are small (2-3 nodes) and the jobs short.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import sys
import time

import psutil
import pytest

from tests.server_fixtures import ServerProc, free_port, tiny

pytest.importorskip("ray", reason='the farm tests need Ray: pip install -e ".[ray]"')
from backend.server.farm import add_local_node, local_cluster  # noqa: E402

pytestmark = pytest.mark.slow
EVENT_TIMEOUT = 300.0
# A killed node is declared dead after ~3 missed health checks of 0.5 s (the default is minutes on a
# busy machine): the test of a node's death should not wait on Ray's production timeouts.
FAST_HEALTH_CHECKS = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500,
                      "health_check_timeout_ms": 1000, "health_check_failure_threshold": 3}


def start_cluster(nodes: int, *, head_cpus: int = 1):
    """A head plus ``nodes - 1`` worker nodes, one CPU each (``head_cpus=0``: the head runs no actor)."""
    return local_cluster(nodes, cpus_per_node=1, head_cpus=head_cpus, system_config=FAST_HEALTH_CHECKS)


def add_node(cluster):
    return add_local_node(cluster, cpus=1)


@pytest.fixture(scope="class")
def worker_nodes_farm(tmp_path_factory):
    """A head that runs no actor and two worker nodes, and a server on them, shared by the six-jobs
    test (which adds a third worker node after the server started) and then the node-death test
    (which kills the node its job runs on): each started a cluster of three nodes and a server.
    -> (cluster, server)."""
    yield from _cluster_and_server(start_cluster(3, head_cpus=0), tmp_path_factory.mktemp("worker-nodes"))


@pytest.fixture(scope="class")
def single_node_farm(tmp_path_factory):
    """One single-node cluster and its server, shared by the cancel test and then the restart test
    (which kills that server and starts another on the same cluster): each paid a cluster's and an
    actor's start-up for a one-job story. The restart test's job starts on the actor the cancel test
    left idle; its server restart starts a new actor as before. -> (cluster, server); the restart
    test leaves the fixture's server dead (stop() then does nothing)."""
    yield from _cluster_and_server(start_cluster(1), tmp_path_factory.mktemp("single-node"))


def _cluster_and_server(cluster, folder):
    """A server on ``cluster`` (state in ``folder``) for a shared fixture: yields (cluster, server), then
    stops the server (if still running) and shuts the cluster down."""
    server = ServerProc(str(folder / "state"), args=["--ray", cluster.address])
    try:
        server.start(120)
        yield cluster, server
    finally:
        try:
            server.stop(timeout=30)
        finally:
            cluster.shutdown()


def listening_elsewhere_than_loopback() -> list[str]:
    """Sockets of this test's child processes (Ray nodes, actors, the server) that listen on, or are
    bound to, an address other than loopback (0.0.0.0 counts: it is every interface)."""
    bad = []
    for p in psutil.Process().children(recursive=True):
        try:
            conns = p.net_connections(kind="inet")
            name = p.name()
        except psutil.Error:
            continue
        for c in conns:
            listening = c.status == psutil.CONN_LISTEN or (c.type == 2 and not c.raddr)   # 2: SOCK_DGRAM
            if not listening or not c.laddr:
                continue
            ip = ipaddress.ip_address(c.laddr.ip)
            if getattr(ip, "ipv4_mapped", None):
                ip = ip.ipv4_mapped
            if not ip.is_loopback:
                bad.append(f"{name} (pid {p.pid}) on {c.laddr.ip}:{c.laddr.port}")
    return bad


def finished_on(client, job_id) -> dict:
    """The worker record of a finished job (which actor, on which node, ran it last)."""
    status = client.status(job_id)
    assert status["state"] == "finished", status
    return status["metadata"]["worker"]


def watch(client, job_id, until=None) -> list:
    out = []
    for ev in client.events(job_id, timeout=EVENT_TIMEOUT):
        out.append(ev)
        if until is not None and until(ev):
            break
    return out


class TestWorkerNodes:
    """On one cluster of worker nodes (``worker_nodes_farm``), shut down after the last of them."""

    def test_six_jobs_over_three_nodes_all_finish_spread_over_the_nodes_one_of_which_joined_later(
            self, worker_nodes_farm):
        cluster, server = worker_nodes_farm          # two worker nodes (the head runs no actor)
        c = server.client()
        jobs = [c.submit(tiny(f"prop {i}", steps=20)) for i in range(6)]
        joined = add_node(cluster)        # after the server started: it must add this node's actor by itself
        for job in jobs:
            types = [e.msg_type for e in watch(c, job)]
            assert types[0] == "accepted" and types[-1] == "finished", types
        ran_on = {finished_on(c, job)["node_id"] for job in jobs}
        assert len(cluster.worker_nodes) == 3
        assert ran_on == {n.node_id for n in cluster.worker_nodes} and joined.node_id in ran_on
        workers = c.info()["workers"]
        assert len(workers) == 3 and {w["node_id"] for w in workers} == ran_on
        result_glb, _ = c.result(jobs[-1])
        assert result_glb[:4] == b"glTF"
        assert listening_elsewhere_than_loopback() == []
        c.close()

    def test_a_node_that_dies_mid_job_its_job_resumes_on_another_node_from_a_checkpoint(
            self, worker_nodes_farm):
        cluster, server = worker_nodes_farm             # the head runs no actor: the job runs on a node we can kill
        c = server.client()
        job = c.submit(tiny("a barrel", steps=40, preview_interval=2, checkpoint_interval=2))
        watch(c, job, until=lambda e: e.msg_type == "progress" and e.content.get("step", 0) >= 6)
        running = [w for w in c.info()["workers"] if w["job_id"] == job]
        assert len(running) == 1
        doomed = next(n for n in cluster.worker_nodes if n.node_id == running[0]["node_id"])
        t_kill = time.monotonic()
        cluster.remove_node(doomed, allow_graceful=False)     # SIGKILL: raylet, object store, the actor
        after = watch(c, job)
        recovery_s = time.monotonic() - t_kill
        types = [e.msg_type for e in after]
        assert "requeued" in types and types[-1] == "finished", types
        restarted = types.index("started", types.index("requeued"))
        steps = [e.content["step"] for e in after[restarted:] if e.msg_type == "progress"
                 and e.content.get("stage") == "optimise"]
        assert steps and steps[0] >= 6                    # resumed from a checkpoint the server holds, not from 0
        worker = finished_on(c, job)
        assert worker["node_id"] != doomed.node_id
        assert c.status(job)["metadata"]["resumed_from_step"] >= 4
        print(f"node death -> job finished elsewhere in {recovery_s:.1f} s")
        assert listening_elsewhere_than_loopback() == []
        c.close()


class TestSingleNode:
    """On one single-node cluster (``single_node_farm``), shut down after the last of them."""

    def test_a_cancel_reaches_the_remote_actor_which_stays_up(self, single_node_farm):
        cluster, server = single_node_farm
        c = server.client()
        job = c.submit(tiny("an endless crate", steps=5000, preview_interval=1, checkpoint_interval=0))
        watch(c, job, until=lambda e: e.msg_type == "progress" and e.content.get("step", 0) >= 2)
        actor_pid = next(w["pid"] for w in c.info()["workers"] if w["job_id"] == job)
        c.cancel(job)
        types = [e.msg_type for e in watch(c, job)]
        assert types[-1] == "cancelled", types
        # the actor stopped the job itself (it was not killed for ignoring the cancel): same process, idle
        assert [(w["pid"], w["state"]) for w in c.info()["workers"]] == [(actor_pid, "idle")]
        assert psutil.pid_exists(actor_pid)
        c.close()

    def test_a_restarted_server_reattaches_to_the_cluster_and_resumes_the_running_job(
            self, single_node_farm):
        cluster, server = single_node_farm
        c = server.client()
        job = c.submit(tiny("a lamp", steps=40, preview_interval=2, checkpoint_interval=2))
        watch(c, job, until=lambda e: e.msg_type == "progress" and e.content.get("step", 0) >= 6)
        old_actor = next(w["pid"] for w in c.info()["workers"] if w["job_id"] == job)
        c.close()
        server.kill9()
        # the actors were owned by the dead server: Ray ends them, nothing keeps running its job
        deadline = time.monotonic() + 60
        while psutil.pid_exists(old_actor) and psutil.Process(old_actor).status() != psutil.STATUS_ZOMBIE \
                and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not psutil.pid_exists(old_actor) or psutil.Process(old_actor).status() == psutil.STATUS_ZOMBIE
        restarted = ServerProc(server.state_dir, args=["--ray", cluster.address]).start(120)
        try:
            c = restarted.client()
            types = [e.msg_type for e in watch(c, job)]
            assert types[-1] == "finished", types
            assert c.status(job)["metadata"]["resumed_from_step"] >= 4
            assert finished_on(c, job)["pid"] != old_actor
            c.close()
        finally:
            restarted.stop()


@pytest.mark.blender
def test_a_batch_from_markers_in_blender_against_a_ray_backed_server(tmp_path):
    """The add-on's own story (Start Backend, Batch from two markers, results placed at the markers,
    the file saved and re-opened mid-batch), with the backend it starts serving from a Ray cluster
    (``--ray``: it has no local workers, so every prop was made by a Ray actor)."""
    from tests.blender.runner import OUTPUT, ROOT, addon_zip, blender_python, check, run_scenario

    blender_python()                  # skips (before any cluster starts) when there is no bpy interpreter
    zip_path = addon_zip()
    cluster = start_cluster(2)
    work = OUTPUT / "ray-batch"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    port = free_port()
    config = work / "config.json"
    config.write_text(json.dumps({"python": sys.executable, "root": str(ROOT), "port": port, "out": str(work),
                                  "checks": ["check_batch_two_markers"],
                                  "serve_args": f"--port {port} --ray {cluster.address}"}))
    try:
        data = run_scenario("scenario_e2e.py", [zip_path, config], work, timeout=900)
        check(data, "check_start_backend")
        check(data, "check_batch_two_markers")
        assert listening_elsewhere_than_loopback() == []
    finally:   # never leave a backend behind, whatever happened in Blender
        pid_file = work / "backend.pid"
        if pid_file.exists():
            try:
                os.killpg(int(pid_file.read_text()), signal.SIGKILL)
            except (OSError, ValueError):
                pass
        cluster.shutdown()
