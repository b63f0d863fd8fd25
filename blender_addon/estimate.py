"""The cost estimate of the panel's current settings: time and peak GPU memory on the server's device.

Fetched from the server (``estimate_request``) with the client's non-blocking core, from the add-on's
timer (``jobs.tick`` calls ``tick()`` every time): when the settings change, a request goes out once
they have stayed the same for ``DEBOUNCE_S`` (dragging a slider sends one request, not fifty), and
the Refresh button asks again at once. The reply lands in ``_state``; the panel only reads it. Never
blocks the UI: nothing here waits for the server.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import bpy

from . import properties

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


def panel_settings(scene) -> dict:
    """What the estimate depends on: the panel's settings (the seed and prompt don't change the cost,
    but sending them keeps one code path with submit)."""
    return properties.settings_dict(scene.dreamprop.settings)


def request_refresh() -> None:
    """The Refresh button: ask again on the next tick, whatever the debounce says."""
    _state.key = ""
    _state.answered_key = ""
    _state.failed_at = 0.0


def tick(now: float | None = None) -> bool:
    """Called from the add-on's timer. Returns True when a request went out (the timer then ticks fast)."""
    from . import jobs

    scene = bpy.context.scene
    if scene is None or _state.pending:
        return False
    now = time.monotonic() if now is None else now
    key = json.dumps(panel_settings(scene), sort_keys=True)
    if key != _state.key:
        _state.key, _state.changed_at = key, now
        return False
    if key == _state.answered_key or now - _state.changed_at < DEBOUNCE_S:
        return False
    if _state.error and key == _state.sent_key and now - _state.failed_at < RETRY_S:
        return False
    try:
        _state.pending = jobs.send("estimate", "estimate_request", {"settings": json.loads(key)})
    except jobs.UserError as exc:      # no server yet: say so in the panel, try again later
        _state.error, _state.failed_at, _state.sent_key = str(exc), now, key
        return False
    _state.sent_key = key
    return True


def on_reply(msg) -> None:
    from .jobs import error_text

    _state.pending = ""
    if msg.is_error:
        _state.error, _state.failed_at, _state.result = error_text(msg.content), time.monotonic(), None
        _state.answered_key = _state.sent_key
        return
    _state.result, _state.error, _state.answered_key = dict(msg.content), "", _state.sent_key


def on_timeout(why: str) -> None:
    _state.pending = ""
    _state.error, _state.failed_at = why, time.monotonic()


def _gb(n) -> str:
    return f"{n / 2**30:.1f} GB" if n is not None else "?"


def _duration(seconds: float) -> str:
    if seconds < 89.5:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


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
    out = [(f"Estimate: {_duration(r.get('time_s', 0.0))}, peak memory {mem}", 'TIME'),
           (f"on {device.get('name', '?')}" + ("" if r.get("calibrated") else " (uncalibrated)"), 'BLANK1')]
    if _state.key != _state.answered_key and _state.key:
        out.append(("(updating for the changed settings)", 'BLANK1'))
    if not r.get("fits", True) and r.get("problem"):
        p = r["problem"]
        out.append((f"Won't fit: {p['field'].replace('_', ' ')}: {p['message']}", 'ERROR'))
    return out
