"""Slow-client policy of the server's per-client outbox (in process, with a router that is 'full')."""

from __future__ import annotations

import zmq

from backend.server.outbox import ClientState, OutItem, Outbox
from backend.server.server import ServerConfig
from shared.protocol import Session


class FullRouter:
    """Stands in for the ROUTER socket: raises Again (peer HWM reached) while ``full``."""

    def __init__(self):
        self.full = True
        self.sent: list[list[bytes]] = []

    def send_multipart(self, frames, flags=0, copy=True):
        if self.full:
            raise zmq.Again()
        self.sent.append(frames)


def make_outbox(**cfg):
    """The outbox as the server builds it, with the server's default limits unless given."""
    config = ServerConfig(**cfg)
    return Outbox(FullRouter(), Session(b"k" * 32), max_messages=config.client_outbox_messages,
                  max_bytes=config.client_outbox_bytes, stats={})


def event(etype, job, seq, nbytes=1000):
    return OutItem(etype, {"job_id": job, "seq": seq}, [b"x" * nbytes], job, None,
                   etype in ("progress", "proxy_mesh"), nbytes)


def test_lagging_client_keeps_only_latest_preview_and_every_terminal_event():
    outbox = make_outbox()
    client = ClientState(b"c1", "local:x")
    outbox.clients[b"c1"] = client
    for seq in range(1, 1001):                       # never blocks, whatever the client does
        outbox.enqueue(client, event("progress", "a" * 32, seq))
        if seq % 100 == 0:
            outbox.enqueue(client, event("proxy_mesh", "a" * 32, seq))
    outbox.enqueue(client, event("finished", "a" * 32, 1001))
    assert [(o.msg_type, o.content["seq"]) for o in client.outbox] == [
        ("progress", 1000), ("proxy_mesh", 1000), ("finished", 1001)]
    assert outbox.stats["events_dropped_for_slow_clients"] == 999 + 9
    outbox.router.full = False                            # the client catches up
    assert outbox.flush(client) and not client.outbox and client.outbox_bytes == 0
    sent = [outbox.session.deserialize(f[1:], check_replay=False) for f in outbox.router.sent]
    assert [(m.msg_type, m.seq) for m in sent] == [("progress", 1000), ("proxy_mesh", 1000), ("finished", 1001)]
    assert sent[0].buffers == [b"x" * 1000]


def test_outbox_is_bounded_and_a_hopeless_client_is_forgotten():
    outbox = make_outbox(client_outbox_messages=8, client_outbox_bytes=10_000)
    client = ClientState(b"c2", "local:x")
    outbox.clients[b"c2"] = client
    outbox.subscribe(client, "b" * 32)
    for i in range(50):                                # previews of many jobs: bounded
        outbox.enqueue(client, event("progress", f"{i:032x}", 1))
    assert len(client.outbox) == 8
    for i in range(40):                                # replies/terminal events are kept...
        outbox.enqueue(client, event("finished", f"{i:032x}", 2, nbytes=1000))
    # ...until the client is hopelessly behind: then it is dropped (events are persisted; it re-attaches)
    assert b"c2" not in outbox.clients and not outbox.subs.get("b" * 32)
    assert outbox.stats["clients_dropped"] == 1
