"""The panel's image source (image-to-3D): a picture file, an image open in Blender, or a render of
the active camera, as the PNG bytes a job sends; and the reference preview shown beside the live
previews. Main thread only (operators and the panel): it reads and writes bpy data.

The bpy-free parts (PNG writer, camera elevation, the settings of an image job) are in ``pictures``.
"""

from __future__ import annotations

import os

import bpy
import numpy as np

from . import jobs, pictures
from .jobs import UserError

REFERENCE_IMAGE = "Dreamprop Reference"    # the bpy image the panel shows the last job's picture in
RENDER_SIDE = 512                          # a camera render's longer side, pixels


def read_file(path: str) -> bytes:
    path = bpy.path.abspath(path)
    if not path:
        raise UserError("image: choose a picture file")
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise UserError(f"image: cannot read {path} ({exc.strerror or exc})") from None


def image_png(img) -> bytes:
    """An image datablock as picture bytes: its packed or on-disk file when unchanged, else its pixels."""
    if img is None:
        raise UserError("image: choose an image open in Blender")
    if not img.is_dirty:
        if img.packed_file is not None:
            return bytes(img.packed_file.data)
        if img.source == 'FILE' and img.filepath and os.path.isfile(bpy.path.abspath(img.filepath)):
            return read_file(img.filepath)
    width, height = img.size
    if width == 0 or height == 0 or not img.has_data:
        raise UserError(f"image: {img.name} has no pixels (a Render Result cannot be read: use Camera)")
    pixels = np.empty(width * height * 4, np.float32)
    img.pixels.foreach_get(pixels)
    return pictures.png_rgba(width, height, pixels.tolist(), linear=img.is_float)


def render_camera(scene) -> tuple[bytes, float]:
    """Render the scene's active camera with transparent film into a PNG; (bytes, reference elevation).
    The render settings it changes are put back."""
    cam = scene.camera
    if cam is None:
        raise UserError("image: the scene has no active camera to render")
    r = scene.render
    path = os.path.join(jobs.cache_dir("reference"), "camera.png")
    saved = (r.filepath, r.film_transparent, r.image_settings.file_format, r.image_settings.color_mode,
             r.resolution_percentage)
    try:
        r.filepath = path
        r.film_transparent = True
        r.image_settings.file_format = 'PNG'
        r.image_settings.color_mode = 'RGBA'
        r.resolution_percentage = max(1, min(100, round(100 * RENDER_SIDE / max(r.resolution_x, r.resolution_y))))
        with bpy.context.temp_override(scene=scene):
            bpy.ops.render.render(write_still=True)
    finally:
        (r.filepath, r.film_transparent, r.image_settings.file_format, r.image_settings.color_mode,
         r.resolution_percentage) = saved
    matrix = cam.evaluated_get(bpy.context.evaluated_depsgraph_get()).matrix_world
    forward = matrix.to_3x3().col[2] * -1.0   # a camera looks down its local -Z
    return read_file(path), pictures.camera_elevation(forward)


def reference_png(scene) -> tuple[bytes, float | None]:
    """The picture of the panel's image source: (bytes, the reference elevation a camera gives, or None)."""
    dp = scene.dreamprop
    if dp.image_source == 'FILE':
        return read_file(dp.image_path), None
    if dp.image_source == 'IMAGE':
        return image_png(dp.image), None
    if dp.image_source == 'CAMERA':
        return render_camera(scene)
    raise UserError("image: the image source is 'Prompt' (no picture)")


def show_reference(job, data: bytes) -> None:
    """Keep the job's picture in the cache (a re-sent submit needs it) and show it in the panel."""
    path = os.path.join(jobs.cache_dir("reference"), f"{job.request_id}.img")
    with open(path, "wb") as f:
        f.write(data)
    job.image_path = path
    img = bpy.data.images.get(REFERENCE_IMAGE)
    if img is not None:
        bpy.data.images.remove(img)
    try:
        img = bpy.data.images.load(path)
    except RuntimeError:       # a format Blender cannot open: the server checks it anyway
        return
    img.name = REFERENCE_IMAGE
    img.preview_ensure()
