"""The bpy-free half of the panel's image source (image-to-3D): PNG encoding of Blender pixels, the
reference elevation of a camera, and the settings an image job is sent with.

No bpy and no relative imports, so tests load it from its file without Blender
(``tests/test_addon_pictures.py``); ``image_source.py`` is the half that reads Blender data.
Blender's Python has no Pillow: the PNG writer is the format's few lines over zlib (stored
8-bit RGBA, one filter byte per row), which is all a picture sent to the server needs.
"""

from __future__ import annotations

import math
import struct
import zlib

IMAGE_GUIDANCE = "zero123"     # the guidance type an image job gets unless the panel names an image type
ELEVATION_RANGE = (-30.0, 60.0)   # the reference_elevation setting's range (shared/settings.py)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_rgba(width: int, height: int, pixels, *, bottom_up: bool = True, linear: bool = False) -> bytes:
    """An 8-bit RGBA PNG of ``pixels``: width*height*4 floats in [0, 1] (``Image.pixels`` order:
    rows from the bottom when ``bottom_up``, as Blender stores them). ``linear``: the values are
    scene-linear (a float buffer, a render) and are encoded to sRGB first; byte images already are."""
    if len(pixels) != width * height * 4:
        raise ValueError(f"expected {width * height * 4} values for {width}x{height} RGBA, got {len(pixels)}")

    def to_byte(v: float, colour: bool) -> int:
        v = min(max(float(v), 0.0), 1.0)
        if linear and colour:
            v = 12.92 * v if v <= 0.0031308 else 1.055 * v ** (1 / 2.4) - 0.055
        return int(v * 255 + 0.5)

    row_bytes = []
    for y in range(height):
        src = (height - 1 - y) if bottom_up else y
        row = pixels[src * width * 4:(src + 1) * width * 4]
        row_bytes.append(b"\x00" + bytes(to_byte(v, i % 4 != 3) for i, v in enumerate(row)))
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b"".join(row_bytes), 6))
            + _chunk(b"IEND", b""))


def camera_elevation(forward) -> float:
    """The reference elevation (degrees above the horizon the camera looks down from) of a camera whose
    view direction is ``forward`` (x, y, z; Blender is Z-up), clamped to the setting's range."""
    x, y, z = (float(c) for c in forward)
    norm = math.sqrt(x * x + y * y + z * z) or 1.0
    elevation = math.degrees(math.asin(max(-1.0, min(1.0, -z / norm))))
    return round(min(max(elevation, ELEVATION_RANGE[0]), ELEVATION_RANGE[1]), 2)


def image_job_settings(settings: dict, *, image_types: tuple, recommended: dict, auto_quality: bool,
                       elevation: float | None = None) -> dict:
    """The panel's settings for an image job: an image guidance type (``IMAGE_GUIDANCE`` unless the
    panel already names one of ``image_types``); with the Auto quality, the model's recommended
    settings *for image jobs* (``recommended``, shared.layering) over the panel's (which are Auto's
    for text jobs); a camera render's elevation as ``reference_elevation``."""
    out = dict(settings)
    if out.get("guidance_type") not in image_types:
        out["guidance_type"] = IMAGE_GUIDANCE
    if auto_quality:
        out.update(recommended)
    if elevation is not None:
        out["reference_elevation"] = elevation
    return out
