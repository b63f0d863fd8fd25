"""The worker-pool interface: what the server needs from whatever runs its jobs.

The server owns the queue, the job records (SQLite), the job files and every client; a pool owns
the workers. The server asks the pool for idle slots, submits one job per slot, forwards cancels,
and polls the pool for events, which it persists before any client sees them. A pool never touches
the job store: a worker that dies mid-job is reported as :class:`JobLost` and the server decides
(re-queue and resume from the checkpoint, or fail after ``max_attempts``).

Implementations:

* ``local_pool.LocalProcessPool`` — worker processes on this machine (today's behaviour: one per
  GPU or one on the CPU, kill -9 safe, respawned when they die). Its workers share the server's
  disk, so it turns :class:`~backend.server.jobfiles.Artifact` names into paths and its workers
  write checkpoints and results straight into the job directory.

* ``ray_pool.RayPool`` — actors on the nodes of a Ray cluster (``serve --ray``). Nothing it
  handles is a path on the server's disk: ``submit`` reads the job's input artifacts here with
  ``JobFiles.read`` and passes them as object references; the actors return checkpoints as
  :class:`CheckpointSaved` events (the server writes them, so a re-queued job resumes on any node),
  previews and proxy meshes as bytes in :class:`JobProgress` / :class:`ProxyMesh`, and the finished
  prop as ``JobEnded.result`` (:class:`~backend.server.jobfiles.JobResult`). A dead node's jobs are
  :class:`JobLost`; slots come from the cluster's resources and stay small integers (the job store
  and the ``started`` event record the slot as ``worker``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from .jobfiles import Artifact, JobResult


@dataclass(frozen=True)
class Slot:
    """One place a job can run: a worker process, or (Ray) an actor. A worker that runs several jobs
    as a group (``serve --batch-jobs``) offers one slot per free place, all with its id."""

    id: int
    device: str                  # "cuda" | "cpu"
    model: str | None            # the model it has loaded: the server prefers to keep it busy
    group: str | None = None     # the group running there (``grouping.group_key``): only a job with
    #                              this key may take the slot; None: any job


@dataclass
class JobSpec:
    job_id: str
    settings: dict               # GenerationSettings.to_dict()
    init_mesh: Artifact | None = None          # a GLB to refine (upload, or a parent's result)
    init_checkpoint: Artifact | None = None    # a parent job's checkpoint to refine from
    resume_checkpoint: Artifact | None = None  # this job's own checkpoint (it was re-queued)
    checkpoint: Artifact | None = None         # where this job's checkpoints go
    reference_image: Artifact | None = None    # an image-to-3D job's picture


# ---- what a pool reports -------------------------------------------------------------------------
@dataclass
class WorkerReady:
    slot: int


@dataclass
class JobProgress:
    job_id: str
    content: dict                # step, total, losses, elapsed_s, eta_s, stage, message
    preview_png: bytes | None = None


@dataclass
class ProxyMesh:
    job_id: str
    step: int | None
    glb: bytes


@dataclass
class CheckpointSaved:
    """A checkpoint sent as bytes (pools whose workers do not share the server's disk)."""

    job_id: str
    step: int | None
    data: bytes


@dataclass
class JobEnded:
    """A worker finished with a job: ``outcome`` is finished | cancelled | failed."""

    job_id: str
    outcome: str
    error: str | None = None
    traceback: str = ""
    step: int | None = None
    metadata: dict = field(default_factory=dict)
    result: JobResult | None = None      # None: the worker wrote the result files itself


@dataclass
class JobLost:
    """The worker running a job died or was killed (crash, OOM kill, lost node)."""

    job_id: str
    reason: str


PoolEvent = WorkerReady | JobProgress | ProxyMesh | CheckpointSaved | JobEnded | JobLost


@dataclass
class PoolHealth:
    workers: list[dict]          # one public view per worker (``info`` reply)
    gpus: list[dict]             # {"worker", "cuda_device", "name", "memory_bytes"}
    models: list[str]            # models the workers can load


class WorkerPool(ABC):
    """Runs jobs somewhere. Only the server's main loop calls it (one thread)."""

    @abstractmethod
    def start(self) -> None:
        """Start the workers (returns at once; each reports :class:`WorkerReady` when it is)."""

    @abstractmethod
    def idle_slots(self) -> list[Slot]:
        """Slots that can take a job now."""

    @abstractmethod
    def submit(self, slot_id: int, job: JobSpec) -> bool:
        """Start ``job`` on an idle slot; False when it cannot be reached (the job stays queued)."""

    @abstractmethod
    def cancel(self, job_id: str) -> None:
        """Ask the worker running ``job_id`` to stop at its next step (it ends with outcome
        ``cancelled``); a worker that ignores it is killed after the pool's cancel timeout."""

    @abstractmethod
    def poll_events(self) -> list:
        """Everything that happened since the last call (never blocks). Also where the pool checks
        its workers' health: deaths, silent workers, respawns."""

    def wait_handles(self) -> list:
        """Sockets the server's poller may wait on to wake up when an event is ready (optional)."""
        return []

    @abstractmethod
    def health(self) -> PoolHealth:
        """The workers as ``info`` shows them."""

    @abstractmethod
    def stop(self, *, force: bool = False) -> None:
        """Begin a shutdown: running jobs save a checkpoint and end as ``cancelled`` (reported by
        ``poll_events``); ``force`` kills at once."""

    @abstractmethod
    def stopped(self) -> bool:
        """True once no worker is left running after :meth:`stop`."""

    @abstractmethod
    def close(self) -> None:
        """Kill whatever is left and release every resource."""
