"""The bridge between the job server and Blender: one client, one timer, events -> scene data.

Everything here runs on Blender's main thread. The client's non-blocking core is used only:
``send()`` queues a request, ``poll(0)`` returns what arrived, ``track()`` follows a job's events
(re-attaching by itself when they go quiet). ``tick()`` is registered with ``bpy.app.timers``; each
call drains the socket, keeps only the latest progress / proxy mesh per job from the batch, and
applies the events to the jobs stored in the scenes (so they survive saving, reloading the add-on
and restarting Blender: active jobs are re-attached from their last event sequence number).

Requests whose replies we wait for are kept in ``_state.pending`` (message id -> what to do).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import traceback
from collections import deque
from dataclasses import dataclass, field

import bpy

from . import estimate, importer, presets
from .shared.protocol import DROPPABLE_EVENTS, FieldError, check_image_bytes

PREVIEW_IMAGE = "Dreamprop Preview"
BUSY_INTERVAL = 0.1           # seconds between ticks while a job is active
IDLE_INTERVAL = 1.0
TICK_BUDGET_S = 0.02          # stop applying cheap events after this; the rest waits a tick
SUBMIT_TIMEOUT_S = 30.0       # no reply to a submit this long (and not connected): fail the job
UNREACHABLE_TIMEOUT_S = 10.0


class UserError(Exception):
    """A problem the artist can fix; shown as a Blender report, never as a traceback."""


@dataclass
class Pending:
    kind: str                 # "submit" | "cancel" | "result" | "info" | "estimate"
    sent: float
    request_id: str = ""      # submit: the job's local id
    job_id: str = ""


@dataclass
class State:
    client: object = None
    client_key: tuple = ()
    tracked: set = field(default_factory=set)
    pending: dict = field(default_factory=dict)
    backlog: deque = field(default_factory=deque)
    models: list = field(default_factory=list)
    server_info: dict = field(default_factory=dict)
    reports: list = field(default_factory=list)        # (level, text), newest last
    preview_job: str = ""
    last_error: str = ""                                 # the connection problem reported last
    refine_fallback: dict = field(default_factory=dict)  # request id -> (GLB, matrix) if the parent is gone
    # measurements: UI-thread seconds per tick, and Generate -> first preview per job
    tick_times: deque = field(default_factory=lambda: deque(maxlen=5000))
    tick_max: float = 0.0
    first_preview_s: dict = field(default_factory=dict)
    import_s: list = field(default_factory=list)         # seconds per result import (inside a tick)
    event_s: dict = field(default_factory=dict)          # event type -> seconds spent applying each
    backend: object = None                               # subprocess.Popen we started (local mode)
    backend_log: str = ""
    backend_stopping: bool = False


_state = State()


def state() -> State:
    return _state


def prefs():
    return bpy.context.preferences.addons[__package__].preferences


# -- reports ---------------------------------------------------------------------------------------
def report(level: str, text: str) -> None:
    """Show a message in Blender's status bar / info log (from a timer there is no operator)."""
    _state.reports.append((level, text))
    del _state.reports[:-200]
    print(f"Dreamprop {level.lower()}: {text}")
    try:
        wm = bpy.context.window_manager
        window = bpy.context.window or (wm.windows[0] if wm and wm.windows else None)
        if window is not None:
            with bpy.context.temp_override(window=window):
                bpy.ops.dreamprop.report('EXEC_DEFAULT', level=level, message=text)
    except Exception:   # reporting must never break the tick
        pass


def error_text(content: dict) -> str:
    """A server error reply / failed event as one line: "<field>: <message>"."""
    err = content.get("error")
    if isinstance(err, dict):
        content = err
        err = content.get("error")
    message = content.get("message") or (err if isinstance(err, str) else "") or "unknown error"
    fld = content.get("field")
    return f"{fld}: {message}" if fld and not str(message).startswith(f"{fld}:") else str(message)


# -- client ----------------------------------------------------------------------------------------
def _client_key(p) -> tuple:
    if p.mode == 'REMOTE':
        return ("remote", p.host, p.port, p.server_public_key_file, p.client_secret_key_file, p.timeout)
    return ("local", p.connection_file, p.local_client_secret_key_file, p.timeout)


def get_client():
    """The shared client for the current preferences (created on first use). Raises UserError."""
    p = prefs()
    key = _client_key(p)
    if _state.client is not None and _state.client_key == key:
        return _state.client
    close_client()
    from .shared.client import JobClient

    try:
        if p.mode == 'REMOTE':
            if not bpy.app.online_access:
                raise UserError("Online access is off (Preferences > System > Network): a remote backend "
                                "needs it")
            if not (p.host and p.server_public_key_file and p.client_secret_key_file):
                raise UserError("Remote backend: set host, server public key and client key files in the "
                                "add-on preferences")
            client = JobClient.from_key_files(p.host, p.port, bpy.path.abspath(p.server_public_key_file),
                                              bpy.path.abspath(p.client_secret_key_file), timeout=p.timeout)
        else:
            client = JobClient.from_connection_file(
                bpy.path.abspath(p.connection_file) or None, timeout=p.timeout,
                client_secret_key_file=bpy.path.abspath(p.local_client_secret_key_file) or None)
    except UserError:
        raise
    except FileNotFoundError as exc:
        hint = " (or press Start backend in the add-on preferences)" if p.mode == 'LOCAL' else ""
        raise UserError(f"{exc}{hint}") from None
    except ImportError as exc:
        raise UserError(f"pyzmq is not available in Blender's Python ({exc}): reinstall the extension") from None
    except Exception as exc:   # bad key files, malformed connection file...
        raise UserError(f"cannot set up the connection: {exc}") from None
    _state.client, _state.client_key = client, key
    _state.tracked.clear()
    try:   # fill the model list and server details without blocking
        _state.pending[client.send("info_request", {})] = Pending("info", time.monotonic())
    except ConnectionError:
        pass
    return client


def close_client() -> None:
    if _state.client is not None:
        try:
            _state.client.close()
        except Exception:
            pass
    _state.client, _state.client_key = None, ()
    _state.tracked.clear()
    _state.pending.clear()
    _state.backlog.clear()
    estimate.state().pending = ""      # its request went with the client


def server_models() -> list[str]:
    return _state.models or ["builtin"]


def send(kind: str, msg_type: str, content: dict, buffers=(), **pending) -> str:
    client = get_client()
    try:
        msg_id = client.send(msg_type, content, list(buffers), job_id=pending.get("job_id") or None)
    except ConnectionError as exc:
        raise UserError(str(exc)) from None
    _state.pending[msg_id] = Pending(kind, time.monotonic(), **pending)
    ensure_timer()
    return msg_id


# -- jobs in the scenes ----------------------------------------------------------------------------
def all_jobs():
    for scene in bpy.data.scenes:
        for job in scene.dreamprop.jobs:
            yield scene, job


def find_job(job_id: str = "", request_id: str = ""):
    for scene, job in all_jobs():
        if (job_id and job.job_id == job_id) or (request_id and job.request_id == request_id):
            return scene, job
    return None, None


def submit(scene, job, settings: dict, glb: bytes | None = None, parent_job_id: str = "",
           fallback: tuple | None = None, image: bytes | None = None) -> None:
    """Send a job's submit request (non-blocking); the reply fills in its job id.

    ``fallback`` (refine from a parent job): (GLB, placement matrix) to send instead when the server
    does not have the parent job. ``image``: an image job's picture (checked here for size and type)."""
    job.settings_json = json.dumps(settings, sort_keys=True)
    job.prompt = settings.get("prompt", "")
    job.submitted_at = repr(time.time())
    job.state = 'SUBMITTING'
    content = {"settings": settings, "client_token": job.request_id, "attach": True}
    if parent_job_id:
        content["parent_job_id"] = parent_job_id
    buffers = [glb] if glb else []
    if image is not None:
        try:
            check_image_bytes(image)
        except FieldError as exc:
            raise UserError(str(exc)) from None
        buffers.append(image)
        content["buffers"] = ["init_mesh"] * bool(glb) + ["image"]
    send("submit", "submit_request", content, buffers, request_id=job.request_id)
    if fallback is not None:
        _state.refine_fallback[job.request_id] = fallback


def cancel(job) -> None:
    if not job.active:
        return
    job.cancel_requested = True
    if job.job_id:
        send("cancel", "cancel_request", {"job_id": job.job_id}, job_id=job.job_id)


def cache_dir(*parts: str) -> str:
    try:
        base = bpy.utils.extension_path_user(__package__, path="cache", create=True)
    except (ValueError, AttributeError):   # not installed as an extension (legacy add-on)
        base = os.path.join(tempfile.gettempdir(), "dreamprop")
    path = os.path.join(base, *parts)
    os.makedirs(path, exist_ok=True)
    return path


# -- the timer -------------------------------------------------------------------------------------
def ensure_timer() -> None:
    if not bpy.app.timers.is_registered(tick):
        bpy.app.timers.register(tick, first_interval=0.0, persistent=True)


def tick() -> float:
    """Timer callback: a short slice of work on the main thread; returns the next interval."""
    t0 = time.perf_counter()
    try:
        interval = _tick()
    except Exception:   # a bug must not kill the timer (jobs would silently stop updating)
        traceback.print_exc()
        interval = IDLE_INTERVAL
    dt = time.perf_counter() - t0
    _state.tick_times.append(dt)
    _state.tick_max = max(_state.tick_max, dt)
    return interval


def _tick() -> float:
    active = [(s, j) for s, j in all_jobs() if j.active]
    _watch_backend()
    _request_estimate()
    if not active and not _state.pending and not _state.backlog:
        return IDLE_INTERVAL
    try:
        client = get_client()
    except UserError as exc:
        # jobs the server accepted keep running there: they re-attach once the connection works
        for _, job in active:
            if not job.job_id:
                _fail(job, str(exc))
        if str(exc) != _state.last_error:
            _state.last_error = str(exc)
            report('ERROR', str(exc))
        return IDLE_INTERVAL
    _state.last_error = ""
    # (re-)attach jobs this client does not follow yet: after a reload, a restart, a file load
    for scene, job in active:
        if job.job_id and job.job_id not in _state.tracked:
            try:
                client.track(job.job_id, job.last_seq)
            except ConnectionError:
                continue
            _state.tracked.add(job.job_id)
        elif not job.job_id and not any(p.request_id == job.request_id for p in _state.pending.values()):
            _resubmit(scene, job)
    _check_timeouts(client)
    try:
        messages = client.poll(0)
    except Exception as exc:
        report('ERROR', f"connection error: {exc}")
        close_client()
        return IDLE_INTERVAL
    _state.backlog.extend(_coalesce(messages))
    deadline = time.perf_counter() + TICK_BUDGET_S
    redraw = bool(messages)
    while _state.backlog and time.perf_counter() < deadline:
        msg = _state.backlog.popleft()
        try:
            _dispatch(msg)
        except Exception as exc:   # one bad message must not stop the others
            traceback.print_exc()
            report('ERROR', f"could not apply {msg.msg_type} of job {msg.job_id}: {exc}")
    if redraw:
        _redraw()
    return BUSY_INTERVAL


def _request_estimate() -> None:
    """The panel's estimate: a request when the settings changed and then stayed (``estimate.due``)."""
    wanted = estimate.due()
    if wanted is None:
        return
    try:
        estimate.sent(send("estimate", "estimate_request", {"settings": wanted}))
    except UserError as exc:      # no server yet: the panel says so; asked again later
        estimate.failed(str(exc))


def _coalesce(messages: list) -> list:
    """Of the droppable events (progress, proxy mesh) of one batch keep only the latest per job and
    kind, and the latest progress that carries a preview image."""
    def key(m):
        return (m.job_id, m.msg_type, bool(m.buffers))

    latest = {key(m): i for i, m in enumerate(messages) if m.msg_type in DROPPABLE_EVENTS and not m.reply_to}
    return [m for i, m in enumerate(messages)
            if m.msg_type not in DROPPABLE_EVENTS or m.reply_to or latest.get(key(m)) == i]


def _resubmit(scene, job) -> None:
    """A job whose submit reply never came (Blender restarted meanwhile): ask again with the same
    client token; the server answers with the job it already has, or queues it now."""
    if job.kind == 'REFINE':
        _fail(job, "the refine request was lost before the server answered: refine again")
        return
    try:
        image = None
        if job.image_path:
            with open(job.image_path, "rb") as f:
                image = f.read()
        submit(scene, job, job.settings, image=image)
    except OSError as exc:
        _fail(job, f"the picture of this job is gone from the cache ({exc}): generate again")
    except UserError as exc:
        _fail(job, str(exc))


def _check_timeouts(client) -> None:
    now = time.monotonic()
    for msg_id, p in list(_state.pending.items()):
        age = now - p.sent
        if client.auth_error:
            why = client.auth_error
        elif age > UNREACHABLE_TIMEOUT_S and not client.connected:
            why = f"cannot reach the server at {client.endpoint}: is the backend running?"
        elif age > max(SUBMIT_TIMEOUT_S, client.timeout):
            why = f"no reply from the server at {client.endpoint} within {int(age)} s"
        else:
            continue
        del _state.pending[msg_id]
        if p.kind == "info":   # the automatic one: Test Connection reports for itself
            continue
        if p.kind == "estimate":   # shown in the panel, not as a report
            estimate.failed(why)
            continue
        if p.kind == "submit":
            _, job = find_job(request_id=p.request_id)
            if job is not None and not job.job_id:
                _fail(job, why)
        else:
            report('ERROR', why)


def _dispatch(msg) -> None:
    p = _state.pending.pop(msg.reply_to, None) if msg.reply_to else None
    if p is not None:
        _on_reply(p, msg)
        return
    if msg.is_error:   # e.g. an automatic re-attach the server refused (job unknown)
        scene, job = find_job(job_id=msg.job_id or "")
        if job is not None and job.active:
            _fail(job, f"the server lost the job: {error_text(msg.content)}")
        return
    if not msg.job_id:
        return
    scene, job = find_job(job_id=msg.job_id)
    if job is None:
        return   # a job of another scene/file or another client
    if msg.seq and msg.seq <= job.last_seq:
        return
    job.last_seq = max(job.last_seq, msg.seq)
    handler = _EVENTS.get(msg.msg_type)
    if handler is not None and (job.active or msg.msg_type == "finished" and not job.result):
        t0 = time.perf_counter()
        handler(scene, job, msg)
        _state.event_s.setdefault(msg.msg_type, []).append(time.perf_counter() - t0)


def _on_reply(p: Pending, msg) -> None:
    if p.kind == "submit":
        scene, job = find_job(request_id=p.request_id)
        if job is None:
            return
        fallback = _state.refine_fallback.pop(p.request_id, None)
        if msg.is_error and fallback is not None and msg.content.get("field") == "parent_job_id":
            glb, matrix = fallback   # e.g. another server: refine from the mesh itself
            importer.store_matrix(job, matrix)
            report('INFO', f"{error_text(msg.content)}: sending the mesh instead")
            submit(scene, job, job.settings, glb=glb)
            return
        if msg.is_error:
            _fail(job, f"the server refused the job: {error_text(msg.content)}")
            return
        job.job_id = msg.content["job_id"]
        warnings = [str(w) for w in msg.content.get("warnings") or []]
        if warnings:   # the job runs anyway: tell the artist why it may not look like the prompt
            job.warning = "\n".join(warnings)
            for text in warnings:
                report('WARNING', text)
        if job.state == 'SUBMITTING':
            job.state = 'QUEUED'
        if job.cancel_requested:
            cancel(job)
    elif p.kind == "cancel":
        if msg.is_error:
            report('ERROR', f"cancel failed: {error_text(msg.content)}")
    elif p.kind == "result":
        scene, job = find_job(job_id=p.job_id)
        if msg.is_error:
            report('ERROR', f"result of job {p.job_id[:8]}: {error_text(msg.content)}")
        elif job is not None and msg.buffers:
            _store_result(job, msg.buffers, msg.content.get("metadata"))
            import_result(scene, job)
    elif p.kind == "info":
        if not msg.is_error:
            set_server_info(msg.content)
    elif p.kind == "estimate":
        estimate.answered(msg.content, error_text(msg.content) if msg.is_error else "")


def set_server_info(info: dict) -> None:
    _state.server_info = info
    models = info.get("models") or []
    _state.models = [m if isinstance(m, str) else str(m.get("name", m.get("id", ""))) for m in models]
    # Auto's values are the model's recommendation for the device the server runs jobs on
    presets.set_device(info.get("device", "cpu"), [scene.dreamprop.settings for scene in bpy.data.scenes
                                                   if hasattr(scene, "dreamprop")])


# -- events ----------------------------------------------------------------------------------------
def _on_accepted(scene, job, msg):
    job.state = 'QUEUED'
    position = msg.content.get("position")
    job.stage = f"queued (position {position})" if position is not None else "queued"


def _on_started(scene, job, msg):
    job.state = 'RUNNING'
    job.stage = "resumed" if msg.content.get("resumed") else "started"


def _on_progress(scene, job, msg):
    c = msg.content
    job.state = 'RUNNING'
    job.step, job.total = int(c.get("step", job.step)), int(c.get("total", job.total))
    job.eta_s = float(c.get("eta_s") or 0.0)
    job.stage = str(c.get("message") or c.get("stage") or "")
    if msg.buffers:
        show_preview(job, msg.buffers[0])


def _on_proxy(scene, job, msg):
    if msg.buffers and scene.dreamprop.show_proxy:
        importer.update_proxy(job, msg.buffers[0], scene)


def _on_requeued(scene, job, msg):
    job.state = 'QUEUED'
    job.stage = f"requeued: {msg.content.get('reason', 'worker restarted')}"


def _on_finished(scene, job, msg):
    if not msg.buffers:   # no GLB on the event (e.g. a replay): ask for the result
        send("result", "result_request", {"job_id": job.job_id}, job_id=job.job_id)
        return
    _store_result(job, msg.buffers, msg.content.get("metadata"))
    import_result(scene, job)


def _on_failed(scene, job, msg):
    _fail(job, error_text(msg.content))


def _on_cancelled(scene, job, msg):
    importer.remove_proxy(job)
    job.state = 'CANCELLED'
    job.stage = "cancelled"
    _done(job)


_EVENTS = {"accepted": _on_accepted, "started": _on_started, "progress": _on_progress,
           "proxy_mesh": _on_proxy, "requeued": _on_requeued, "finished": _on_finished,
           "failed": _on_failed, "cancelled": _on_cancelled}


def _done(job) -> None:
    if job.job_id:
        _state.tracked.discard(job.job_id)
        if _state.client is not None:
            _state.client.untrack(job.job_id)


def _fail(job, text: str) -> None:
    importer.remove_proxy(job)
    job.state = 'FAILED'
    job.message = text
    _done(job)
    report('ERROR', f"{importer.object_name(job.prompt)}: {text}")


def _store_result(job, buffers, metadata: dict | None) -> None:
    path = os.path.join(cache_dir("results"), f"{job.job_id}.glb")
    with open(path, "wb") as f:
        f.write(buffers[0])
    job.result_path = path
    job.metadata_json = json.dumps(metadata or {})


def import_result(scene, job) -> None:
    t0 = time.perf_counter()
    try:
        obj = importer.import_result(job, job.result_path, scene, job.settings, job.metadata)
    except Exception as exc:
        _fail(job, f"import failed: {exc}")
        return
    _state.import_s.append(time.perf_counter() - t0)
    importer.remove_proxy(job)
    job.result = obj
    if job.kind == 'REFINE' and job.source is not None and not job.keep_original:
        job.source.hide_set(True)
        job.source.hide_render = True
    job.state = 'FINISHED'
    job.stage = "imported"
    job.step = job.total = max(job.total, 1)
    _done(job)
    report('INFO', f"imported {obj.name}")


# -- preview image ---------------------------------------------------------------------------------
def show_preview(job, png: bytes) -> None:
    """Put the PNG into the shared preview image (shown in unpinned Image Editors and the panel)."""
    if job.job_id not in _state.first_preview_s and job.submitted_at:
        _state.first_preview_s[job.job_id] = time.time() - float(job.submitted_at)
    path = os.path.join(cache_dir("previews"), "preview.png")
    with open(path, "wb") as f:
        f.write(png)
    img = bpy.data.images.get(PREVIEW_IMAGE)
    if img is None:
        img = bpy.data.images.load(path)
        img.name = PREVIEW_IMAGE
    else:
        if bpy.path.abspath(img.filepath) != path:
            img.filepath = path
        img.reload()
    img.preview_ensure().reload()   # the panel's thumbnail
    img["dreamprop_job_id"] = job.job_id
    _state.preview_job = job.job_id
    wm = bpy.context.window_manager
    for window in (wm.windows if wm else ()):
        for area in window.screen.areas:
            if area.type == 'IMAGE_EDITOR':
                space = area.spaces.active
                if not space.use_image_pin and space.image != img:
                    space.image = img


def _redraw() -> None:
    wm = bpy.context.window_manager
    for window in (wm.windows if wm else ()):
        for area in window.screen.areas:
            if area.type in ('VIEW_3D', 'IMAGE_EDITOR'):
                area.tag_redraw()


# -- local backend process -------------------------------------------------------------------------
def _watch_backend() -> None:
    proc = _state.backend
    if proc is not None and proc.poll() is not None:
        _state.backend = None
        if not _state.backend_stopping:
            tail = ""
            try:
                with open(_state.backend_log, "r", encoding="utf-8", errors="replace") as f:
                    tail = f.read()[-400:].strip().splitlines()[-1]
            except (OSError, IndexError):
                pass
            report('ERROR', f"the local backend exited with status {proc.returncode}: {tail}")
        close_client()


# -- measurements ----------------------------------------------------------------------------------
def stats() -> dict:
    times = sorted(_state.tick_times)
    n = len(times)
    return {"ticks": n, "mean_ms": 1e3 * sum(times) / n if n else 0.0,
            "median_ms": 1e3 * times[n // 2] if n else 0.0,
            "p95_ms": 1e3 * times[min(n - 1, int(n * 0.95))] if n else 0.0,
            "max_ms": 1e3 * _state.tick_max, "first_preview_s": dict(_state.first_preview_s),
            "import_ms": [1e3 * t for t in _state.import_s],
            "event_max_ms": {k: 1e3 * max(v) for k, v in _state.event_s.items()},
            "event_median_ms": {k: 1e3 * sorted(v)[len(v) // 2] for k, v in _state.event_s.items()}}


def register():
    ensure_timer()


def unregister():
    if bpy.app.timers.is_registered(tick):
        bpy.app.timers.unregister(tick)
    close_client()
