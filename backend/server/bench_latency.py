"""Measure submit -> first preview latency through a real server (``python -m backend.server.bench_latency``).

Starts ``python -m backend serve`` in a temporary state dir, waits for its worker, then submits
``--runs`` jobs one after the other and times, per job: submit -> accepted event, -> started,
-> first progress event carrying a preview PNG. Each job is cancelled right after its first preview.
The first run includes loading the model in the worker ("cold"); later runs reuse it ("warm").
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m backend.server.bench_latency", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--devices", default="auto", help="passed to serve --devices")
    p.add_argument("--settings", default=None,
                   help="JSON object of settings (default: tiny-random model, tiny budgets, preview every step)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    sys.path.insert(0, REPO)
    from shared.client import JobClient

    settings = {"prompt": "a small wooden chair", "model": "tiny-random", "steps": 1000,
                "resolution_schedule": "32x1", "samples_per_ray": 32, "hash_log2_size": 12,
                "preview_interval": 1, "preview_size": 64, "checkpoint_interval": 0}
    if args.settings:
        settings.update(json.loads(args.settings))
    tmp = tempfile.mkdtemp(prefix="dreamprop-bench-")
    port = _free_port()
    log = open(os.path.join(tmp, "server.log"), "wb")
    proc = subprocess.Popen([sys.executable, "-m", "backend", "serve", "--port", str(port), "--state-dir",
                             os.path.join(tmp, "state"), "--devices", args.devices], cwd=REPO, stdout=log,
                            stderr=subprocess.STDOUT)
    results = []
    try:
        conn = os.path.join(tmp, "state", "connection.json")
        t_start = time.monotonic()
        while not os.path.exists(conn):
            if proc.poll() is not None or time.monotonic() - t_start > 60:
                raise RuntimeError("server did not start; see " + log.name)
            time.sleep(0.05)
        client = JobClient.from_connection_file(conn, timeout=30)
        while not all(w["state"] == "idle" for w in client.info()["workers"]):
            time.sleep(0.1)
        worker_ready = time.monotonic() - t_start
        for run in range(args.runs):
            t0 = time.monotonic()
            job = client.submit(settings)
            marks: dict = {}
            for ev in client.events(job, timeout=600):
                now = time.monotonic() - t0
                if ev.msg_type in ("accepted", "started"):
                    marks.setdefault(ev.msg_type, now)
                elif ev.msg_type == "progress" and ev.buffers and "first_preview" not in marks:
                    marks["first_preview"] = now
                    marks["preview_step"] = ev.content["step"]
                    marks["preview_bytes"] = len(ev.buffers[0])
                    client.cancel(job)
                elif ev.msg_type in ("failed",):
                    raise RuntimeError(ev.content.get("error"))
            results.append({"run": run + 1, "model": "cold" if run == 0 else "warm", **marks})
        info = client.info()
        client.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    out = {"device": info["device"], "gpus": info["gpus"], "worker_ready_s": worker_ready, "runs": results,
           "settings": settings}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"device {out['device']} {[g['name'] for g in out['gpus']]}; worker ready after {worker_ready:.2f} s")
        for r in results:
            print(f"run {r['run']} ({r['model']}): accepted {r['accepted'] * 1000:.1f} ms, started "
                  f"{r['started'] * 1000:.1f} ms, first preview (step {r['preview_step']}, {r['preview_bytes']} B) "
                  f"{r['first_preview']:.3f} s")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
