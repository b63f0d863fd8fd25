"""``bench estimate``: whole jobs against the estimate. Its two measuring pieces on real processes: the estimate it
compares with is the one the real ``generate --estimate`` prints, and a fresh process's wall time and peak resident
memory are read from the process itself."""

from __future__ import annotations

import subprocess
import sys

from backend.bench.estimate_check import estimate_for, summary, timed_process
from backend.cost.estimate import _duration
from tests.server_fixtures import REPO


def test_the_estimate_compared_is_the_one_generate_prints():
    args = ["a wooden barrel", "--steps", "300", "--texture-size", "1024"]
    est = estimate_for(args, "cpu")
    printed = subprocess.run([sys.executable, "-m", "backend", "generate", *args, "--device", "cpu", "--estimate"],
                             cwd=REPO, capture_output=True, text=True, timeout=120)
    assert printed.returncode == 0, printed.stderr
    first = printed.stdout.splitlines()[0]
    assert f": {_duration(est['time_s'])}, peak" in first
    fewer = estimate_for(["a wooden barrel", "--steps", "150", "--texture-size", "1024"], "cpu")
    assert fewer["parts_s"]["steps"] < est["parts_s"]["steps"]


def test_a_process_is_timed_whole_with_its_peak_memory():
    ballast = bytearray(600 * 2**20)           # this process large, as a pytest worker with torch loaded is
    ballast[::4096] = b"x" * len(ballast[::4096])
    wall, code, rss, _ = timed_process([sys.executable, "-c",
                                        "import time; b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096]); "
                                        "time.sleep(0.3)"])
    assert code == 0 and wall >= 0.3
    _, _, idle, _ = timed_process([sys.executable, "-c", "import time; time.sleep(0.3)"])
    assert idle < 200 * 2**20                       # not this process's 600 MiB (a fork's pages before its exec)
    assert rss - idle >= 250 * 2**20                # the 300 MiB it touched
    del ballast
    wall, code, _, tail = timed_process([sys.executable, "-c", "import sys; sys.exit('no model')"])
    assert code == 1 and "no model" in tail


def test_summary_takes_the_largest_miss_of_the_jobs_that_ran():
    rows = [{"exit": 0, "error_job": 0.05, "error_wall": 0.02, "error_memory": -0.1},
            {"exit": 0, "error_job": -0.18, "error_wall": -0.2, "error_memory": None},
            {"exit": 1, "error_job": 3.0, "error_wall": 3.0, "error_memory": None}]
    s = summary(rows)
    assert s["time_job"]["max_pct"] == 18.0 and s["time_job"]["n"] == 2 and s["failed"] == 1
    assert s["memory"]["n"] == 1 and s["memory"]["max_pct"] == 10.0
