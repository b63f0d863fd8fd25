"""The worker-pool interface carries a job as bytes, as a pool whose workers share no disk with the
server (the Ray pool of issue 17) needs: the pool is handed artifact names, never paths; the server
persists the checkpoints and results it sends back, so a re-queued job resumes from the last one
and a finished job is fetchable and survives a restart.

The server here is real (sockets, SQLite, job files); the pool is this test acting as a remote worker.
"""

from __future__ import annotations

import dataclasses
import json
import os

from backend.server.jobfiles import CHECKPOINT, INIT_MESH, RESULT_GLB, Artifact, JobFiles, JobResult
from backend.server.pool import (CheckpointSaved, JobEnded, JobLost, JobProgress, PoolHealth, Slot, WorkerPool,
                                 WorkerReady)
from backend.server.server import Server, ServerConfig
from tests.server_fixtures import free_port, tiny

GLB = b"glTF" + b"\x02\x00\x00\x00" + b"\x1c\x00\x00\x00" + b"\x00" * 16


class RemotePool(WorkerPool):
    """One slot on 'another machine': it reads the job's inputs as bytes through the server's JobFiles
    and reports everything back as events holding bytes."""

    def __init__(self, files):
        self.files = files
        self.running: str | None = None
        self.received: list[dict] = []      # what each submit shipped to the remote worker
        self.pending: list = []
        self.cancelled: list[str] = []

    def start(self):
        self.pending.append(WorkerReady(0))

    def idle_slots(self):
        return [] if self.running else [Slot(0, "cpu", None)]

    def submit(self, slot_id, job):
        for f in dataclasses.fields(job):   # names of artifacts, never paths on the server's disk
            value = getattr(job, f.name)
            assert value is None or not isinstance(value, str) or os.sep not in value, (f.name, value)
        shipped = {"job_id": job.job_id, "settings": job.settings}
        for name in ("init_mesh", "init_checkpoint", "resume_checkpoint"):
            ref = getattr(job, name)
            assert ref is None or isinstance(ref, Artifact)
            shipped[name] = self.files.read(ref.job_id, ref.name) if ref else None
        self.received.append(shipped)
        self.running = job.job_id
        return True

    def cancel(self, job_id):
        self.cancelled.append(job_id)

    def poll_events(self):
        out, self.pending = self.pending, []
        return out

    def health(self):
        return PoolHealth([{"index": 0, "state": "busy" if self.running else "idle"}], [], ["builtin"])

    def stop(self, *, force=False):
        pass

    def stopped(self):
        return True

    def close(self):
        pass

    def report(self, *events):
        for ev in events:
            if isinstance(ev, (JobEnded, JobLost)):
                self.running = None
        self.pending.extend(events)


def start_server(state_dir):
    srv = Server(ServerConfig(state_dir=str(state_dir), port=free_port()),
                 pool=RemotePool(JobFiles(os.path.join(state_dir, "jobs"))))
    srv._setup()
    return srv


def test_a_pool_that_ships_bytes_resumes_from_the_checkpoints_it_sends_and_delivers_its_result(tmp_path):
    srv = start_server(tmp_path / "state")
    pool = srv.pool
    try:
        job_id, _ = srv.store.add_job("local:local", tiny(), has_init_mesh=True)
        srv.files.write(job_id, INIT_MESH, GLB)
        srv._tick()
        assert [r["job_id"] for r in pool.received] == [job_id] and srv.store.get(job_id)["state"] == "running"
        assert pool.received[0]["init_mesh"] == GLB and pool.received[0]["resume_checkpoint"] is None

        pool.report(JobProgress(job_id, {"step": 5, "total": 20, "losses": {"sds": 1.0}}, b"\x89PNG preview"),
                    CheckpointSaved(job_id, 5, b"checkpoint at step 5"),
                    JobLost(job_id, "node died"))
        srv._tick()                                          # re-queued, then started again on the free slot
        job = srv.store.get(job_id)
        assert job["crashes"] == 1 and job["runs"] == 2 and job["step"] == 5
        assert pool.received[1]["resume_checkpoint"] == b"checkpoint at step 5"

        result = JobResult(GLB, b"\x89PNG turntable", {"faces": 12})
        pool.report(JobEnded(job_id, "finished", result=result))
        srv._tick()
        job = srv.store.get(job_id)
        assert job["state"] == "finished" and json.loads(job["metadata"]) == {"faces": 12}
        assert srv.files.read(job_id, RESULT_GLB) == GLB and srv.files.finished_metadata(job_id) == {"faces": 12}
        finished = srv.store.events_after(job_id, 0)[-1]
        assert finished["type"] == "finished"
        assert srv.files.event_buffers(job_id, "finished", finished["content"]) == [GLB, b"\x89PNG turntable"]
    finally:
        srv._shutdown()
    # a restarted server still has the result and the last checkpoint (a refine starts from it): both
    # were persisted by the server, not left with the pool
    srv = start_server(tmp_path / "state")
    try:
        assert srv.store.get(job_id)["state"] == "finished" and srv.files.read(job_id, CHECKPOINT)
    finally:
        srv._shutdown()


class TwoWorkerPool(RemotePool):
    """Worker 0 runs a group with a free place for the job's kind; worker 1 is empty, no model loaded."""

    def __init__(self, files, group: str, empty_worker: bool = True):
        super().__init__(files)
        self.group, self.empty_worker, self.slots_taken = group, empty_worker, []

    def idle_slots(self):
        if self.slots_taken:
            return []
        slots = [Slot(0, "cuda", "tiny-random", self.group)]
        return slots + [Slot(1, "cuda", None)] if self.empty_worker else slots

    def submit(self, slot_id, job):
        self.slots_taken.append(slot_id)
        return super().submit(slot_id, job)


def test_a_job_goes_to_an_empty_worker_before_a_place_in_a_running_group(tmp_path):
    """Jobs in their own processes overlap their host-bound work (results/speed/THROUGHPUT.md, session 30):
    a group's free place is taken only when no worker is empty. Break: prefer the slot with the job's
    model loaded (the group's) over the empty worker."""
    from backend.engine.grouping import group_key

    for empty_worker, expected in ((True, [1]), (False, [0])):
        state = tmp_path / f"state{int(empty_worker)}"
        settings = tiny(seed=4)
        srv = Server(ServerConfig(state_dir=str(state), port=free_port()),
                     pool=TwoWorkerPool(JobFiles(os.path.join(state, "jobs")), group_key(settings), empty_worker))
        srv._setup()
        try:
            srv.store.add_job("local:local", settings)
            srv._tick()
            assert srv.pool.slots_taken == expected
        finally:
            srv._shutdown()
