"""``python -m backend serve`` / ``submit`` flags as a new user meets them: real processes on loopback.

- ``serve`` writes its connection file where ``DREAMPROP_CONNECTION_FILE`` says (what the add-on's
  Connection file preference sets), ``--connection-file`` winning over it;
- ``serve --worker-threads`` is range-checked with a message naming the flag;
- ``submit --preset`` sends the preset's values (shared with ``generate`` and the panel), explicit
  flags winning.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from shared.presets import preset_settings
from tests.server_fixtures import REPO, ServerProc, free_port, queue_server  # noqa: F401


def test_serve_writes_the_connection_file_named_by_the_environment(tmp_path):
    wanted = tmp_path / "elsewhere" / "conn.json"
    s = ServerProc(str(tmp_path / "state"), args=["--workers", "0"], env={"DREAMPROP_CONNECTION_FILE": str(wanted)})
    s.connection_file = str(wanted)
    try:
        s.start()
        assert not os.path.exists(tmp_path / "state" / "connection.json")
        with s.client() as c:   # reached through the file the environment named
            assert c.info()["queue_length"] == 0
    finally:
        s.stop()


def test_connection_file_flag_wins_over_the_environment(tmp_path):
    flag_path, env_path = tmp_path / "flag.json", tmp_path / "env.json"
    s = ServerProc(str(tmp_path / "state"), args=["--workers", "0", "--connection-file", str(flag_path)],
                   env={"DREAMPROP_CONNECTION_FILE": str(env_path)})
    s.connection_file = str(flag_path)
    try:
        s.start()
        assert not env_path.exists()
        assert json.loads(flag_path.read_text())["pid"] == s.proc.pid
    finally:
        s.stop()


def test_worker_threads_out_of_range_names_the_flag(tmp_path):
    r = subprocess.run([sys.executable, "-m", "backend", "serve", "--port", str(free_port()), "--state-dir",
                        str(tmp_path / "s"), "--workers", "0", "--worker-threads", "-1"],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--worker-threads" in r.stderr and "-1" in r.stderr, r.stderr
    assert not (tmp_path / "s" / "connection.json").exists()


@pytest.mark.parametrize("value", ["0", "65"])
def test_batch_jobs_out_of_range_names_the_flag_and_the_range(tmp_path, value):
    r = subprocess.run([sys.executable, "-m", "backend", "serve", "--port", str(free_port()), "--state-dir",
                        str(tmp_path / "s"), "--workers", "0", "--batch-jobs", value],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--batch-jobs" in r.stderr and "1 to 64" in r.stderr and value in r.stderr, r.stderr
    assert not (tmp_path / "s" / "connection.json").exists()


def _submit(server, *args):
    r = subprocess.run([sys.executable, "-m", "backend", "submit", "--connection-file", server.connection_file,
                        "--client-id", "preset-cli", *args], cwd=REPO, capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout, r.stderr


def _settings_of(server, job_id: str) -> dict:
    rc, out, err = _submit(server, "--status", job_id, "--json")
    assert rc == 0, err
    return json.loads(out)["settings"]


def test_submit_preset_sends_its_values_and_explicit_flags_win(queue_server):
    preset = preset_settings("builtin")
    rc, out, err = _submit(queue_server, "a blue torus", "--preset", "builtin", "--steps", "200", "--no-wait", "--json")
    assert rc == 0, err
    settings = _settings_of(queue_server, json.loads(out)["job_id"])
    assert settings["steps"] == 200                                # the explicit flag
    for key, value in preset.items():
        if key != "steps":
            assert settings[key] == value, (key, settings[key], value)

    # another preset sends its own values (the built-in prior's camera stays: presets sit on top of
    # the model's recommended settings), so --preset made the difference
    draft = preset_settings("draft")
    rc, out, err = _submit(queue_server, "a blue torus", "--preset", "draft", "--no-wait", "--json")
    assert rc == 0, err
    other = _settings_of(queue_server, json.loads(out)["job_id"])
    assert other["steps"] == draft["steps"] != preset["steps"]
    assert other["resolution_schedule"] == draft["resolution_schedule"] != preset["resolution_schedule"]
    assert other["distance_min"] == preset["distance_min"]


def test_submit_unknown_preset_lists_the_names(queue_server):
    rc, out, err = _submit(queue_server, "a blue torus", "--preset", "fastest", "--no-wait")
    assert rc == 2 and "--preset" in err and "builtin" in err and "draft" in err, err
