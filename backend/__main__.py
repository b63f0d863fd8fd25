"""``python -m backend <command>``: generate | serve | farm | submit | keygen | bench.

One table, ``COMMANDS``, names each command's module, entry point and one-line help (the usage
text is made from it). Modules are imported only for the command that runs, so e.g. ``submit``
never imports torch.
"""

from __future__ import annotations

import importlib
import sys

# command -> (module, entry point taking the remaining arguments and returning the exit status, help)
COMMANDS = {
    "generate": ("backend.cli", "generate_main",
                 "optimise a prompt into a textured GLB on this machine (python -m backend generate -h)"),
    "serve": ("backend.server.cli", "serve_main",
              "run the job server (ZeroMQ) with GPU worker processes, or on a Ray cluster (--ray)"),
    "farm": ("backend.server.farm", "farm_main",
             "start a Ray cluster of several nodes on this machine (loopback) to try serve --ray"),
    "submit": ("backend.server.cli", "submit_main", "submit a job to a running server and watch its progress"),
    "keygen": ("backend.server.cli", "keygen_main", "create CurveZMQ key pairs for remote mode"),
    "bench": ("backend.bench.__main__", "main", "benchmarks: speed (GPU), quality (built-in prior vs ground truth)"),
}

USAGE = "usage: python -m backend <command> [options]\n\ncommands:\n" + "".join(
    f"  {name:<10} {help_text}\n" for name, (_, _, help_text) in COMMANDS.items())


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    module, entry, _ = COMMANDS[command]
    return getattr(importlib.import_module(module), entry)(rest)


if __name__ == "__main__":
    sys.exit(main())
