"""The Ray worker pool: the server's jobs run on the nodes of a Ray cluster (issue 17; see ``pool.py``).

``python -m backend serve --ray auto|HOST:PORT`` connects the server to a running cluster as a Ray
driver. The server keeps everything it keeps with the local pool (queue, SQLite, job files, clients);
the cluster only runs jobs.

* **Actors.** One :class:`~backend.server.ray_actor.JobActor` per GPU of every node (``gpus_per_actor``
  below 1 packs several on one GPU: the built-in prior needs a fraction of one), or on a node
  without GPUs ``cpu_actors_per_node`` CPU actors of ``cpus_per_actor`` CPUs. Each is pinned to its
  node (a hard node-affinity strategy), so the pool knows which actors a node takes down with it,
  and keeps its model loaded between jobs. Every ``node_check_s`` the pool reads the node list: a
  node that joined gets its actors (capacity grows without a restart); a node that left has its
  jobs reported as :class:`JobLost` at once, without waiting for a call to time out.

* **Bytes, not paths.** ``submit`` reads the job's inputs (an init mesh, a parent's checkpoint, the
  job's own last checkpoint) through ``JobFiles.read`` and hands them to the actor as object
  references (``ray.put``). The actor sends back every checkpoint the engine saves, previews, proxy
  meshes and the finished prop as pool events; the server writes them into the job directory, so a
  re-queued job resumes from its last checkpoint on whichever node takes it.

* **Events.** Each busy actor has one ``drain`` call outstanding (a long poll: it returns as soon as
  there is an event, or after ``DRAIN_WAIT_S``); ``poll_events`` collects whatever calls completed
  with ``ray.wait(timeout=0)`` and never blocks. ``run`` returns the events not drained yet plus the
  ``JobEnded``; a drain that was in flight when the job ended is handled first, so events keep their
  order.

* **Faults.** An actor whose call fails with a Ray error (its process or node died) is dropped and
  its job reported lost; the server re-queues it (or fails it after ``max_attempts``). The node's
  slots are re-created while the node lives (with a back-off when actors keep dying at start-up).
  ``cancel`` calls the actor, which stops at its next step after saving a checkpoint; one that
  ignores it for ``cancel_timeout_s`` is killed.

* **Server restart.** The actors are ordinary (not detached) actors owned by the server's driver:
  when the server exits, even by SIGKILL, Ray ends them with it, so no actor keeps running a job the
  server no longer tracks. A restarted server connects to the same cluster, creates fresh actors
  (they load their model again on their first job) and resumes the re-queued jobs from the
  checkpoints it persisted. Several servers may share one cluster: each has its own actors.

* **Loopback.** Ray replaces a loopback cluster address with this machine's network address before
  it connects (ray-project/ray#59110), which fails against a cluster started with
  ``--node-ip-address 127.0.0.1``. For a loopback address the pool sets
  ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` in this process before importing Ray: Ray then takes
  127.0.0.1 as this driver's address, and nothing of the server's listens on the network.

Ray is an optional dependency (``pip install "dreamprop[ray]"``); it is imported only when this
pool starts. Every node needs dreamprop (and torch) installed, the same version as the server.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass, field

from .jobfiles import JobFiles
from .pool import JobEnded, JobLost, JobSpec, PoolHealth, Slot, WorkerPool, WorkerReady

log = logging.getLogger("dreamprop.server")

DRAIN_WAIT_S = 1.0             # how long an actor's drain call waits for an event
ACTOR_CONCURRENCY = 4          # run + drain + cancel + hello


def check_ray_options(gpus_per_actor: float, cpus_per_actor: float, cpu_actors_per_node: int) -> None:
    """Errors name the ``ServerConfig`` field (the CLI turns ``ray_x`` into ``--ray-x``)."""
    def number(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    if not number(gpus_per_actor) or not 0 < gpus_per_actor <= 1:
        raise ValueError(f"ray_gpus_per_actor: must be in (0, 1] (the GPU share of one actor), got {gpus_per_actor!r}")
    if not number(cpus_per_actor) or not 0 < cpus_per_actor <= 1024:
        raise ValueError(f"ray_cpus_per_actor: must be in (0, 1024], got {cpus_per_actor!r}")
    if not isinstance(cpu_actors_per_node, int) or isinstance(cpu_actors_per_node, bool) or \
            not 0 <= cpu_actors_per_node <= 1024:
        raise ValueError(f"ray_cpu_actors_per_node: must be an integer in [0, 1024] (0: GPU nodes only), "
                         f"got {cpu_actors_per_node!r}")


def actors_per_node(resources: dict, *, gpus_per_actor: float, cpus_per_actor: float, cpu_actors_per_node: int) -> int:
    """How many actors a node with these (total) resources gets: one per ``gpus_per_actor`` of its
    GPUs; on a node without GPUs ``cpu_actors_per_node``, as far as its CPUs go."""
    gpus = resources.get("GPU", 0) or 0
    if gpus > 0:
        return int(gpus / gpus_per_actor + 1e-9)
    cpus = resources.get("CPU", 0) or 0
    return min(cpu_actors_per_node, int(cpus / cpus_per_actor + 1e-9))


def cluster_address(address: str) -> str:
    """The address ``ray.init`` will use: ``auto`` is $RAY_ADDRESS, else the cluster last started on
    this machine (the file Ray writes, /tmp/ray/ray_current_cluster)."""
    if address != "auto":
        return address
    if os.environ.get("RAY_ADDRESS"):
        return os.environ["RAY_ADDRESS"]
    try:
        with open(os.path.join(os.environ.get("RAY_TMPDIR", "/tmp/ray"), "ray_current_cluster")) as f:
            return f.read().strip() or address
    except OSError:
        return address


def check_reachable(address: str, timeout_s: float = 10.0) -> None:
    """Fail fast when nothing listens at ``host:port``: ``ray.init`` would retry for minutes."""
    host, sep, port = address.split("://")[-1].rpartition(":")
    if not sep or not port.isdigit():
        return              # not host:port ("auto" with no cluster found): leave it to Ray's own error
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise RuntimeError(f"--ray {address}: no Ray cluster answers there ({e.strerror or e}); start one with "
                           f"`ray start --head` or `python -m backend farm`") from None


def is_loopback_address(address: str) -> bool:
    host = address.split("://")[-1].rsplit(":", 1)[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")


@dataclass
class ActorRecord:
    slot: int
    node_id: str
    node_ip: str
    handle: object
    device: str = "cpu"            # "cuda" | "cpu" (from the actor's hello)
    state: str = "starting"        # starting | idle | busy
    created_at: float = 0.0
    hello_ref: object = None
    run_ref: object = None
    drain_ref: object = None
    job_id: str | None = None
    model: str | None = None
    cancel_sent_at: float | None = None
    info: dict = field(default_factory=dict)

    def public(self) -> dict:
        return {"index": self.slot, "device": self.device, "node_id": self.node_id, "node_ip": self.node_ip,
                "hostname": self.info.get("hostname"), "pid": self.info.get("pid"), "state": self.state,
                "job_id": self.job_id, "model": self.model, "gpu_name": self.info.get("gpu_name"),
                "gpu_memory_bytes": self.info.get("gpu_memory_bytes"), "threads": self.info.get("threads"),
                "error": self.info.get("error")}


class RayPool(WorkerPool):
    def __init__(self, files: JobFiles, *, address: str = "auto", gpus_per_actor: float = 1.0,
                 cpus_per_actor: float = 1.0, cpu_actors_per_node: int = 1, node_check_s: float = 2.0,
                 start_timeout_s: float = 600.0, cancel_timeout_s: float = 60.0, log_level: str | None = None):
        """``gpus_per_actor``: GPU share of each actor on GPU nodes (0.25: four actors per GPU).
        ``cpus_per_actor``: CPUs each actor reserves (and its torch threads); ``cpu_actors_per_node``:
        actors on a node without GPUs (0: use GPU nodes only)."""
        check_ray_options(gpus_per_actor, cpus_per_actor, cpu_actors_per_node)
        self.files = files
        self.address = address
        self.gpus_per_actor = float(gpus_per_actor)
        self.cpus_per_actor = float(cpus_per_actor)
        self.cpu_actors_per_node = cpu_actors_per_node
        self.node_check_s = node_check_s
        self.start_timeout_s = start_timeout_s
        self.cancel_timeout_s = cancel_timeout_s
        self.log_level = log_level or logging.getLevelName(log.getEffectiveLevel())
        self.actors: dict[int, ActorRecord] = {}
        self.nodes: dict[str, dict] = {}            # alive node id -> ray.nodes() entry
        self._node_backoff: dict[str, tuple[int, float]] = {}   # node id -> (quick deaths, retry at)
        self._events: list = []
        self._stopping = False
        self._last_node_check = 0.0
        self._last_collect_error = 0.0
        self._connected = False
        self.ray = None

    # ---- WorkerPool ----------------------------------------------------------------------------
    def start(self) -> None:
        address = cluster_address(self.address)
        check_reachable(address)
        if is_loopback_address(address):
            os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"     # see the module docstring
        try:
            import ray
        except ImportError as e:
            raise RuntimeError('--ray needs Ray: pip install "dreamprop[ray]"') from e
        from .ray_actor import JobActor

        self.ray = ray
        try:
            ray.init(address=address, namespace="dreamprop", log_to_driver=True, configure_logging=False)
        except Exception as e:   # no cluster there, wrong address, version mismatch
            raise RuntimeError(f"--ray {self.address}: cannot connect to a Ray cluster at {address}: {e}") from e
        self._connected = True
        self._remote_actor = ray.remote(JobActor)
        log.info("connected to the Ray cluster at %s (%d node(s) alive)", address,
                 sum(1 for n in ray.nodes() if n.get("Alive")))
        self._sync_nodes(time.monotonic())

    def idle_slots(self) -> list[Slot]:
        if self._stopping:
            return []
        return [Slot(a.slot, a.device, a.model) for a in sorted(self.actors.values(), key=lambda a: a.slot)
                if a.state == "idle"]

    def submit(self, slot_id: int, job: JobSpec) -> bool:
        a = self.actors.get(slot_id)
        if a is None or a.state != "idle":
            return False
        ray = self.ray

        def ref(artifact):
            return ray.put(self.files.read(artifact.job_id, artifact.name)) if artifact is not None else None

        try:
            a.run_ref = a.handle.run.remote(job.job_id, job.settings, ref(job.init_mesh), ref(job.init_checkpoint),
                                            ref(job.resume_checkpoint), ref(job.reference_image))
        except Exception as e:   # the actor's handle is unusable (its node just left)
            log.warning("cannot submit to Ray actor %d: %s", slot_id, e)
            return False
        a.state, a.job_id, a.cancel_sent_at = "busy", job.job_id, None
        a.model = job.settings.get("model")
        a.drain_ref = a.handle.drain.remote(DRAIN_WAIT_S)
        return True

    def cancel(self, job_id: str) -> None:
        for a in self.actors.values():
            if a.job_id == job_id and a.state == "busy":
                a.handle.cancel.remote(job_id)
                a.cancel_sent_at = a.cancel_sent_at or time.monotonic()

    def poll_events(self) -> list:
        if self._connected:
            now = time.monotonic()
            if now - self._last_node_check >= self.node_check_s:
                self._sync_nodes(now)
            try:
                self._collect()
            except Exception as e:   # the cluster is unreachable for now (its head restarting): retry next poll
                if now - self._last_collect_error > 60.0:
                    self._last_collect_error = now
                    log.warning("cannot reach the Ray cluster: %s", e)
            self._check_timeouts(now)
        events, self._events = self._events, []
        return events

    def health(self) -> PoolHealth:
        gpus, models = [], []
        for a in sorted(self.actors.values(), key=lambda a: a.slot):
            if a.device == "cuda":
                gpus.append({"worker": a.slot, "cuda_device": None, "name": a.info.get("gpu_name"),
                             "memory_bytes": a.info.get("gpu_memory_bytes"), "node_id": a.node_id})
            for m in a.info.get("models", []):
                if m not in models:
                    models.append(m)
        return PoolHealth([a.public() for a in sorted(self.actors.values(), key=lambda a: a.slot)], gpus, models)

    def stop(self, *, force: bool = False) -> None:
        self._stopping = True
        for a in list(self.actors.values()):
            if force:
                self._kill(a)
            elif a.state == "busy" and a.job_id is not None:
                a.handle.cancel.remote(a.job_id)     # saves a checkpoint and ends as "cancelled"
                a.cancel_sent_at = time.monotonic()

    def stopped(self) -> bool:
        return not any(a.state == "busy" for a in self.actors.values())

    def close(self) -> None:
        self._stopping = True
        for a in list(self.actors.values()):
            self._kill(a)
        self.actors.clear()
        if self._connected:
            self._connected = False
            self.ray.shutdown()        # disconnects this driver; the cluster keeps running

    # ---- nodes and actors --------------------------------------------------------------------------
    def _actors_for(self, resources: dict) -> int:
        return actors_per_node(resources, gpus_per_actor=self.gpus_per_actor, cpus_per_actor=self.cpus_per_actor,
                               cpu_actors_per_node=self.cpu_actors_per_node)

    def _sync_nodes(self, now: float) -> None:
        self._last_node_check = now
        try:
            nodes = self.ray.nodes()
        except Exception as e:   # the GCS is unreachable for now: try again at the next check
            log.warning("cannot read the Ray cluster's nodes: %s", e)
            return
        alive = {n["NodeID"]: n for n in nodes if n.get("Alive")}
        for node_id in set(self.nodes) - set(alive):
            log.warning("Ray node %s (%s) left the cluster", node_id[:8], self.nodes[node_id].get("NodeManagerAddress"))
        for node_id in set(alive) - set(self.nodes):
            log.info("Ray node %s (%s) joined: %s", node_id[:8], alive[node_id].get("NodeManagerAddress"),
                     {k: v for k, v in alive[node_id].get("Resources", {}).items() if k in ("CPU", "GPU")})
        self.nodes = alive
        for a in list(self.actors.values()):
            if a.node_id not in alive:
                self._drop(a, f"its Ray node {a.node_id[:8]} left the cluster")
        if self._stopping:
            return
        for node_id, n in alive.items():
            quick, retry_at = self._node_backoff.get(node_id, (0, 0.0))
            if now < retry_at:
                continue
            have = sum(1 for a in self.actors.values() if a.node_id == node_id)
            for _ in range(self._actors_for(n.get("Resources", {})) - have):
                self._create(node_id, n.get("NodeManagerAddress", ""), now)

    def _create(self, node_id: str, node_ip: str, now: float) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        slot = next(i for i in range(len(self.actors) + 1) if i not in self.actors)
        gpu_node = (self.nodes[node_id].get("Resources", {}).get("GPU", 0) or 0) > 0
        threads = max(1, int(self.cpus_per_actor))
        handle = self._remote_actor.options(
            num_cpus=self.cpus_per_actor, num_gpus=self.gpus_per_actor if gpu_node else 0,
            max_concurrency=ACTOR_CONCURRENCY, max_restarts=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
        ).remote(slot, threads, self.log_level)
        a = ActorRecord(slot, node_id, node_ip, handle, created_at=now)
        a.hello_ref = handle.hello.remote()
        self.actors[slot] = a
        log.info("Ray actor %d starting on node %s (%s)", slot, node_id[:8], "GPU" if gpu_node else "CPU")

    def _kill(self, a: ActorRecord) -> None:
        try:
            self.ray.kill(a.handle, no_restart=True)
        except Exception:
            pass

    def _drop(self, a: ActorRecord, reason: str) -> None:
        """The actor is gone (or unusable): forget it, report its job, back off when it died young."""
        self.actors.pop(a.slot, None)
        self._kill(a)
        now = time.monotonic()
        if now - a.created_at < 30 and a.node_id in self.nodes:
            quick = self._node_backoff.get(a.node_id, (0, 0.0))[0] + 1
            self._node_backoff[a.node_id] = (quick, now + min(60.0, 0.5 * 2 ** quick))
        else:
            self._node_backoff.pop(a.node_id, None)
        log.warning("Ray actor %d on node %s lost: %s", a.slot, a.node_id[:8], reason)
        if a.job_id is not None and a.state == "busy":
            self._events.append(JobLost(a.job_id, reason))

    def _collect(self) -> None:
        waiting = {}
        for a in self.actors.values():
            for kind in ("hello_ref", "drain_ref", "run_ref"):
                ref = getattr(a, kind)
                if ref is not None:
                    waiting[ref] = (a, kind)
        if not waiting:
            return
        ready, _ = self.ray.wait(list(waiting), num_returns=len(waiting), timeout=0)
        ready_set = set(ready)
        order = {"hello_ref": 0, "drain_ref": 1, "run_ref": 2}     # a job's last drain before its end
        for ref in sorted(ready, key=lambda r: order[waiting[r][1]]):
            a, kind = waiting[ref]
            if self.actors.get(a.slot) is not a or getattr(a, kind) is not ref:
                continue        # dropped meanwhile
            if kind == "run_ref" and a.drain_ref is not None:
                continue        # its last drain is still in flight: take the end at the next poll
            setattr(a, kind, None)
            try:
                value = self.ray.get(ref)
            except Exception as e:   # RayActorError (process or node died), or any other Ray error
                self._drop(a, f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}")
                continue
            if kind == "hello_ref":
                a.info, a.device = value, value.get("device", "cpu")
                a.state = "idle"
                log.info("Ray actor %d ready on node %s: %s %s (%s CPU threads)", a.slot, a.node_id[:8], a.device,
                         value.get("gpu_name") or "", value.get("threads"))
                self._events.append(WorkerReady(a.slot))
            elif kind == "drain_ref":
                self._events.extend(value)
                if a.run_ref is not None and a.run_ref not in ready_set:   # else: the job ended, run_ref has the rest
                    a.drain_ref = a.handle.drain.remote(DRAIN_WAIT_S)
            else:
                self._events.extend(value)
                a.state, a.job_id, a.cancel_sent_at = "idle", None, None
                ended = value[-1] if value and isinstance(value[-1], JobEnded) else None
                log.info("Ray actor %d (node %s) ended job %s: %s", a.slot, a.node_id[:8],
                         ended.job_id if ended else "?", ended.outcome if ended else "?")

    def _check_timeouts(self, now: float) -> None:
        for a in list(self.actors.values()):
            if a.state == "starting" and now - a.created_at > self.start_timeout_s:
                self._drop(a, f"did not start in {self.start_timeout_s:.0f} s (not enough free resources on its node?)")
            elif a.cancel_sent_at is not None and a.state == "busy" and now - a.cancel_sent_at > self.cancel_timeout_s:
                self._drop(a, "ignored a cancel request")
