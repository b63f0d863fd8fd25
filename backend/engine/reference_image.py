"""The reference image of an image-to-3D job: decode, check, find the object, centre it.

What every side does with the picture a user gives (``generate --image``, a submitted job, the
Blender panel), before any training: the server runs ``prepare_reference`` on a submit so that a
bad image is refused with a named error before the job is queued, and the engine runs it again
when the job starts. NumPy, Pillow and SciPy only (no torch), so the server imports it cheaply.

Foreground (the object's mask):

- an image **with an alpha channel** (RGBA PNG/WebP, a Blender render with film transparency):
  the alpha is the mask (soft edges kept);
- an image **without alpha**: ``segment_background`` — the background colour is the median of the
  border pixels, a pixel is foreground when its colour is farther than a threshold from it (the
  threshold grows with how much the border itself varies), holes are filled and only the largest
  connected piece is kept. It is made for what an artist exports: an object on a plain or nearly
  plain backdrop. **It cannot handle** a background of the object's own colour (those parts of the
  object vanish), busy photos (texture, gradients or clutter in the backdrop: the whole frame or a
  random piece becomes "the object"), an object touching the border on all sides, or shadows and
  reflections on the ground (they are kept as part of the object). For those, give an image with
  an alpha channel (remove the background in any image editor first).

Framing (``recentre``): as threestudio's image datamodule expects its input (its
``preprocess_image.py``, border ratio 0.2): the object's bounding box is scaled so that its longer
side fills ``fill`` of a square frame, centred; the reference camera then sees a frame of known
size. ``fill=0`` keeps the picture's own framing (a render made with the reference camera).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

# What the wire and the CLI accept (shared/protocol.py holds the byte limit, for the clients too).
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF")
MIN_SIDE, MAX_SIDE = 32, 4096
# The square side the reference is kept at (threestudio's guidance side, 256; the losses resize it).
REFERENCE_SIDE = 256
# A foreground smaller than this fraction of the picture is "no foreground" (noise, a speck).
MIN_FOREGROUND = 0.002
# A "foreground" covering more than this fraction is a failed segmentation (busy photo, no backdrop).
MAX_FOREGROUND = 0.95
# Alpha above this is object (threestudio's mask: alpha > 0.5).
ALPHA_THRESHOLD = 0.5


class ImageError(ValueError):
    """The reference image cannot be used. ``field`` names the input ("image"), ``message`` says why
    and what is allowed."""

    def __init__(self, message: str, field: str = "image"):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass
class PreparedImage:
    """A reference ready for the engine: square, object centred."""

    rgb: np.ndarray          # float32 (S, S, 3) in [0, 1]; white outside the object
    mask: np.ndarray         # float32 (S, S) in [0, 1]; 1 on the object
    source: str              # "alpha" or "segmented": where the mask came from
    original_size: tuple     # (width, height) of the picture given
    fill: float = 0.0        # the bounding box's share of the frame it was scaled to (0: framing kept)

    def png(self) -> bytes:
        """RGBA PNG of the prepared reference (the preview a client shows next to the live renders)."""
        from PIL import Image

        rgba = np.concatenate([self.rgb, self.mask[..., None]], -1)
        buf = io.BytesIO()
        Image.fromarray((rgba * 255 + 0.5).clip(0, 255).astype(np.uint8), "RGBA").save(buf, format="PNG")
        return buf.getvalue()


def decode(data: bytes, max_bytes: int | None = None):
    """Bytes -> (rgb float32 (H, W, 3), alpha float32 (H, W) or None). Raises ImageError."""
    from PIL import Image, UnidentifiedImageError

    if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) == 0:
        raise ImageError("is empty: give a PNG or JPEG picture of the object")
    if max_bytes is not None and len(data) > max_bytes:
        raise ImageError(f"is {len(data)} bytes, the limit is {max_bytes} ({max_bytes // (1024 * 1024)} MiB)")
    try:
        with Image.open(io.BytesIO(bytes(data))) as im:
            if im.format not in IMAGE_FORMATS:
                raise ImageError(f"format {im.format} is not accepted (one of {', '.join(IMAGE_FORMATS)})")
            w, h = im.size
            if not (MIN_SIDE <= w <= MAX_SIDE and MIN_SIDE <= h <= MAX_SIDE):
                raise ImageError(f"is {w}x{h} pixels, each side must be in [{MIN_SIDE}, {MAX_SIDE}]")
            has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
            rgba = np.asarray(im.convert("RGBA" if has_alpha else "RGB"), dtype=np.float32) / 255.0
    except ImageError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise ImageError(f"is not a readable image ({type(e).__name__}); give one of "
                         f"{', '.join(IMAGE_FORMATS)}") from None
    alpha = rgba[..., 3] if has_alpha else None
    if alpha is not None and alpha.min() > 0.999:   # an alpha channel that is opaque everywhere says nothing
        alpha = None
    return rgba[..., :3], alpha


def segment_background(rgb: np.ndarray, border: int = 4) -> np.ndarray:
    """Foreground mask (bool (H, W)) of an object on a plain backdrop; see the module docstring for
    what it cannot handle. Border colour = median of the ``border``-pixel frame; threshold =
    max(0.1, 3 x the frame's mean distance to it)."""
    from scipy import ndimage

    h, w, _ = rgb.shape
    b = max(1, min(border, h // 8, w // 8))
    frame = np.concatenate([rgb[:b].reshape(-1, 3), rgb[-b:].reshape(-1, 3),
                            rgb[:, :b].reshape(-1, 3), rgb[:, -b:].reshape(-1, 3)])
    bg = np.median(frame, axis=0)
    spread = float(np.linalg.norm(frame - bg, axis=-1).mean())
    threshold = max(0.1, 3.0 * spread)
    fg = np.linalg.norm(rgb - bg, axis=-1) > threshold
    fg = ndimage.binary_opening(fg, iterations=1)          # drop one-pixel noise (JPEG ringing)
    labels, n = ndimage.label(fg)
    if n == 0:
        return fg
    sizes = ndimage.sum(fg, labels, index=np.arange(1, n + 1))
    largest = labels == (1 + int(np.argmax(sizes)))
    return ndimage.binary_fill_holes(largest)


def foreground(rgb: np.ndarray, alpha: np.ndarray | None) -> tuple[np.ndarray, str]:
    """(mask float32 (H, W) in [0, 1], "alpha" | "segmented")."""
    if alpha is not None:
        return alpha.astype(np.float32), "alpha"
    return segment_background(rgb).astype(np.float32), "segmented"


def recentre(rgb: np.ndarray, mask: np.ndarray, side: int = REFERENCE_SIDE, fill: float = 0.8):
    """Square (side, side) rgb and mask with the object's bounding box scaled so that its longer side
    is ``fill`` of the frame, centred (threestudio's recentring). ``fill=0``: keep the framing (pad the
    shorter side to a square, centred, and resize)."""
    from PIL import Image

    h, w = mask.shape
    if fill > 0:
        ys, xs = np.nonzero(mask > ALPHA_THRESHOLD)
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    else:
        y0, y1, x0, x1 = 0, h, 0, w
    crop_h, crop_w = y1 - y0, x1 - x0
    target = side * fill if fill > 0 else side
    scale = target / max(crop_h, crop_w)
    new_h, new_w = max(1, round(crop_h * scale)), max(1, round(crop_w * scale))

    def resized(channel: np.ndarray) -> np.ndarray:
        im = Image.fromarray(channel[y0:y1, x0:x1].astype(np.float32), "F")
        return np.asarray(im.resize((new_w, new_h), Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR))

    out_rgb = np.ones((side, side, 3), np.float32)
    out_mask = np.zeros((side, side), np.float32)
    top, left = (side - new_h) // 2, (side - new_w) // 2
    m = np.clip(resized(mask), 0, 1)
    out_mask[top:top + new_h, left:left + new_w] = m
    for c in range(3):
        # premultiplied resize, so the background colour does not bleed into the object's edge
        colour = resized(rgb[..., c] * mask) / np.maximum(m, 1e-6)
        out_rgb[top:top + new_h, left:left + new_w, c] = np.where(m > 1e-3, np.clip(colour, 0, 1), 1.0)
    return out_rgb, out_mask


def prepare_reference(data: bytes, *, fill: float = 0.8, side: int = REFERENCE_SIDE,
                      max_bytes: int | None = None) -> PreparedImage:
    """Decode, check and frame a reference picture. ImageError (field "image") when it is not an image,
    has a wrong size, or shows no object (nothing opaque / nothing that stands out from the border)."""
    rgb, alpha = decode(data, max_bytes)
    mask, source = foreground(rgb, alpha)
    covered = float((mask > ALPHA_THRESHOLD).mean())
    how = ("its alpha channel is transparent almost everywhere" if source == "alpha" else
           "nothing stands out from the border colour (an object on a plain backdrop is needed, or an "
           "image with an alpha channel)")
    if covered < MIN_FOREGROUND:
        raise ImageError(f"shows no foreground object: {how}; the object must cover at least "
                         f"{MIN_FOREGROUND:.1%} of the picture, it covers {covered:.2%}")
    if covered > MAX_FOREGROUND:
        raise ImageError(f"has no background: the object covers {covered:.0%} of the picture (at most "
                         f"{MAX_FOREGROUND:.0%}); " + ("make the background transparent" if source == "alpha" else
                                                      "use a plain backdrop or an image with an alpha channel"))
    h, w = mask.shape
    out_rgb, out_mask = recentre(rgb, mask, side, fill)
    return PreparedImage(out_rgb, out_mask, source, (w, h), fill)
