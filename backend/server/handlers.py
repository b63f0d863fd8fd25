"""Client requests: one method per request type, each checks its fields (a :class:`FieldError`
names the bad field and becomes the error reply) and answers through the outbox.

Ownership: a client sees only its own jobs; asking for anyone else's job gets the same
``not_found`` as a job that does not exist, so job ids of others are not revealed.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Callable

from backend import __version__
from backend.cost import DeviceFacts, NoProfile, cpu_facts, estimate, gpu_facts
from shared import PROTOCOL_VERSION
from shared.protocol import (JOB_STATES, MAX_IMAGE_BYTES, FieldError, Message, check_fields, check_glb,
                             check_image_bytes, new_id, require_bool, require_int, require_job_id, require_str,
                             submit_buffer_names)
from shared.layering import resolve
from shared.settings import GenerationSettings, SettingError

from .events import JobEvents
from .jobfiles import INIT_MESH, REFERENCE_IMAGE, RESULT_GLB, TURNTABLE, JobFiles
from .jobstore import JobStore
from .outbox import ClientState, Outbox
from .pool import WorkerPool

log = logging.getLogger("dreamprop.server")


class RequestHandlers:
    def __init__(self, cfg, store: JobStore, files: JobFiles, outbox: Outbox, events: JobEvents, pool: WorkerPool,
                 stats: dict, schedule: Callable[[], None]):
        """``cfg``: the ServerConfig; ``schedule``: called when a job may start (a submit)."""
        self.cfg, self.store, self.files, self.outbox, self.events = cfg, store, files, outbox, events
        self.pool, self.stats, self.schedule = pool, stats, schedule
        self.table: dict[str, Callable[[ClientState, Message], None]] = {
            "info_request": self.info, "submit_request": self.submit, "cancel_request": self.cancel,
            "status_request": self.status, "list_request": self.list_jobs, "attach_request": self.attach,
            "detach_request": self.detach, "result_request": self.result, "estimate_request": self.estimate,
        }
        self._devices: tuple[float, list[dict]] = (0.0, [])

    # ---- helpers -------------------------------------------------------------------------------
    def _own_job(self, client: ClientState, content: dict) -> dict:
        job_id = require_job_id(content)
        job = self.store.get(job_id)
        if job is None or job["owner"] != client.owner:   # same answer: don't reveal others' jobs
            raise FieldError("job_id", f"no job {job_id} of yours on this server", code="not_found")
        return job

    def _job_view(self, job: dict, *, full: bool = False) -> dict:
        settings = json.loads(job["settings"])
        view = {
            "job_id": job["id"], "state": job["state"], "prompt": settings.get("prompt", ""),
            "model": settings.get("model"), "created": job["created"], "started": job["started"],
            "finished": job["finished"], "step": job["step"], "total": job["total"], "eta_s": job["eta_s"],
            "losses": json.loads(job["losses"]) if job["losses"] else {},
            "progress": (job["step"] / job["total"]) if job["total"] else 0.0,
            "error": job["error"], "runs": job["runs"], "crashes": job["crashes"], "last_seq": job["last_seq"],
            "parent_job_id": job["parent_job_id"], "has_init_mesh": bool(job["has_init_mesh"]),
            "has_image": self.files.exists(job["id"], REFERENCE_IMAGE),
            "cancel_requested": bool(job["cancel_requested"]),
            "position": self.store.position(job["id"]) if job["state"] == "queued" else None,
            "worker": job["worker"],
        }
        if job["state"] == "finished":
            view["progress"] = 1.0
        if full:
            view["settings"] = settings
            view["metadata"] = json.loads(job["metadata"]) if job["metadata"] else None
        return view

    def _target_device(self) -> DeviceFacts:
        """The device a job will run on: with several GPUs the smallest (a job may land on any)."""
        gpus = self.pool.health().gpus
        if gpus:
            facts = [DeviceFacts("cuda", g.get("name") or "unknown GPU", g.get("memory_bytes"), None)
                     for g in gpus]
            return min(facts, key=lambda f: f.memory_total_bytes or 0)
        return cpu_facts()

    def _device_kind(self) -> str:
        """"cuda" or "cpu": the model's recommended settings are those for the workers' device."""
        return "cuda" if self.pool.health().gpus else "cpu"

    def _device_facts(self) -> list[dict]:
        """Name, total and free memory of this machine's GPUs (or its CPU), re-read at most every 5 s."""
        at, facts = self._devices
        if time.monotonic() - at > 5.0:
            facts = [f.to_dict() for f in gpu_facts()] or [cpu_facts().to_dict()]
            self._devices = (time.monotonic(), facts)
        return facts

    def _estimate(self, settings: GenerationSettings) -> dict:
        """Raises NoProfile when no cost profile can answer for the device and model."""
        return estimate(settings, self._target_device(), profile_path=self.cfg.cost_profile,
                        memory_limit_bytes=self.cfg.memory_limit_bytes,
                        include_load=settings.model not in (self.pool.health().models or []))

    def _refuse_if_too_large(self, settings: GenerationSettings) -> None:
        """Settings whose estimated peak memory exceeds the device's never reach a worker."""
        try:
            est = self._estimate(settings)
        except NoProfile:
            return        # nothing to judge by: the worker's own out-of-memory error will say it
        if not est["fits"]:
            problem = est["problem"]
            raise FieldError(problem["field"], f"{problem['field']}: {problem['message']}", code="does_not_fit")

    def _cost_info(self) -> dict:
        target = self._target_device()
        out = {"device": target.to_dict(), "memory_limit_bytes": self.cfg.memory_limit_bytes}
        try:
            probe = self._estimate(resolve({"prompt": ""}, device=self._device_kind(), require_prompt=False))
            out.update(profile=probe["profile"], calibrated=probe["calibrated"], notes=probe["notes"],
                       memory_usable_bytes=probe["memory_usable_bytes"], held_out_error=probe["held_out_error"])
        except (NoProfile, ValueError) as e:
            out.update(profile=None, error=str(e))
        return out

    # ---- requests ------------------------------------------------------------------------------
    def info(self, client: ClientState, msg: Message) -> None:
        check_fields(msg.content, ())
        health = self.pool.health()
        self.outbox.reply(client, msg, {
            "server_version": __version__, "protocol_version": PROTOCOL_VERSION,
            "device": self._device_kind(), "gpus": health.gpus,
            "models": health.models or ["builtin"],
            "queue_length": self.store.count("queued"), "running": self.store.count("running"),
            "workers": health.workers, "devices": self._device_facts(), "cost": self._cost_info(),
            "auth": "curve" if self.cfg.curve else "hmac", "owner": client.owner,
            "limits": {"max_init_mesh_bytes": self.cfg.max_init_mesh_bytes, "max_image_bytes": MAX_IMAGE_BYTES,
                       "max_queued_per_client": self.cfg.max_queued_per_client},
            "stats": json.loads(json.dumps(self.stats)),
        })

    def submit(self, client: ClientState, msg: Message) -> None:
        c = msg.content
        check_fields(c, ("settings", "parent_job_id", "client_token", "attach", "buffers"))
        token = require_str(c, "client_token", 64, optional=True)
        attach = require_bool(c, "attach", True)
        if token is not None:
            existing = self.store.find_by_token(client.owner, token)
            if existing is not None:   # a re-sent submit whose reply was lost: same job
                if attach:
                    self.outbox.subscribe(client, existing["id"])
                self.outbox.reply(client, msg, {"job_id": existing["id"],
                                                "position": self.store.position(existing["id"]), "duplicate": True})
                return
        raw = c.get("settings")
        if not isinstance(raw, dict):
            raise FieldError("settings", "must be an object of generation settings")
        try:   # settings the client did not send come from the model's recommended settings (for this device)
            settings = resolve(raw, device=self._device_kind())
        except SettingError as e:
            raise FieldError(e.name, str(e)) from None
        self._refuse_if_too_large(settings)
        warnings = prompt_warnings(settings)
        if self.cfg.curve:
            m = settings.model
            if os.path.isabs(m) or m.startswith("~") or ".." in m.replace("\\", "/").split("/") or "\\" in m:
                raise FieldError("model", "model: remote clients may name a model id, not a path on the server")
        parent = require_job_id(c, "parent_job_id", optional=True)
        named = dict(zip(submit_buffer_names(c, len(msg.buffers)), msg.buffers))
        init_mesh, image = named.get("init_mesh"), named.get("image")
        if init_mesh is not None:
            check_glb(init_mesh, "init_mesh", self.cfg.max_init_mesh_bytes)
        check_reference_image(settings, image)
        if parent is not None:
            if init_mesh is not None:
                raise FieldError("parent_job_id", "give either an initial mesh or a parent job, not both")
            pjob = self.store.get(parent)
            if pjob is None or pjob["owner"] != client.owner:
                raise FieldError("parent_job_id", f"no job {parent} of yours on this server", code="not_found")
            if pjob["state"] != "finished":
                raise FieldError("parent_job_id", f"parent job is {pjob['state']}, not finished")
        if self.store.count("queued", client.owner) >= self.cfg.max_queued_per_client:
            raise FieldError(None, f"you already have {self.cfg.max_queued_per_client} queued jobs",
                             code="queue_full")
        job_id = new_id()
        self.files.make_dir(job_id)
        if init_mesh is not None:      # on disk before the job row: an acknowledged job has its mesh
            self.files.write(job_id, INIT_MESH, init_mesh)
        if image is not None:          # (and its picture)
            self.files.write(job_id, REFERENCE_IMAGE, image)
        job_id, position = self.store.add_job(client.owner, settings.to_dict(), parent_job_id=parent,
                                              has_init_mesh=init_mesh is not None, client_token=token,
                                              job_id=job_id)
        log.info("job %s accepted from %s (position %d): %r", job_id, client.owner, position, settings.prompt[:80])
        self.outbox.reply(client, msg, {"job_id": job_id, "position": position, "duplicate": False,
                                        **({"warnings": warnings} if warnings else {})})
        if attach:
            self.outbox.subscribe(client, job_id)
            self.events.replay(client, job_id, 0)
        self.schedule()

    def cancel(self, client: ClientState, msg: Message) -> None:
        check_fields(msg.content, ("job_id",))
        job = self._own_job(client, msg.content)
        jid, state = job["id"], job["state"]
        if state == "queued":
            seq = self.store.finish(jid, "cancelled")
            self.outbox.reply(client, msg, {"job_id": jid, "state": "cancelled", "cancelled": True})
            self.events.emit_persisted(jid, "cancelled", seq)
            self.files.remove_checkpoints(jid)
        elif state == "running":
            self.store.request_cancel(jid)
            self.pool.cancel(jid)
            self.outbox.reply(client, msg, {"job_id": jid, "state": "running", "cancelled": True,
                                            "message": "cancelling: the worker stops at its next step"})
        else:
            self.outbox.reply(client, msg, {"job_id": jid, "state": state, "cancelled": False,
                                            "message": f"job is already {state}"})

    def status(self, client: ClientState, msg: Message) -> None:
        check_fields(msg.content, ("job_id",))
        self.outbox.reply(client, msg, {"job": self._job_view(self._own_job(client, msg.content), full=True)})

    def list_jobs(self, client: ClientState, msg: Message) -> None:
        c = msg.content
        check_fields(c, ("limit", "states"))
        limit = require_int(c, "limit", 1, 1000, default=100)
        states = c.get("states")
        if states is not None and (not isinstance(states, list) or len(states) > 5
                                   or any(s not in JOB_STATES for s in states)):
            raise FieldError("states", f"must be a list of job states ({', '.join(JOB_STATES)})")
        self.outbox.reply(client, msg, {"jobs": [self._job_view(j) for j in self.store.list(client.owner, limit,
                                                                                             states)]})

    def attach(self, client: ClientState, msg: Message) -> None:
        c = msg.content
        check_fields(c, ("job_id", "after_seq"))
        job = self._own_job(client, c)
        after = require_int(c, "after_seq", 0, 2 ** 62, default=0)
        self.outbox.subscribe(client, job["id"])
        self.outbox.reply(client, msg, {"job_id": job["id"], "state": job["state"], "last_seq": job["last_seq"]})
        self.events.replay(client, job["id"], after)

    def estimate(self, client: ClientState, msg: Message) -> None:
        c = msg.content
        check_fields(c, ("settings",))
        raw = c.get("settings")
        if not isinstance(raw, dict):
            raise FieldError("settings", "must be an object of generation settings")
        try:   # as submit resolves them; the prompt may still be empty while the user types
            settings = resolve(raw, device=self._device_kind(), require_prompt=False)
        except SettingError as e:
            raise FieldError(e.name, str(e)) from None
        try:
            self.outbox.reply(client, msg, self._estimate(settings))
        except NoProfile as e:
            raise FieldError(None, str(e), code="no_profile") from None

    def detach(self, client: ClientState, msg: Message) -> None:
        check_fields(msg.content, ("job_id",))
        job = self._own_job(client, msg.content)
        self.outbox.unsubscribe(client, job["id"])
        self.outbox.reply(client, msg, {"job_id": job["id"]})

    def result(self, client: ClientState, msg: Message) -> None:
        check_fields(msg.content, ("job_id",))
        job = self._own_job(client, msg.content)
        if job["state"] != "finished":
            raise FieldError("job_id", f"job is {job['state']}, not finished", code="not_finished")
        try:
            glb = self.files.read(job["id"], RESULT_GLB)
            turntable = self.files.read(job["id"], TURNTABLE)
        except OSError as e:
            raise FieldError("job_id", f"result files are missing on the server ({e})", code="missing") from None
        self.outbox.reply(client, msg, {"job_id": job["id"], "metadata": json.loads(job["metadata"] or "{}")},
                          [glb, turntable])


def check_reference_image(settings: GenerationSettings, image: bytes | None) -> None:
    """An image job (``guidance_type`` zero123) needs a usable picture, a text job none. The picture is
    decoded and segmented here, so a job that would fail on it is refused before it is queued
    (Pillow, NumPy and SciPy; torch is not imported)."""
    if image is None:
        if settings.is_image_job:
            raise FieldError("image", f"guidance_type {settings.guidance_type!r} needs a reference picture "
                                      "(a buffer named \"image\": PNG, JPEG, WebP, BMP or TIFF)")
        return
    if not settings.is_image_job:
        raise FieldError("image", f"guidance_type {settings.guidance_type!r} does not use a picture "
                                  "(image guidance: zero123)")
    check_image_bytes(image, "image", MAX_IMAGE_BYTES)
    from backend.engine.reference_image import ImageError, prepare_reference

    try:
        prepare_reference(image, fill=settings.reference_fill, max_bytes=MAX_IMAGE_BYTES)
    except ImageError as e:
        raise FieldError(e.field, e.message) from None


def prompt_warnings(settings: GenerationSettings) -> list[str]:
    """Warnings for the submit reply: a prompt outside the built-in prior's vocabulary.

    Imported on the first built-in job only: the vocabulary comes from the prior's grammar, which
    imports torch (a second or two, once), and a server that never sees such a job stays torch-free."""
    if settings.is_image_job and not settings.joint_text_guidance:
        return []      # the prompt is not used
    if (settings.text_model if settings.is_image_job else settings.model) != "builtin":
        return []
    try:
        from backend.prior.vocabulary import oov_warning

        warning = oov_warning(settings.prompt)
    except Exception:   # a warning must never cost the job: the worker reports a broken prior itself
        log.exception("could not check the prompt against the built-in prior's vocabulary")
        return []
    return [warning] if warning else []
