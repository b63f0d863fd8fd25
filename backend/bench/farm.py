"""``python -m backend bench farm``: props per hour on a local Ray farm with 1, 2, 3... nodes, and how
long a job takes to recover from its node's death.

For each node count: a loopback Ray cluster (``python -m backend farm``'s, one actor per node), a
real ``serve --ray`` process, one warm-up prop per actor (its model load is not counted: actors keep
their model loaded), then ``--props`` props of the built-in prior submitted at once; props per hour
is ``props / (last finished - first submitted)``. Scaling efficiency is props/hour over
(nodes x props/hour of 1 node). On one machine the nodes share its cores: past the core count the
props per hour cannot grow, and other work on the machine shows in the numbers (the load average
before and after each run is in the report).

Node death: a cluster whose head runs no actor plus two nodes; one prop with checkpoints every
``--checkpoint-interval`` steps; once it has passed step ``--kill-at-step``, its node is killed
(SIGKILL of the node's raylet, object store and actor). Measured from the kill: the job re-queued
(the node's death noticed), started on the other node, finished.

One GPU (``--gpu 1,2,4,8``; ``gpu_report.json`` and a second table in ``report.md``): one node on
127.0.0.1 that offers the machine's GPU; for each k a fresh ``serve --ray --ray-gpus-per-actor 1/k``
(k actors share the GPU), one short warm-up prop per actor, then ``k x --rounds`` props of the
built-in prior's preset exactly as a user gets it. Beside props per hour: each job's peak in torch's
allocator (the actor reports it) and nvidia-smi's per-process and whole-GPU memory and utilisation,
sampled twice a second. ``--fake-gpu`` only declares the GPU and runs the jobs on the CPU: it tries
this mode on a machine without one. The CPU and GPU runs happen on different machines; writing
either report keeps the other's table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROMPTS = ["a red cube", "a blue sphere", "a green cone", "a yellow torus", "an orange cylinder", "a purple capsule",
           "a cyan pyramid", "a white cube", "a red sphere", "a blue torus", "a green capsule", "a yellow cone"]
FAST_HEALTH_CHECKS = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500,
                      "health_check_timeout_ms": 1000, "health_check_failure_threshold": 3}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Farm:
    """A local cluster plus a ``serve --ray`` process on it."""

    def __init__(self, nodes: int, work: str, *, head_cpus: float | None = None, system_config: dict | None = None,
                 cpus_per_node: float = 1, gpus_per_node: float = 0, gpus_per_actor: float = 1.0, cluster=None):
        """``cluster``: a running one (its nodes must match the other arguments) that ``close`` leaves
        running; by default a fresh one of ``nodes`` nodes."""
        from backend.server.farm import local_cluster
        from backend.server.ray_pool import actors_per_node

        t0 = time.monotonic()
        self.own_cluster = cluster is None
        self.cluster = cluster or local_cluster(nodes, cpus_per_node=cpus_per_node, gpus_per_node=gpus_per_node,
                                                head_cpus=head_cpus, system_config=system_config)
        self.cluster_s = time.monotonic() - t0
        state = os.path.join(work, f"state-{nodes}-{int(time.time() * 1000)}")
        self.log = open(state + ".log", "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "backend", "serve", "--port", str(_free_port()),
                                      "--state-dir", state, "--ray", self.cluster.address,
                                      "--ray-gpus-per-actor", str(gpus_per_actor),
                                      "--ray-cpu-actors-per-node", str(max(1, int(cpus_per_node)))], cwd=REPO,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        from shared.client import JobClient

        conn = os.path.join(state, "connection.json")
        while not os.path.exists(conn):
            if self.proc.poll() is not None or time.monotonic() - t0 > 120:
                raise RuntimeError(f"server did not start; see {self.log.name}")
            time.sleep(0.05)
        self.client = JobClient.from_connection_file(conn, timeout=30)
        per_node = actors_per_node({"CPU": cpus_per_node, "GPU": gpus_per_node}, gpus_per_actor=gpus_per_actor,
                                   cpus_per_actor=1, cpu_actors_per_node=max(1, int(cpus_per_node)))
        self.actors = per_node * (nodes if head_cpus is None else nodes - 1)
        self.ready_s = self.wait_actors(self.actors) - t0

    def wait_actors(self, n: int) -> float:
        while True:
            ws = self.client.info()["workers"]
            if len(ws) >= n and all(w["state"] == "idle" for w in ws):
                return time.monotonic()
            time.sleep(0.2)

    def run(self, settings: list[dict]) -> list[dict]:
        """Submit all at once, wait for all; returns each job's status."""
        jobs = [self.client.submit(s) for s in settings]
        for job in jobs:
            for ev in self.client.events(job, timeout=1800):
                if ev.msg_type == "failed":
                    raise RuntimeError(ev.content.get("error"))
        return [self.client.status(j) for j in jobs]

    def close(self) -> None:
        self.client.close()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
        if self.own_cluster:
            self.cluster.shutdown()


def prop_settings(i: int, steps: int | None) -> dict:
    """The built-in prior's preset; ``steps=None``: exactly as a user gets it (500 steps, its previews)."""
    from shared.presets import PRESETS

    preset = {**PRESETS["builtin"], "prompt": PROMPTS[i % len(PROMPTS)], "model": "builtin", "seed": i}
    if steps is None:
        return preset
    return {**preset, "steps": steps, "checkpoint_interval": 0, "preview_interval": max(1, steps // 4)}


def throughput(nodes: int, props: int, steps: int, work: str, **farm_options) -> dict:
    load_before = os.getloadavg()
    farm = Farm(nodes, work, **farm_options)
    try:
        farm.run([prop_settings(1000 + i, steps) for i in range(farm.actors)])    # warm-up: load the model
        t0 = time.monotonic()
        done = farm.run([prop_settings(i, steps) for i in range(props)])
        elapsed = time.monotonic() - t0
    finally:
        farm.close()
    per_node: dict[str, int] = {}
    for s in done:
        node = s["metadata"]["worker"]["node_id"][:8]
        per_node[node] = per_node.get(node, 0) + 1
    return {"nodes": nodes, "actors": farm.actors, **farm_options, "props": props, "steps": steps, "elapsed_s": elapsed, "props_per_hour": props / elapsed * 3600,
            "per_node": per_node, "cluster_start_s": farm.cluster_s, "actors_ready_s": farm.ready_s,
            "s_per_prop_mean": sum(s["metadata"]["timings"]["optimise_s"] + s["metadata"]["timings"]["export_s"]
                                   for s in done) / len(done),
            "loadavg_before": load_before[0], "loadavg_after": os.getloadavg()[0]}


def node_death(steps: int, checkpoint_interval: int, kill_at_step: int, work: str) -> dict:
    farm = Farm(3, work, head_cpus=0, system_config=FAST_HEALTH_CHECKS)
    try:
        c = farm.client
        job = c.submit({**prop_settings(7, steps), "checkpoint_interval": checkpoint_interval, "preview_interval": 2})
        for ev in c.events(job, timeout=1800):
            if ev.msg_type == "progress" and ev.content.get("step", 0) >= kill_at_step:
                step_at_kill = ev.content["step"]
                break
        node_id = next(w["node_id"] for w in c.info()["workers"] if w["job_id"] == job)
        node = next(n for n in farm.cluster.worker_nodes if n.node_id == node_id)
        t_kill = time.monotonic()
        farm.cluster.remove_node(node, allow_graceful=False)
        marks: dict = {}
        seen_requeue = False
        for ev in c.events(job, after_seq=c.last_seq(job), timeout=1800):
            now = time.monotonic() - t_kill
            if ev.msg_type == "requeued":
                seen_requeue = True
                marks.setdefault("requeued_s", now)
            elif ev.msg_type == "started" and seen_requeue:
                marks.setdefault("restarted_s", now)
            elif ev.msg_type == "progress" and seen_requeue and ev.content.get("stage") == "optimise":
                marks.setdefault("first_step_after", ev.content["step"])
            elif ev.msg_type in ("finished", "failed"):
                marks[f"{ev.msg_type}_s"] = now
        status = c.status(job)
    finally:
        farm.close()
    return {"steps": steps, "checkpoint_interval": checkpoint_interval, "step_at_kill": step_at_kill,
            "resumed_from_step": status["metadata"].get("resumed_from_step"),
            "other_node": status["metadata"]["worker"]["node_id"] != node_id, **marks}


class GpuSampler:
    """``nvidia-smi`` twice a second while a batch runs: the GPU's memory in use (CUDA contexts
    included), each process's, and the GPU's utilisation. Nothing when there is no nvidia-smi."""

    def __init__(self, period_s: float = 0.5):
        self.exe = shutil.which("nvidia-smi")
        self.period_s = period_s
        self.total_mib: list[float] = []
        self.util: list[float] = []
        self.per_pid_mib: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _query(self, what: str) -> list[list[str]]:
        out = subprocess.run([self.exe, f"--query-{what}", "--format=csv,noheader,nounits"], capture_output=True,
                             text=True, timeout=10).stdout
        return [[c.strip() for c in line.split(",")] for line in out.splitlines() if line.strip()]

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                used, util = self._query("gpu=memory.used,utilization.gpu")[0][:2]
                self.total_mib.append(float(used))
                self.util.append(float(util))
                for pid, mib in (row[:2] for row in self._query("compute-apps=pid,used_memory")):
                    self.per_pid_mib[int(pid)] = max(self.per_pid_mib.get(int(pid), 0.0), float(mib))
            except (OSError, ValueError, IndexError, subprocess.SubprocessError):
                pass
            self._stop.wait(self.period_s)

    def __enter__(self):
        if self.exe:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self.exe:
            self._thread.join()


def gpu_throughput(k: int, rounds: int, steps: int | None, warmup_steps: int, cluster, cpus: int, work: str) -> dict:
    """``k`` actors of ``1/k`` GPU each on the one GPU node of ``cluster``: one warm-up prop per actor,
    then ``k * rounds`` props submitted at once."""
    load_before = os.getloadavg()
    farm = Farm(1, work, cpus_per_node=cpus, gpus_per_node=1, gpus_per_actor=1 / k, cluster=cluster)
    try:
        if farm.actors != k:
            raise RuntimeError(f"expected {k} actors of 1/{k} GPU, the pool made {farm.actors}")
        workers = farm.client.info()["workers"]
        t0 = time.monotonic()
        farm.run([prop_settings(1000 + i, warmup_steps) for i in range(k)])
        warmup_s = time.monotonic() - t0
        with GpuSampler() as smi:
            t0 = time.monotonic()
            done = farm.run([prop_settings(i, steps) for i in range(k * rounds)])
            elapsed = time.monotonic() - t0
    finally:
        farm.close()
    per_actor: dict[str, int] = {}
    for st in done:
        slot = str(st["metadata"]["worker"]["index"])
        per_actor[slot] = per_actor.get(slot, 0) + 1
    timings = [st["metadata"]["timings"] for st in done]
    wk = [st["metadata"]["worker"] for st in done]
    pids = {w["pid"] for w in wk}

    def mib(key: str):
        values = [w[key] for w in wk if w.get(key) is not None]
        return max(values) / 2**20 if values else None

    return {"k": k, "gpus_per_actor": 1 / k, "actors": farm.actors, "rounds": rounds, "props": len(done),
            "steps": prop_settings(0, steps)["steps"],
            "devices": sorted({w["device"] for w in wk}), "gpu_name": workers[0].get("gpu_name") if workers else None,
            "elapsed_s": elapsed, "props_per_hour": len(done) / elapsed * 3600, "per_actor": per_actor,
            "s_per_prop_mean": sum(t["optimise_s"] + t["export_s"] for t in timings) / len(timings),
            "optimise_s_mean": sum(t["optimise_s"] for t in timings) / len(timings),
            "export_s_mean": sum(t["export_s"] for t in timings) / len(timings),
            "ms_per_step_mean": 1000 * sum(t["s_per_step"] for t in timings) / len(timings),
            "torch_peak_allocated_mib": mib("gpu_peak_allocated_bytes"),
            "torch_peak_reserved_mib": mib("gpu_peak_reserved_bytes"),
            "smi_process_peak_mib": max((v for p_, v in smi.per_pid_mib.items() if p_ in pids), default=None),
            "smi_processes_seen": len(smi.per_pid_mib),
            "smi_gpu_used_peak_mib": max(smi.total_mib, default=None),
            "smi_gpu_util_mean": sum(smi.util) / len(smi.util) if smi.util else None,
            "actors_ready_s": farm.ready_s, "warmup_s": warmup_s, "warmup_steps": warmup_steps,
            "loadavg_before": load_before[0], "loadavg_after": os.getloadavg()[0]}


def _read_json(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _num(v, fmt: str = ".0f") -> str:
    return "-" if v is None else format(v, fmt)


def cpu_lines(data: dict) -> list[str]:
    runs = data["throughput"]
    base = runs[0]["props_per_hour"] if runs and runs[0]["nodes"] == 1 else None
    lines = ["# Render farm on one machine: props per hour with 1, 2, 3 Ray nodes (CPU)", "",
             f"`python -m backend bench farm {' '.join(data['argv'])}` on {data['machine']}, "
             f"{data['cores']} cores, Ray {data['ray']}, {data['date']}. Each node: "
             f"{runs[0].get('cpus_per_node', 1) if runs else 1:g} CPU, {runs[0].get('gpus_per_node', 0) if runs else 0:g} GPU; "
             f"each actor 1 CPU (1 torch thread), {runs[0].get('gpus_per_actor', 1) if runs else 1:g} GPU on GPU nodes. "
             f"Props: the built-in prior, preset `builtin` with {runs[0]['steps'] if runs else '?'} steps "
             "(the preset's 500 shortened so that the benchmark fits the machine's time), submitted at once after "
             "one warm-up prop per actor.", "",
             "| nodes | actors | props | wall (s) | props / hour | scaling efficiency | props per node | s per prop (mean) "
             "| load avg before / after |", "|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        eff = f"{r['props_per_hour'] / (r['nodes'] * base):.0%}" if base else "-"
        lines.append(f"| {r['nodes']} | {r.get('actors', r['nodes'])} | {r['props']} | {r['elapsed_s']:.1f} | {r['props_per_hour']:.0f} | {eff} | "
                     f"{', '.join(str(v) for v in r['per_node'].values())} | {r['s_per_prop_mean']:.1f} | "
                     f"{r['loadavg_before']:.1f} / {r['loadavg_after']:.1f} |")
    d = data.get("node_death")
    if d:
        lines += ["", "## Node death mid-job", "",
                  f"One prop of {d['steps']} steps, checkpoints every {d['checkpoint_interval']} steps; its node killed "
                  f"(SIGKILL) at step {d['step_at_kill']}, Ray health checks every 0.5 s (3 misses = dead). From the kill:",
                  "", "| re-queued (death noticed) | started on the other node | finished | resumed from step | "
                  "first step after |", "|---|---|---|---|---|",
                  f"| {d.get('requeued_s', float('nan')):.1f} s | {d.get('restarted_s', float('nan')):.1f} s | "
                  f"{d.get('finished_s', float('nan')):.1f} s | {d['resumed_from_step']} | {d.get('first_step_after')} |"]
    return lines


def gpu_lines(data: dict) -> list[str]:
    runs = data["runs"]
    base = next((r["props_per_hour"] for r in runs if r["k"] == 1), None)
    gpu = next((r["gpu_name"] for r in runs if r.get("gpu_name")), None)
    devices = sorted({d for r in runs for d in r["devices"]})
    steps = runs[0]["steps"] if runs else "?"
    lines = [f"## One GPU: one actor vs k fractional actors (`--ray-gpus-per-actor 1/k`)", "",
             f"`python -m backend bench farm {' '.join(data['argv'])}` on {data['machine']}, {data['cores']} cores, "
             f"GPU {gpu or 'none'}, torch {data.get('torch')}, Ray {data['ray']}, {data['date']}; the jobs ran on "
             f"{', '.join(devices) or '?'}. One Ray node on 127.0.0.1 (1 GPU, {data.get('cpus')} CPUs), for each k a "
             f"fresh `serve --ray` with `--ray-gpus-per-actor 1/k` (k actors, each 1 CPU and 1 torch thread); "
             f"one warm-up prop of {runs[0]['warmup_steps'] if runs else '?'} steps per actor (model load, kernel "
             f"compilation), then k x {runs[0]['rounds'] if runs else '?'} props submitted at once through the "
             f"client. Props: the built-in prior's preset `builtin` "
             + ("as a user gets it (500 steps" if steps == 500 else f"shortened to {steps} steps (the preset's 500")
             + ", 32 px renders, export at 128^3 with a 512 px texture). "
             + ("**Jobs on the CPU (`--fake-gpu`): the GPU was only declared; not a GPU measurement.** "
                if data.get("fake_gpu") else "") + "Props per hour = props / (last finished - first "
             "submitted). Peak GPU memory per actor: torch's allocator (max over its jobs) and nvidia-smi's "
             "per-process reading, which adds the CUDA context.", "",
             "| actors (k) | GPU per actor | props | wall (s) | props / hour | vs 1 actor | s per prop (optimise + "
             "export) | ms / step | peak GPU MiB per actor: torch / nvidia-smi | GPU used peak (MiB) | GPU util mean "
             "| not counted: actors ready / warm-up (s) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        rel = f"{r['props_per_hour'] / base:.2f}x" if base else "-"
        lines.append(f"| {r['k']} | {r['gpus_per_actor']:.3g} | {r['props']} | {r['elapsed_s']:.1f} | "
                     f"{r['props_per_hour']:.0f} | {rel} | {r['s_per_prop_mean']:.1f} ({r['optimise_s_mean']:.1f} + "
                     f"{r['export_s_mean']:.1f}) | {r['ms_per_step_mean']:.1f} | {_num(r['torch_peak_allocated_mib'])} / "
                     f"{_num(r['smi_process_peak_mib'])} | {_num(r['smi_gpu_used_peak_mib'])} | "
                     f"{_num(r['smi_gpu_util_mean'])}{'%' if r['smi_gpu_util_mean'] is not None else ''} | "
                     f"{r['actors_ready_s']:.0f} / {r['warmup_s']:.0f} |")
    missing = [k for k in requested_ks(data) if k not in {r["k"] for r in runs}]
    if missing:
        lines += ["", f"Not measured (the run ended before them): k = {', '.join(map(str, missing))}."]
    return lines


def requested_ks(data: dict) -> list[int]:
    """The actor counts a GPU run was asked for (``--gpu``)."""
    if data.get("ks"):
        return list(data["ks"])
    argv = data.get("argv", [])
    text = next((a.split("=", 1)[1] for a in argv if a.startswith("--gpu=")), None)
    if text is None and "--gpu" in argv[:-1]:
        text = argv[argv.index("--gpu") + 1]
    return [int(x) for x in (text or "").split(",") if x.strip()]


def write_markdown(out_dir: str, cpu: dict | None, gpu: dict | None) -> None:
    """``report.md``: the CPU scaling table (report.json) and the one-GPU table (gpu_report.json)."""
    lines = cpu_lines(cpu) if cpu else ["# Render farm measurements"]
    if gpu and gpu.get("runs"):
        lines += [""] + gpu_lines(gpu)
    lines += ["", "Notes are in `results/farm/README.md`." if os.path.exists(os.path.join(out_dir, "README.md")) else ""]
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write("\n".join(lines).rstrip() + "\n")


def write_report(out_dir: str, data: dict) -> None:
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "report.json"), "w") as f:
        json.dump(data, f, indent=1)
    write_markdown(out_dir, data, _read_json(os.path.join(out_dir, "gpu_report.json")))


def write_gpu_report(out_dir: str, data: dict) -> None:
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "gpu_report.json"), "w") as f:
        json.dump(data, f, indent=1)
    cpu = _read_json(os.path.join(out_dir, "report.json")) or _read_json(os.path.join(REPO, "results", "farm", "report.json"))
    write_markdown(out_dir, cpu, data)


def gpu_main(args, work: str, data: dict) -> None:
    """One cluster for every k (a node of 1 GPU and max(k) CPUs), a fresh server for each k."""
    from backend.server.farm import local_cluster

    ks = [int(x) for x in args.gpu.split(",") if x.strip()]
    if not ks or min(ks) < 1 or max(ks) > 64:
        raise SystemExit(f"--gpu: actor counts in [1, 64] separated by commas, got {args.gpu!r}")
    if args.fake_gpu:       # before the cluster starts: its workers inherit this environment
        os.environ["DREAMPROP_ACTOR_DEVICE"] = "cpu"
    cpus = max(ks)
    try:
        import torch

        data["torch"] = torch.__version__
    except ImportError:
        data["torch"] = None
    data.update(ks=ks, cpus=cpus, fake_gpu=args.fake_gpu, runs=[])
    cluster = local_cluster(1, cpus_per_node=cpus, gpus_per_node=1)
    try:
        for k in ks:
            r = gpu_throughput(k, args.rounds, args.steps, args.warmup_steps, cluster, cpus, work)
            print(json.dumps(r), flush=True)
            data["runs"].append(r)
            write_gpu_report(args.out, data)       # after each k: a run cut short keeps what it measured
    finally:
        cluster.shutdown()


def _print_server_logs(work: str, lines: int = 40) -> None:
    """The servers' logs live in the scratch folder, removed at the end: show their ends on a failure."""
    for name in sorted(os.listdir(work)):
        if name.endswith(".log"):
            with open(os.path.join(work, name), errors="replace") as f:
                tail = f.read().splitlines()[-lines:]
            print(f"--- {name} (last {len(tail)} lines)", *tail, sep="\n", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m backend bench farm", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", default="1,2,3", help="node counts to measure (default 1,2,3)")
    p.add_argument("--props", type=int, default=6, help="props per node count (default 6)")
    p.add_argument("--steps", type=int, default=None,
                   help="optimisation steps per prop (default 100 on CPU nodes; with --gpu the preset's 500)")
    p.add_argument("--death-steps", type=int, default=200, help="steps of the node-death prop (0: skip; default 200)")
    p.add_argument("--checkpoint-interval", type=int, default=10)
    p.add_argument("--kill-at-step", type=int, default=40)
    p.add_argument("--cpus-per-node", type=float, default=1.0, help="CPUs per node (one CPU actor per CPU; default 1)")
    p.add_argument("--gpus-per-node", type=float, default=0.0,
                   help="GPUs each node offers (GPU box: 1 node with --gpus-per-node 1; default 0)")
    p.add_argument("--gpus-per-actor", type=float, default=1.0,
                   help="passed to serve --ray-gpus-per-actor (0.25: four actors share a GPU; default 1)")
    gpu = p.add_argument_group("one GPU (writes gpu_report.json; the CPU runs and node death are skipped)")
    gpu.add_argument("--gpu", default=None, metavar="K,K,...",
                     help="actor counts sharing the machine's one GPU, e.g. 1,2,4,8 (each 1/k of it)")
    gpu.add_argument("--rounds", type=int, default=2, help="props per actor in each measured batch (default 2)")
    gpu.add_argument("--warmup-steps", type=int, default=50, help="steps of each actor's warm-up prop (default 50)")
    gpu.add_argument("--fake-gpu", action="store_true",
                     help="declare a GPU but run the jobs on the CPU (tries the GPU mode on a machine without one)")
    p.add_argument("--report-only", action="store_true",
                   help="only write report.md again from the report.json and gpu_report.json in --out")
    p.add_argument("--out", default=os.path.join(REPO, "results", "farm"))
    args = p.parse_args(argv)
    sys.path.insert(0, REPO)
    if args.report_only:
        write_markdown(args.out, _read_json(os.path.join(args.out, "report.json")),
                       _read_json(os.path.join(args.out, "gpu_report.json")))
        return 0
    import ray

    work = tempfile.mkdtemp(prefix="dreamprop-farm-bench-")
    data = {"argv": list(argv if argv is not None else sys.argv[1:]), "machine": platform.platform(),
            "cores": len(os.sched_getaffinity(0)), "ray": ray.__version__, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    try:
        if args.gpu:
            gpu_main(args, work, data)
            return 0
        steps = args.steps or 100
        data["throughput"] = []
        for n in [int(x) for x in args.nodes.split(",") if x.strip()]:
            r = throughput(n, args.props, steps, work, cpus_per_node=args.cpus_per_node,
                           gpus_per_node=args.gpus_per_node, gpus_per_actor=args.gpus_per_actor)
            print(json.dumps(r), flush=True)
            data["throughput"].append(r)
            write_report(args.out, data)
        if args.death_steps:
            data["node_death"] = node_death(args.death_steps, args.checkpoint_interval, args.kill_at_step, work)
            print(json.dumps(data["node_death"]), flush=True)
    except BaseException:
        _print_server_logs(work)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_report(args.out, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
