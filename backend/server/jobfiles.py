"""The server's job directories: ``<state-dir>/jobs/<job id>/`` holds what a job needs and makes.

    init.glb        the mesh a client sent to refine (written before the submit is acknowledged)
    reference.img   an image-to-3D job's picture, as the client sent it (the same)
    checkpoint.pt   the latest training checkpoint (a re-queued job resumes from it)
    preview.png     the latest preview, proxy.glb the latest proxy mesh (re-sent on attach)
    result.glb, turntable.png, metadata.json   the finished prop

Only the server decides where these live. A worker pool is handed :class:`Artifact` names (a job id
and a file name), never paths: the local pool turns them into paths on this disk for its workers, a
pool whose workers run on other machines reads the bytes here and ships them (see ``pool.py``).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass

from backend.atomic_write import write_atomic


INIT_MESH = "init.glb"
REFERENCE_IMAGE = "reference.img"
CHECKPOINT = "checkpoint.pt"
PREVIEW = "preview.png"
PROXY_MESH = "proxy.glb"
RESULT_GLB = "result.glb"
TURNTABLE = "turntable.png"
METADATA = "metadata.json"

# the files each persisted event carries as buffers when it is sent or replayed
EVENT_FILES = {"progress": [PREVIEW], "proxy_mesh": [PROXY_MESH], "finished": [RESULT_GLB, TURNTABLE]}


@dataclass(frozen=True)
class Artifact:
    """A file of a job, named by the job and the file, not by where it lives."""

    job_id: str
    name: str


@dataclass
class JobResult:
    """A finished prop as bytes (what a pool without access to this disk sends back)."""

    glb: bytes
    turntable_png: bytes
    metadata: dict


class JobFiles:
    def __init__(self, jobs_dir: str):
        self.jobs_dir = os.path.abspath(jobs_dir)

    def dir(self, job_id: str) -> str:
        return os.path.join(self.jobs_dir, job_id)

    def make_dir(self, job_id: str) -> str:
        d = self.dir(job_id)
        os.makedirs(d, exist_ok=True)
        return d

    def path(self, artifact: Artifact) -> str:
        """Where an artifact lives on the server's disk (for workers on this machine only)."""
        return os.path.join(self.dir(artifact.job_id), artifact.name)

    def exists(self, job_id: str, name: str) -> bool:
        return os.path.exists(os.path.join(self.dir(job_id), name))

    def artifact(self, job_id: str, name: str) -> Artifact | None:
        """The artifact when the file is there, else None."""
        return Artifact(job_id, name) if self.exists(job_id, name) else None

    def read(self, job_id: str, name: str) -> bytes:
        with open(os.path.join(self.dir(job_id), name), "rb") as f:
            return f.read()

    def write(self, job_id: str, name: str, data: bytes) -> None:
        """Atomically and durably replace a job file, readable by its owner only (the project's one
        atomic-write helper; the fsync costs a few ms, also for the often-written previews)."""
        write_atomic(os.path.join(self.make_dir(job_id), name), data, mode=0o600)

    def has_result(self, job_id: str) -> bool:
        return self.exists(job_id, RESULT_GLB) and self.exists(job_id, TURNTABLE)

    def save_result(self, job_id: str, result: JobResult) -> None:
        """Write a result received as bytes; metadata.json last, since recovery reads it as 'done'."""
        self.write(job_id, RESULT_GLB, result.glb)
        self.write(job_id, TURNTABLE, result.turntable_png)
        self.write(job_id, METADATA, json.dumps(result.metadata).encode("utf-8"))

    def finished_metadata(self, job_id: str) -> dict | None:
        """The metadata of a result completely written to disk (a worker writes metadata.json last)."""
        if not (self.exists(job_id, METADATA) and self.exists(job_id, RESULT_GLB)):
            return None
        try:
            return json.loads(self.read(job_id, METADATA))
        except (OSError, ValueError):
            return None

    def remove_checkpoints(self, job_id: str) -> None:
        d = self.dir(job_id)
        for name in os.listdir(d) if os.path.isdir(d) else ():
            if name.startswith("checkpoint"):
                try:
                    p = os.path.join(d, name)
                    shutil.rmtree(p) if os.path.isdir(p) else os.remove(p)
                except OSError:
                    pass

    def event_buffers(self, job_id: str, etype: str, content: dict) -> list[bytes]:
        """The buffers of a persisted event, read back from the job's files. A progress event whose
        preview is gone is sent without it (and says so); a missing result file is an empty buffer."""
        names = EVENT_FILES.get(etype, [])
        if etype == "progress" and not content.get("preview"):
            names = []
        out = []
        for n in names:
            try:
                out.append(self.read(job_id, n))
            except OSError:
                if etype == "progress":
                    content["preview"] = False
                    return []
                out.append(b"")
        return out
