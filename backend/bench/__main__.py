"""``python -m backend bench <quality|speed|demo> [options]`` (also ``python -m backend.bench``)."""

from __future__ import annotations

import sys

USAGE = """usage: python -m backend bench <benchmark> [options]

benchmarks:
  quality   generate every shape x colour of the built-in prior and compare the exported meshes
            with the analytic ground truth (IoU, Chamfer, albedo error); -h for options
  speed     GPU speed and memory vs the SDS bound (--cpu: the CPU reference); -h for options
  demo      time `make demo` end to end (fresh processes) and score what it made; -h for options
"""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name == "quality":
        from backend.bench.quality import main as entry
        return entry(rest)
    if name == "speed":
        from backend.bench.speed import main as entry
        return entry(rest)
    if name == "demo":
        from backend.bench.demo import main as entry
        return entry(rest)
    print(f"unknown benchmark {name!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
