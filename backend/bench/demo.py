"""The `make demo` benchmark: how long a fresh user's first generation takes, and what it made.

``python -m backend bench demo [--repeats 3] [--out results/demo]``

Runs exactly what ``make demo`` runs (``python -m backend generate PROMPT -o DIR/demo.glb --preset
cpu-demo``) as a fresh process each time, so the wall time includes Python start-up, imports, loading
the built-in prior, the 500 SDS steps, export and the turntable. Then it scores the GLB against the
analytic shape like the quality benchmark (IoU best over yaw, albedo error) and checks the turntable
PNG is there. Prints a table and writes ``report.md`` and ``report.json`` to ``--out``.
The issue's target: the whole demo in <= 3 minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_S = 180.0


def run_once(prompt: str, workdir: Path, seed: int) -> dict:
    from backend.bench.metrics import evaluate_mesh, load_glb
    from backend.prior.catalogue import ground_truth

    glb = workdir / "demo.glb"
    cmd = [sys.executable, "-m", "backend", "generate", prompt, "-o", str(glb), "--preset", "cpu-demo",
           "--seed", str(seed), "--device", "cpu"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    row = {"prompt": prompt, "seed": seed, "wall_s": round(wall, 1), "returncode": proc.returncode}
    if proc.returncode != 0:
        row["error"] = proc.stderr[-2000:]
        return row
    truth = ground_truth(prompt)
    metrics = evaluate_mesh(load_glb(glb.read_bytes()), truth.sdf, truth.albedo, period=truth.yaw_period, seed=seed)
    turntable = glb.with_suffix(".turntable.png")
    row.update(iou=round(metrics["iou"], 3), albedo_error=round(metrics["albedo_error"], 3),
               empty=metrics["empty"], glb_bytes=glb.stat().st_size,
               turntable=turntable.is_file() and turntable.stat().st_size > 0)
    return row


def render_report(rows: list[dict], meta: dict) -> str:
    lines = ["# `make demo` benchmark", "",
             f"- command per run: `{meta['command']}` (a fresh process: start-up, load, 500 steps, export, turntable)",
             f"- machine: {meta['machine']}, {meta['cpu_count']} cores, torch {meta['torch']}",
             f"- target: the whole demo in <= {TARGET_S:.0f} s", "",
             "| run | prompt | seed | wall (s) | IoU | albedo error | GLB (KB) | turntable | verdict |",
             "|---:|---|---:|---:|---:|---:|---:|---|---|"]
    for i, r in enumerate(rows):
        if r.get("returncode"):
            lines.append(f"| {i} | {r['prompt']} | {r['seed']} | {r['wall_s']} | - | - | - | - | FAILED |")
            continue
        ok = r["wall_s"] <= TARGET_S and not r["empty"] and r["turntable"]
        lines.append(f"| {i} | {r['prompt']} | {r['seed']} | {r['wall_s']:.1f} | {r['iou']:.3f} | "
                     f"{r['albedo_error']:.3f} | {r['glb_bytes'] / 1024:.0f} | {'yes' if r['turntable'] else 'no'} | "
                     f"{'PASS' if ok else 'FAIL'} |")
    walls = [r["wall_s"] for r in rows if not r.get("returncode")]
    if walls:
        lines += ["", f"Wall time: min {min(walls):.1f} s, max {max(walls):.1f} s over {len(walls)} runs."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m backend bench demo", description=__doc__.splitlines()[0])
    p.add_argument("--prompt", default=os.environ.get("DEMO_PROMPT", "a red cube"))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=Path("results/demo"))
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error(f"--repeats must be >= 1, got {args.repeats}")

    import torch

    rows = []
    with tempfile.TemporaryDirectory(prefix="dreamprop-demo-") as tmp:
        for i in range(args.repeats):
            row = run_once(args.prompt, Path(tmp), seed=i)
            rows.append(row)
            print(f"[{i + 1}/{args.repeats}] {row}", flush=True)
    meta = {"command": f"python -m backend generate \"{args.prompt}\" -o out/demo.glb --preset cpu-demo",
            "machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "torch": torch.__version__, "python": platform.python_version(), "target_s": TARGET_S}
    report = render_report(rows, meta)
    print(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.md").write_text(report)
    (args.out / "report.json").write_text(json.dumps({"meta": meta, "runs": rows}, indent=1))
    print(f"wrote {args.out / 'report.md'} and report.json")
    return 0 if all(not r.get("returncode") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
