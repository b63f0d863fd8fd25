"""GPU worker processes: one per visible GPU (CUDA_VISIBLE_DEVICES set per worker), or one on the CPU.

A worker runs up to ``batch_jobs`` jobs at once as one group (``backend.engine.batching``): jobs that
can share the guidance model's calls (``backend.engine.grouping.group_key``) are stepped in lockstep
with one diffusion forward per step for all of them; each still gets its own progress events,
previews, checkpoints, cancel and result, and a failing job fails alone. A job that arrives while a
group runs joins it at the next step boundary (the pool only sends jobs that fit the group).

A worker is a spawned process that connects a DEALER socket to the local pool's ROUTER
(loopback, random port, messages signed with a per-run key, a routing identity with a random part
made for this spawn; both reach the worker through the spawn pipe, see ``local_pool.py``).
It keeps the guidance model loaded between jobs that use the same model, streams progress,
previews and proxy meshes, writes results to the job directory and reports how the job ended.
A crash (OOM kill, segfault, SIGKILL) only takes this process down; the server notices,
re-queues or fails the job, and starts a new worker.

Server -> worker: ``run`` {job}, ``cancel`` {job_id}, ``shutdown`` {}.
Worker -> server: ``hello`` {device info, models, CPU threads}, ``heartbeat``, ``progress`` (+PNG),
``proxy_mesh`` (+GLB), ``done`` {outcome: finished|failed|cancelled, ...}.

This module must not import torch at import time: the server imports it to spawn workers.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass

from backend.atomic_write import write_atomic

log = logging.getLogger("dreamprop.worker")

HEARTBEAT_S = 2.0
CANCEL_POLL_S = 0.05
# A job joins a running group only when its estimated peak (weights included, which it shares: a margin)
# fits in what the GPU has free now; this much of the free memory stays for the others' fluctuations.
JOIN_FREE_MARGIN = 0.9


def fits_beside_group(peak_bytes: int | None, free_bytes: int, cached_bytes: int = 0) -> bool:
    """Whether a job of estimated peak ``peak_bytes`` (None: no estimate) may join this worker's running
    group on a GPU with ``free_bytes`` free (device-wide: the workers sharing it count) and
    ``cached_bytes`` held by this process's allocator but unused (the new job can take those)."""
    if peak_bytes is None:
        return True
    return peak_bytes <= JOIN_FREE_MARGIN * (free_bytes + cached_bytes)


def _set_parent_death_signal() -> None:
    """Linux: die with the server even when it is SIGKILLed (no orphan keeps writing checkpoints)."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            PR_SET_PDEATHSIG = 1
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except Exception:  # pragma: no cover
            pass


def clean_json(obj, depth: int = 0):
    """Make engine output JSON-safe: numpy scalars/arrays -> Python, NaN/inf -> None."""
    if depth > 20:
        return None
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): clean_json(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_json(v, depth + 1) for v in obj]
    if hasattr(obj, "tolist"):  # numpy / torch
        try:
            return clean_json(obj.tolist(), depth + 1)
        except Exception:
            pass
    if isinstance(obj, (bytes, bytearray)):
        return f"<{len(obj)} bytes>"
    try:
        return clean_json(float(obj), depth + 1)
    except Exception:
        return str(obj)[:200]


def _gpu_info(device: str) -> dict:
    info: dict = {"device": device, "gpu_name": None, "gpu_memory_bytes": None, "torch": None, "threads": None}
    try:
        import torch

        info["torch"] = torch.__version__
        info["threads"] = torch.get_num_threads()
        if device.startswith("cuda") and torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            info["gpu_name"] = props.name
            info["gpu_memory_bytes"] = int(props.total_memory)
        elif device.startswith("cuda"):
            info["error"] = "CUDA is not available in this worker"
    except Exception as e:  # torch missing or broken: report, the job will fail with the reason
        info["error"] = f"{type(e).__name__}: {e}"
    return info


def available_models() -> list[str]:
    """Models a job can name: the engine's list when it offers one, else the built-in names plus
    diffusers pipelines found in the local Hugging Face cache."""
    try:
        from backend.engine.api import available_models as engine_models

        return list(engine_models())
    except Exception:
        pass
    models = ["builtin", "tiny-random"]
    hub = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME", os.path.join(os.path.expanduser("~"), ".cache", "huggingface")), "hub")
    try:
        for entry in sorted(os.listdir(hub)):
            if not entry.startswith("models--"):
                continue
            snaps = os.path.join(hub, entry, "snapshots")
            if any(os.path.exists(os.path.join(snaps, s, "model_index.json")) for s in os.listdir(snaps)):
                models.append(entry[len("models--"):].replace("--", "/"))
    except OSError:
        pass
    return models


@dataclass
class WorkerArgs:
    """What the pool gives a worker it spawns (pickled through the spawn pipe, so the key and the
    identity never show in the command line or the environment of the process)."""

    index: int
    gen: int
    identity: bytes              # routing identity of this spawn (unguessable)
    endpoint: str
    key: bytes                   # signs every message on the worker channel
    device: str                  # "cuda" | "cpu"
    cuda_device: str | None
    parent_pid: int
    threads: int                 # CPU threads (torch intra-op, OpenMP, MKL)
    log_level: str = "INFO"
    batch_jobs: int = 1          # jobs stepped together in one group (one guidance call per step)


class Worker:
    def __init__(self, args: WorkerArgs):
        import zmq

        from shared.protocol import Session

        self.zmq = zmq
        self.index, self.gen, self.device, self.parent_pid = args.index, args.gen, args.device, args.parent_pid
        self.identity = args.identity
        self.session = Session(args.key, max_age_s=None, max_content_bytes=16 * 1024 * 1024)
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 2000)
        self.sock.setsockopt(zmq.SNDHWM, 200)
        self.sock.setsockopt(zmq.IDENTITY, self.identity)
        self.sock.connect(args.endpoint)
        self.endpoint = args.endpoint
        self.key = args.key
        self.batch_jobs = max(1, args.batch_jobs)
        self.job_ids: set[str] = set()      # the jobs this worker runs now
        self.cancelled: set[str] = set()    # ... of which asked to stop
        self.pending: list[dict] = []       # "run" messages not yet started
        self.stopping = False
        self._last_cancel_poll = 0.0
        self._guidance: dict = {}   # model name -> loaded Guidance (one at a time)

    # ---- messaging -----------------------------------------------------------------------------
    def _send(self, msg_type: str, content: dict, buffers=(), *, droppable: bool = False) -> bool:
        frames = self.session.serialize(msg_type, {"index": self.index, "gen": self.gen, **content}, buffers)
        try:
            self.sock.send_multipart(frames, flags=self.zmq.NOBLOCK if droppable else 0, copy=False)
            return True
        except self.zmq.Again:
            return False

    def _heartbeat_loop(self) -> None:
        zmq = self.zmq
        from shared.protocol import Session

        session = Session(self.key, max_age_s=None)
        s = self.ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SNDHWM, 10)
        s.setsockopt(zmq.IDENTITY, self.identity + b".hb")
        s.connect(self.endpoint)
        while not self.stopping:
            if os.getppid() != self.parent_pid:   # the server died (non-Linux: no PDEATHSIG)
                os._exit(3)
            try:
                job_ids = list(self.job_ids)
            except RuntimeError:          # changed size while copied (the main thread started/ended a job)
                job_ids = []
            try:
                s.send_multipart(session.serialize("heartbeat", {"index": self.index, "gen": self.gen,
                                                                 "job_ids": job_ids}), flags=zmq.NOBLOCK)
            except zmq.Again:
                pass
            time.sleep(HEARTBEAT_S)
        s.close(linger=0)

    def _recv(self, timeout_ms: int):
        if not self.sock.poll(timeout_ms, self.zmq.POLLIN):
            return None
        frames = self.sock.recv_multipart()
        try:
            return self.session.deserialize(frames)
        except Exception as e:  # only the server talks to us; log and go on
            log.warning("worker %d: bad message from server: %s", self.index, e)
            return None

    def _poll_control(self) -> None:
        """Called between steps: handle run/cancel/shutdown without blocking."""
        while True:
            msg = self._recv(0)
            if msg is None:
                return
            self._on_control(msg)

    def _on_control(self, msg) -> None:
        if msg.msg_type == "run":
            self.pending.append(msg.content)
        elif msg.msg_type == "cancel":
            job_id = msg.content.get("job_id")
            if job_id in self.job_ids or any(j["job_id"] == job_id for j in self.pending):
                self.cancelled.add(job_id)
        elif msg.msg_type == "shutdown":
            self.stopping = True

    def should_cancel(self, job_id: str) -> bool:
        now = time.monotonic()
        if now - self._last_cancel_poll >= CANCEL_POLL_S:
            self._last_cancel_poll = now
            self._poll_control()
        return self.stopping or job_id in self.cancelled

    # ---- main loop -------------------------------------------------------------------------------
    def _on_sigterm(self, signum, frame) -> None:
        # e.g. `systemctl stop` signals the whole group: save a checkpoint and stop, like a shutdown
        self.stopping = True

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._on_sigterm)
        threading.Thread(target=self._heartbeat_loop, daemon=True, name="heartbeat").start()
        info = _gpu_info(self.device)
        info["models"] = available_models()
        info["pid"] = os.getpid()
        info["batch_jobs"] = self.batch_jobs
        self._send("hello", info)
        while not self.stopping:
            if not self.pending:
                msg = self._recv(500)
                if msg is not None:
                    self._on_control(msg)
            if self.pending and not self.stopping:
                self._run_group()
        for job in self.pending:        # sent but never started: back to the queue with the others
            self._send("done", {"job_id": job["job_id"], "outcome": "cancelled", "step": 0})
        self._send("bye", {})
        self.sock.close(linger=2000)
        self.ctx.term()

    def _load_guidance(self, settings):
        return load_cached_guidance(self._guidance, settings, self.device)

    # ---- a group of jobs --------------------------------------------------------------------------
    def _run_group(self) -> None:
        """Run the pending jobs, and those that arrive meanwhile, as one group until none is left."""
        runner = None
        started: dict[str, dict] = {}            # job id -> what its "done" message needs
        while True:
            if runner is None or not runner.members:
                runner = None
            for job in list(self.pending):
                if len(started) >= self.batch_jobs or self.stopping:
                    break
                if job["job_id"] in self.cancelled:
                    self.pending.remove(job)
                    self.cancelled.discard(job["job_id"])
                    self._send("done", {"job_id": job["job_id"], "outcome": "cancelled", "step": 0})
                    continue
                runner = self._admit(job, runner, started)
            if runner is None or not runner.members:
                if not self.pending or self.stopping:
                    return
                continue
            for departure in runner.step():
                self._depart(departure, started.pop(departure.member.key))
            self._poll_control()

    def _admit(self, job: dict, runner, started: dict):
        """Start ``job`` in ``runner``'s group when it fits (else it waits in ``pending`` for the group
        to drain); a job that cannot start is reported failed. Returns the (possibly new) runner."""
        from backend.engine.api import GroupRunner, prepare_generation
        from backend.engine.grouping import runs_alone
        from shared.settings import GenerationSettings

        job_id = job["job_id"]
        try:
            settings = GenerationSettings.from_dict(job["settings"])
            # A refine job, or a run resumed in its fine stage (``run_staged``), runs alone once the group
            # has drained; a new run with a fine stage steps its coarse stage in the group.
            # (asked once a job: a pending job is looked at again after every step of the group, and the
            # answer reads its checkpoint file)
            if "_runs_alone" not in job:
                job["_runs_alone"] = runs_alone(settings, init_mesh_glb=job.get("init_mesh_path") or None,
                                                init_checkpoint=job.get("init_checkpoint"),
                                                checkpoint_path=job["checkpoint_path"])
            staged = job["_runs_alone"]
            if runner is not None and runner.members and (staged or not runner.accepts(settings)
                                                          or not self._fits_beside_group(job, settings)):
                return runner
            self.pending.remove(job)
            init_mesh = reference_image = None
            if job.get("init_mesh_path"):
                with open(job["init_mesh_path"], "rb") as f:
                    init_mesh = f.read()
            if job.get("reference_image_path"):
                with open(job["reference_image_path"], "rb") as f:
                    reference_image = f.read()
            t_load = time.perf_counter()
            cached = guidance_cache_key(settings) in self._guidance
            guidance = self._load_guidance(settings)
            load_s = time.perf_counter() - t_load
            if guidance is None:
                raise RuntimeError("the engine is not installed in this worker")
            if runner is None or runner.guidance is not guidance:
                runner = GroupRunner(guidance, self.batch_jobs)
            self.job_ids.add(job_id)
            callback = self._callback(job_id)
            if staged:
                self._run_staged(job, settings, guidance, init_mesh, callback,
                                 {"cached": cached, "load_s": load_s})
                return runner
            run = prepare_generation(settings, device=self.device, callback=callback,
                                     checkpoint_path=job["checkpoint_path"], init_mesh_glb=init_mesh,
                                     init_checkpoint=job.get("init_checkpoint"), guidance=guidance,
                                     reference_image=reference_image)
            runner.add(job_id, run, callback=callback, should_cancel=lambda: self.should_cancel(job_id),
                       checkpoint_path=job["checkpoint_path"])
            started[job_id] = {"job": job, "settings": settings, "cached": cached, "load_s": load_s,
                               "callback": callback}
        except BaseException as e:  # noqa: BLE001 - report every failure, keep the worker alive
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                raise
            if job in self.pending:
                self.pending.remove(job)
            self._fail(job_id, e)
        return runner

    def _fits_beside_group(self, job: dict, settings) -> bool:
        """The server lets a job take a place in a running group whatever its size (its memory limit is a
        worker's share of the GPU, and the group's jobs are summed here): on a GPU it joins only if its
        estimated peak fits in the memory free now, else it waits for the group to drain. The estimate is
        made once a job (it reads the device with nvidia-smi); the free memory is read each time."""
        if self.device != "cuda":
            return True
        if "_peak_bytes" not in job:
            job["_peak_bytes"] = None          # no profile, no estimate: it joins, as before
            try:
                from backend.cost.device import local_device
                from backend.cost.estimate import estimate

                job["_peak_bytes"] = estimate(settings, local_device("cuda"), include_load=False)["peak_memory_bytes"]
            except Exception as e:  # noqa: BLE001
                log.debug("no memory estimate for joining the group: %s", e)
        if job["_peak_bytes"] is None:
            return True
        import torch

        free, _ = torch.cuda.mem_get_info()
        return fits_beside_group(job["_peak_bytes"], free, torch.cuda.memory_reserved() - torch.cuda.memory_allocated())

    def _depart(self, departure, info: dict) -> None:
        """Report a job that left the group: a finished one's fine stage (when it has one) and export,
        and its result written."""
        from backend.engine.api import Cancelled, finish_run

        job_id, settings = departure.member.key, info["settings"]
        with self._ending(job_id):
            if departure.outcome == "cancelled":
                self._send("done", {"job_id": job_id, "outcome": "cancelled", "step": departure.error.step,
                                    "model": settings.model})
                return
            if departure.outcome == "failed":
                self._fail(job_id, departure.error)
                return
            try:
                result = finish_run(departure.member.run, departure.final_losses, callback=info["callback"],
                                    should_cancel=lambda: self.should_cancel(job_id),
                                    checkpoint_path=info["job"]["checkpoint_path"], t_fit=departure.t_fit)
            except Cancelled as c:          # cancelled in its fine stage
                self._send("done", {"job_id": job_id, "outcome": "cancelled", "step": c.step, "model": settings.model})
                return
            self._finished(info["job"], settings, result, info)

    def _finished(self, job: dict, settings, result, info: dict) -> None:
        """Write a finished job's result files and report it."""
        metadata = clean_json(dict(result.metadata or {}))
        metadata["worker"] = {"index": self.index, "device": self.device, "model_cached": info["cached"],
                              "model_load_s": info["load_s"]}
        result_dir = job["result_dir"]
        write_atomic(os.path.join(result_dir, "result.glb"), result.glb)
        write_atomic(os.path.join(result_dir, "turntable.png"), result.turntable_png or b"")
        write_atomic(os.path.join(result_dir, "metadata.json"), json.dumps(metadata).encode("utf-8"))
        self._send("done", {"job_id": job["job_id"], "outcome": "finished", "metadata": metadata,
                            "model": settings.model})

    def _run_staged(self, job: dict, settings, guidance, init_mesh, callback, info: dict) -> None:
        """A run with a fine stage, or a refine job, from start to result (``api.generate``), alone."""
        from backend.engine.api import Cancelled, generate

        job_id = job["job_id"]
        with self._ending(job_id):
            try:
                result = generate(settings, device=self.device, callback=callback,
                                  checkpoint_path=job["checkpoint_path"],
                                  should_cancel=lambda: self.should_cancel(job_id), init_mesh_glb=init_mesh,
                                  init_checkpoint=job.get("init_checkpoint"), guidance=guidance)
            except Cancelled as c:
                self._send("done", {"job_id": job_id, "outcome": "cancelled", "step": c.step,
                                    "model": settings.model})
                return
            self._finished(job, settings, result, info)

    @contextlib.contextmanager
    def _ending(self, job_id: str):
        """Around the end of a job (a group's departure or a staged run): a failure in it is the job's,
        reported as such (the worker lives on), and the worker forgets the job however it ended."""
        try:
            yield
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as e:  # noqa: BLE001 - report every failure, keep the worker alive
            self._fail(job_id, e)
        finally:
            self._forget(job_id)

    def _forget(self, job_id: str) -> None:
        self.job_ids.discard(job_id)
        self.cancelled.discard(job_id)

    def _fail(self, job_id: str, e: BaseException) -> None:
        oom = "out of memory" in str(e).lower() or type(e).__name__ == "OutOfMemoryError"
        text = f"{type(e).__name__}: {e}"
        if oom:
            text = "out of GPU memory: lower resolution_schedule, samples_per_ray or the batch size (" + text + ")"
            if not self.job_ids - {job_id}:       # nothing else running: free the model too
                self._guidance.clear()
            _free_memory()
        tb = "".join(traceback.format_exception(type(e), e, e.__traceback__))
        self._send("done", {"job_id": job_id, "outcome": "failed", "error": text[:4000], "traceback": tb[-8000:]})
        self._forget(job_id)

    def _callback(self, job_id: str):
        def callback(ev) -> None:
            try:
                losses = clean_json(dict(ev.losses or {}))
                content = {"job_id": job_id, "step": int(ev.step), "total": int(ev.total),
                           "losses": losses, "elapsed_s": clean_json(float(ev.elapsed_s)),
                           "eta_s": clean_json(float(ev.eta_s)) if ev.eta_s is not None else None,
                           "stage": str(ev.stage), "message": str(getattr(ev, "message", "") or "")[:500],
                           "preview": bool(ev.preview_png)}
                self._send("progress", content, [ev.preview_png] if ev.preview_png else [], droppable=True)
                if getattr(ev, "proxy_glb", None):
                    self._send("proxy_mesh", {"job_id": job_id, "step": int(ev.step)}, [ev.proxy_glb],
                               droppable=True)
            except Exception:  # never let reporting break the run
                log.exception("progress callback")
        return callback


def guidance_cache_key(settings) -> tuple:
    """What makes two jobs' guidance the same loaded model(s)."""
    return (settings.guidance_type, settings.model, settings.shape_model, settings.half_precision)


def load_cached_guidance(cache: dict, settings, device: str):
    """The guidance model stays loaded between jobs that use it (one model resident at a time);
    ``cache`` maps ``guidance_cache_key(settings)`` to the loaded model (shared by the local and
    Ray workers)."""
    key = guidance_cache_key(settings)
    if key in cache:
        return cache[key]
    try:
        from backend.engine.api import load_guidance_for
    except ImportError:
        return None  # the engine loads it itself
    if cache:
        cache.clear()
        _free_memory()
    g = load_guidance_for(settings, device)
    cache[key] = g
    return g


def _free_memory() -> None:
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:
        pass


def _limit_threads(threads: int) -> None:
    """Before torch is imported: OpenMP / MKL / OpenBLAS pools take their size from the environment."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)


def worker_main(args: WorkerArgs) -> None:
    """Entry point of a spawned worker process (must run before torch is imported)."""
    if args.cuda_device is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = args.cuda_device
    elif args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    _limit_threads(args.threads)
    _set_parent_death_signal()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the process group: the server decides
    logging.basicConfig(level=args.log_level, format=f"%(asctime)s worker{args.index} %(levelname)s %(message)s")
    if os.getppid() != args.parent_pid:
        os._exit(3)
    try:
        import torch

        torch.set_num_threads(args.threads)
    except Exception:  # torch missing or broken: reported in the hello, a job fails with the reason
        pass
    Worker(args).run()
