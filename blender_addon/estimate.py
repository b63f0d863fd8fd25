"""The cost estimate of the panel's current settings: time and peak GPU memory on the server's device.

Fetched from the server (``estimate_request``) with the client's non-blocking core, from the add-on's
timer: the panel notes its settings when it draws (``note_settings``; Blender redraws it on every
change), and every tick ``jobs`` asks ``due()`` whether to send a request: one goes out once the
settings have stayed the same for ``DEBOUNCE_S`` (dragging a slider sends one request, not fifty);
the Refresh button asks again at once. ``jobs`` hands the reply to ``answered()``; the panel draws
``lines()``. Never blocks the UI: nothing here waits for the server. (This module imports no other
module of the add-on: ``panels`` and ``jobs`` drive it; the numbers read as the CLI's, ``shared.cost_text``.)
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from .shared.cost_text import duration_text, gigabytes_text

DEBOUNCE_S = 0.5
RETRY_S = 10.0            # after a failed request (no server yet), ask again this much later


@dataclass
class EstimateState:
    key: str = ""                 # the settings (JSON) last seen in the panel
    changed_at: float = 0.0
    sent_key: str = ""            # the settings of the request in flight / last answered
    pending: str = ""             # message id of the request in flight
    result: dict | None = None    # the server's estimate for ``answered_key``
    answered_key: str = ""
    error: str = ""
    failed_at: float = 0.0


_state = EstimateState()


def state() -> EstimateState:
    return _state


def note_settings(settings: dict) -> None:
    """The panel's settings as it draws them (a draw happens whenever they change): the next
    ``due()`` compares them with what was asked last. Module state only: no bpy data is written."""
    key = json.dumps(settings, sort_keys=True)
    if key != _state.key:
        _state.key, _state.changed_at = key, time.monotonic()


def request_refresh() -> None:
    """The Refresh button: ask again on the next tick, whatever the debounce says."""
    _state.answered_key = ""
    _state.changed_at = 0.0
    _state.failed_at = 0.0


def due(now: float | None = None) -> dict | None:
    """Called from the add-on's timer: the settings to ask the server about now, or None (nothing
    changed, still changing, a request in flight, or waiting to retry after a failure)."""
    key = _state.key
    if not key or _state.pending:
        return None
    now = time.monotonic() if now is None else now
    if key == _state.answered_key or now - _state.changed_at < DEBOUNCE_S:
        return None
    if _state.error and key == _state.sent_key and now - _state.failed_at < RETRY_S:
        return None
    _state.sent_key = key
    return json.loads(key)


def sent(msg_id: str) -> None:
    _state.pending = msg_id


def failed(why: str) -> None:
    """No answer (no server yet, a timeout): shown in the panel; asked again after ``RETRY_S``."""
    _state.pending = ""
    _state.error, _state.failed_at = why, time.monotonic()


def answered(content: dict | None, error: str = "") -> None:
    """The server's reply: the estimate, or (``error``) why it has none for these settings."""
    _state.pending = ""
    _state.answered_key = _state.sent_key
    if error:
        _state.result, _state.error, _state.failed_at = None, error, time.monotonic()
    else:
        _state.result, _state.error = dict(content), ""


def _gb(n) -> str:
    return f"{gigabytes_text(n)} GB" if n is not None else "?"


def lines() -> list[tuple[str, str]]:
    """(text, icon) lines for the panel."""
    r = _state.result
    if r is None:
        if _state.error:
            return [(f"Estimate: {_state.error}", 'ERROR')]
        return [("Estimate: waiting for the server...", 'TIME')]
    device = r.get("device", {})
    mem = f"{_gb(r.get('peak_memory_bytes'))}" + (f" of {_gb(r['memory_usable_bytes'])}"
                                                  if r.get("memory_usable_bytes") else "")
    out = [(f"Estimate: {duration_text(r.get('time_s', 0.0))}, peak memory {mem}", 'TIME'),
           (f"on {device.get('name', '?')}" + ("" if r.get("calibrated") else " (uncalibrated)"), 'BLANK1')]
    if _state.key != _state.answered_key and _state.key:
        out.append(("(updating for the changed settings)", 'BLANK1'))
    if not r.get("fits", True) and r.get("problem"):
        p = r["problem"]
        out.append((f"Won't fit: {p['field'].replace('_', ' ')}: {p['message']}", 'ERROR'))
    return out
