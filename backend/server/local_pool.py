"""The local worker pool: worker processes on the server's own machine (see ``pool.py``).

Spawned processes per visible GPU (``CUDA_VISIBLE_DEVICES`` set per worker; several per GPU as its
memory and the cores allow, ``gpu_workers_per_device``), or one on the CPU.
A worker runs up to ``batch_jobs`` jobs at once as one group (one guidance call per step for all of
them, ``backend.engine.batching``): an idle worker offers one slot; once its first job has fixed the
group's key (``backend.engine.grouping``), it offers its remaining places for jobs with that key.
Workers connect a DEALER socket to this pool's ROUTER on loopback. They share the server's disk:
a worker reads its inputs and writes checkpoints and results straight into the job directory, so
a job killed at any instant resumes from its last checkpoint. A worker that dies (OOM kill,
segfault, SIGKILL) or goes silent is reported as :class:`JobLost` and started again (with a
back-off when it keeps dying at start-up).

The worker channel is guarded against other local processes as the rest of local mode is: every
message is signed with a key made for this server run, and each worker spawn gets a routing
identity with a random part (``w{index}.{gen}.{token}``). Key and identity reach the worker through
the spawn pipe (never the command line or the environment), so a process that connects to the
loopback port cannot pose as, or get ahead of, the next worker (issue 16 point 7): a guessable
identity let any local process claim it first, and the real worker's messages were then dropped.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import secrets
import signal
import subprocess
import time
from dataclasses import dataclass, field

import zmq

from shared.protocol import Message, ProtocolError, Session, new_id

from .jobfiles import JobFiles
from .pool import (JobEnded, JobLost, JobProgress, JobSpec, PoolHealth, ProxyMesh, Slot, WorkerPool,
                   WorkerReady)

log = logging.getLogger("dreamprop.server")

MB = 1024 * 1024
MAX_WORKER_BUFFER_BYTES = 512 * MB        # previews, proxy meshes: far below this
WORKER_THREADS_AUTO = 0
MAX_BATCH_JOBS = 64
# Jobs per group when not set: a CPU is busy with one job's UNet already; on a GPU one job's 64^2
# latents leave most of the device idle (results/speed/THROUGHPUT.md says why 8). A GPU that gets
# several worker processes (below) gives each a group of SHARED_GPU_BATCH_JOBS: measured on one H200
# (session 30, the preset with its fine stage), 16 built-in props in 8 processes took 55.9 s one job
# at a time each, 52.9 s as 2-job groups, 72.3 s in 4 processes of 4.
DEFAULT_BATCH_JOBS = {"cpu": 1, "cuda": 8}
SHARED_GPU_BATCH_JOBS = 2
# ... where each job of the full groups would keep this much of the GPU (an SD-1.5 job at the defaults peaks
# at 3.9-4.3 GB, weights included): an H200 (8 workers, 8.8 GiB a job) or an 80 GB card (4 workers on 8
# cores, 10 GiB) groups; a 24 or 48 GB card (6 GiB) keeps one job a worker, where two SD jobs beside each
# worker's would rarely pass the worker's check before joining (``worker.fits_beside_group``).
SHARED_GPU_MIN_JOB_MEMORY = 7 * 1024 ** 3
# Worker processes per GPU when --workers is not given. Measured on one H200 (results/speed/NOTES.md,
# "Throughput, processes mode"): 16 built-in-prior props took 209.5 s one after another, 138.3 s as
# one group in one process and 45.9 s in 8 processes (session 14's preset, coarse only). The NeRF side of a step is launch-bound on the
# host, so processes overlap it on several cores and a group in one process does not. Each process
# holds its own models and one job's activations (an SD-1.5 job at the defaults peaks at 3.9 GB with
# ~2.6 GB of fp16 weights, results/speed/cost.json), so a worker is given 12 GB of the GPU and two
# CPU cores: 8 on an H200 with 16 cores, 2 on a 24 GB card, 1 on anything under 24 GB.
MAX_WORKERS_PER_GPU = 8
GPU_MEMORY_PER_WORKER = 12 * 1024 ** 3
CPU_CORES_PER_GPU_WORKER = 2


@dataclass
class WorkerHandle:
    index: int
    device: str                  # "cuda" | "cpu"
    cuda_device: str | None      # the CUDA_VISIBLE_DEVICES value of this worker
    gen: int = 0
    token: str = ""              # random part of this spawn's identity
    proc: multiprocessing.Process | None = None
    state: str = "down"          # down | starting | idle | busy | stopping
    job_ids: list[str] = field(default_factory=list)    # the jobs it runs (one group)
    group: str | None = None     # their group key (``grouping.group_key``)
    capacity: int = 1            # jobs per group
    model: str | None = None     # model it has loaded
    last_seen: float = 0.0
    spawned_at: float = 0.0
    respawn_at: float = 0.0
    quick_deaths: int = 0
    cancel_sent_at: dict[str, float] = field(default_factory=dict)    # job id -> when cancel was asked
    kill_reason: str | None = None
    last_exit: str | None = None
    info: dict = field(default_factory=dict)

    @property
    def identity(self) -> bytes:
        return f"w{self.index}.{self.gen}.{self.token}".encode()

    def public(self) -> dict:
        return {"index": self.index, "device": self.device, "cuda_device": self.cuda_device,
                "pid": self.proc.pid if self.proc else None, "state": self.state,
                "job_id": self.job_ids[0] if self.job_ids else None, "job_ids": list(self.job_ids),
                "batch_jobs": self.capacity,
                "model": self.model, "gpu_name": self.info.get("gpu_name"),
                "gpu_memory_bytes": self.info.get("gpu_memory_bytes"), "threads": self.info.get("threads"),
                "error": self.info.get("error"), "last_exit": self.last_exit}


def detect_gpus() -> list[dict]:
    """Visible NVIDIA GPUs without importing torch: CUDA_VISIBLE_DEVICES, else nvidia-smi."""
    gpus: list[dict] = []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20).stdout
        for line in out.strip().splitlines():
            parts = [p.strip() for p in line.split(",")]
            if len(parts) >= 3 and parts[0].isdigit():
                gpus.append({"index": parts[0], "name": parts[1], "memory_bytes": int(float(parts[2]) * MB)})
    except (OSError, subprocess.SubprocessError, ValueError):
        gpus = []
    cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
    if cvd is not None:
        wanted = [d.strip() for d in cvd.split(",") if d.strip() and d.strip() != "-1"]
        by_index = {g["index"]: g for g in gpus}
        gpus = [by_index.get(d, {"index": d, "name": None, "memory_bytes": None}) for d in wanted]
    return gpus


def gpu_workers_per_device(memory_bytes: int | None, cores: int, gpus: int) -> int:
    """Worker processes for one GPU of ``memory_bytes`` (None: unknown, one) when ``gpus`` GPUs share
    ``cores`` CPU cores: as many as its memory and the cores allow, at most ``MAX_WORKERS_PER_GPU``."""
    by_memory = int(memory_bytes // GPU_MEMORY_PER_WORKER) if memory_bytes else 1
    by_cores = cores // (CPU_CORES_PER_GPU_WORKER * max(1, gpus))
    return max(1, min(MAX_WORKERS_PER_GPU, by_memory, by_cores))


def available_cores() -> int:
    """Cores this process may run on (the affinity mask, e.g. under taskset or a container's cpuset)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def check_batch_jobs(value) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_BATCH_JOBS:
        raise ValueError(f"batch_jobs: must be 1 to {MAX_BATCH_JOBS} jobs per worker group (or unset: "
                         f"{DEFAULT_BATCH_JOBS['cpu']} on a CPU, {DEFAULT_BATCH_JOBS['cuda']} on a GPU), got {value!r}")
    return value


def check_worker_threads(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"worker_threads: must be 0 (auto: all cores, shared among the workers) or a positive "
                         f"number of threads per worker, got {value!r}")
    return value


class LocalProcessPool(WorkerPool):
    def __init__(self, files: JobFiles, *, devices: str = "auto", workers: int | None = None,
                 worker_threads: int = WORKER_THREADS_AUTO, worker_timeout_s: float = 300.0,
                 start_timeout_s: float = 600.0, cancel_timeout_s: float = 60.0, log_level: str | None = None,
                 batch_jobs: int | None = None):
        """``devices``: auto (workers on every visible GPU, a CPU worker when there is none) | cpu |
        CUDA indices "0,1". ``workers`` overrides the count (0: none, jobs only queue; default: one
        on the CPU, ``gpu_workers_per_device`` per GPU).
        ``worker_threads``: CPU threads per worker (torch, OpenMP, MKL); 0 shares all cores among them.
        ``batch_jobs``: jobs a worker runs as one group (None: ``DEFAULT_BATCH_JOBS`` of its device;
        where a GPU has several workers, ``SHARED_GPU_BATCH_JOBS`` if its memory allows, else 1)."""
        self.files = files
        self.batch_jobs = check_batch_jobs(batch_jobs)
        self.worker_threads = check_worker_threads(worker_threads)
        self.worker_timeout_s = worker_timeout_s
        self.start_timeout_s = start_timeout_s
        self.cancel_timeout_s = cancel_timeout_s
        self.log_level = log_level or logging.getLevelName(log.getEffectiveLevel())
        self.detected_gpus: list[dict] = []
        specs = self._worker_specs(devices, workers)
        self.workers = [WorkerHandle(i, d, c, capacity=self.batch_jobs or self._default_batch_jobs(d, c, specs))
                        for i, (d, c) in enumerate(specs)]
        self.threads_per_worker = self.worker_threads or max(1, available_cores() // max(1, len(self.workers)))
        self._stopping = False
        self._events: list = []
        self._bad_messages = 0
        self._last_bad_log = 0.0
        self.ctx: zmq.Context | None = None
        self.router = None

    def _worker_specs(self, devices: str, workers: int | None) -> list[tuple[str, str | None]]:
        if devices == "cpu":
            specs = [("cpu", None)]
        elif devices == "auto":
            self.detected_gpus = detect_gpus()
            specs = [("cuda", g["index"]) for g in self.detected_gpus] or [("cpu", None)]
        else:
            specs = [("cuda", d.strip()) for d in devices.split(",") if d.strip()]
            self.detected_gpus = detect_gpus()
        if workers is not None:
            n = workers
            specs = (specs * (n // max(1, len(specs)) + 1))[:n] if n > 0 else []
        elif specs and specs[0][0] == "cuda":
            memory = {g["index"]: g.get("memory_bytes") for g in self.detected_gpus}
            specs = [spec for spec in specs
                     for _ in range(gpu_workers_per_device(memory.get(spec[1]), available_cores(), len(specs)))]
        return specs

    def job_memory_share(self, usable_share: float) -> int | None:
        """GPU memory one job may use when a GPU runs several workers at once: ``usable_share`` of the
        smallest such GPU's memory, split among its workers (None: no GPU has more than one). A worker's
        group is not split here: a job joins a running group only if it fits in the memory then free
        (``worker.fits_beside_group``), so a job that needs a worker's whole share still runs, alone."""
        memory = {g["index"]: g.get("memory_bytes") for g in self.detected_gpus}
        shares = []
        for gpu in {w.cuda_device for w in self.workers if w.device == "cuda"}:
            sharing = sum(1 for w in self.workers if w.cuda_device == gpu)
            if sharing > 1 and memory.get(gpu):
                shares.append(int(memory[gpu] * usable_share / sharing))
        return min(shares) if shares else None

    def _default_batch_jobs(self, device: str, cuda_device: str | None, specs: list) -> int:
        """Jobs per group when --batch-jobs is not given: on a GPU with several workers,
        ``SHARED_GPU_BATCH_JOBS`` each where every job of the full groups keeps
        ``SHARED_GPU_MIN_JOB_MEMORY`` of the GPU, else one."""
        sharing = sum(1 for d, c in specs if c == cuda_device)
        if device == "cuda" and sharing > 1:
            memory = {g["index"]: g.get("memory_bytes") for g in self.detected_gpus}.get(cuda_device)
            if memory and memory / (sharing * SHARED_GPU_BATCH_JOBS) >= SHARED_GPU_MIN_JOB_MEMORY:
                return SHARED_GPU_BATCH_JOBS
            return 1
        return DEFAULT_BATCH_JOBS[device]

    # ---- WorkerPool ----------------------------------------------------------------------------
    def start(self) -> None:
        # workers talk to us over loopback with a key made for this run (it reaches them through
        # the spawn pipe); unsigned or wrongly signed messages are dropped
        self.key = new_id().encode("ascii")
        self.session = Session(self.key, max_age_s=None, max_content_bytes=16 * MB, max_buffers=4,
                               max_buffer_bytes=MAX_WORKER_BUFFER_BYTES)
        self.ctx = zmq.Context()
        r = self.ctx.socket(zmq.ROUTER)
        r.setsockopt(zmq.LINGER, 0)
        r.setsockopt(zmq.ROUTER_MANDATORY, 1)
        r.setsockopt(zmq.MAXMSGSIZE, MAX_WORKER_BUFFER_BYTES + 16 * MB)   # a stranger can't make us buffer GBs
        r.bind("tcp://127.0.0.1:*")
        self.endpoint = r.getsockopt(zmq.LAST_ENDPOINT).decode()
        self.router = r
        log.info("worker channel on %s; %d worker(s), %d CPU thread(s) each", self.endpoint, len(self.workers),
                 self.threads_per_worker)
        self.mp = multiprocessing.get_context("spawn")
        for w in self.workers:
            self._spawn(w)

    def idle_slots(self) -> list[Slot]:
        if self._stopping:
            return []
        slots = []
        for w in self.workers:
            if w.state == "idle":
                slots.append(Slot(w.index, w.device, w.model))     # its first job decides the group
            elif w.state == "busy" and w.group is not None:
                slots += [Slot(w.index, w.device, w.model, w.group)] * (w.capacity - len(w.job_ids))
        return slots

    def submit(self, slot_id: int, job: JobSpec) -> bool:
        from backend.engine.grouping import group_key

        w = self.workers[slot_id]
        key = group_key(job.settings)
        if w.state not in ("idle", "busy") or len(w.job_ids) >= w.capacity or (w.job_ids and key != w.group):
            return False
        payload = {"job_id": job.job_id, "settings": job.settings, "checkpoint_path": self.files.path(job.checkpoint),
                   "result_dir": self.files.make_dir(job.job_id)}
        if job.init_mesh is not None:
            payload["init_mesh_path"] = self.files.path(job.init_mesh)
        if job.init_checkpoint is not None:
            payload["init_checkpoint"] = self.files.path(job.init_checkpoint)
        if job.reference_image is not None:
            payload["reference_image_path"] = self.files.path(job.reference_image)
        # (resume_checkpoint is checkpoint_path itself: the engine resumes from it when it exists)
        if not self._send(w, "run", payload):
            return False
        if not w.job_ids:
            w.last_seen = time.monotonic()
        w.state, w.group = "busy", key
        w.job_ids.append(job.job_id)
        return True

    def cancel(self, job_id: str) -> None:
        for w in self.workers:
            if job_id in w.job_ids and w.state == "busy":
                self._send(w, "cancel", {"job_id": job_id})
                w.cancel_sent_at.setdefault(job_id, time.monotonic())

    def poll_events(self) -> list:
        self._read_messages()
        self._check_workers(time.monotonic())
        events, self._events = self._events, []
        return events

    def wait_handles(self) -> list:
        return [self.router] if self.router is not None else []

    def health(self) -> PoolHealth:
        gpus, models = [], []
        for w in self.workers:
            if w.device == "cuda":
                known = next((g for g in self.detected_gpus if g["index"] == w.cuda_device), {})
                gpus.append({"worker": w.index, "cuda_device": w.cuda_device,
                             "name": w.info.get("gpu_name") or known.get("name"),
                             "memory_bytes": w.info.get("gpu_memory_bytes") or known.get("memory_bytes")})
            for m in w.info.get("models", []):
                if m not in models:
                    models.append(m)
        return PoolHealth([w.public() for w in self.workers], gpus, models)

    def stop(self, *, force: bool = False) -> None:
        self._stopping = True
        for w in self.workers:
            if w.proc is not None and w.proc.is_alive():
                if force or w.state == "starting":
                    w.proc.kill()       # still importing: nothing to save
                else:
                    self._send(w, "shutdown", {})

    def stopped(self) -> bool:
        return not any(w.proc is not None and w.proc.is_alive() for w in self.workers)

    def close(self) -> None:
        self._stopping = True
        for w in self.workers:
            if w.proc is not None:
                if w.proc.is_alive():
                    w.proc.kill()
                w.proc.join(5)
        if self.router is not None:
            self.router.close(linger=0)
            self.router = None
        if self.ctx is not None:
            self.ctx.term()
            self.ctx = None

    # ---- processes -----------------------------------------------------------------------------
    def _spawn(self, w: WorkerHandle) -> None:
        from .worker import WorkerArgs, worker_main

        w.gen += 1
        w.token = secrets.token_hex(16)
        w.state, w.job_ids, w.group, w.model, w.cancel_sent_at, w.kill_reason = "starting", [], None, None, {}, None
        w.info = {}
        args = WorkerArgs(index=w.index, gen=w.gen, identity=w.identity, endpoint=self.endpoint, key=self.key,
                          device=w.device, cuda_device=w.cuda_device, parent_pid=os.getpid(),
                          threads=self.threads_per_worker, log_level=self.log_level, batch_jobs=w.capacity)
        w.proc = self.mp.Process(target=worker_main, name=f"dreamprop-worker-{w.index}", daemon=True, args=(args,))
        w.proc.start()
        w.spawned_at = w.last_seen = time.monotonic()
        log.info("worker %d started (pid %d, %s%s)", w.index, w.proc.pid, w.device,
                 f" CUDA_VISIBLE_DEVICES={w.cuda_device}" if w.cuda_device is not None else "")

    def _kill(self, w: WorkerHandle, reason: str) -> None:
        log.warning("killing worker %d (pid %s): %s", w.index, w.proc.pid if w.proc else None, reason)
        w.kill_reason = reason
        if w.proc is not None:
            w.proc.kill()

    def _check_workers(self, now: float) -> None:
        for w in self.workers:
            if w.proc is None:
                if w.state == "down" and now >= w.respawn_at and not self._stopping:
                    self._spawn(w)
                continue
            if not w.proc.is_alive():
                self._on_death(w, now)
                continue
            silent = now - w.last_seen
            if w.state == "busy" and silent > self.worker_timeout_s:
                self._kill(w, f"no heartbeat for {silent:.0f} s")
            elif w.state == "starting" and now - w.spawned_at > self.start_timeout_s:
                self._kill(w, "did not start in time")
            elif w.cancel_sent_at and now - min(w.cancel_sent_at.values()) > self.cancel_timeout_s:
                self._kill(w, "ignored a cancel request")

    def _on_death(self, w: WorkerHandle, now: float) -> None:
        code = w.proc.exitcode
        how = (f"killed by signal {signal.Signals(-code).name}" if code is not None and code < 0
               else f"exit code {code}")
        if w.kill_reason:
            how = f"{w.kill_reason}; {how}"
        log.warning("worker %d (pid %s) died: %s", w.index, w.proc.pid, how)
        w.last_exit = how
        try:
            w.proc.join(0.1)
            w.proc.close()
        except Exception:
            pass
        w.proc = None
        job_ids, w.job_ids, w.group, w.cancel_sent_at = w.job_ids, [], None, {}
        w.state = "down"
        lived = now - w.spawned_at
        w.quick_deaths = w.quick_deaths + 1 if lived < 30 else 0
        w.respawn_at = now + min(60.0, 0.5 * 2 ** w.quick_deaths) if w.quick_deaths else now
        for job_id in job_ids:
            self._events.append(JobLost(job_id, how))

    # ---- messages ------------------------------------------------------------------------------
    def _send(self, w: WorkerHandle, msg_type: str, content: dict) -> bool:
        try:
            self.router.send_multipart(self.session.serialize(msg_type, content, identities=[w.identity]),
                                       flags=zmq.NOBLOCK)
            return True
        except zmq.ZMQError as e:
            log.warning("cannot reach worker %d (%s)", w.index, e)
            return False

    def _read_messages(self) -> None:
        if self.router is None:
            return
        for _ in range(1000):
            try:
                frames = self.router.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                msg = self.session.deserialize(frames)
            except ProtocolError as e:
                self._bad_message(f"{e.reason}")
                continue
            idx, gen = msg.content.get("index"), msg.content.get("gen")
            if not isinstance(idx, int) or not 0 <= idx < len(self.workers):
                self._bad_message("no such worker")
                continue
            w = self.workers[idx]
            if gen != w.gen:
                continue            # a message from a previous incarnation of this worker
            if msg.identities[:1] not in ([w.identity], [w.identity + b".hb"]):
                self._bad_message("wrong identity")
                continue
            w.last_seen = time.monotonic()
            try:
                self._on_message(w, msg)
            except Exception:
                log.exception("error handling a worker message")

    def _bad_message(self, why: str) -> None:
        self._bad_messages += 1
        now = time.monotonic()
        if now - self._last_bad_log > 60.0:     # a local stranger may send many: log at most once a minute
            self._last_bad_log = now
            log.warning("dropped a bad message on the worker channel (%s; %d so far)", why, self._bad_messages)

    def _on_message(self, w: WorkerHandle, msg: Message) -> None:
        t, c = msg.msg_type, msg.content
        if t == "heartbeat":
            return
        if t == "hello":
            w.info = c
            if w.state == "starting":
                w.state = "idle"
            log.info("worker %d ready: %s %s (%s CPU threads)", w.index, c.get("device"), c.get("gpu_name") or "",
                     c.get("threads"))
            self._events.append(WorkerReady(w.index))
            return
        if t == "bye":
            return
        job_id = c.get("job_id")
        if job_id is None or job_id not in w.job_ids:
            return
        if t == "progress":
            content = {k: c.get(k) for k in ("step", "total", "losses", "elapsed_s", "eta_s", "stage", "message")}
            preview = msg.buffers[0] if msg.buffers and msg.buffers[0] else None
            self._events.append(JobProgress(job_id, content, preview))
        elif t == "proxy_mesh":
            if msg.buffers and msg.buffers[0]:
                self._events.append(ProxyMesh(job_id, c.get("step"), msg.buffers[0]))
        elif t == "done":
            w.job_ids.remove(job_id)
            w.cancel_sent_at.pop(job_id, None)
            if not w.job_ids:
                w.group = None
                w.state = "idle" if w.state == "busy" else w.state
            if c.get("model"):
                w.model = c["model"]
            self._events.append(JobEnded(job_id, str(c.get("outcome")), error=c.get("error"),
                                         traceback=c.get("traceback") or "", step=c.get("step"),
                                         metadata=c.get("metadata") or {}))
