"""``python -m backend bench estimate``: whole jobs, run as a user runs them, against the estimate shown before.

``bench cost`` fits the cost model part by part (a step, a preview, a checkpoint, an export, the fine stage) and
tests each part on settings it was not fitted on. What a user is shown (``generate --estimate``, the server's
``estimate``, the Blender panel) is the sum: load + optimisation + fine stage + previews + checkpoints + export. This
checks that sum the only way that counts: each job of ``JOBS`` is the real command (``python -m backend generate
PROMPT -o OUT.glb [FLAGS]``) in a fresh process, timed from start to exit, next to the estimate the same command
prints with ``--estimate`` (computed here from the same flags through the CLI's own settings layering). No job is a
configuration ``bench cost`` fitted: each one's renders are a held-out row of its grid or not in it, or its export
sizes are not a fitted export's, so the error is a held-out one.

A process also imports Python, torch and diffusers before anything the estimate counts; that start-up is timed on
its own (``python -c "import ..."``, the median of three) and the error is given both ways: against the job (the
wall less the start-up) and against the whole wall. Peak memory: on a CPU the process's peak resident set
(``os.wait4``) against the estimate's resident peak; on a GPU it is not read from outside the process (the
per-setting table of ``bench cost`` tests the memory model).

Only the built-in prior's jobs: a job of the SD-1.5 architecture with random weights (``bench/sd15.py``, the only
SD-1.5 this workplace can run) draws no object, and its export fails on an empty mesh; its steps are checked whole
by ``tools/device/full_run.py`` (``whole.json``).

Writes ``estimate.json`` (a GPU: a section of ``report.md``) or ``estimate_cpu.json`` into ``--out``, with the table
under ``table_md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# (name, the command's arguments after ``generate``): held out from ``bench cost``'s grids (see the docstring).
JOBS = {
    "cuda": [
        ("the preset, as a new user runs it", ["a red cube"]),
        ("1000 steps, 1024 px texture", ["a wooden barrel", "--steps", "1000", "--texture-size", "1024"]),
        ("64x2 renders, 160^3 mesh, 30k faces", ["a red cone", "--resolution-schedule", "64x2",
                                                 "--mesh-resolution", "160", "--face-budget", "30000"]),
        ("coarse only, 800 steps", ["a green torus", "--stages", "coarse", "--steps", "800"]),
        ("previews every 25 steps", ["a wooden chair", "--preview-interval", "25"]),
    ],
    "cpu": [
        ("the preset, as a new user runs it", ["a red cube"]),
        ("300 steps, 1024 px texture, 160^3 mesh", ["a wooden barrel", "--steps", "300", "--texture-size", "1024",
                                                    "--mesh-resolution", "160", "--face-budget", "30000"]),
        ("coarse only, 48x2, 400 steps", ["a green torus", "--stages", "coarse", "--resolution-schedule", "48x2",
                                          "--steps", "400"]),
    ],
}
START_UP_IMPORTS = "import torch, diffusers, backend.engine.api, backend.export.mesh"


def estimate_for(args: list[str], device: str) -> dict:
    """The estimate ``generate ARGS --device DEVICE --estimate`` prints, as data."""
    from backend.cli import build_parser, cost_estimate, settings_from_args

    parsed = build_parser().parse_args([*args, "--device", device])
    estimated = cost_estimate(settings_from_args(parsed), parsed)
    if isinstance(estimated, str):
        raise SystemExit(f"no estimate for {args} on {device}: {estimated}")
    return estimated


# A bare Python that starts ``argv[1:]`` and reports its peak resident set. Why a launcher between: a child's
# ``ru_maxrss`` counts what it held between fork and exec, the forking process's whole resident set (a pytest worker
# with torch loaded: 3.2 GB, every child "peaked" at that), so the fork is made from this small process instead.
PEAK_MARK = "peak-rss-kib"
LAUNCHER = ("import os, subprocess, sys; p = subprocess.Popen(sys.argv[1:]); _, status, use = os.wait4(p.pid, 0); "
            f"sys.stderr.write('\\n{PEAK_MARK} ' + str(use.ru_maxrss) + '\\n'); "
            "sys.exit(os.waitstatus_to_exitcode(status))")


def timed_process(command: list[str]) -> tuple[float, int, int, str]:
    """(wall seconds, exit status, peak resident bytes, the tail of its stderr) of one fresh process."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        code = subprocess.run([sys.executable, "-c", LAUNCHER, *command], stdout=subprocess.DEVNULL,
                              stderr=err).returncode
        wall = time.perf_counter() - t0
        err.seek(0)
        text = err.read().decode(errors="replace")
    body, _, peak_kib = text.rstrip().rpartition(f"\n{PEAK_MARK} ")
    return wall, code, int(peak_kib) * 1024, body[-600:]      # ru_maxrss: KiB on Linux


def start_up_seconds(repeats: int = 3) -> float:
    """What a fresh process spends importing before the job (median of ``repeats``)."""
    return statistics.median(timed_process([sys.executable, "-c", START_UP_IMPORTS])[0] for _ in range(repeats))


def run_jobs(device: str, names: list[str] | None = None) -> dict:
    from backend.cost import local_device

    kind = "cuda" if device.startswith("cuda") else "cpu"
    jobs = [j for j in JOBS[kind] if not names or j[0] in names]
    start_up = start_up_seconds()
    print(f"start-up (imports) {start_up:.1f} s", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, args) in enumerate(jobs):
            est = estimate_for(args, device)
            command = [sys.executable, "-m", "backend", "generate", *args, "-o", str(Path(tmp) / f"job{i}.glb"),
                       "--device", device, "--quiet"]
            wall, code, rss, tail = timed_process(command)
            job_s = wall - start_up
            row = {"name": name, "args": args, "exit": code, "wall_s": wall, "job_s": job_s,
                   "estimate_s": est["time_s"], "parts_s": est["parts_s"],
                   "error_job": est["time_s"] / job_s - 1.0, "error_wall": est["time_s"] / wall - 1.0,
                   "estimate_peak_bytes": est["peak_memory_bytes"],
                   "peak_rss_bytes": rss if kind == "cpu" else None,
                   "error_memory": (est["peak_memory_bytes"] / rss - 1.0) if kind == "cpu" else None}
            if code != 0:
                row["stderr_tail"] = tail
            rows.append(row)
            print(f"{name}: {wall:.1f} s wall ({job_s:.1f} s job), estimate {est['time_s']:.1f} s "
                  f"({100 * row['error_job']:+.0f}% of the job, {100 * row['error_wall']:+.0f}% of the wall)"
                  + ("" if code == 0 else f"  EXIT {code}: {tail.strip().splitlines()[-1] if tail.strip() else ''}"),
                  flush=True)
    facts = local_device(device)
    return {"device": facts.to_dict(), "start_up_s": start_up, "jobs": rows,
            "date": time.strftime("%Y-%m-%d %H:%M:%S")}


def summary(rows: list[dict]) -> dict:
    ok = [r for r in rows if r["exit"] == 0]
    errs = [abs(r["error_job"]) for r in ok]
    walls = [abs(r["error_wall"]) for r in ok]
    mem = [abs(r["error_memory"]) for r in ok if r.get("error_memory") is not None]
    pct = lambda v: {"median_pct": 100 * statistics.median(v), "max_pct": 100 * max(v), "n": len(v)} if v else None
    return {"time_job": pct(errs), "time_wall": pct(walls), "memory": pct(mem), "failed": len(rows) - len(ok)}


def table_md(run: dict) -> str:
    d, rows, s = run["device"], run["jobs"], run["summary"]
    lines = [f"Whole jobs on {d['name']}, each the real command (`python -m backend generate PROMPT -o OUT.glb "
             "[FLAGS]`) in a fresh process, against the estimate the same command prints with `--estimate` "
             f"(`python -m backend bench estimate`, {run['date']}). No job is a configuration the cost model was "
             f"fitted on. A fresh process's start-up (imports of torch, diffusers and the engine: "
             f"{run['start_up_s']:.1f} s here) is not in the estimate: the error is given against the job (wall less "
             "start-up) and against the whole wall.", "",
             "| job | flags | wall (s) | job (s) | estimate (s): load + optimisation + fine + previews + export | "
             "error (job) | error (wall) |" + (" peak RSS (GB) | estimate (GB) | error |" if d["kind"] == "cpu" else ""),
             "|---|---|---:|---:|---|---:|---:|" + ("---:|---:|---:|" if d["kind"] == "cpu" else "")]
    for r in rows:
        p = r["parts_s"]
        parts = (f"{r['estimate_s']:.1f}: {p['load']:.1f} + {p['steps']:.1f} + {p['fine']:.1f} + {p['previews']:.1f} + "
                 f"{p['export']:.1f}")
        flags = " ".join(f"`{a}`" if a.startswith("--") else a for a in r["args"][1:]) or "(none)"
        status = "" if r["exit"] == 0 else f" (exit {r['exit']})"
        line = (f"| {r['name']}: {r['args'][0]!r}{status} | {flags} | {r['wall_s']:.1f} | {r['job_s']:.1f} | {parts} | "
                f"{100 * r['error_job']:+.0f}% | {100 * r['error_wall']:+.0f}% |")
        if d["kind"] == "cpu":
            line += (f" {r['peak_rss_bytes'] / 2**30:.2f} | {r['estimate_peak_bytes'] / 2**30:.2f} | "
                     f"{100 * r['error_memory']:+.0f}% |")
        lines.append(line)
    tj, tw, mem = s["time_job"], s["time_wall"], s["memory"]
    if tj:
        lines += ["", f"Time error over {tj['n']} jobs: against the job median {tj['median_pct']:.0f}% / max "
                      f"{tj['max_pct']:.0f}%, against the wall median {tw['median_pct']:.0f}% / max {tw['max_pct']:.0f}%"
                  + (f"; peak memory median {mem['median_pct']:.0f}% / max {mem['max_pct']:.0f}%" if mem else "")
                  + (f". {s['failed']} job(s) failed (see `stderr_tail`)." if s["failed"] else ".")]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backend bench estimate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    parser.add_argument("--jobs", nargs="*", default=None, metavar="NAME", help="some of the jobs, by name")
    parser.add_argument("--out", default="results/speed", help="folder of estimate.json / estimate_cpu.json")
    args = parser.parse_args(argv)
    device = args.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    run = run_jobs(device, args.jobs)
    run["summary"] = summary(run["jobs"])
    run["table_md"] = table_md(run)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / ("estimate.json" if device.startswith("cuda") else "estimate_cpu.json")
    path.write_text(json.dumps(run, indent=1) + "\n")
    print(run["table_md"])
    print(f"wrote {path}")
    return 0 if not run["summary"]["failed"] else 1


if __name__ == "__main__":
    sys.exit(main())
