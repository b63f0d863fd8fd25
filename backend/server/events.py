"""Job events to clients: each is persisted by the job store first, then sent with the job files it
carries (preview, proxy mesh, result) read back from disk — so a live event and a replayed one
(a client that attaches late, or re-attaches after a crash with ``after_seq``) are the same."""

from __future__ import annotations

from shared.protocol import DROPPABLE_EVENTS

from .jobfiles import JobFiles
from .jobstore import JobStore
from .outbox import ClientState, OutItem, Outbox


class JobEvents:
    def __init__(self, store: JobStore, files: JobFiles, outbox: Outbox):
        self.store, self.files, self.outbox = store, files, outbox

    def publish(self, job_id: str, etype: str, seq: int, content: dict, buffers=()) -> None:
        """Send an event just persisted, with buffers the caller already has in memory."""
        self.outbox.publish(job_id, etype, seq, content, buffers)

    def emit_persisted(self, job_id: str, etype: str, seq: int) -> None:
        """Publish an event already written by the store (reads its content and files back)."""
        if not self.outbox.has_subscribers(job_id):
            return
        for ev in self.store.events_after(job_id, seq - 1):
            if ev["seq"] == seq:
                content = ev["content"]
                self.outbox.publish(job_id, etype, seq, content, self.files.event_buffers(job_id, etype, content))
                return

    def replay(self, client: ClientState, job_id: str, after_seq: int) -> None:
        for ev in self.store.events_after(job_id, after_seq):
            content = {**ev["content"], "job_id": job_id, "seq": ev["seq"], "time": ev["time"]}
            bufs = self.files.event_buffers(job_id, ev["type"], content)
            self.outbox.enqueue(client, OutItem(ev["type"], content, bufs, job_id, None,
                                                ev["type"] in DROPPABLE_EVENTS, sum(len(b) for b in bufs)))
