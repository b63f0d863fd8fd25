"""Where the local server keeps its state and its connection file (shared by server, CLI, add-on).

Uses platformdirs when it is installed. Blender's bundled Python usually does not have it, so the
same rule is implemented by hand below (platformdirs' ``user_data_dir(APP, appauthor=False)``):

- Linux/BSD: ``$XDG_DATA_HOME/dreamprop`` or ``~/.local/share/dreamprop``
- macOS:     ``~/Library/Application Support/dreamprop``
- Windows:   ``%LOCALAPPDATA%\\dreamprop``

``DREAMPROP_DATA_DIR`` overrides the data dir and ``DREAMPROP_CONNECTION_FILE`` the connection file.
"""

from __future__ import annotations

import os
import sys

APP_NAME = "dreamprop"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 47317
CONNECTION_FILE_NAME = "connection.json"


def user_data_dir() -> str:
    env = os.environ.get("DREAMPROP_DATA_DIR")
    if env:
        return os.path.abspath(os.path.expanduser(env))
    try:
        import platformdirs

        return platformdirs.user_data_dir(APP_NAME, appauthor=False)
    except Exception:  # no platformdirs (Blender): the same rule by hand
        pass
    home = os.path.expanduser("~")
    if sys.platform.startswith("win"):
        base = os.environ.get("LOCALAPPDATA") or os.path.join(home, "AppData", "Local")
    elif sys.platform == "darwin":
        base = os.path.join(home, "Library", "Application Support")
    else:
        base = os.environ.get("XDG_DATA_HOME", "").strip() or os.path.join(home, ".local", "share")
    return os.path.join(base, APP_NAME)


def default_state_dir() -> str:
    """The server's state: job database, results, previews, checkpoints, HMAC key, server keys."""
    return os.path.join(user_data_dir(), "server")


def connection_file_override() -> str | None:
    """``DREAMPROP_CONNECTION_FILE`` as an absolute path, or None when it is not set.

    The server (``serve``) writes its connection file there and every local client reads it from
    there: the Blender add-on starts its backend with this variable set to its *Connection file*
    preference, so both sides must honour it."""
    env = os.environ.get("DREAMPROP_CONNECTION_FILE", "").strip()
    return os.path.abspath(os.path.expanduser(env)) if env else None


def default_connection_file() -> str:
    return connection_file_override() or os.path.join(default_state_dir(), CONNECTION_FILE_NAME)


def default_keys_dir() -> str:
    """Where ``python -m backend keygen`` writes key pairs by default."""
    return os.path.join(user_data_dir(), "keys")
