"""``python -m backend serve | submit | keygen``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

from shared.paths import (DEFAULT_HOST, DEFAULT_PORT, connection_file_override, default_connection_file,
                          default_keys_dir, default_state_dir)

MAX_WORKER_THREADS = 1024


# ---- serve ------------------------------------------------------------------------------------------
def _worker_threads(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = -1
    if not 0 <= n <= MAX_WORKER_THREADS:
        raise argparse.ArgumentTypeError(f"must be an integer in [0, {MAX_WORKER_THREADS}], 0 (all cores) or a number of threads, "
                                         f"got {text!r}")
    return n


def serve_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m backend serve",
                                description="Run the dreamprop job server (ZeroMQ) with one worker process per GPU.")
    p.add_argument("--host", default=DEFAULT_HOST,
                   help=f"address to listen on (default {DEFAULT_HOST}; a non-loopback address needs --curve "
                        "or --insecure)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT})")
    p.add_argument("--state-dir", default=None,
                   help=f"job database, results, checkpoints, keys (default {default_state_dir()})")
    p.add_argument("--connection-file", default=None,
                   help="where to write endpoint + key for local clients (default $DREAMPROP_CONNECTION_FILE "
                        "when set, else <state-dir>/connection.json)")
    p.add_argument("--devices", default="auto",
                   help="auto (workers on every visible GPU, CPU worker when there is none), cpu, or CUDA "
                        "indices like 0,1")
    p.add_argument("--workers", type=int, default=None,
                   help="number of worker processes (default: one on a CPU; on a GPU as many as its memory (12 GB "
                        "each) and the cores (2 each) allow, at most 8 per GPU; 0 accepts and queues jobs "
                        "without running them)")
    p.add_argument("--worker-threads", type=_worker_threads, default=0, metavar="N",
                   help="CPU threads per worker (torch, OpenMP, MKL); 0 (default): all cores, shared among "
                        "the workers. Leave a core free when the machine does other work (e.g. Blender)")
    p.add_argument("--batch-jobs", type=int, default=None, metavar="N",
                   help="jobs a GPU worker runs at once as one group, sharing each diffusion model call "
                        "(jobs with the same model and guidance settings; default: 1 on a CPU and where a GPU has several "
                        "workers, 8 for a GPU's only worker)")
    p.add_argument("--curve", action="store_true",
                   help="remote mode: CurveZMQ encryption + client authentication by public key")
    p.add_argument("--server-key", default=None,
                   help="server secret key file (default <state-dir>/keys/server.key_secret, created on first use)")
    p.add_argument("--allowed-clients", default=None,
                   help="directory of allowed client public keys (*.key), re-read when it changes "
                        "(default <state-dir>/keys/allowed_clients)")
    p.add_argument("--insecure", action="store_true",
                   help="allow a non-loopback address without CURVE (anyone on the network can read the traffic)")
    p.add_argument("--max-attempts", type=int, default=3,
                   help="worker crashes a job may cause before it is marked failed (default 3)")
    p.add_argument("--worker-timeout", type=float, default=300.0,
                   help="seconds a busy worker may stay silent before it is killed (default 300)")
    p.add_argument("--max-init-mesh-mb", type=int, default=64, help="largest initial mesh accepted (default 64)")
    p.add_argument("--max-queued-per-client", type=int, default=100)
    p.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    cost = p.add_argument_group("cost estimates (the estimate request; submits that don't fit are refused)")
    cost.add_argument("--cost-profile", default=None, metavar="FILE",
                      help="cost profile to estimate with (default: backend/cost/profiles/<this device>.json)")
    cost.add_argument("--memory-limit-gb", type=float, default=None, metavar="GB",
                      help="memory a job may use on its device (default: 92%% of the GPU's; on the CPU no limit); "
                           "submits whose estimated peak is larger are refused")
    farm = p.add_argument_group("render farm (Ray; needs pip install \"dreamprop[ray]\")")
    farm.add_argument("--ray", default=None, metavar="auto|HOST:PORT",
                      help="run jobs on the actors of this Ray cluster instead of local worker processes "
                           "(auto: $RAY_ADDRESS, else the cluster last started on this machine)")
    farm.add_argument("--ray-gpus-per-actor", type=float, default=1.0, metavar="F",
                      help="GPU share of each actor on GPU nodes, in (0, 1] (0.25: four actors per GPU, "
                           "for small models such as the built-in prior; default 1)")
    farm.add_argument("--ray-cpus-per-actor", type=float, default=1.0, metavar="N",
                      help="CPUs each actor reserves and uses as torch threads (default 1)")
    farm.add_argument("--ray-cpu-actors-per-node", type=int, default=1, metavar="N",
                      help="actors on each node without a GPU (0: GPU nodes only; default 1)")
    return p


def serve_main(argv: list[str]) -> int:
    parser = serve_parser()
    args = parser.parse_args(argv)
    if not 0 <= args.worker_threads <= MAX_WORKER_THREADS:
        parser.error(f"--worker-threads: must be 0 (automatic) to {MAX_WORKER_THREADS}, got {args.worker_threads}")
    if args.memory_limit_gb is not None and not 0 < args.memory_limit_gb <= 1e5:
        parser.error(f"--memory-limit-gb: must be a number in (0, 100000], got {args.memory_limit_gb:g}")
    if args.batch_jobs is not None:
        from .local_pool import check_batch_jobs

        try:
            check_batch_jobs(args.batch_jobs)
        except ValueError as e:
            parser.error(f"--batch-jobs: {str(e).partition(': ')[2]}")
    if args.ray is not None:
        from .ray_pool import check_ray_options

        try:
            check_ray_options(args.ray_gpus_per_actor, args.ray_cpus_per_actor, args.ray_cpu_actors_per_node)
        except ValueError as e:       # "ray_x: ..." -> "--ray-x: ..."
            field, _, why = str(e).partition(": ")
            parser.error(f"--{field.replace('_', '-')}: {why}")
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    from .server import Server, ServerConfig

    cfg = ServerConfig(
        host=args.host, port=args.port, state_dir=args.state_dir or default_state_dir(),
        connection_file=args.connection_file or connection_file_override(), devices=args.devices,
        workers=args.workers, worker_threads=args.worker_threads, batch_jobs=args.batch_jobs, curve=args.curve,
        server_key_file=args.server_key, allowed_clients_dir=args.allowed_clients, insecure=args.insecure,
        max_attempts=max(1, args.max_attempts), worker_timeout_s=args.worker_timeout,
        max_init_mesh_bytes=args.max_init_mesh_mb * 1024 * 1024, max_queued_per_client=args.max_queued_per_client,
        ray_address=args.ray, ray_gpus_per_actor=args.ray_gpus_per_actor, ray_cpus_per_actor=args.ray_cpus_per_actor,
        ray_cpu_actors_per_node=args.ray_cpu_actors_per_node, cost_profile=args.cost_profile,
        memory_limit_bytes=None if args.memory_limit_gb is None else int(args.memory_limit_gb * 2**30))
    try:
        return Server(cfg).run()
    except PermissionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (RuntimeError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except Exception as e:
        import zmq

        if isinstance(e, zmq.ZMQError):
            print(f"error: cannot listen on {args.host}:{args.port}: {e.strerror}", file=sys.stderr)
            return 1
        raise


# ---- keygen ------------------------------------------------------------------------------------------
def keygen_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="python -m backend keygen",
        description="Create CurveZMQ key pairs: NAME.key (public, share it) and NAME.key_secret (0600, keep it).")
    p.add_argument("names", nargs="*", default=["client"], help="key pair names (default: client)")
    p.add_argument("--dir", default=None, help=f"output directory (default {default_keys_dir()})")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    args = p.parse_args(argv)
    from .security import create_keypair

    directory = args.dir or default_keys_dir()
    for name in args.names:
        if not name or any(c in name for c in "/\\") or name.startswith("."):
            print(f"error: bad key name {name!r}", file=sys.stderr)
            return 2
        try:
            public, secret = create_keypair(directory, name, force=args.force)
        except FileExistsError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        print(f"{name}: public {public}\n{' ' * len(name)}  secret {secret} (0600)")
    print("\nServer: python -m backend serve --host 0.0.0.0 --curve --server-key <server.key_secret> "
          "--allowed-clients <dir with the clients' .key files>\n"
          "Client: python -m backend submit --host <server> --server-key <server.key> "
          "--client-key <client.key_secret> \"a prompt\"")
    return 0


# ---- submit (and the other client commands) ------------------------------------------------------------
def submit_parser() -> argparse.ArgumentParser:
    from shared.presets import PRESETS
    from shared.settings import GenerationSettings, setting_help

    p = argparse.ArgumentParser(
        prog="python -m backend submit",
        description="Submit a job to a dreamprop server and watch it (or list/status/cancel/attach/fetch jobs).")
    p.add_argument("prompt", nargs="?", default=None, help="what to generate")
    conn = p.add_argument_group("connection")
    conn.add_argument("--connection-file", default=None,
                      help=f"local server's connection file (default {default_connection_file()})")
    conn.add_argument("--host", default=None, help="remote server (CURVE): host name or address")
    conn.add_argument("--port", type=int, default=DEFAULT_PORT)
    conn.add_argument("--server-key", default=None, help="remote: the server's public key file (server.key)")
    conn.add_argument("--client-key", default=None, help="remote: this client's secret key file (*.key_secret)")
    conn.add_argument("--client-id", default=None, help="local mode: owner name of your jobs (default 'local')")
    conn.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for a reply")
    act = p.add_argument_group("actions (instead of submitting)")
    act.add_argument("--info", action="store_true", help="print server info")
    act.add_argument("--list", action="store_true", help="list your jobs")
    act.add_argument("--status", metavar="JOB", help="print a job's status")
    act.add_argument("--cancel", metavar="JOB", help="cancel a job")
    act.add_argument("--attach", metavar="JOB", help="watch a job's events")
    act.add_argument("--after-seq", type=int, default=0, help="with --attach: resume after this event")
    act.add_argument("--result", metavar="JOB", help="download a finished job's GLB")
    out = p.add_argument_group("submit")
    out.add_argument("--preset", choices=sorted(PRESETS), default=None,
                     help="named settings shared with `generate --preset` and the Blender panel (draft, "
                          "standard, high for GPUs; builtin / cpu-demo (make demo's) for the built-in prior, "
                          "minutes on a CPU); "
                          "explicit flags still win")
    out.add_argument("--init-mesh", default=None, help="refine this GLB instead of starting from a blob")
    out.add_argument("--parent", default=None, help="refine the result of this job (id)")
    out.add_argument("--no-wait", action="store_true", help="print the job id and return")
    out.add_argument("--out", default=None, help="where to write the GLB (default ./<job id>.glb)")
    out.add_argument("--preview-dir", default=None, help="write the latest preview PNG here while watching")
    out.add_argument("--json", action="store_true", help="machine-readable output (one JSON object per line)")
    g = p.add_argument_group("generation settings (unset: the server's defaults)")
    for f in GenerationSettings.spec():
        if f.name == "prompt" or not f.metadata.get("protocol", True):
            continue
        g.add_argument(f"--{f.name.replace('_', '-')}", dest=f"s_{f.name}", default=None, metavar="V",
                       help=setting_help(f))
    return p


def _connect(args):
    from shared.client import JobClient

    if args.host:
        if not (args.server_key and args.client_key):
            raise SystemExit("error: --host needs --server-key (server public key) and --client-key "
                             "(your secret key)")
        return JobClient.from_key_files(args.host, args.port, args.server_key, args.client_key, timeout=args.timeout)
    return JobClient.from_connection_file(args.connection_file, timeout=args.timeout, client_id=args.client_id,
                                          client_secret_key_file=args.client_key)


def _print(args, obj) -> None:
    print(json.dumps(obj) if args.json else obj, flush=True)


def _write(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def _watch(client, args, job_id: str) -> int:
    t0 = time.monotonic()
    first_preview = None
    for ev in client.events(job_id, after_seq=args.after_seq):
        c = ev.content
        t = ev.msg_type
        if t == "progress":
            if ev.buffers and first_preview is None:
                first_preview = time.monotonic() - t0
            if ev.buffers and args.preview_dir:
                _write(os.path.join(args.preview_dir, f"{job_id}.png"), ev.buffers[0])
            if args.json:
                _print(args, {"event": t, **c})
            else:
                losses = " ".join(f"{k}={v:.4g}" for k, v in (c.get("losses") or {}).items()
                                  if isinstance(v, (int, float)))
                eta = c.get("eta_s")
                print(f"[{c.get('stage')}] step {c.get('step')}/{c.get('total')} {losses}"
                      f"{f' eta {eta:.0f}s' if isinstance(eta, (int, float)) else ''}", flush=True)
        elif t == "proxy_mesh":
            if args.preview_dir and ev.buffers:
                _write(os.path.join(args.preview_dir, f"{job_id}.proxy.glb"), ev.buffers[0])
            _print(args, {"event": t, **c} if args.json else f"proxy mesh at step {c.get('step')}")
        elif t == "finished":
            path = args.out or f"{job_id}.glb"
            _write(path, ev.buffers[0])
            if len(ev.buffers) > 1 and ev.buffers[1]:
                _write(os.path.splitext(path)[0] + ".turntable.png", ev.buffers[1])
            _print(args, {"event": t, "job_id": job_id, "glb": path, "first_preview_s": first_preview}
                   if args.json else f"finished: wrote {path}")
            return 0
        elif t == "failed":
            _print(args, {"event": t, **c} if args.json else f"failed: {c.get('error')}")
            return 1
        elif t == "cancelled":
            _print(args, {"event": t, **c} if args.json else "cancelled")
            return 1
        else:
            _print(args, {"event": t, **c} if args.json else f"{t}: {c}")
    return 1


def submit_main(argv: list[str]) -> int:
    from shared.client import ServerError
    from shared.layering import GPU_PRESETS, named_preset
    from shared.settings import GenerationSettings, SettingError

    args = submit_parser().parse_args(argv)
    try:
        client = _connect(args)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        if args.info:
            _print(args, client.info() if args.json else json.dumps(client.info(), indent=2))
            return 0
        if args.list:
            jobs = client.list_jobs()
            if args.json:
                _print(args, jobs)
            for j in [] if args.json else jobs:
                print(f"{j['job_id']}  {j['state']:9s} {100 * j['progress']:5.1f}%  {j['prompt'][:60]}")
            return 0
        if args.status:
            _print(args, client.status(args.status) if args.json else json.dumps(client.status(args.status), indent=2))
            return 0
        if args.cancel:
            _print(args, client.cancel(args.cancel))
            return 0
        if args.result:
            glb, metadata = client.result(args.result)
            path = args.out or f"{args.result}.glb"
            _write(path, glb)
            _print(args, {"glb": path, "metadata": metadata} if args.json else f"wrote {path}")
            return 0
        if args.attach:
            return _watch(client, args, args.attach)

        if not args.prompt:
            print("error: a prompt is required (or one of --info/--list/--status/--cancel/--attach/--result)",
                  file=sys.stderr)
            return 2
        given = {"prompt": args.prompt}
        if args.preset:   # as `generate --preset`: the preset's values (for the server's device), then the flags
            device = client.info().get("device", "cpu") if args.preset in GPU_PRESETS else "cpu"
            given.update(named_preset(args.preset, device))
        for k, v in vars(args).items():
            if k.startswith("s_") and v is not None:
                given[k[2:]] = v
        try:
            settings = GenerationSettings.from_dict(given)
        except SettingError as e:
            print(f"error: --{e.name.replace('_', '-')}: {e.message}", file=sys.stderr)
            return 2
        payload = {k: getattr(settings, k) for k in given}
        init_mesh = None
        if args.init_mesh:
            with open(args.init_mesh, "rb") as f:
                init_mesh = f.read()
        job_id = client.submit(payload, init_mesh_glb=init_mesh, parent_job_id=args.parent, attach=not args.no_wait)
        for warning in client.submit_warnings.get(job_id, []):
            print(f"warning: {warning}", file=sys.stderr)
        _print(args, {"job_id": job_id} if args.json else f"job {job_id} submitted")
        if args.no_wait:
            return 0
        try:
            return _watch(client, args, job_id)
        except KeyboardInterrupt:
            print(f"\nstopped watching; the job keeps running. Re-attach: python -m backend submit --attach {job_id}",
                  file=sys.stderr)
            return 130
    except ServerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except TimeoutError as e:
        print(f"error: {e} (is the server running?)", file=sys.stderr)
        return 1
    except ConnectionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        client.close()
