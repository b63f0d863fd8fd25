"""The Ray pool's options, without a cluster (fast): how many actors a node gets, and bad values
rejected with the flag and the allowed range before anything starts."""

from __future__ import annotations

import subprocess
import sys

import pytest

from backend.server.ray_pool import actors_per_node, check_ray_options, is_loopback_address
from tests.server_fixtures import REPO, free_port


@pytest.mark.parametrize("resources, gpus, cpus, per_node, expected", [
    ({"CPU": 16, "GPU": 1}, 1.0, 1, 1, 1),        # one actor per GPU
    ({"CPU": 16, "GPU": 2}, 0.25, 1, 1, 8),       # fractional: four per GPU
    ({"CPU": 16, "GPU": 1}, 0.3, 1, 1, 3),        # what fits, never more
    ({"CPU": 4}, 1.0, 1, 2, 2),                   # CPU node: cpu_actors_per_node
    ({"CPU": 1}, 1.0, 1, 2, 1),                   # ... as far as its CPUs go
    ({"CPU": 8}, 1.0, 4, 3, 2),
    ({"CPU": 0}, 1.0, 1, 1, 0),                   # a head started with --num-cpus 0 runs no actor
    ({"CPU": 8}, 1.0, 1, 0, 0),                   # 0: GPU nodes only
])
def test_actors_per_node(resources, gpus, cpus, per_node, expected):
    assert actors_per_node(resources, gpus_per_actor=gpus, cpus_per_actor=cpus, cpu_actors_per_node=per_node) == expected


@pytest.mark.parametrize("args, message", [
    ((0, 1, 1), "ray_gpus_per_actor: must be in (0, 1]"),
    ((1.5, 1, 1), "ray_gpus_per_actor: must be in (0, 1]"),
    ((1, 0, 1), "ray_cpus_per_actor: must be in (0, 1024]"),
    ((1, 1, -1), "ray_cpu_actors_per_node: must be an integer in [0, 1024]"),
    ((1, 1, 1.5), "ray_cpu_actors_per_node: must be an integer in [0, 1024]"),
])
def test_bad_options_name_the_field_and_the_range(args, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        check_ray_options(*args)


def test_serve_rejects_a_bad_ray_option_naming_the_flag(tmp_path):
    r = subprocess.run([sys.executable, "-m", "backend", "serve", "--ray", "auto", "--ray-gpus-per-actor", "2",
                        "--state-dir", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--ray-gpus-per-actor: must be in (0, 1]" in r.stderr, r.stderr


@pytest.mark.parametrize("address, loopback", [("127.0.0.1:6379", True), ("localhost:6379", True),
                                               ("[::1]:6379", True), ("10.0.0.5:6379", False),
                                               ("ray://head:10001", False)])
def test_loopback_addresses(address, loopback):
    assert is_loopback_address(address) is loopback


def test_serve_with_no_cluster_at_the_address_fails_fast_and_says_so(tmp_path):
    # ray.init alone would retry for minutes; the server checks the address first
    address = f"127.0.0.1:{free_port()}"
    r = subprocess.run([sys.executable, "-m", "backend", "serve", "--ray", address, "--port", str(free_port()),
                        "--state-dir", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and f"--ray {address}: no Ray cluster answers there" in r.stderr, r.stderr
