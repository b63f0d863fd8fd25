"""Shared by the operators: their base (error reporting), settings from the panel, new job records."""

from __future__ import annotations

import random
import uuid

from mathutils import Matrix

from .. import importer, jobs, properties
from ..jobs import UserError
from ..shared import settings as S

MAX_SEED = 2**31 - 1


def validated(data: dict) -> dict:
    """Check a settings dict against the shared schema; UserError with "<name>: <problem>"."""
    try:
        return S.GenerationSettings.from_dict(data).to_dict()
    except S.SettingError as exc:
        raise UserError(f"{exc.name.replace('_', ' ')}: {exc.message}") from None


def panel_settings(scene, **overrides) -> dict:
    """The panel's settings (+ overrides), with a fresh random seed when "random" is on."""
    pg = scene.dreamprop.settings
    data = properties.settings_dict(pg)
    if pg.seed_random:
        data["seed"] = random.randint(0, MAX_SEED)
    data.update(overrides)
    return with_proxy_interval(scene, data)


def with_proxy_interval(scene, data: dict) -> dict:
    """"Live proxy mesh" on and no interval set: ask for one at the shared rule's interval (every 5
    previews, at least 5 proxies per run)."""
    if scene.dreamprop.show_proxy and not data.get("proxy_mesh_interval"):
        data["proxy_mesh_interval"] = S.live_proxy_interval(
            data.get("steps", S.GenerationSettings.steps),
            data.get("preview_interval", S.GenerationSettings.preview_interval))
    return data


def new_job(scene, kind: str, matrix: Matrix, *, fit_size: float = 0.0, **fields):
    """Add a job record to the scene's list (state SUBMITTING, a fresh local id = client token).

    Connects first: when the server cannot be reached at all the operator fails without a record."""
    jobs.get_client()
    dp = scene.dreamprop
    job = dp.jobs.add()
    job.request_id = uuid.uuid4().hex
    job.kind = kind
    importer.store_matrix(job, matrix)
    job.fit_size = fit_size
    for key, value in fields.items():
        setattr(job, key, value)
    dp.active_job_index = len(dp.jobs) - 1
    return job


def remove_job(scene, job) -> None:
    dp = scene.dreamprop
    for i, j in enumerate(dp.jobs):
        if j == job:
            dp.jobs.remove(i)
            dp.active_job_index = min(dp.active_job_index, len(dp.jobs) - 1)
            return


class DreampropOperator:
    """Mix-in base of the add-on's operators (``class X(DreampropOperator, bpy.types.Operator)``,
    Blender's mix-in pattern: the base itself is never registered). Subclasses put their work in
    ``run(context)``; a UserError it raises becomes an error report instead of a traceback, and
    returning None means {'FINISHED'}."""

    def run(self, context) -> set | None:
        raise NotImplementedError

    def execute(self, context) -> set:
        try:
            result = self.run(context)
        except UserError as exc:
            self.report({'ERROR'}, str(exc))
            return {'CANCELLED'}
        return result or {'FINISHED'}
