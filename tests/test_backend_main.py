"""``python -m backend``: one dispatch table, every command reachable, imports only what it runs."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from backend.__main__ import COMMANDS, USAGE, main


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_is_listed_and_answers_help(command, capsys):
    module, entry, help_text = COMMANDS[command]
    assert callable(getattr(importlib.import_module(module), entry))
    assert f"  {command} " in USAGE and help_text in USAGE
    try:
        status = main([command, "--help"])
    except SystemExit as exit_info:                  # argparse's --help
        status = exit_info.code
    assert status == 0
    assert "usage:" in capsys.readouterr().out


def test_no_command_and_unknown_commands_are_usage_errors(capsys):
    assert main([]) == 2 and "commands:" in capsys.readouterr().out
    assert main(["--help"]) == 0
    assert main(["frobnicate"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'frobnicate'" in err and all(name in err for name in COMMANDS)


def test_submit_and_keygen_do_not_import_torch():
    code = ("import sys\nfrom backend.__main__ import main\n"
            "for command in ('submit', 'keygen'):\n"
            "    try:\n        main([command, '--help'])\n    except SystemExit:\n        pass\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "False"
