"""``python -m backend bench <quality|speed|throughput|demo|image|farm|cost|estimate> [options]`` (also ``python -m backend.bench``)."""

from __future__ import annotations

import importlib
import sys

USAGE = """usage: python -m backend bench <benchmark> [options]

benchmarks:
  quality   generate every solid and prop of the built-in prior and compare the exported meshes
            with their procedural ground truth (IoU, facing, Chamfer, albedo error, texture
            PSNR); -h for options
  speed     GPU speed and memory vs the SDS bound (--cpu: the CPU reference); -h for options
  throughput
            props per hour on one device: jobs one after another vs one group sharing each
            guidance call vs several processes (built-in prior; SD-1.5 architecture)
  demo      time `make demo` end to end (fresh processes) and score what it made; -h for options
  image     image-to-3D: one reference view of library objects drawn outside training -> mesh,
            against their ground truth (IoU, reference yaw, Chamfer, albedo, novel views); -h
  farm      props per hour on a local Ray farm with 1, 2, 3 nodes, and recovery from a node's death;
            --gpu 1,2,4,8: one GPU, one actor vs k actors of 1/k GPU; -h for options
  cost      measure a grid of settings on this device, fit the cost model (time, peak memory),
            report its error on held-out settings, write backend/cost/profiles/<device>.json
  estimate  whole jobs (the real generate command, fresh processes) against the estimate that
            `generate --estimate` prints for them; -h for options
"""

BENCHMARKS = {"quality": "backend.bench.quality", "speed": "backend.bench.speed",
              "throughput": "backend.bench.throughput", "demo": "backend.bench.demo",
              "farm": "backend.bench.farm", "cost": "backend.bench.cost", "image": "backend.bench.image",
              "estimate": "backend.bench.estimate_check"}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name in BENCHMARKS:
        # Imported on demand: each benchmark pulls in torch and its own dependencies.
        return importlib.import_module(BENCHMARKS[name]).main(rest)
    print(f"unknown benchmark {name!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
