"""The job actor of the Ray pool: runs on a node of the cluster, one job at a time (see ``ray_pool.py``).

One actor per GPU (or per fraction of a GPU, or per CPU slot of a CPU-only node). It keeps its
guidance model loaded between jobs. Nothing here touches the server's disk: a job's inputs arrive
as bytes (Ray object references, resolved by Ray), and everything the job makes goes back as pool
events (``pool.py``) holding bytes: progress with previews, proxy meshes, every checkpoint the
engine saves, and the finished prop. The engine writes its checkpoint to a scratch file on this
node; ``should_cancel`` (called once per step) notices a new one by its stat and queues its bytes, so
the server holds every checkpoint and a job can resume on any node.

The actor is threaded (``max_concurrency``): ``run`` occupies one thread for the whole job while
``drain`` (the server's long poll for events), ``cancel`` and ``hello`` run beside it.

This module must not import torch or ray at import time: the server imports it.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import threading
import time
import traceback

from .jobfiles import JobResult
from .pool import CheckpointSaved, JobEnded, JobProgress, ProxyMesh
from .worker import (_free_memory, _gpu_info, _limit_threads, available_models, clean_json, guidance_cache_key,
                     load_cached_guidance)

log = logging.getLogger("dreamprop.worker")


class JobActor:
    def __init__(self, slot: int, threads: int, log_level: str = "INFO"):
        import ray

        logging.basicConfig(level=log_level, format=f"%(asctime)s ray-actor{slot} %(levelname)s %(message)s")
        self.slot = slot
        # DREAMPROP_ACTOR_DEVICE=cpu (in the nodes' environment): jobs run on the CPU although Ray
        # gave the actor a GPU share, so a GPU farm's scheduling (fractional actors) can be tried on a
        # machine that only declares a GPU (`python -m backend bench farm --gpu 1,2 --fake-gpu`).
        self.device = "cuda" if ray.get_gpu_ids() and os.environ.get("DREAMPROP_ACTOR_DEVICE") != "cpu" else "cpu"
        if self.device == "cpu":
            os.environ["CUDA_VISIBLE_DEVICES"] = ""     # before torch is imported
        _limit_threads(threads)
        try:
            import torch

            torch.set_num_threads(threads)
        except Exception:  # torch missing or broken: reported in hello, a job fails with the reason
            pass
        self.node_id = ray.get_runtime_context().get_node_id()
        self.scratch = tempfile.mkdtemp(prefix=f"dreamprop-actor{slot}-")
        self._cond = threading.Condition()
        self._events: list = []
        self._job_id: str | None = None
        self._cancel = False
        self._guidance: dict = {}

    # ---- called by the pool (any thread) --------------------------------------------------------
    def hello(self) -> dict:
        info = _gpu_info(self.device)
        info.update(models=available_models(), pid=os.getpid(), node_id=self.node_id, hostname=socket.gethostname(),
                    slot=self.slot)
        return info

    def cancel(self, job_id: str) -> bool:
        with self._cond:
            if self._job_id == job_id:
                self._cancel = True
                return True
        return False

    def drain(self, wait_s: float) -> list:
        """The events queued since the last call; waits up to ``wait_s`` for one while a job runs."""
        with self._cond:
            if not self._events and self._job_id is not None:
                self._cond.wait(wait_s)
            out, self._events = self._events, []
        return out

    # ---- the job ---------------------------------------------------------------------------------
    def _push(self, ev) -> None:
        with self._cond:
            self._events.append(ev)
            self._cond.notify_all()

    def run(self, job_id: str, settings_dict: dict, init_mesh: bytes | None, init_checkpoint: bytes | None,
            resume_checkpoint: bytes | None, reference_image: bytes | None = None) -> list:
        """Run one job; returns the events not drained yet, ending with its :class:`JobEnded`."""
        with self._cond:
            self._job_id, self._cancel = job_id, False
        workdir = os.path.join(self.scratch, job_id)
        shutil.rmtree(workdir, ignore_errors=True)
        os.makedirs(workdir)
        checkpoint_path = os.path.join(workdir, "checkpoint.pt")
        shipped = [None]      # stat signature of the last checkpoint sent to the server
        progress_step = [None]

        def ship_checkpoint() -> None:
            try:
                st = os.stat(checkpoint_path)
            except OSError:
                return
            sig = (st.st_mtime_ns, st.st_size, st.st_ino)
            if sig != shipped[0]:
                shipped[0] = sig
                with open(checkpoint_path, "rb") as f:
                    self._push(CheckpointSaved(job_id, progress_step[0], f.read()))

        try:
            ended = self._run(job_id, settings_dict, init_mesh, init_checkpoint, resume_checkpoint, workdir,
                              checkpoint_path, shipped, progress_step, ship_checkpoint, reference_image)
        except BaseException as e:  # noqa: BLE001 - report every failure, keep the actor alive
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                raise
            text = f"{type(e).__name__}: {e}"
            if "out of memory" in str(e).lower() or type(e).__name__ == "OutOfMemoryError":
                text = "out of GPU memory: lower resolution_schedule, samples_per_ray or the batch size (" + text + ")"
                self._guidance.clear()
                _free_memory()
            ended = JobEnded(job_id, "failed", error=text[:4000], traceback=traceback.format_exc()[-8000:])
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        with self._cond:
            out, self._events = self._events, []
            self._job_id, self._cancel = None, False
            self._cond.notify_all()
        return out + [ended]

    def _run(self, job_id, settings_dict, init_mesh, init_checkpoint, resume_checkpoint, workdir, checkpoint_path,
             shipped, progress_step, ship_checkpoint, reference_image=None) -> JobEnded:
        from backend.engine.api import Cancelled, generate
        from shared.settings import GenerationSettings

        settings = GenerationSettings.from_dict(settings_dict)
        if resume_checkpoint:
            with open(checkpoint_path, "wb") as f:
                f.write(resume_checkpoint)
            st = os.stat(checkpoint_path)
            shipped[0] = (st.st_mtime_ns, st.st_size, st.st_ino)     # the server has this one
        init_checkpoint_path = None
        if init_checkpoint:
            init_checkpoint_path = os.path.join(workdir, "init_checkpoint.pt")
            with open(init_checkpoint_path, "wb") as f:
                f.write(init_checkpoint)
        t_load = time.perf_counter()
        cached = guidance_cache_key(settings) in self._guidance
        guidance = load_cached_guidance(self._guidance, settings, self.device)
        load_s = time.perf_counter() - t_load

        def callback(ev) -> None:
            try:
                progress_step[0] = int(ev.step)
                content = {"step": int(ev.step), "total": int(ev.total), "losses": clean_json(dict(ev.losses or {})),
                           "elapsed_s": clean_json(float(ev.elapsed_s)),
                           "eta_s": clean_json(float(ev.eta_s)) if ev.eta_s is not None else None,
                           "stage": str(ev.stage), "message": str(getattr(ev, "message", "") or "")[:500]}
                self._push(JobProgress(job_id, content, ev.preview_png or None))
                if getattr(ev, "proxy_glb", None):
                    self._push(ProxyMesh(job_id, int(ev.step), ev.proxy_glb))
            except Exception:  # never let reporting break the run
                log.exception("progress callback")

        def should_cancel() -> bool:
            ship_checkpoint()
            return self._cancel

        if self.device == "cuda":
            import torch

            torch.cuda.reset_peak_memory_stats()
        try:
            result = generate(settings, device=self.device, callback=callback, checkpoint_path=checkpoint_path,
                              should_cancel=should_cancel, init_mesh_glb=init_mesh,
                              init_checkpoint=init_checkpoint_path, guidance=guidance,
                              reference_image=reference_image)
        except Cancelled as c:
            ship_checkpoint()       # saved before Cancelled was raised: the job resumes from it
            return JobEnded(job_id, "cancelled", step=c.step)
        ship_checkpoint()           # the final one (a refine of this result starts from it)
        metadata = clean_json(dict(result.metadata or {}))
        metadata["worker"] = {"index": self.slot, "device": self.device, "node_id": self.node_id,
                              "hostname": socket.gethostname(), "pid": os.getpid(), "model_cached": cached,
                              "model_load_s": load_s}
        if self.device == "cuda":
            import torch

            # This job's peak in torch's allocator (the CUDA context, ~0.5 GB a process, comes on top):
            # what tells how many actors of a model share one GPU (--ray-gpus-per-actor).
            metadata["worker"]["gpu_peak_allocated_bytes"] = int(torch.cuda.max_memory_allocated())
            metadata["worker"]["gpu_peak_reserved_bytes"] = int(torch.cuda.max_memory_reserved())
        return JobEnded(job_id, "finished", metadata=metadata,
                        result=JobResult(result.glb, result.turntable_png or b"", metadata))
