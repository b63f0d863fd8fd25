"""Helpers and fixtures for the server tests: a real ``python -m backend serve`` subprocess on loopback.

Its fixtures reach every test module through ``pytest_plugins`` in conftest.py; test modules import
only its plain helpers (``ServerProc``, ``tiny``, ...).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import free_port

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Tiny budgets for the "tiny-random" model: seconds on a CPU.
TINY = dict(model="tiny-random", steps=20, resolution_schedule="32x1", samples_per_ray=32, mesh_resolution=32,
            texture_size=64, face_budget=2000, hash_log2_size=12, preview_interval=5, checkpoint_interval=5,
            preview_size=32, fine_steps=2, fine_resolution=32)


def tiny(prompt: str = "a small wooden chair", **changes) -> dict:
    return {"prompt": prompt, **TINY, **changes}


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours counts as dead
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


class ServerProc:
    """One server process. ``args`` are extra ``serve`` flags."""

    def __init__(self, state_dir: str, *, port: int | None = None, args: list[str] = (), env: dict | None = None):
        self.state_dir = state_dir
        self.port = port or free_port()
        self.args = list(args)
        self.env = {**os.environ, **(env or {})}
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        self.proc: subprocess.Popen | None = None
        self.log_path = os.path.join(os.path.dirname(state_dir.rstrip("/")), f"server-{os.path.basename(state_dir)}.log")
        self.connection_file = os.path.join(state_dir, "connection.json")
        self._log = None

    def command(self) -> list[str]:
        return [sys.executable, "-m", "backend", "serve", "--port", str(self.port), "--state-dir", self.state_dir,
                *self.args]

    def start(self, timeout: float = 60.0) -> "ServerProc":
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command(), cwd=REPO, env=self.env, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with open(self.connection_file) as f:
                    if json.load(f).get("pid") == self.proc.pid:
                        return
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        raise TimeoutError(f"server did not write its connection file in {timeout} s:\n{self.log()}")

    def client(self, **kw):
        from shared.client import JobClient

        kw.setdefault("timeout", 20.0)
        return JobClient.from_connection_file(self.connection_file, **kw)

    def log(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")[-20000:]
        except OSError:
            return ""

    def worker_pids(self) -> list[int]:
        c = self.client(timeout=10.0)
        try:
            return [w["pid"] for w in c.info()["workers"] if w["pid"]]
        finally:
            c.close()

    def wait_workers_ready(self, timeout: float = 180.0) -> None:
        c = self.client()
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                ws = c.info()["workers"]
                if ws and all(w["state"] in ("idle", "busy") for w in ws):
                    return
                time.sleep(0.2)
        finally:
            c.close()
        raise TimeoutError(f"workers not ready after {timeout} s:\n{self.log()}")

    def kill9(self, worker_pids: list[int] = ()) -> None:
        """SIGKILL the server and the given workers (as a crash or the OOM killer would)."""
        os.kill(self.proc.pid, signal.SIGKILL)
        for pid in worker_pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(10)
        deadline = time.monotonic() + 10
        while any(pid_alive(p) for p in worker_pids) and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)
        finally:
            if self._log:
                self._log.close()


@pytest.fixture
def server_factory(tmp_path):
    """``server_factory(state_name="s", args=[...])`` starts a server; all are stopped at teardown."""
    started: list[ServerProc] = []

    def make(state_name: str = "state", *, args=(), port=None, start=True, timeout=60.0) -> ServerProc:
        s = ServerProc(str(tmp_path / state_name), port=port, args=list(args))
        started.append(s)
        if start:
            s.start(timeout)
        return s

    yield make
    for s in started:
        try:
            s.stop(timeout=20)
        except Exception:
            pass


@pytest.fixture(scope="module")
def queue_server(tmp_path_factory):
    """A module-wide server without workers (accepts and queues jobs only): protocol-level tests."""
    s = ServerProc(str(tmp_path_factory.mktemp("queue") / "state"), args=["--workers", "0"])
    s.start()
    yield s
    s.stop()


def raw_dealer(endpoint: str, **opts):
    """A bare DEALER socket (own context) for sending hand-made frames; returns (ctx, socket)."""
    import zmq

    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    for k, v in opts.items():
        s.setsockopt(getattr(zmq, k), v)
    s.connect(endpoint)
    return ctx, s
