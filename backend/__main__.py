"""``python -m backend <command>``: generate | serve | farm | submit | keygen | bench."""

from __future__ import annotations

import sys

USAGE = """usage: python -m backend <command> [options]

commands:
  generate   optimise a prompt into a textured GLB on this machine (python -m backend generate -h)
  serve      run the job server (ZeroMQ) with GPU worker processes, or on a Ray cluster (--ray)
  farm       start a Ray cluster of several nodes on this machine (loopback) to try serve --ray
  submit     submit a job to a running server and watch its progress
  keygen     create CurveZMQ key pairs for remote mode
  bench      benchmarks: speed (GPU), quality (built-in prior vs ground truth)
"""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    # Imports are lazy so that e.g. `submit` never imports torch.
    if command == "generate":
        from backend.cli import generate_main as entry
    elif command == "serve":
        from backend.server.cli import serve_main as entry
    elif command == "farm":
        from backend.server.farm import farm_main as entry
    elif command == "submit":
        from backend.server.cli import submit_main as entry
    elif command == "keygen":
        from backend.server.cli import keygen_main as entry
    elif command == "bench":
        from backend.bench.__main__ import main as entry
    else:
        print(f"unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    return entry(rest)


if __name__ == "__main__":
    sys.exit(main())
