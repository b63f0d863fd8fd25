"""SQLite job store: queue order, state changes with events, sequence numbers across reopen."""

from __future__ import annotations

import sqlite3

import pytest

from backend.server.jobstore import JobStore


@pytest.fixture
def store(tmp_path):
    s = JobStore(str(tmp_path / "jobs.sqlite3"))
    yield s
    s.close()


def test_queue_order_positions_and_requeue_keeps_place(store):
    a, pa = store.add_job("o", {"prompt": "a", "steps": 10})
    b, pb = store.add_job("o", {"prompt": "b", "steps": 10})
    c, pc = store.add_job("p", {"prompt": "c", "steps": 10})
    assert (pa, pb, pc) == (0, 1, 2)
    store.start(a, 0, {"worker": 0})
    assert [j["id"] for j in store.queued()] == [b, c] and store.position(b) == 0
    store.requeue(a, crashed=True, reason="worker died")
    assert [j["id"] for j in store.queued()] == [a, b, c]
    assert store.get(a)["crashes"] == 1 and store.get(a)["runs"] == 1
    assert [j["id"] for j in store.list("o")] == [b, a]            # newest first, own jobs only
    assert store.list("o", states=["running"]) == []


def test_events_are_sequenced_persisted_and_droppables_pruned(tmp_path):
    path = str(tmp_path / "db.sqlite3")
    s = JobStore(path)
    j, _ = s.add_job("o", {"steps": 10})
    s.start(j, 0, {"worker": 0})
    for step in (1, 2, 3):
        s.progress(j, step, 10, 1.0, {"sds": 0.5}, {"step": step})
    s.add_event(j, "proxy_mesh", {"step": 2})
    s.close()
    s = JobStore(path)   # reopen: as after a crash
    seq = s.finish(j, "finished", metadata={"faces": 12})
    evs = s.events_after(j, 0)
    assert [e["type"] for e in evs] == ["accepted", "started", "progress", "proxy_mesh", "finished"]
    assert [e["seq"] for e in evs] == sorted(e["seq"] for e in evs) and seq == 7
    assert evs[2]["content"]["step"] == 3          # only the latest progress is kept for replays
    assert s.events_after(j, 6)[0]["content"]["metadata"] == {"faces": 12}
    assert s.get(j)["state"] == "finished" and s.get(j)["last_seq"] == 7
    s.close()


def test_client_tokens_are_unique_per_owner(store):
    j, _ = store.add_job("o", {"steps": 1}, client_token="t1")
    assert store.find_by_token("o", "t1")["id"] == j
    assert store.find_by_token("p", "t1") is None
    store.add_job("p", {"steps": 1}, client_token="t1")
    with pytest.raises(sqlite3.IntegrityError):
        store.add_job("o", {"steps": 1}, client_token="t1")
    assert store.count("queued") == 2          # the failed insert left nothing behind


def test_cancel_flag_and_terminal_states(store):
    j, _ = store.add_job("o", {"steps": 1})
    store.start(j, 0, {})
    store.request_cancel(j)
    assert store.get(j)["cancel_requested"] == 1
    store.finish(j, "failed", error="boom", crashed=True)
    job = store.get(j)
    assert job["state"] == "failed" and job["error"] == "boom" and job["crashes"] == 1
    assert store.events_after(j, 0)[-1]["content"] == {"error": "boom"}
