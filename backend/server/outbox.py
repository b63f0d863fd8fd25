"""Per-client outboxes: every reply and job event leaves the server through here.

The main loop never blocks on a client. Each client has a bounded outbox drained into the ROUTER
without blocking; a lagging client only keeps the latest preview / proxy mesh per job (droppable
events), while replies and terminal events are kept until the client is hopelessly behind — then
it is forgotten, and re-attaches from the persisted event log when it comes back.
"""

from __future__ import annotations

import errno
import logging
import time
from collections import deque
from dataclasses import dataclass, field

import zmq

from shared.protocol import DROPPABLE_EVENTS, ERROR_TYPE, Message, Session, error_content, reply_type

log = logging.getLogger("dreamprop.server")


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


class Outbox:
    """The clients, their subscriptions and their outboxes, in front of one ROUTER socket.

    ``stats`` is the server's counter dict (shown by ``info``); this class adds
    ``events_dropped_for_slow_clients``, ``clients_dropped`` and ``error_replies`` to it."""

    def __init__(self, router, session: Session, *, max_messages: int, max_bytes: int, stats: dict):
        self.router = router
        self.session = session
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.stats = stats
        for k in ("events_dropped_for_slow_clients", "clients_dropped", "error_replies"):
            stats.setdefault(k, 0)
        self.clients: dict[bytes, ClientState] = {}
        self.subs: dict[str, set[bytes]] = {}     # job id -> identities of the clients attached to it
        self.pending: set[bytes] = set()          # clients whose outbox did not drain at once

    # ---- clients ---------------------------------------------------------------------------------
    def client(self, identity: bytes, owner: str) -> ClientState:
        """The state of the client behind ``identity``; a new owner on an old identity starts afresh."""
        client = self.clients.get(identity)
        if client is None or client.owner != owner:
            if client is not None:
                self.forget(client)
            client = self.clients[identity] = ClientState(identity, owner)
        client.last_seen = time.monotonic()
        return client

    def forget(self, client: ClientState) -> None:
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
        self.pending.discard(client.identity)

    def forget_idle(self, now: float, idle_s: float) -> None:
        """Forget clients that went away: nothing attached, nothing to send, silent for ``idle_s``."""
        for c in list(self.clients.values()):
            if not c.subscriptions and not c.outbox and now - c.last_seen > idle_s:
                del self.clients[c.identity]

    def subscribe(self, client: ClientState, job_id: str) -> None:
        client.subscriptions.add(job_id)
        self.subs.setdefault(job_id, set()).add(client.identity)

    def unsubscribe(self, client: ClientState, job_id: str) -> None:
        client.subscriptions.discard(job_id)
        self.subs.get(job_id, set()).discard(client.identity)

    def has_subscribers(self, job_id: str) -> bool:
        return bool(self.subs.get(job_id))

    # ---- sending ---------------------------------------------------------------------------------
    def reply(self, client: ClientState, request: Message, content: dict, buffers=()) -> None:
        self.enqueue(client, OutItem(reply_type(request.msg_type), {"status": "ok", **content}, list(buffers),
                                     request.header.get("job_id") or content.get("job_id"), request.msg_id,
                                     False, sum(len(b) for b in buffers)))

    def reply_error(self, client: ClientState, request: Message, code: str, message: str, field=None, *,
                    known_type: bool, **extra) -> None:
        """An error reply: ``<type>_reply`` for a known request type, the generic error type otherwise."""
        self.stats["error_replies"] += 1
        mtype = reply_type(request.msg_type) if known_type else ERROR_TYPE
        job_id = request.header.get("job_id")
        if not (isinstance(job_id, str) and len(job_id) <= 64):
            job_id = None
        self.enqueue(client, OutItem(mtype, error_content(code, message, field, **extra), [], job_id,
                                     request.msg_id, False, 0))

    def publish(self, job_id: str, etype: str, seq: int, content: dict, buffers=()) -> None:
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
            self.enqueue(c, OutItem(etype, payload, list(buffers), job_id, None, etype in DROPPABLE_EVENTS,
                                    sum(len(b) for b in buffers)))

    def enqueue(self, client: ClientState, item: OutItem) -> None:
        ob = client.outbox
        if item.droppable:
            # a lagging client only needs the latest preview / proxy mesh of a job
            for old in [o for o in ob if o.droppable and o.job_id == item.job_id and o.msg_type == item.msg_type]:
                ob.remove(old)
                client.outbox_bytes -= old.nbytes
                self.stats["events_dropped_for_slow_clients"] += 1
            if len(ob) >= self.max_messages or client.outbox_bytes + item.nbytes > self.max_bytes:
                self.stats["events_dropped_for_slow_clients"] += 1
                return
        elif client.outbox_bytes + item.nbytes > 4 * self.max_bytes or len(ob) >= 16 * self.max_messages:
            # hopelessly behind: forget it; terminal events are persisted and re-sent when it re-attaches
            log.warning("client %s is not reading: dropping its queue and subscriptions", client.owner)
            self.stats["clients_dropped"] += 1
            self.forget(client)
            return
        ob.append(item)
        client.outbox_bytes += item.nbytes
        if not self.flush(client):
            self.pending.add(client.identity)

    def flush(self, client: ClientState) -> bool:
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
                    self.forget(client)
                    return True
                raise
            ob.popleft()
            client.outbox_bytes -= item.nbytes
        return True

    def flush_pending(self) -> None:
        for ident in list(self.pending):
            c = self.clients.get(ident)
            if c is None or self.flush(c):
                self.pending.discard(ident)

    def flush_all(self) -> None:
        for c in list(self.clients.values()):
            self.flush(c)
