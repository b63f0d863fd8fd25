"""The job server: one ROUTER socket for clients, one internal ROUTER for worker processes, one loop.

Everything that changes a job goes through SQLite (committed before a reply or event leaves), so
the server can be SIGKILLed at any instant: on restart queued jobs are still queued, a job that was
running is re-queued at its old place and resumes from its last checkpoint, finished results are
still fetchable, and event sequence numbers continue where they stopped.
"""

from __future__ import annotations

import errno
import json
import logging
import multiprocessing
import os
import shutil
import signal
import subprocess
import time
from collections import deque
from dataclasses import dataclass, field

import zmq

from backend import __version__
from backend.atomic_write import write_atomic
from shared import PROTOCOL_VERSION
from shared.protocol import (DROPPABLE_EVENTS, ERROR_TYPE, JOB_STATES, FieldError, Message,
                             ProtocolError, Session, check_fields, check_glb, curve_hmac_key, error_content,
                             new_id, reply_type, require_bool, require_int, require_job_id, require_str,
                             version_compatible)
from shared.settings import GenerationSettings, SettingError

from . import security
from .jobstore import JobStore

log = logging.getLogger("dreamprop.server")

MB = 1024 * 1024
ZAP_DOMAIN = "dreamprop"


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 47317
    state_dir: str = ""
    connection_file: str | None = None        # default: <state_dir>/connection.json
    devices: str = "auto"                     # auto | cpu | comma-separated CUDA indices
    workers: int | None = None                # override the worker count (0: accept and queue only)
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


@dataclass
class WorkerHandle:
    index: int
    device: str                  # "cuda" | "cpu"
    cuda_device: str | None      # the CUDA_VISIBLE_DEVICES value of this worker
    gen: int = 0
    proc: multiprocessing.Process | None = None
    state: str = "down"          # down | starting | idle | busy | stopping
    job_id: str | None = None
    model: str | None = None     # model it has loaded
    last_seen: float = 0.0
    spawned_at: float = 0.0
    respawn_at: float = 0.0
    quick_deaths: int = 0
    cancel_sent_at: float | None = None
    kill_reason: str | None = None
    last_exit: str | None = None
    info: dict = field(default_factory=dict)

    @property
    def identity(self) -> bytes:
        return f"w{self.index}.{self.gen}".encode()

    def public(self) -> dict:
        return {"index": self.index, "device": self.device, "cuda_device": self.cuda_device,
                "pid": self.proc.pid if self.proc else None, "state": self.state, "job_id": self.job_id,
                "model": self.model, "gpu_name": self.info.get("gpu_name"),
                "gpu_memory_bytes": self.info.get("gpu_memory_bytes"), "error": self.info.get("error"),
                "last_exit": self.last_exit}


@dataclass
class OutItem:
    msg_type: str
    content: dict
    buffers: list
    job_id: str | None
    reply_to: str | None
    droppable: bool
    nbytes: int


@dataclass
class ClientState:
    identity: bytes
    owner: str
    outbox: deque = field(default_factory=deque)
    outbox_bytes: int = 0
    subscriptions: set = field(default_factory=set)
    last_seen: float = 0.0


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


class Server:
    def __init__(self, config: ServerConfig):
        self.cfg = config
        self.state_dir = os.path.abspath(config.state_dir)
        self.jobs_dir = os.path.join(self.state_dir, "jobs")
        self.connection_file = config.connection_file or os.path.join(self.state_dir, "connection.json")
        self.stats = {"received": 0, "handled": 0, "dropped": 0, "dropped_by_reason": {}, "error_replies": 0,
                      "events_dropped_for_slow_clients": 0, "clients_dropped": 0}
        self._stop = False
        self._force = False
        self.clients: dict[bytes, ClientState] = {}
        self.subs: dict[str, set[bytes]] = {}
        self.workers: list[WorkerHandle] = []
        self._pending_flush: set[bytes] = set()
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
        security.private_dir(self.jobs_dir)
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

        # workers talk to us over loopback with their own per-run key
        self.wkey = new_id().encode("ascii")
        self.wsession = Session(self.wkey, max_age_s=None, max_content_bytes=16 * MB, max_buffers=4,
                                max_buffer_bytes=512 * MB)
        w = self.ctx.socket(zmq.ROUTER)
        w.setsockopt(zmq.LINGER, 0)
        w.setsockopt(zmq.ROUTER_MANDATORY, 1)
        w.bind("tcp://127.0.0.1:*")
        self.wendpoint = w.getsockopt(zmq.LAST_ENDPOINT).decode()
        self.wrouter = w
        self._setup_workers()

        self.poller = zmq.Poller()
        self.poller.register(self.router, zmq.POLLIN)
        self.poller.register(self.wrouter, zmq.POLLIN)
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

    def _setup_workers(self) -> None:
        cfg = self.cfg
        if cfg.devices == "cpu":
            specs = [("cpu", None)]
        elif cfg.devices == "auto":
            gpus = detect_gpus()
            specs = [("cuda", g["index"]) for g in gpus] or [("cpu", None)]
            self.detected_gpus = gpus
        else:
            specs = [("cuda", d.strip()) for d in cfg.devices.split(",") if d.strip()]
        if not hasattr(self, "detected_gpus"):
            self.detected_gpus = detect_gpus() if any(d == "cuda" for d, _ in specs) else []
        if cfg.workers is not None:
            n = cfg.workers
            specs = (specs * (n // max(1, len(specs)) + 1))[:n] if n > 0 else []
        self.workers = [WorkerHandle(i, d, c) for i, (d, c) in enumerate(specs)]
        self.mp = multiprocessing.get_context("spawn")
        for w in self.workers:
            self._spawn(w)

    def _spawn(self, w: WorkerHandle) -> None:
        from .worker import worker_main

        w.gen += 1
        w.state, w.job_id, w.model, w.cancel_sent_at, w.kill_reason = "starting", None, None, None, None
        w.info = {}
        w.proc = self.mp.Process(
            target=worker_main, name=f"dreamprop-worker-{w.index}", daemon=True,
            args=(w.index, w.gen, self.wendpoint, self.wkey, w.device, w.cuda_device, os.getpid(),
                  logging.getLevelName(log.getEffectiveLevel())))
        w.proc.start()
        w.spawned_at = w.last_seen = time.monotonic()
        log.info("worker %d started (pid %d, %s%s)", w.index, w.proc.pid, w.device,
                 f" CUDA_VISIBLE_DEVICES={w.cuda_device}" if w.cuda_device is not None else "")

    def _recover(self) -> None:
        """After a crash: running jobs go back to the queue (or are closed when they ended)."""
        for job in self.store.in_state("running"):
            jid = job["id"]
            d = self.job_dir(jid)
            if job["cancel_requested"]:
                self.store.finish(jid, "cancelled")
                self._remove_checkpoint(jid)
            elif os.path.exists(os.path.join(d, "metadata.json")) and os.path.exists(os.path.join(d, "result.glb")):
                with open(os.path.join(d, "metadata.json"), "rb") as f:
                    self.store.finish(jid, "finished", metadata=json.load(f))
            else:
                self.store.requeue(jid, crashed=False, reason="server restarted")
                log.info("job %s re-queued after a server restart (will resume from its checkpoint)", jid)

    # ---- paths ---------------------------------------------------------------------------------------
    def job_dir(self, job_id: str) -> str:
        return os.path.join(self.jobs_dir, job_id)

    def _remove_checkpoint(self, job_id: str) -> None:
        for name in os.listdir(self.job_dir(job_id)) if os.path.isdir(self.job_dir(job_id)) else ():
            if name.startswith("checkpoint"):
                try:
                    p = os.path.join(self.job_dir(job_id), name)
                    shutil.rmtree(p) if os.path.isdir(p) else os.remove(p)
                except OSError:
                    pass

    # ---- main loop -------------------------------------------------------------------------------------
    def run(self) -> int:
        self._setup()
        self._install_signals()
        try:
            self._schedule()
            while not self._stop:
                timeout = 20 if self._pending_flush else 200
                try:
                    events = dict(self.poller.poll(timeout))
                except zmq.ZMQError as e:
                    if e.errno == errno.EINTR:
                        continue
                    raise
                if self.router in events:
                    self._handle_clients()
                if self.wrouter in events:
                    self._handle_workers()
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
        self._check_workers(now)
        self._schedule()
        for ident in list(self._pending_flush):
            c = self.clients.get(ident)
            if c is None or self._flush(c):
                self._pending_flush.discard(ident)
        if self.auth is not None and now - self._last_key_check > 2.0:
            self._last_key_check = now
            self._reload_allowed()
        if now - self._last_gc > 60.0:
            self._last_gc = now
            for c in list(self.clients.values()):   # forget idle clients that went away
                if not c.subscriptions and not c.outbox and now - c.last_seen > 600.0:
                    del self.clients[c.identity]

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
        client = self.clients.get(identity)
        if client is None or client.owner != owner:
            if client is not None:
                self._forget_client(client)
            client = self.clients[identity] = ClientState(identity, owner)
        client.last_seen = time.monotonic()
        if not version_compatible(msg.header.get("version")):
            self._drop("version_mismatch")
            self._reply_error(client, msg, "version_mismatch",
                              f"protocol version mismatch: this server speaks {PROTOCOL_VERSION}, the client sent "
                              f"{str(msg.header.get('version'))[:20]!r}; update the client or the server",
                              field="version", server_protocol_version=PROTOCOL_VERSION)
            return
        handler = self.handlers.get(msg.msg_type)
        if handler is None:
            self._drop("unknown_type")
            self._reply_error(client, msg, "unknown_type", f"unknown message type {msg.msg_type[:64]!r}",
                              field="msg_type")
            return
        try:
            handler(self, client, msg)
            self.stats["handled"] += 1
        except FieldError as e:
            self._reply_error(client, msg, e.code, e.message if e.field is None or e.message.startswith(
                f"{e.field}:") else f"{e.field}: {e.message}", field=e.field)

    def _reply(self, client: ClientState, request: Message, content: dict, buffers=()) -> None:
        self._enqueue(client, OutItem(reply_type(request.msg_type), {"status": "ok", **content}, list(buffers),
                                      request.header.get("job_id") or content.get("job_id"), request.msg_id,
                                      False, sum(len(b) for b in buffers)))

    def _reply_error(self, client: ClientState, request: Message, code: str, message: str, field=None,
                     **extra) -> None:
        self.stats["error_replies"] += 1
        mtype = reply_type(request.msg_type) if request.msg_type in self.handlers else ERROR_TYPE
        job_id = request.header.get("job_id")
        if not (isinstance(job_id, str) and len(job_id) <= 64):
            job_id = None
        self._enqueue(client, OutItem(mtype, error_content(code, message, field, **extra), [], job_id,
                                      request.msg_id, False, 0))

    def _enqueue(self, client: ClientState, item: OutItem) -> None:
        ob = client.outbox
        if item.droppable:
            # a lagging client only needs the latest preview / proxy mesh of a job
            for old in [o for o in ob if o.droppable and o.job_id == item.job_id and o.msg_type == item.msg_type]:
                ob.remove(old)
                client.outbox_bytes -= old.nbytes
                self.stats["events_dropped_for_slow_clients"] += 1
            if len(ob) >= self.cfg.client_outbox_messages or \
                    client.outbox_bytes + item.nbytes > self.cfg.client_outbox_bytes:
                self.stats["events_dropped_for_slow_clients"] += 1
                return
        elif client.outbox_bytes + item.nbytes > 4 * self.cfg.client_outbox_bytes or \
                len(ob) >= 16 * self.cfg.client_outbox_messages:
            # hopelessly behind: forget it; terminal events are persisted and re-sent when it re-attaches
            log.warning("client %s is not reading: dropping its queue and subscriptions", client.owner)
            self.stats["clients_dropped"] += 1
            self._forget_client(client)
            return
        ob.append(item)
        client.outbox_bytes += item.nbytes
        if not self._flush(client):
            self._pending_flush.add(client.identity)

    def _flush(self, client: ClientState) -> bool:
        """Send what the client's pipe takes now; True when its outbox is empty."""
        ob = client.outbox
        while ob:
            item = ob[0]
            frames = self.session.serialize(item.msg_type, item.content, item.buffers, job_id=item.job_id,
                                            reply_to=item.reply_to, identities=[client.identity])
            try:
                self.router.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return False            # its pipe is full (HWM): try again later, never block
            except zmq.ZMQError as e:
                if e.errno == errno.EHOSTUNREACH:   # gone
                    self._forget_client(client)
                    return True
                raise
            ob.popleft()
            client.outbox_bytes -= item.nbytes
        return True

    def _forget_client(self, client: ClientState) -> None:
        for job_id in client.subscriptions:
            s = self.subs.get(job_id)
            if s is not None:
                s.discard(client.identity)
                if not s:
                    del self.subs[job_id]
        client.subscriptions.clear()
        client.outbox.clear()
        client.outbox_bytes = 0
        if self.clients.get(client.identity) is client:
            del self.clients[client.identity]
        self._pending_flush.discard(client.identity)

    def _subscribe(self, client: ClientState, job_id: str) -> None:
        client.subscriptions.add(job_id)
        self.subs.setdefault(job_id, set()).add(client.identity)

    # ---- events -------------------------------------------------------------------------------------
    def _event_buffers(self, job_id: str, etype: str, content: dict) -> list[bytes]:
        d = self.job_dir(job_id)
        names = {"progress": ["preview.png"] if content.get("preview") else [],
                 "proxy_mesh": ["proxy.glb"], "finished": ["result.glb", "turntable.png"]}.get(etype, [])
        out = []
        for n in names:
            try:
                with open(os.path.join(d, n), "rb") as f:
                    out.append(f.read())
            except OSError:
                if etype == "progress":
                    content["preview"] = False
                    return []
                out.append(b"")
        return out

    def _publish(self, job_id: str, etype: str, seq: int, content: dict, buffers=()) -> None:
        """Send a persisted event to every client attached to the job."""
        subs = self.subs.get(job_id)
        if not subs:
            return
        payload = {**content, "job_id": job_id, "seq": seq, "time": time.time()}
        for ident in list(subs):
            c = self.clients.get(ident)
            if c is None:
                subs.discard(ident)
                continue
            self._enqueue(c, OutItem(etype, payload, list(buffers), job_id, None, etype in DROPPABLE_EVENTS,
                                     sum(len(b) for b in buffers)))

    def _emit_persisted(self, job_id: str, etype: str, seq: int) -> None:
        """Publish an event already written by the store (reads its content and files back)."""
        if not self.subs.get(job_id):
            return
        for ev in self.store.events_after(job_id, seq - 1):
            if ev["seq"] == seq:
                content = ev["content"]
                self._publish(job_id, etype, seq, content, self._event_buffers(job_id, etype, content))
                return

    def _replay(self, client: ClientState, job_id: str, after_seq: int) -> None:
        for ev in self.store.events_after(job_id, after_seq):
            content = {**ev["content"], "job_id": job_id, "seq": ev["seq"], "time": ev["time"]}
            bufs = self._event_buffers(job_id, ev["type"], content)
            self._enqueue(client, OutItem(ev["type"], content, bufs, job_id, None, ev["type"] in DROPPABLE_EVENTS,
                                          sum(len(b) for b in bufs)))

    # ---- request handlers -------------------------------------------------------------------------------
    def _own_job(self, client: ClientState, content: dict) -> dict:
        job_id = require_job_id(content)
        job = self.store.get(job_id)
        if job is None or job["owner"] != client.owner:   # same answer: don't reveal others' jobs
            raise FieldError("job_id", f"no job {job_id} of yours on this server", code="not_found")
        return job

    def _job_view(self, job: dict, *, full: bool = False) -> dict:
        settings = json.loads(job["settings"])
        view = {
            "job_id": job["id"], "state": job["state"], "prompt": settings.get("prompt", ""),
            "model": settings.get("model"), "created": job["created"], "started": job["started"],
            "finished": job["finished"], "step": job["step"], "total": job["total"], "eta_s": job["eta_s"],
            "losses": json.loads(job["losses"]) if job["losses"] else {},
            "progress": (job["step"] / job["total"]) if job["total"] else 0.0,
            "error": job["error"], "runs": job["runs"], "crashes": job["crashes"], "last_seq": job["last_seq"],
            "parent_job_id": job["parent_job_id"], "has_init_mesh": bool(job["has_init_mesh"]),
            "cancel_requested": bool(job["cancel_requested"]),
            "position": self.store.position(job["id"]) if job["state"] == "queued" else None,
            "worker": job["worker"],
        }
        if job["state"] == "finished":
            view["progress"] = 1.0
        if full:
            view["settings"] = settings
            view["metadata"] = json.loads(job["metadata"]) if job["metadata"] else None
        return view

    def h_info(self, client: ClientState, msg: Message) -> None:
        check_fields(msg.content, ())
        gpus = []
        for w in self.workers:
            if w.device == "cuda":
                gpus.append({"worker": w.index, "cuda_device": w.cuda_device,
                             "name": w.info.get("gpu_name") or next(
                                 (g["name"] for g in self.detected_gpus if g["index"] == w.cuda_device), None),
                             "memory_bytes": w.info.get("gpu_memory_bytes") or next(
                                 (g["memory_bytes"] for g in self.detected_gpus if g["index"] == w.cuda_device),
                                 None)})
        models: list[str] = []
        for w in self.workers:
            for m in w.info.get("models", []):
                if m not in models:
                    models.append(m)
        self._reply(client, msg, {
            "server_version": __version__, "protocol_version": PROTOCOL_VERSION,
            "device": "cuda" if gpus else "cpu", "gpus": gpus,
            "models": models or ["builtin"],
            "queue_length": self.store.count("queued"), "running": self.store.count("running"),
            "workers": [w.public() for w in self.workers],
            "auth": "curve" if self.cfg.curve else "hmac", "owner": client.owner,
            "limits": {"max_init_mesh_bytes": self.cfg.max_init_mesh_bytes,
                       "max_queued_per_client": self.cfg.max_queued_per_client},
            "stats": json.loads(json.dumps(self.stats)),
        })

    def h_submit(self, client: ClientState, msg: Message) -> None:
        c = msg.content
        check_fields(c, ("settings", "parent_job_id", "client_token", "attach"))
        token = require_str(c, "client_token", 64, optional=True)
        attach = require_bool(c, "attach", True)
        if token is not None:
            existing = self.store.find_by_token(client.owner, token)
            if existing is not None:   # a re-sent submit whose reply was lost: same job
                if attach:
                    self._subscribe(client, existing["id"])
                self._reply(client, msg, {"job_id": existing["id"], "position": self.store.position(existing["id"]),
                                          "duplicate": True})
                return
        raw = c.get("settings")
        if not isinstance(raw, dict):
            raise FieldError("settings", "must be an object of generation settings")
        try:
            settings = GenerationSettings.from_dict(raw)
        except SettingError as e:
            raise FieldError(e.name, str(e)) from None
        if self.cfg.curve:
            m = settings.model
            if os.path.isabs(m) or m.startswith("~") or ".." in m.replace("\\", "/").split("/") or "\\" in m:
                raise FieldError("model", "model: remote clients may name a model id, not a path on the server")
        parent = require_job_id(c, "parent_job_id", optional=True)
        if len(msg.buffers) > 1:
            raise FieldError("buffers", "at most one buffer (the initial mesh, GLB) may be sent")
        init_mesh = msg.buffers[0] if msg.buffers else None
        if init_mesh is not None:
            check_glb(init_mesh, "init_mesh", self.cfg.max_init_mesh_bytes)
        if parent is not None:
            if init_mesh is not None:
                raise FieldError("parent_job_id", "give either an initial mesh or a parent job, not both")
            pjob = self.store.get(parent)
            if pjob is None or pjob["owner"] != client.owner:
                raise FieldError("parent_job_id", f"no job {parent} of yours on this server", code="not_found")
            if pjob["state"] != "finished":
                raise FieldError("parent_job_id", f"parent job is {pjob['state']}, not finished")
        if self.store.count("queued", client.owner) >= self.cfg.max_queued_per_client:
            raise FieldError(None, f"you already have {self.cfg.max_queued_per_client} queued jobs",
                             code="queue_full")
        job_id = new_id()
        d = self.job_dir(job_id)
        os.makedirs(d, exist_ok=True)
        if init_mesh is not None:
            write_atomic(os.path.join(d, "init.glb"), init_mesh)
        job_id, position = self.store.add_job(client.owner, settings.to_dict(), parent_job_id=parent,
                                              has_init_mesh=init_mesh is not None, client_token=token,
                                              job_id=job_id)
        log.info("job %s accepted from %s (position %d): %r", job_id, client.owner, position, settings.prompt[:80])
        self._reply(client, msg, {"job_id": job_id, "position": position, "duplicate": False})
        if attach:
            self._subscribe(client, job_id)
            self._replay(client, job_id, 0)
        self._schedule()

    def h_cancel(self, client: ClientState, msg: Message) -> None:
        check_fields(msg.content, ("job_id",))
        job = self._own_job(client, msg.content)
        jid, state = job["id"], job["state"]
        if state == "queued":
            seq = self.store.finish(jid, "cancelled")
            self._reply(client, msg, {"job_id": jid, "state": "cancelled", "cancelled": True})
            self._emit_persisted(jid, "cancelled", seq)
            self._remove_checkpoint(jid)
        elif state == "running":
            self.store.request_cancel(jid)
            for w in self.workers:
                if w.job_id == jid and w.state == "busy":
                    self._send_worker(w, "cancel", {"job_id": jid})
                    w.cancel_sent_at = w.cancel_sent_at or time.monotonic()
            self._reply(client, msg, {"job_id": jid, "state": "running", "cancelled": True,
                                      "message": "cancelling: the worker stops at its next step"})
        else:
            self._reply(client, msg, {"job_id": jid, "state": state, "cancelled": False,
                                      "message": f"job is already {state}"})

    def h_status(self, client: ClientState, msg: Message) -> None:
        check_fields(msg.content, ("job_id",))
        self._reply(client, msg, {"job": self._job_view(self._own_job(client, msg.content), full=True)})

    def h_list(self, client: ClientState, msg: Message) -> None:
        c = msg.content
        check_fields(c, ("limit", "states"))
        limit = require_int(c, "limit", 1, 1000, default=100)
        states = c.get("states")
        if states is not None and (not isinstance(states, list) or len(states) > 5
                                   or any(s not in JOB_STATES for s in states)):
            raise FieldError("states", f"must be a list of job states ({', '.join(JOB_STATES)})")
        self._reply(client, msg, {"jobs": [self._job_view(j) for j in self.store.list(client.owner, limit, states)]})

    def h_attach(self, client: ClientState, msg: Message) -> None:
        c = msg.content
        check_fields(c, ("job_id", "after_seq"))
        job = self._own_job(client, c)
        after = require_int(c, "after_seq", 0, 2 ** 62, default=0)
        self._subscribe(client, job["id"])
        self._reply(client, msg, {"job_id": job["id"], "state": job["state"], "last_seq": job["last_seq"]})
        self._replay(client, job["id"], after)

    def h_detach(self, client: ClientState, msg: Message) -> None:
        check_fields(msg.content, ("job_id",))
        job = self._own_job(client, msg.content)
        client.subscriptions.discard(job["id"])
        self.subs.get(job["id"], set()).discard(client.identity)
        self._reply(client, msg, {"job_id": job["id"]})

    def h_result(self, client: ClientState, msg: Message) -> None:
        check_fields(msg.content, ("job_id",))
        job = self._own_job(client, msg.content)
        if job["state"] != "finished":
            raise FieldError("job_id", f"job is {job['state']}, not finished", code="not_finished")
        d = self.job_dir(job["id"])
        try:
            with open(os.path.join(d, "result.glb"), "rb") as f:
                glb = f.read()
            with open(os.path.join(d, "turntable.png"), "rb") as f:
                turntable = f.read()
        except OSError as e:
            raise FieldError("job_id", f"result files are missing on the server ({e})", code="missing") from None
        self._reply(client, msg, {"job_id": job["id"], "metadata": json.loads(job["metadata"] or "{}")},
                    [glb, turntable])

    handlers = {
        "info_request": h_info, "submit_request": h_submit, "cancel_request": h_cancel,
        "status_request": h_status, "list_request": h_list, "attach_request": h_attach,
        "detach_request": h_detach, "result_request": h_result,
    }

    # ---- worker side ----------------------------------------------------------------------------------------
    def _send_worker(self, w: WorkerHandle, msg_type: str, content: dict) -> bool:
        try:
            self.wrouter.send_multipart(self.wsession.serialize(msg_type, content, identities=[w.identity]),
                                        flags=zmq.NOBLOCK)
            return True
        except zmq.ZMQError as e:
            log.warning("cannot reach worker %d (%s)", w.index, e)
            return False

    def _handle_workers(self) -> None:
        for _ in range(1000):
            try:
                frames = self.wrouter.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                msg = self.wsession.deserialize(frames)
                idx, gen = msg.content.get("index"), msg.content.get("gen")
                if not isinstance(idx, int) or not 0 <= idx < len(self.workers):
                    continue
                w = self.workers[idx]
                if gen != w.gen:
                    continue            # a message from a previous incarnation of this worker
                w.last_seen = time.monotonic()
                self._on_worker_message(w, msg)
            except ProtocolError as e:
                log.warning("bad message on the worker socket: %s", e)
            except Exception:
                log.exception("error handling a worker message")

    def _on_worker_message(self, w: WorkerHandle, msg: Message) -> None:
        t, c = msg.msg_type, msg.content
        if t == "heartbeat":
            return
        if t == "hello":
            w.info = c
            if w.state == "starting":
                w.state = "idle"
            log.info("worker %d ready: %s %s", w.index, c.get("device"), c.get("gpu_name") or "")
            self._schedule()
            return
        if t == "bye":
            return
        job_id = c.get("job_id")
        if job_id != w.job_id or job_id is None:
            return
        d = self.job_dir(job_id)
        if t == "progress":
            content = {k: c.get(k) for k in ("step", "total", "losses", "elapsed_s", "eta_s", "stage", "message")}
            content["preview"] = bool(msg.buffers and msg.buffers[0])
            if content["preview"]:
                write_atomic(os.path.join(d, "preview.png"), msg.buffers[0])
            seq = self.store.progress(job_id, int(c.get("step") or 0), int(c.get("total") or 0), c.get("eta_s"),
                                      c.get("losses") or {}, content)
            self._publish(job_id, "progress", seq, content, msg.buffers[:1] if content["preview"] else [])
        elif t == "proxy_mesh":
            if msg.buffers and msg.buffers[0]:
                write_atomic(os.path.join(d, "proxy.glb"), msg.buffers[0])
                content = {"step": c.get("step")}
                seq = self.store.add_event(job_id, "proxy_mesh", content)
                self._publish(job_id, "proxy_mesh", seq, content, msg.buffers[:1])
        elif t == "done":
            self._on_job_done(w, job_id, c)

    def _on_job_done(self, w: WorkerHandle, job_id: str, c: dict) -> None:
        outcome = c.get("outcome")
        job = self.store.get(job_id)
        w.state = "idle" if w.state == "busy" else w.state
        w.job_id, w.cancel_sent_at = None, None
        if c.get("model"):
            w.model = c["model"]
        if job is None or job["state"] != "running":
            return
        if outcome == "finished":
            d = self.job_dir(job_id)
            if not (os.path.exists(os.path.join(d, "result.glb")) and os.path.exists(os.path.join(d, "turntable.png"))):
                seq = self.store.finish(job_id, "failed", error="worker reported success but wrote no result")
                self._emit_persisted(job_id, "failed", seq)
            else:
                seq = self.store.finish(job_id, "finished", metadata=c.get("metadata") or {})
                log.info("job %s finished", job_id)
                self._emit_persisted(job_id, "finished", seq)
        elif outcome == "cancelled":
            if job["cancel_requested"]:
                seq = self.store.finish(job_id, "cancelled")
                log.info("job %s cancelled at step %s", job_id, c.get("step"))
                self._emit_persisted(job_id, "cancelled", seq)
                self._remove_checkpoint(job_id)
            elif self._stop:   # stopped for a server shutdown: back to the queue, resumes from its checkpoint
                self.store.requeue(job_id, crashed=False, reason="server shutting down", emit=False)
            else:              # the worker was told to stop by someone else (SIGTERM): run it again
                seq = self.store.requeue(job_id, crashed=False, reason="worker stopped; resuming from its checkpoint")
                self._emit_persisted(job_id, "requeued", seq)
        else:
            err = str(c.get("error") or "failed")
            log.warning("job %s failed: %s\n%s", job_id, err, c.get("traceback", ""))
            seq = self.store.finish(job_id, "failed", error=err)
            self._emit_persisted(job_id, "failed", seq)
            self._remove_checkpoint(job_id)
        if self._stop:
            return
        self._schedule()

    def _check_workers(self, now: float) -> None:
        for w in self.workers:
            if w.proc is None:
                if w.state == "down" and now >= w.respawn_at and not self._stop:
                    self._spawn(w)
                continue
            if not w.proc.is_alive():
                self._on_worker_death(w, now)
                continue
            silent = now - w.last_seen
            if w.state == "busy" and silent > self.cfg.worker_timeout_s:
                self._kill_worker(w, f"no heartbeat for {silent:.0f} s")
            elif w.state == "starting" and now - w.spawned_at > self.cfg.worker_start_timeout_s:
                self._kill_worker(w, "did not start in time")
            elif w.cancel_sent_at is not None and now - w.cancel_sent_at > self.cfg.cancel_timeout_s:
                self._kill_worker(w, "ignored a cancel request")

    def _kill_worker(self, w: WorkerHandle, reason: str) -> None:
        log.warning("killing worker %d (pid %s): %s", w.index, w.proc.pid if w.proc else None, reason)
        w.kill_reason = reason
        if w.proc is not None:
            w.proc.kill()

    def _on_worker_death(self, w: WorkerHandle, now: float) -> None:
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
        job_id, w.job_id = w.job_id, None
        w.state = "down"
        lived = now - w.spawned_at
        w.quick_deaths = w.quick_deaths + 1 if lived < 30 else 0
        w.respawn_at = now + min(60.0, 0.5 * 2 ** w.quick_deaths) if w.quick_deaths else now
        if job_id is None:
            return
        job = self.store.get(job_id)
        if job is None or job["state"] != "running" or self._stop:
            return          # (during a shutdown, running jobs simply stay queued)
        if job["cancel_requested"]:
            seq = self.store.finish(job_id, "cancelled")
            self._emit_persisted(job_id, "cancelled", seq)
            self._remove_checkpoint(job_id)
        elif job["crashes"] + 1 >= self.cfg.max_attempts:
            seq = self.store.finish(job_id, "failed", crashed=True,
                                    error=f"the worker process died {job['crashes'] + 1} times running this job "
                                          f"(last: {how})")
            self._emit_persisted(job_id, "failed", seq)
            self._remove_checkpoint(job_id)
        else:
            seq = self.store.requeue(job_id, crashed=True, reason=f"worker died ({how}); retrying from its checkpoint")
            log.info("job %s re-queued (worker crash %d of %d allowed)", job_id, job["crashes"] + 1,
                     self.cfg.max_attempts - 1)
            self._emit_persisted(job_id, "requeued", seq)

    def _schedule(self) -> None:
        if self._stop:
            return
        idle = [w for w in self.workers if w.state == "idle"]
        if not idle:
            return
        for job in self.store.queued(limit=len(idle)):
            if not idle:
                break
            model = json.loads(job["settings"]).get("model")
            w = next((x for x in idle if x.model == model), idle[0])   # keep loaded models busy
            idle.remove(w)
            self._dispatch(w, job)

    def _dispatch(self, w: WorkerHandle, job: dict) -> None:
        jid = job["id"]
        d = self.job_dir(jid)
        os.makedirs(d, exist_ok=True)
        ckpt = os.path.join(d, "checkpoint.pt")
        payload = {"job_id": jid, "settings": json.loads(job["settings"]), "checkpoint_path": ckpt,
                   "result_dir": d}
        if job["has_init_mesh"]:
            payload["init_mesh_path"] = os.path.join(d, "init.glb")
        if job["parent_job_id"]:
            pd = self.job_dir(job["parent_job_id"])
            if os.path.exists(os.path.join(pd, "checkpoint.pt")):
                payload["init_checkpoint"] = os.path.join(pd, "checkpoint.pt")
            elif os.path.exists(os.path.join(pd, "result.glb")):
                payload["init_mesh_path"] = os.path.join(pd, "result.glb")
        resumed = os.path.exists(ckpt)
        runs, seq = self.store.start(jid, w.index, {"worker": w.index, "device": w.device, "resumed": resumed})
        if not self._send_worker(w, "run", payload):
            self.store.requeue(jid, crashed=False, reason="worker unreachable", emit=False)
            return
        w.state, w.job_id, w.cancel_sent_at = "busy", jid, None
        w.last_seen = time.monotonic()
        log.info("job %s started on worker %d (run %d%s)", jid, w.index, runs, ", resuming" if resumed else "")
        self._emit_persisted(jid, "started", seq)

    # ---- shutdown -------------------------------------------------------------------------------------
    def _shutdown(self) -> None:
        log.info("shutting down: running jobs save a checkpoint and go back to the queue")
        self._stop = True
        for w in self.workers:
            if w.proc is not None and w.proc.is_alive():
                if w.state == "starting":
                    w.proc.kill()       # still importing: nothing to save
                else:
                    self._send_worker(w, "shutdown", {})
        deadline = time.monotonic() + (0 if self._force else self.cfg.shutdown_timeout_s)
        while time.monotonic() < deadline and any(w.proc is not None and w.proc.is_alive() for w in self.workers):
            if self._force:
                break
            if self.wrouter.poll(100, zmq.POLLIN):
                self._handle_workers()
        for w in self.workers:
            if w.proc is not None:
                if w.proc.is_alive():
                    w.proc.kill()
                w.proc.join(5)
        for job in self.store.in_state("running"):   # keep them: they resume on the next start
            self.store.requeue(job["id"], crashed=False, reason="server stopped", emit=False)
        for c in list(self.clients.values()):
            self._flush(c)
        self.router.close(linger=0)
        self.wrouter.close(linger=0)
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
