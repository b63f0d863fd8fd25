"""The job server: one ROUTER socket for clients, a worker pool, one loop.

Everything that changes a job goes through SQLite (committed before a reply or event leaves), so
the server can be SIGKILLed at any instant: on restart queued jobs are still queued, a job that was
running is re-queued at its old place and resumes from its last checkpoint, finished results are
still fetchable, and event sequence numbers continue where they stopped.

This module is the loop and the job lifecycle (schedule, dispatch, what a pool event does to a job,
recovery, shutdown) plus the client socket's set-up (HMAC or CurveZMQ). The rest lives beside it:
``outbox.py`` (per-client outboxes), ``handlers.py`` (client requests), ``events.py`` (persisted
events to clients), ``jobfiles.py`` (job directories), ``jobstore.py`` (SQLite), ``pool.py`` (the
worker-pool interface), ``local_pool.py`` (worker processes on this machine) and ``ray_pool.py``
(actors on the nodes of a Ray cluster).
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import signal
import time
from dataclasses import dataclass

import zmq

from backend import __version__
from backend.engine.grouping import group_key
from shared import PROTOCOL_VERSION
from shared.protocol import FieldError, ProtocolError, Session, curve_hmac_key, version_compatible

from . import security
from .events import JobEvents
from .handlers import RequestHandlers
from .jobfiles import CHECKPOINT, INIT_MESH, PREVIEW, PROXY_MESH, REFERENCE_IMAGE, RESULT_GLB, Artifact, JobFiles
from .jobstore import JobStore
from .outbox import Outbox
from .pool import (CheckpointSaved, JobEnded, JobLost, JobProgress, JobSpec, ProxyMesh, Slot, WorkerPool,
                   WorkerReady)

log = logging.getLogger("dreamprop.server")

MB = 1024 * 1024
ZAP_DOMAIN = "dreamprop"


SCHEDULE_LOOKAHEAD = 64      # queued jobs _schedule considers beyond the free slots


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 47317
    state_dir: str = ""
    connection_file: str | None = None        # default: <state_dir>/connection.json
    devices: str = "auto"                     # auto | cpu | comma-separated CUDA indices
    workers: int | None = None                # override the worker count (0: accept and queue only)
    worker_threads: int = 0                   # CPU threads per worker (0: all cores, shared among workers)
    batch_jobs: int | None = None             # jobs a worker runs as one group (None: 1 on a CPU, 8 on a GPU)
    curve: bool = False
    server_key_file: str | None = None        # default: <state_dir>/keys/server.key_secret (created)
    allowed_clients_dir: str | None = None    # default: <state_dir>/keys/allowed_clients
    insecure: bool = False
    max_attempts: int = 3                     # worker crashes a job may cause before it fails
    worker_timeout_s: float = 300.0           # a busy worker silent this long is killed
    worker_start_timeout_s: float = 600.0
    cancel_timeout_s: float = 60.0            # a worker that ignores a cancel this long is killed
    shutdown_timeout_s: float = 20.0
    max_init_mesh_bytes: int = 64 * MB
    max_queued_per_client: int = 100
    client_outbox_messages: int = 256
    client_outbox_bytes: int = 256 * MB
    replay_max_age_s: float = 600.0
    ray_address: str | None = None            # run jobs on a Ray cluster ("auto" | host:port), see ray_pool.py
    ray_gpus_per_actor: float = 1.0
    ray_cpus_per_actor: float = 1.0
    ray_cpu_actors_per_node: int = 1
    cost_profile: str | None = None           # cost profile for estimates (default: the device's own, see backend/cost)
    memory_limit_bytes: int | None = None     # memory a job may use (default: 92% of the GPU's; CPU: no limit)


class Server:
    def __init__(self, config: ServerConfig, pool: WorkerPool | None = None):
        """``pool``: what runs the jobs (default: worker processes on this machine, from ``config``)."""
        self.cfg = config
        self.state_dir = os.path.abspath(config.state_dir)
        self.files = JobFiles(os.path.join(self.state_dir, "jobs"))
        self.connection_file = config.connection_file or os.path.join(self.state_dir, "connection.json")
        self.stats = {"received": 0, "handled": 0, "dropped": 0, "dropped_by_reason": {}, "error_replies": 0,
                      "events_dropped_for_slow_clients": 0, "clients_dropped": 0}
        self.pool = pool
        self._stop = False
        self._force = False
        self._allowed_sig: tuple = ()
        self._last_key_check = 0.0
        self._last_gc = time.monotonic()
        self.curve_public: str | None = None
        self.auth = None

    # ---- setup -------------------------------------------------------------------------------------
    def _setup(self) -> None:
        cfg = self.cfg
        if not cfg.curve and not security.is_loopback(cfg.host) and not cfg.insecure:
            raise PermissionError(
                f"refusing to listen on {cfg.host} without encryption: use --curve (CurveZMQ with an "
                "allow-list of client keys) or, on a network you trust completely, --insecure")
        security.private_dir(self.state_dir)
        security.private_dir(self.files.jobs_dir)
        self.lock = security.StateLock(self.state_dir)
        self.lock.acquire()
        self.store = JobStore(os.path.join(self.state_dir, "jobs.sqlite3"))
        self._recover()

        self.ctx = zmq.Context()
        r = self.ctx.socket(zmq.ROUTER)
        r.setsockopt(zmq.LINGER, 0)
        r.setsockopt(zmq.ROUTER_MANDATORY, 1)          # unroutable replies raise instead of vanishing
        r.setsockopt(zmq.MAXMSGSIZE, cfg.max_init_mesh_bytes + MB)   # bigger frames: peer disconnected
        r.setsockopt(zmq.SNDHWM, 16)                   # a slow client's previews wait in our outbox...
        r.setsockopt(zmq.RCVHWM, 1000)
        r.setsockopt(zmq.HEARTBEAT_IVL, 2000)          # ...and a dead one is noticed
        r.setsockopt(zmq.HEARTBEAT_TIMEOUT, 10000)
        r.setsockopt(zmq.HEARTBEAT_TTL, 10000)
        if ":" in cfg.host:
            r.setsockopt(zmq.IPV6, 1)
        if cfg.curve:
            self._setup_curve(r)
            key = curve_hmac_key(self.curve_public)
        else:
            key = security.load_or_create_hmac_key(self.state_dir)
        self.session = Session(key, max_age_s=None if cfg.curve else cfg.replay_max_age_s,
                               max_content_bytes=256 * 1024, max_buffers=4,
                               max_buffer_bytes=cfg.max_init_mesh_bytes)
        r.bind(security.bind_endpoint(cfg.host, cfg.port))
        self.router = r
        self.outbox = Outbox(r, self.session, max_messages=cfg.client_outbox_messages,
                             max_bytes=cfg.client_outbox_bytes, stats=self.stats)
        self.events = JobEvents(self.store, self.files, self.outbox)

        if self.pool is None and cfg.ray_address:
            from .ray_pool import RayPool

            self.pool = RayPool(self.files, address=cfg.ray_address, gpus_per_actor=cfg.ray_gpus_per_actor,
                                cpus_per_actor=cfg.ray_cpus_per_actor, cpu_actors_per_node=cfg.ray_cpu_actors_per_node,
                                start_timeout_s=cfg.worker_start_timeout_s, cancel_timeout_s=cfg.cancel_timeout_s)
        if self.pool is None:
            from .local_pool import LocalProcessPool

            self.pool = LocalProcessPool(self.files, devices=cfg.devices, workers=cfg.workers,
                                         worker_threads=cfg.worker_threads, worker_timeout_s=cfg.worker_timeout_s,
                                         start_timeout_s=cfg.worker_start_timeout_s,
                                         cancel_timeout_s=cfg.cancel_timeout_s, batch_jobs=cfg.batch_jobs)
            if cfg.memory_limit_bytes is None:
                # Several jobs at once on one GPU: each may use its share, so that together they fit.
                from backend.cost.estimate import USABLE_GPU_SHARE

                share = self.pool.job_memory_share(USABLE_GPU_SHARE)
                if share is not None:
                    cfg = self.cfg = dataclasses.replace(cfg, memory_limit_bytes=share)
        self.handlers = RequestHandlers(cfg, self.store, self.files, self.outbox, self.events, self.pool,
                                        self.stats, self._schedule)
        self.pool.start()

        self.poller = zmq.Poller()
        self.poller.register(self.router, zmq.POLLIN)
        for sock in self.pool.wait_handles():
            self.poller.register(sock, zmq.POLLIN)
        security.write_connection_file(
            self.connection_file, host=cfg.host, port=cfg.port, key=None if cfg.curve else key,
            curve_public_key=self.curve_public, state_dir=self.state_dir, server_version=__version__)
        if cfg.insecure and not cfg.curve and not security.is_loopback(cfg.host):
            log.warning("--insecure: listening on %s WITHOUT encryption; anyone who can reach it reads the "
                        "traffic and the HMAC key is the only protection", cfg.host)
        log.info("dreamprop server %s listening on %s (%s), state in %s, connection file %s",
                 __version__, security.bind_endpoint(cfg.host, cfg.port),
                 "CURVE" if cfg.curve else ("HMAC, unencrypted" if cfg.insecure else "HMAC, loopback"),
                 self.state_dir, self.connection_file)

    def _setup_curve(self, router) -> None:
        cfg = self.cfg
        if not zmq.has("curve"):
            raise RuntimeError("this libzmq was built without CURVE support")
        from zmq.auth.thread import ThreadAuthenticator

        keys_dir = os.path.join(self.state_dir, "keys")
        secret_file = cfg.server_key_file or os.path.join(keys_dir, "server.key_secret")
        public, secret = security.load_server_keys(secret_file, create=cfg.server_key_file is None)
        self.allowed_dir = cfg.allowed_clients_dir or os.path.join(keys_dir, "allowed_clients")
        security.private_dir(self.allowed_dir)
        self.auth = ThreadAuthenticator(self.ctx, log=logging.getLogger("dreamprop.auth"))
        self.auth.start()
        self._reload_allowed(force=True)
        router.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN.encode())
        router.curve_secretkey = secret
        router.curve_publickey = public
        router.curve_server = True
        self.curve_public = public.decode("ascii")
        public_file = secret_file[: -len("_secret")] if secret_file.endswith("_secret") else secret_file
        log.info("CURVE on: server public key %s (give clients %s); allowed client keys: %s",
                 self.curve_public, public_file, self.allowed_dir)

    def _reload_allowed(self, force: bool = False) -> None:
        sig = security.allowed_keys_signature(self.allowed_dir)
        if force or sig != self._allowed_sig:
            self._allowed_sig = sig
            self.auth.configure_curve(domain=ZAP_DOMAIN, location=self.allowed_dir)
            log.info("%d allowed client key(s) in %s", len(sig), self.allowed_dir)
            if not sig:
                log.warning("no client keys in %s: nobody can connect; copy clients' .key files there",
                            self.allowed_dir)

    def _recover(self) -> None:
        """After a crash: running jobs go back to the queue (or are closed when they ended)."""
        for job in self.store.in_state("running"):
            jid = job["id"]
            metadata = self.files.finished_metadata(jid)
            if job["cancel_requested"]:
                self.store.finish(jid, "cancelled")
                self.files.remove_checkpoints(jid)
            elif metadata is not None:
                self.store.finish(jid, "finished", metadata=metadata)
            else:
                self.store.requeue(jid, crashed=False, reason="server restarted")
                log.info("job %s re-queued after a server restart (will resume from its checkpoint)", jid)

    # ---- main loop -------------------------------------------------------------------------------------
    def run(self) -> int:
        self._setup()
        self._install_signals()
        try:
            self._schedule()
            while not self._stop:
                timeout = 20 if self.outbox.pending else 200
                try:
                    ready = dict(self.poller.poll(timeout))
                except zmq.ZMQError as e:
                    if e.errno == errno.EINTR:
                        continue
                    raise
                if self.router in ready:
                    self._handle_clients()
                self._tick()
        finally:
            self._shutdown()
        return 0

    def _install_signals(self) -> None:
        def stop(signum, frame):
            if self._stop:
                self._force = True
            self._stop = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)

    def _tick(self) -> None:
        now = time.monotonic()
        self._handle_pool_events()
        self._schedule()
        self.outbox.flush_pending()
        if self.auth is not None and now - self._last_key_check > 2.0:
            self._last_key_check = now
            self._reload_allowed()
        if now - self._last_gc > 60.0:
            self._last_gc = now
            self.outbox.forget_idle(now, 600.0)

    # ---- client side -------------------------------------------------------------------------------------
    def _drop(self, reason: str) -> None:
        self.stats["dropped"] += 1
        d = self.stats["dropped_by_reason"]
        d[reason] = d.get(reason, 0) + 1

    def _handle_clients(self) -> None:
        for _ in range(1000):
            try:
                frames = self.router.recv_multipart(flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            self.stats["received"] += 1
            try:
                self._handle_client_frames(frames)
            except Exception:  # never let one message take the loop down
                log.exception("error handling a client message")
                self._drop("internal_error")

    def _handle_client_frames(self, frames) -> None:
        identity = frames[0].bytes
        user_id = None
        if self.cfg.curve:
            try:
                user_id = frames[-1].get("User-Id")
            except (zmq.ZMQError, AttributeError, TypeError):
                user_id = None
            if not user_id:
                self._drop("no_user_id")
                return
        try:
            msg = self.session.deserialize([f.bytes for f in frames[1:]])
        except ProtocolError as e:
            self._drop(e.reason)
            return
        owner = f"curve:{user_id}" if user_id else f"local:{msg.header.get('client_id') or 'local'}"
        client = self.outbox.client(identity, owner)
        handler = self.handlers.table.get(msg.msg_type)
        if not version_compatible(msg.header.get("version")):
            self._drop("version_mismatch")
            self.outbox.reply_error(client, msg, "version_mismatch",
                                    f"protocol version mismatch: this server speaks {PROTOCOL_VERSION}, the client "
                                    f"sent {str(msg.header.get('version'))[:20]!r}; update the client or the server",
                                    field="version", known_type=handler is not None,
                                    server_protocol_version=PROTOCOL_VERSION)
            return
        if handler is None:
            self._drop("unknown_type")
            self.outbox.reply_error(client, msg, "unknown_type", f"unknown message type {msg.msg_type[:64]!r}",
                                    field="msg_type", known_type=False)
            return
        try:
            handler(client, msg)
            self.stats["handled"] += 1
        except FieldError as e:
            self.outbox.reply_error(client, msg, e.code, e.message if e.field is None or e.message.startswith(
                f"{e.field}:") else f"{e.field}: {e.message}", field=e.field, known_type=True)

    # ---- pool side ---------------------------------------------------------------------------------------
    def _handle_pool_events(self) -> None:
        for ev in self.pool.poll_events():
            try:
                self._on_pool_event(ev)
            except Exception:
                log.exception("error handling a worker event %s", type(ev).__name__)

    def _running(self, job_id: str) -> dict | None:
        job = self.store.get(job_id)
        return job if job is not None and job["state"] == "running" else None

    def _on_pool_event(self, ev) -> None:
        if isinstance(ev, WorkerReady):
            self._schedule()
        elif isinstance(ev, JobProgress):
            if self._running(ev.job_id) is None:
                return
            content = dict(ev.content)
            content["preview"] = bool(ev.preview_png)
            if ev.preview_png:
                self.files.write(ev.job_id, PREVIEW, ev.preview_png)
            seq = self.store.progress(ev.job_id, int(content.get("step") or 0), int(content.get("total") or 0),
                                      content.get("eta_s"), content.get("losses") or {}, content)
            self.events.publish(ev.job_id, "progress", seq, content, [ev.preview_png] if ev.preview_png else [])
        elif isinstance(ev, ProxyMesh):
            if self._running(ev.job_id) is None:
                return
            self.files.write(ev.job_id, PROXY_MESH, ev.glb)
            content = {"step": ev.step}
            seq = self.store.add_event(ev.job_id, "proxy_mesh", content)
            self.events.publish(ev.job_id, "proxy_mesh", seq, content, [ev.glb])
        elif isinstance(ev, CheckpointSaved):
            if self._running(ev.job_id) is not None:
                self.files.write(ev.job_id, CHECKPOINT, ev.data)
        elif isinstance(ev, JobEnded):
            self._on_job_ended(ev)
        elif isinstance(ev, JobLost):
            self._on_job_lost(ev)

    def _on_job_ended(self, ev: JobEnded) -> None:
        job_id = ev.job_id
        job = self._running(job_id)
        if job is None:
            return
        if ev.outcome == "finished":
            if ev.result is not None:
                self.files.save_result(job_id, ev.result)
            if not self.files.has_result(job_id):
                seq = self.store.finish(job_id, "failed", error="worker reported success but wrote no result")
                self.events.emit_persisted(job_id, "failed", seq)
            else:
                metadata = ev.result.metadata if ev.result is not None else ev.metadata
                seq = self.store.finish(job_id, "finished", metadata=metadata or {})
                log.info("job %s finished", job_id)
                self.events.emit_persisted(job_id, "finished", seq)
        elif ev.outcome == "cancelled":
            if job["cancel_requested"]:
                seq = self.store.finish(job_id, "cancelled")
                log.info("job %s cancelled at step %s", job_id, ev.step)
                self.events.emit_persisted(job_id, "cancelled", seq)
                self.files.remove_checkpoints(job_id)
            elif self._stop:   # stopped for a server shutdown: back to the queue, resumes from its checkpoint
                self.store.requeue(job_id, crashed=False, reason="server shutting down", emit=False)
            else:              # the worker was told to stop by someone else (SIGTERM): run it again
                seq = self.store.requeue(job_id, crashed=False, reason="worker stopped; resuming from its checkpoint")
                self.events.emit_persisted(job_id, "requeued", seq)
        else:
            err = str(ev.error or "failed")
            log.warning("job %s failed: %s\n%s", job_id, err, ev.traceback)
            seq = self.store.finish(job_id, "failed", error=err)
            self.events.emit_persisted(job_id, "failed", seq)
            self.files.remove_checkpoints(job_id)
        self._schedule()

    def _on_job_lost(self, ev: JobLost) -> None:
        job_id, how = ev.job_id, ev.reason
        job = self._running(job_id)
        if job is None or self._stop:
            return          # (during a shutdown, running jobs simply stay queued)
        if job["cancel_requested"]:
            seq = self.store.finish(job_id, "cancelled")
            self.events.emit_persisted(job_id, "cancelled", seq)
            self.files.remove_checkpoints(job_id)
        elif job["crashes"] + 1 >= self.cfg.max_attempts:
            seq = self.store.finish(job_id, "failed", crashed=True,
                                    error=f"the worker process died {job['crashes'] + 1} times running this job "
                                          f"(last: {how})")
            self.events.emit_persisted(job_id, "failed", seq)
            self.files.remove_checkpoints(job_id)
        else:
            seq = self.store.requeue(job_id, crashed=True, reason=f"worker died ({how}); retrying from its checkpoint")
            log.info("job %s re-queued (worker crash %d of %d allowed)", job_id, job["crashes"] + 1,
                     self.cfg.max_attempts - 1)
            self.events.emit_persisted(job_id, "requeued", seq)

    def _schedule(self) -> None:
        if self._stop:
            return
        idle = self.pool.idle_slots()
        if not idle:
            return
        # Look past the first few: a worker's first job opens places for more of its group, and a job
        # that does not fit a running group must not hold back one that does.
        for job in self.store.queued(limit=len(idle) + SCHEDULE_LOOKAHEAD):
            settings = json.loads(job["settings"])
            key = group_key(settings)
            fits = [s for s in idle if s.group is None or s.group == key]   # a running group takes its own kind
            if not fits:
                continue
            model = settings.get("model")
            # An empty worker before a place in a running group: a job in its own process runs its
            # host-bound NeRF work beside the others' (on an H200, 16 built-in props: 8 processes 55.9 s,
            # 8 processes of 2-job groups 52.9 s, 4 of 4 72.3 s; results/speed/THROUGHPUT.md). Among empty
            # workers, one that has the job's model loaded keeps it busy.
            slot = min(fits, key=lambda s: (s.group is not None, s.model != model))
            self._dispatch(slot, job)
            idle = self.pool.idle_slots()      # the slot is taken; a worker's first job has set its group
            if not idle:
                break

    def _job_spec(self, job: dict) -> JobSpec:
        jid = job["id"]
        spec = JobSpec(jid, json.loads(job["settings"]), checkpoint=Artifact(jid, CHECKPOINT),
                       resume_checkpoint=self.files.artifact(jid, CHECKPOINT),
                       reference_image=self.files.artifact(jid, REFERENCE_IMAGE))
        if job["has_init_mesh"]:
            spec.init_mesh = Artifact(jid, INIT_MESH)
        if job["parent_job_id"]:       # refine: from the parent's checkpoint, else from its mesh
            pid = job["parent_job_id"]
            spec.init_checkpoint = self.files.artifact(pid, CHECKPOINT)
            if spec.init_checkpoint is None:
                spec.init_mesh = self.files.artifact(pid, RESULT_GLB) or spec.init_mesh
        return spec

    def _dispatch(self, slot: Slot, job: dict) -> None:
        jid = job["id"]
        self.files.make_dir(jid)
        spec = self._job_spec(job)
        resumed = spec.resume_checkpoint is not None
        runs, seq = self.store.start(jid, slot.id, {"worker": slot.id, "device": slot.device, "resumed": resumed})
        if not self.pool.submit(slot.id, spec):
            self.store.requeue(jid, crashed=False, reason="worker unreachable", emit=False)
            return
        log.info("job %s started on worker %d (run %d%s)", jid, slot.id, runs, ", resuming" if resumed else "")
        self.events.emit_persisted(jid, "started", seq)

    # ---- shutdown -------------------------------------------------------------------------------------
    def _shutdown(self) -> None:
        log.info("shutting down: running jobs save a checkpoint and go back to the queue")
        self._stop = True
        if self.pool is not None:
            self.pool.stop(force=self._force)
            deadline = time.monotonic() + (0 if self._force else self.cfg.shutdown_timeout_s)
            while time.monotonic() < deadline and not self.pool.stopped() and not self._force:
                handles = self.pool.wait_handles()
                if handles:
                    zmq.select(handles, [], [], 0.1)
                else:
                    time.sleep(0.1)
                self._handle_pool_events()
            self.pool.close()
        for job in self.store.in_state("running"):   # keep them: they resume on the next start
            self.store.requeue(job["id"], crashed=False, reason="server stopped", emit=False)
        self.outbox.flush_all()
        self.router.close(linger=0)
        if self.auth is not None:
            self.auth.stop()
        self.ctx.term()
        self.store.close()
        try:
            with open(self.connection_file, "rb") as f:
                if json.load(f).get("pid") == os.getpid():
                    os.remove(self.connection_file)
        except (OSError, ValueError):
            pass
        self.lock.release()
        log.info("server stopped; %d job(s) queued", self._queued_at_exit())

    def _queued_at_exit(self) -> int:
        try:
            s = JobStore(os.path.join(self.state_dir, "jobs.sqlite3"))
            n = s.count("queued")
            s.close()
            return n
        except Exception:
            return -1
