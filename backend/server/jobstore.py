"""Crash-safe job records and event log in SQLite (WAL, synchronous=FULL).

Only the server's main loop touches the store (one thread). Every state change and every event is
committed before anything is sent to a client, so an acknowledged submit survives ``kill -9`` and
a power cut, and event sequence numbers stay monotonic across restarts.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import uuid
from typing import Any, Iterable

from shared.protocol import DROPPABLE_EVENTS, TERMINAL_STATES, json_dumps
from shared.settings import GenerationSettings, SettingError

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    qorder          INTEGER PRIMARY KEY AUTOINCREMENT,   -- queue order (kept when re-queued)
    id              TEXT NOT NULL UNIQUE,
    owner           TEXT NOT NULL,
    state           TEXT NOT NULL,
    settings        TEXT NOT NULL,
    parent_job_id   TEXT,
    has_init_mesh   INTEGER NOT NULL DEFAULT 0,
    client_token    TEXT,
    created         REAL NOT NULL,
    started         REAL,
    finished        REAL,
    runs            INTEGER NOT NULL DEFAULT 0,          -- times a worker started it
    crashes         INTEGER NOT NULL DEFAULT 0,          -- times its worker died under it
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    worker          INTEGER,
    error           TEXT,
    step            INTEGER NOT NULL DEFAULT 0,
    total           INTEGER NOT NULL DEFAULT 0,
    eta_s           REAL,
    losses          TEXT,
    last_seq        INTEGER NOT NULL DEFAULT 0,
    metadata        TEXT
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, qorder);
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs(owner, qorder);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_token ON jobs(owner, client_token) WHERE client_token IS NOT NULL;
CREATE TABLE IF NOT EXISTS events (
    job_id  TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    type    TEXT NOT NULL,
    content TEXT NOT NULL,
    time    REAL NOT NULL,
    PRIMARY KEY (job_id, seq)
);
"""


class JobStore:
    def __init__(self, path: str):
        self.path = path
        if not os.path.exists(path):   # owner-only, like everything in the state dir
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        self.db = sqlite3.connect(path, isolation_level=None, timeout=30.0)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    # ---- transactions ---------------------------------------------------------------------
    def _tx(self):
        store = self

        class _Tx:
            def __enter__(self):
                store.db.execute("BEGIN IMMEDIATE")
                return store.db

            def __exit__(self, exc_type, exc, tb):
                store.db.execute("COMMIT" if exc_type is None else "ROLLBACK")
                return False

        return _Tx()

    def _append_event(self, db, job_id: str, etype: str, content: dict, now: float) -> int:
        row = db.execute("SELECT last_seq FROM jobs WHERE id=?", (job_id,)).fetchone()
        seq = row["last_seq"] + 1
        db.execute("UPDATE jobs SET last_seq=? WHERE id=?", (seq, job_id))
        if etype in DROPPABLE_EVENTS:  # only the latest progress / proxy mesh is kept for replays
            db.execute("DELETE FROM events WHERE job_id=? AND type=?", (job_id, etype))
        db.execute("INSERT INTO events(job_id, seq, type, content, time) VALUES (?,?,?,?,?)",
                   (job_id, seq, etype, json_dumps(content).decode("utf-8"), now))
        return seq

    # ---- jobs --------------------------------------------------------------------------------
    def add_job(self, owner: str, settings: dict, *, parent_job_id: str | None = None,
                has_init_mesh: bool = False, client_token: str | None = None,
                job_id: str | None = None) -> tuple[str, int]:
        """Insert a queued job and its ``accepted`` event in one transaction; returns (id, position)."""
        job_id = job_id or uuid.uuid4().hex
        now = time.time()
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO jobs(id, owner, state, settings, parent_job_id, has_init_mesh, client_token,"
                " created, total) VALUES (?,?,?,?,?,?,?,?,?)",
                (job_id, owner, "queued", json_dumps(settings).decode("utf-8"), parent_job_id,
                 int(has_init_mesh), client_token, now, _planned_steps(settings, parent_job_id is not None
                                                                        or has_init_mesh)))
            qorder = cur.lastrowid
            position = db.execute("SELECT COUNT(*) FROM jobs WHERE state='queued' AND qorder<?",
                                  (qorder,)).fetchone()[0]
            self._append_event(db, job_id, "accepted", {"position": position}, now)
        return job_id, position

    def find_by_token(self, owner: str, token: str) -> dict | None:
        row = self.db.execute("SELECT * FROM jobs WHERE owner=? AND client_token=?", (owner, token)).fetchone()
        return dict(row) if row else None

    def get(self, job_id: str) -> dict | None:
        row = self.db.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        return dict(row) if row else None

    def list(self, owner: str, limit: int = 100, states: Iterable[str] | None = None) -> list[dict]:
        q = "SELECT * FROM jobs WHERE owner=?"
        args: list[Any] = [owner]
        if states:
            states = list(states)
            q += f" AND state IN ({','.join('?' * len(states))})"
            args += states
        q += " ORDER BY qorder DESC LIMIT ?"
        args.append(int(limit))
        return [dict(r) for r in self.db.execute(q, args)]

    def queued(self, limit: int = 1000) -> list[dict]:
        return [dict(r) for r in self.db.execute(
            "SELECT * FROM jobs WHERE state='queued' ORDER BY qorder LIMIT ?", (limit,))]

    def in_state(self, state: str) -> list[dict]:
        return [dict(r) for r in self.db.execute("SELECT * FROM jobs WHERE state=? ORDER BY qorder", (state,))]

    def position(self, job_id: str) -> int | None:
        row = self.db.execute("SELECT qorder, state FROM jobs WHERE id=?", (job_id,)).fetchone()
        if not row or row["state"] != "queued":
            return None
        return self.db.execute("SELECT COUNT(*) FROM jobs WHERE state='queued' AND qorder<?",
                               (row["qorder"],)).fetchone()[0]

    def count(self, state: str, owner: str | None = None) -> int:
        if owner is None:
            return self.db.execute("SELECT COUNT(*) FROM jobs WHERE state=?", (state,)).fetchone()[0]
        return self.db.execute("SELECT COUNT(*) FROM jobs WHERE state=? AND owner=?", (state, owner)).fetchone()[0]

    # ---- state changes (each with its event, atomically) ------------------------------------------
    def start(self, job_id: str, worker: int, event: dict) -> tuple[int, int]:
        """queued -> running; returns (runs, seq of the ``started`` event)."""
        now = time.time()
        with self._tx() as db:
            db.execute("UPDATE jobs SET state='running', worker=?, started=?, runs=runs+1 WHERE id=?",
                       (worker, now, job_id))
            runs = db.execute("SELECT runs FROM jobs WHERE id=?", (job_id,)).fetchone()[0]
            seq = self._append_event(db, job_id, "started", {**event, "run": runs}, now)
        return runs, seq

    def requeue(self, job_id: str, *, crashed: bool, reason: str, emit: bool = True) -> int | None:
        """running -> queued (keeps its place in the queue); returns the ``requeued`` event seq."""
        now = time.time()
        with self._tx() as db:
            db.execute("UPDATE jobs SET state='queued', worker=NULL, crashes=crashes+? WHERE id=?",
                       (int(crashed), job_id))
            if not emit:
                return None
            crashes = db.execute("SELECT crashes FROM jobs WHERE id=?", (job_id,)).fetchone()[0]
            return self._append_event(db, job_id, "requeued", {"reason": reason, "crashes": crashes}, now)

    def finish(self, job_id: str, state: str, *, error: str | None = None, metadata: dict | None = None,
               crashed: bool = False) -> int:
        """-> finished | failed | cancelled, with the terminal event; returns its seq."""
        assert state in TERMINAL_STATES
        now = time.time()
        event: dict = {}
        if state == "failed":
            event["error"] = error or "failed"
        if state == "finished":
            event["metadata"] = metadata or {}
        with self._tx() as db:
            db.execute("UPDATE jobs SET state=?, finished=?, error=?, metadata=?, worker=NULL, crashes=crashes+? "
                       "WHERE id=?", (state, now, error,
                                      json_dumps(metadata).decode("utf-8") if metadata is not None else None,
                                      int(crashed), job_id))
            return self._append_event(db, job_id, state, event, now)

    def request_cancel(self, job_id: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE jobs SET cancel_requested=1 WHERE id=?", (job_id,))

    def progress(self, job_id: str, step: int, total: int, eta_s: float | None, losses: dict,
                 event: dict) -> int:
        now = time.time()
        with self._tx() as db:
            db.execute("UPDATE jobs SET step=?, total=?, eta_s=?, losses=? WHERE id=?",
                       (step, total, eta_s, json_dumps(losses).decode("utf-8"), job_id))
            return self._append_event(db, job_id, "progress", event, now)

    def add_event(self, job_id: str, etype: str, content: dict) -> int:
        with self._tx() as db:
            return self._append_event(db, job_id, etype, content, time.time())

    def events_after(self, job_id: str, after_seq: int) -> list[dict]:
        rows = self.db.execute("SELECT seq, type, content, time FROM events WHERE job_id=? AND seq>? ORDER BY seq",
                               (job_id, after_seq)).fetchall()
        return [{"seq": r["seq"], "type": r["type"], "content": json.loads(r["content"]), "time": r["time"]}
                for r in rows]


def _planned_steps(settings: dict, refine: bool) -> int:
    """The job's step total before its first progress event: coarse + fine stage, or the fine stage of
    a refine job (``GenerationSettings.run_steps``); the plain ``steps`` of settings it cannot read."""
    try:
        return GenerationSettings.from_dict(settings, require_prompt=False).run_steps(refine=refine)
    except (SettingError, TypeError):
        return int(settings.get("steps", 0) or 0) if isinstance(settings, dict) else 0
