"""Python client of the dreamprop job server (pure Python + pyzmq; no torch).

Two layers:

- a **non-blocking core** for the Blender add-on's ``bpy.app.timers`` ticks: ``send()`` a request
  (returns its message id) and ``poll()`` replies and pushed events; ``track(job_id)`` keeps a job's
  event stream alive by itself (drops duplicate events by ``seq``; re-attaches, without blocking,
  when the stream went quiet, e.g. after a server restart);
- **blocking conveniences** for scripts, the CLI and tests: ``info``, ``estimate``, ``submit``,
  ``cancel``, ``status``, ``list_jobs``, ``attach``, ``events``, ``result``. They raise ``ServerError`` on
  error replies, ``TimeoutError`` when the server does not answer and ``AuthError`` when the
  server refused this client's CURVE key.

Not thread-safe: use one JobClient per thread (ZeroMQ sockets must stay in one thread).

    client = JobClient.from_connection_file()            # the local server
    job = client.submit({"prompt": "a wooden chair", "steps": 2000})
    for ev in client.events(job):
        if ev.msg_type == "progress" and ev.buffers: open("preview.png", "wb").write(ev.buffers[0])
    glb, metadata = client.result(job)
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from typing import Iterator

from .keyfiles import load_public_key, load_secret_key
from .paths import default_connection_file
from .protocol import (DROPPABLE_EVENTS, EVENT_TYPES, TERMINAL_EVENTS, TERMINAL_STATES, Message, ProtocolError,
                       Session, check_image_bytes, curve_hmac_key, new_id)

__all__ = ["JobClient", "Message", "ServerError", "AuthError", "TimeoutError"]

MAX_INBOX = 2000            # messages kept for the caller before old previews are dropped
REATTACH_AFTER_S = 5.0      # a tracked, unfinished job that was silent this long is re-attached
# Server messages older than this are dropped (replay protection). Generous: Blender can block its
# main thread (a render) for a long time while messages wait, and the server re-sends what matters.
CLIENT_MAX_AGE_S = 24 * 3600.0


class ServerError(Exception):
    """The server answered with an error. ``field`` names the offending request field (or None)."""

    def __init__(self, field: str | None, message: str, code: str = "error", content: dict | None = None):
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message
        self.code = code
        self.content = content or {}


class AuthError(ConnectionError):
    """The CURVE handshake failed: the server does not know this client's key (or the server key is wrong)."""


def _z85(key) -> bytes | None:
    if key is None:
        return None
    if isinstance(key, str):
        key = key.encode("ascii")
    key = bytes(key).strip()
    if len(key) != 40:
        raise ValueError("CURVE keys are 40 Z85 characters")
    return key


def _tcp_endpoint(host: str, port: int) -> str:
    return f"tcp://[{host}]:{int(port)}" if ":" in host else f"tcp://{host}:{int(port)}"


class JobClient:
    def __init__(self, endpoint: str, key: bytes | str | None, *, server_public_key: str | bytes | None = None,
                 client_public_key: str | bytes | None = None, client_secret_key: str | bytes | None = None,
                 timeout: float = 10.0, client_id: str | None = None):
        """``key``: the HMAC key (local mode: from the connection file). With CURVE
        (``server_public_key`` given) it may be None: the framing key is then derived from the
        server's public key and CurveZMQ does the authentication.

        ``client_id``: local mode only: the owner name of this client's jobs (default ``"local"``;
        clients with different ids don't see each other's jobs). Over CURVE the owner is the
        client's public key and this is ignored by the server.
        """
        import zmq
        import zmq.utils.monitor  # noqa: F401  (imported here: recv_monitor_message)

        self._zmq = zmq
        self.endpoint = endpoint
        self.timeout = float(timeout)
        self.curve = server_public_key is not None
        if self.curve:
            server_public_key = _z85(server_public_key)
            client_public_key, client_secret_key = _z85(client_public_key), _z85(client_secret_key)
            if not (client_public_key and client_secret_key):
                raise ValueError("CURVE needs this client's public and secret keys")
            if not zmq.has("curve"):
                raise RuntimeError("this libzmq has no CURVE support")
            if not key:
                key = curve_hmac_key(server_public_key)
        elif not key:
            raise ValueError("an HMAC key is required (see the server's connection file)")
        self.session = Session(key, client_id=client_id or "local",
                               max_age_s=None if self.curve else CLIENT_MAX_AGE_S,
                               max_content_bytes=64 * 1024 * 1024, max_buffers=8,
                               max_buffer_bytes=2 * 1024 * 1024 * 1024)
        self._ctx = zmq.Context()
        s = self._ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.RECONNECT_IVL, 100)
        s.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        s.setsockopt(zmq.HEARTBEAT_IVL, 2000)
        s.setsockopt(zmq.HEARTBEAT_TIMEOUT, 10000)
        s.setsockopt(zmq.HEARTBEAT_TTL, 10000)
        if ":" in endpoint.split("//", 1)[-1].rsplit(":", 1)[0]:
            s.setsockopt(zmq.IPV6, 1)
        if self.curve:
            s.curve_serverkey = server_public_key
            s.curve_publickey = client_public_key
            s.curve_secretkey = client_secret_key
        events = (zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED
                  | zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                  | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
        self._monitor = s.get_monitor_socket(events)
        s.connect(endpoint)
        self._sock = s
        self._inbox: deque[Message] = deque()
        self._tracked: dict[str, dict] = {}     # job id -> {"last_seq", "last_activity", "auto_ids"}
        self._auto_attach_ids: dict[str, str] = {}  # msg id of an automatic attach -> job id
        self._attach_errors: dict[str, Message] = {}  # job id -> error reply to an automatic attach
        self.submit_warnings: dict[str, list[str]] = {}  # job id -> the server's warnings on its submit
        self.connected = False
        self.auth_error: str | None = None
        self.dropped: dict[str, int] = {}       # invalid messages from the server, by reason
        self._closed = False

    # ---- construction from files ------------------------------------------------------------
    @classmethod
    def from_connection_file(cls, path: str | None = None, *, timeout: float = 10.0,
                             client_id: str | None = None,
                             client_secret_key_file: str | None = None) -> "JobClient":
        """Connect to the server described by a connection file (default: the local server's).

        A server running with ``--curve`` also needs ``client_secret_key_file`` (an allowed key).
        """
        path = path or default_connection_file()
        try:
            with open(path, "r", encoding="utf-8") as f:
                info = json.load(f)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"no dreamprop server connection file at {path}: start a server with "
                "`python -m backend serve` (or pass the file of a server started with --state-dir)") from None
        endpoint = info["endpoint"]
        if info.get("curve"):
            if not client_secret_key_file:
                raise ValueError(f"the server at {endpoint} uses CURVE: pass client_secret_key_file")
            pub, sec = load_secret_key(client_secret_key_file)
            return cls(endpoint, None, server_public_key=info["server_public_key"], client_public_key=pub,
                       client_secret_key=sec, timeout=timeout, client_id=client_id)
        return cls(endpoint, info["key"].encode("ascii"), timeout=timeout, client_id=client_id)

    @classmethod
    def from_key_files(cls, host: str, port: int, server_public_key_file: str, client_secret_key_file: str,
                       *, timeout: float = 10.0) -> "JobClient":
        """Remote mode: CurveZMQ with key files made by ``python -m backend keygen``."""
        server_public = load_public_key(server_public_key_file)
        pub, sec = load_secret_key(client_secret_key_file)
        return cls(_tcp_endpoint(host, port), None, server_public_key=server_public, client_public_key=pub,
                   client_secret_key=sec, timeout=timeout)

    # ---- non-blocking core --------------------------------------------------------------------
    def send(self, msg_type: str, content: dict, buffers: list[bytes] = (), *, job_id: str | None = None) -> str:
        """Queue one request; returns its message id (replies carry it as ``header["reply_to"]``).

        Never blocks: raises ConnectionError when the outgoing queue is full (server unreachable
        for long)."""
        self._check_open()
        header = self.session.make_header(msg_type, job_id=job_id)
        frames = self.session.serialize(msg_type, content, buffers, header=header)
        try:
            self._sock.send_multipart(frames, flags=self._zmq.NOBLOCK, copy=False)
        except self._zmq.Again:
            self._drain_monitor()
            if self.auth_error:
                raise AuthError(self.auth_error) from None
            raise ConnectionError(f"send queue to {self.endpoint} is full (server unreachable?)") from None
        return header["msg_id"]

    def poll(self, timeout_ms: int = 0) -> list[Message]:
        """Replies and pushed events received so far; waits at most ``timeout_ms`` for the first one."""
        self._collect(0 if self._inbox else timeout_ms)
        out = list(self._inbox)
        self._inbox.clear()
        self._attach_errors.clear()   # they are in ``out``: the caller sees them
        return out

    def track(self, job_id: str, after_seq: int = 0) -> str:
        """Follow a job's events without blocking: sends an attach request (returns its id) and from
        then on ``poll()`` drops duplicate events of the job and re-attaches it when it went quiet."""
        t = self._tracked.setdefault(job_id, {"last_seq": after_seq, "last_activity": time.monotonic()})
        t["last_seq"] = max(t["last_seq"], after_seq)
        t["last_activity"] = time.monotonic()
        return self.send("attach_request", {"job_id": job_id, "after_seq": t["last_seq"]}, job_id=job_id)

    def untrack(self, job_id: str) -> None:
        self._tracked.pop(job_id, None)

    def last_seq(self, job_id: str) -> int:
        return self._tracked.get(job_id, {}).get("last_seq", 0)

    def _check_open(self) -> None:
        if self._closed:
            raise ConnectionError("client is closed")

    def _collect(self, timeout_ms: int) -> None:
        """Move what arrived (waiting up to timeout_ms) into the inbox; track bookkeeping."""
        self._check_open()
        self._drain_monitor()
        if timeout_ms > 0:
            self._sock.poll(timeout_ms, self._zmq.POLLIN)
            self._drain_monitor()
        zmq = self._zmq
        for _ in range(10000):
            try:
                frames = self._sock.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                break
            try:
                msg = self.session.deserialize(frames)
            except ProtocolError as e:
                self.dropped[e.reason] = self.dropped.get(e.reason, 0) + 1
                continue
            self._accept(msg)
        self._maintain_tracked()
        if len(self._inbox) > MAX_INBOX:
            self._prune_inbox()

    def _accept(self, msg: Message) -> None:
        rid = msg.reply_to
        if rid and rid in self._auto_attach_ids:
            job_id = self._auto_attach_ids.pop(rid)
            if not msg.is_error:
                return                              # our own re-attach: nothing for the caller
            self._tracked.pop(job_id, None)         # e.g. the job vanished: tell the caller
            self._attach_errors[job_id] = msg
        if msg.msg_type in EVENT_TYPES:
            t = self._tracked.get(msg.job_id)
            if t is not None:
                if msg.seq <= t["last_seq"]:
                    return                          # a duplicate (replayed after a re-attach)
                t["last_seq"] = msg.seq
                t["last_activity"] = time.monotonic()
                if msg.msg_type in TERMINAL_EVENTS:
                    t["done"] = True
        self._inbox.append(msg)

    def _maintain_tracked(self) -> None:
        now = time.monotonic()
        for job_id, t in list(self._tracked.items()):
            if t.get("done"):
                continue
            if now - t["last_activity"] > REATTACH_AFTER_S:
                t["last_activity"] = now
                try:
                    mid = self.send("attach_request", {"job_id": job_id, "after_seq": t["last_seq"]},
                                    job_id=job_id)
                except ConnectionError:
                    continue
                self._auto_attach_ids[mid] = job_id
                if len(self._auto_attach_ids) > 1000:
                    self._auto_attach_ids.pop(next(iter(self._auto_attach_ids)))

    def _prune_inbox(self) -> None:
        """Too much unread: keep every reply and terminal event, only the latest preview per job."""
        latest: dict[tuple, int] = {}
        items = list(self._inbox)
        for i, m in enumerate(items):
            if m.msg_type in DROPPABLE_EVENTS:
                latest[(m.job_id, m.msg_type)] = i
        kept = [m for i, m in enumerate(items)
                if m.msg_type not in DROPPABLE_EVENTS or latest.get((m.job_id, m.msg_type)) == i]
        self._inbox = deque(kept[-MAX_INBOX:])

    def _drain_monitor(self) -> None:
        zmq = self._zmq
        from zmq.utils.monitor import recv_monitor_message

        while True:
            try:
                ev = recv_monitor_message(self._monitor, flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            except zmq.ZMQError:
                return
            e = ev["event"]
            if e == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.connected, self.auth_error = True, None
            elif e == zmq.EVENT_CONNECTED and not self.curve:
                self.connected = True
            elif e == zmq.EVENT_DISCONNECTED:
                self.connected = False
            elif e == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                self.connected = False
                self.auth_error = (f"the server at {self.endpoint} refused this client's key "
                                   f"(ZAP status {ev.get('value')}): add its public key to the server's "
                                   "allowed-clients directory")
            elif self.curve and e in (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL):
                self.connected = False
                self.auth_error = (f"CURVE handshake with {self.endpoint} failed: is the server public key "
                                   "right, and does the server run with --curve?")

    # ---- blocking conveniences --------------------------------------------------------------------
    def request(self, msg_type: str, content: dict, buffers: list[bytes] = (), *, job_id: str | None = None,
                timeout: float | None = None) -> Message:
        """Send a request and wait for its reply (other messages stay queued for poll()/events())."""
        msg_id = self.send(msg_type, content, buffers, job_id=job_id)
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            for i, m in enumerate(self._inbox):
                if m.reply_to == msg_id:
                    del self._inbox[i]
                    if m.is_error:
                        c = m.content
                        raise ServerError(c.get("field"), str(c.get("message", "error")),
                                          str(c.get("error", "error")), c)
                    return m
            if self.auth_error:
                raise AuthError(self.auth_error)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no reply to {msg_type} from {self.endpoint} within {timeout:g} s")
            self._collect(int(min(remaining, 0.1) * 1000) + 1)

    def info(self) -> dict:
        return self.request("info_request", {}).content

    def estimate(self, settings: dict) -> dict:
        """Estimated time (``time_s``) and peak memory (``peak_memory_bytes``) of a job with these
        settings on the server's device, and whether it ``fits`` (else ``problem`` names the setting
        to change). Non-blocking callers: ``send("estimate_request", {"settings": ...})`` and poll."""
        return self.request("estimate_request", {"settings": settings}).content

    def submit(self, settings: dict, init_mesh_glb: bytes | None = None, parent_job_id: str | None = None,
               *, client_token: str | None = None, attach: bool = True, image: bytes | None = None) -> str:
        """Queue a job; returns its id. With ``attach`` (default) this client receives its events.
        The server's warnings about it (e.g. an unknown prompt) land in ``submit_warnings[job_id]``.

        The request carries a client token: if the reply is lost (server restart) the request is
        re-sent once with the same token and the server answers with the job it already accepted.

        ``image``: the reference picture of an image-to-3D job (settings ``guidance_type`` "zero123");
        its size and file type are checked here (``FieldError`` naming "image"), the rest by the server."""
        content: dict = {"settings": settings, "client_token": client_token or new_id(), "attach": attach}
        if parent_job_id:
            content["parent_job_id"] = parent_job_id
        buffers, names = [], []
        if init_mesh_glb is not None:
            buffers.append(init_mesh_glb), names.append("init_mesh")
        if image is not None:
            check_image_bytes(image)
            buffers.append(image), names.append("image")
            content["buffers"] = names
        try:
            reply = self.request("submit_request", content, buffers)
        except TimeoutError:
            reply = self.request("submit_request", content, buffers)
        job_id = reply.content["job_id"]
        if reply.content.get("warnings"):
            self.submit_warnings[job_id] = [str(w) for w in reply.content["warnings"]]
        if attach:
            t = self._tracked.setdefault(job_id, {"last_seq": 0})
            t["last_activity"] = time.monotonic()
        return job_id

    def cancel(self, job_id: str) -> dict:
        return self.request("cancel_request", {"job_id": job_id}, job_id=job_id).content

    def status(self, job_id: str) -> dict:
        return self.request("status_request", {"job_id": job_id}, job_id=job_id).content["job"]

    def list_jobs(self, limit: int | None = None, states: list[str] | None = None) -> list[dict]:
        content: dict = {}
        if limit is not None:
            content["limit"] = limit
        if states is not None:
            content["states"] = list(states)
        return self.request("list_request", content).content["jobs"]

    def attach(self, job_id: str, after_seq: int = 0) -> dict:
        """Subscribe to a job's events (the server re-sends the ones after ``after_seq``)."""
        t = self._tracked.setdefault(job_id, {"last_seq": after_seq})
        t["last_seq"] = max(t.get("last_seq", 0), after_seq)
        t["last_activity"] = time.monotonic()
        t.pop("done", None)
        reply = self.request("attach_request", {"job_id": job_id, "after_seq": t["last_seq"]}, job_id=job_id)
        return reply.content

    def detach(self, job_id: str) -> None:
        self._tracked.pop(job_id, None)
        self.request("detach_request", {"job_id": job_id}, job_id=job_id)

    def events(self, job_id: str, after_seq: int = 0, timeout: float | None = None) -> Iterator[Message]:
        """Yield the job's events (seq > after_seq) until finished/failed/cancelled.

        ``timeout``: seconds to wait for the *next* event before raising TimeoutError (None: forever).
        Survives server restarts: a quiet stream is re-attached from the last seq seen."""
        last = after_seq
        last_event = time.monotonic()
        attached = False
        while not attached:
            try:
                reply = self.attach(job_id, after_seq)
                attached = True
            except TimeoutError:
                if timeout is not None and time.monotonic() - last_event > timeout:
                    raise
        if reply.get("state") in TERMINAL_STATES and reply.get("last_seq", 0) <= after_seq and not any(
                m.msg_type in EVENT_TYPES and m.job_id == job_id and m.seq > after_seq for m in self._inbox):
            self._tracked.pop(job_id, None)
            return                                  # it ended and the caller saw the end already
        while True:
            found = None
            for i, m in enumerate(self._inbox):
                if m.msg_type in EVENT_TYPES and m.job_id == job_id:
                    found = i
                    break
            err = self._attach_errors.pop(job_id, None)
            if err is not None:                      # an automatic re-attach was refused
                try:
                    self._inbox.remove(err)
                except ValueError:
                    pass
                c = err.content
                raise ServerError(c.get("field"), str(c.get("message", "error")), str(c.get("error")), c)
            if found is not None:
                m = self._inbox[found]
                del self._inbox[found]
                if m.seq <= last:
                    continue
                last = m.seq
                last_event = time.monotonic()
                yield m
                if m.msg_type in TERMINAL_EVENTS:
                    self._tracked.pop(job_id, None)
                    return
                continue
            if self.auth_error:
                raise AuthError(self.auth_error)
            if timeout is not None and time.monotonic() - last_event > timeout:
                raise TimeoutError(f"no event of job {job_id} for {timeout:g} s")
            if job_id not in self._tracked:   # e.g. popped by an error reply: track again
                self._tracked[job_id] = {"last_seq": last, "last_activity": time.monotonic()}
            self._collect(100)

    def result_message(self, job_id: str, timeout: float | None = None) -> Message:
        """The raw result reply: content {job_id, metadata}, buffers [GLB, turntable PNG]."""
        return self.request("result_request", {"job_id": job_id}, job_id=job_id,
                            timeout=max(self.timeout, 60.0) if timeout is None else timeout)

    def result(self, job_id: str) -> tuple[bytes, dict]:
        """The finished job's GLB and metadata (the turntable PNG is ``result_message(...).buffers[1]``)."""
        m = self.result_message(job_id)
        return m.buffers[0], m.content.get("metadata", {})

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._sock.disable_monitor()
        except Exception:
            pass
        self._monitor.close(linger=0)
        self._sock.close(linger=0)
        self._ctx.term()

    def __enter__(self) -> "JobClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass
