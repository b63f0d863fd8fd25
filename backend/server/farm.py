"""``python -m backend farm``: a Ray cluster of several nodes on this machine, on loopback only.

For trying the render farm (``serve --ray``) and measuring it on one machine: each node is a real
Ray node (its own raylet, object store and worker processes) started with Ray's own multi-node
helper, ``ray.cluster_utils.Cluster``. Every node's address is 127.0.0.1, so nothing listens on the
network. ``ray start`` cannot do this: it replaces ``--node-ip-address 127.0.0.1`` and
``--address 127.0.0.1:PORT`` with the machine's network address (ray-project/ray#59110; its servers
then listen on every interface), and a second ``ray start`` on one machine needs that address.
For a farm of several machines use ``ray start`` on each (see the README).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

LOOPBACK_IP = "127.0.0.1"


def local_cluster(nodes: int, *, cpus_per_node: float = 1, gpus_per_node: float = 0, head_cpus: float | None = None,
                  system_config: dict | None = None):
    """Start a head and ``nodes - 1`` more nodes on loopback; returns the ``Cluster`` (``.address``,
    ``.add_node``, ``.remove_node``, ``.shutdown``). ``head_cpus=0``: the head runs no actor."""
    from ray.cluster_utils import Cluster

    head = {"num_cpus": cpus_per_node if head_cpus is None else head_cpus, "num_gpus": gpus_per_node,
            "node_ip_address": LOOPBACK_IP, "include_dashboard": False}
    if system_config:
        head["_system_config"] = system_config
    cluster = Cluster(initialize_head=True, connect=False, head_node_args=head)
    try:
        for _ in range(nodes - 1):
            add_local_node(cluster, cpus=cpus_per_node, gpus=gpus_per_node)
        cluster.wait_for_nodes()
    except BaseException:
        cluster.shutdown()
        raise
    return cluster


def add_local_node(cluster, *, cpus: float = 1, gpus: float = 0):
    return cluster.add_node(num_cpus=cpus, num_gpus=gpus, node_ip_address=LOOPBACK_IP)


def _number_in(kind, low, high):
    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            v = None
        if v is None or not low <= v <= high:
            raise argparse.ArgumentTypeError(f"must be a number in [{low}, {high}], got {text!r}")
        return v
    return parse


def farm_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m backend farm",
                                description="Start a Ray cluster of several nodes on this machine (loopback only) "
                                            "for `python -m backend serve --ray ADDRESS`; Ctrl-C stops it.")
    p.add_argument("--nodes", type=_number_in(int, 1, 64), default=2, help="number of Ray nodes, head included (default 2)")
    p.add_argument("--cpus-per-node", type=_number_in(float, 0, 1024), default=1.0,
                   help="CPUs each node offers (default 1: one CPU actor per node)")
    p.add_argument("--gpus-per-node", type=_number_in(float, 0, 64), default=0.0,
                   help="GPUs each node offers (default 0; the GPUs are shared, as on one machine they are)")
    p.add_argument("--address-file", default=None, help="also write the cluster's address to this file")
    args = p.parse_args(argv)
    try:
        import ray  # noqa: F401
    except ImportError:
        print('error: the farm needs Ray: pip install "dreamprop[ray]"', file=sys.stderr)
        return 1
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    cluster = local_cluster(args.nodes, cpus_per_node=args.cpus_per_node, gpus_per_node=args.gpus_per_node)
    try:
        if args.address_file:
            with open(args.address_file, "w") as f:
                f.write(cluster.address + "\n")
        print(f"Ray cluster of {args.nodes} node(s) on {cluster.address} (loopback only)\n"
              f"  python -m backend serve --ray {cluster.address}\n"
              f"Ctrl-C stops it.", flush=True)
        stop.wait()
    finally:
        cluster.shutdown()
    return 0
