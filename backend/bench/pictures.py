"""Reference pictures of the built-in prior's objects, for image-to-3D tests and benchmarks.

``picture_png("a red cube", elevation=5, azimuth=0)``: an RGBA PNG of the prompt's canonical object
(the ground truth of ``backend.prior.catalogue``) drawn by the prior's own renderer
(``backend.prior.render.render``: sphere tracing, procedural albedo, 2x supersampling) from the
engine camera at that elevation and azimuth, the prior's distance and field of view. The alpha is
exact: the same view over white and over black, alpha = 1 - (white - black).

    python -m backend.bench.pictures "a red cube" -o cube.png [--elevation 5 --azimuth 0 --size 256]
"""

from __future__ import annotations

import argparse
import io

import numpy as np
import torch


def picture_rgba(prompt: str, *, elevation: float = 5.0, azimuth: float = 0.0, size: int = 256,
                 distance: float | None = None, fovy: float | None = None, shading: str = "albedo") -> np.ndarray:
    """uint8 (size, size, 4): the prompt's canonical object from the engine camera (elevation, azimuth in
    degrees; distance and fovy default to the prior's camera, ``backend.prior.CAMERA``)."""
    from backend.engine.cameras import orbit_cameras
    from backend.prior import CAMERA
    from backend.prior.catalogue import ground_truth
    from backend.prior.render import BACKGROUNDS, SHADINGS, entry_index, render

    truth = ground_truth(prompt)
    cams = orbit_cameras(elevation, [azimuth, azimuth], distance or CAMERA["distance_min"],
                         fovy or CAMERA["fovy_min"])
    entry = torch.full((2,), entry_index(truth.name, truth.look), dtype=torch.long)
    with torch.no_grad():
        images = render(entry, cams, size, shading=torch.full((2,), SHADINGS.index(shading)),
                        background=torch.tensor([BACKGROUNDS.index("white"), BACKGROUNDS.index("black")]),
                        vary=False, generator=torch.Generator().manual_seed(0))
    over_white, over_black = images[0].permute(1, 2, 0).numpy(), images[1].permute(1, 2, 0).numpy()
    alpha = np.clip(1.0 - (over_white - over_black).mean(-1), 0.0, 1.0)
    colour = np.where(alpha[..., None] > 1e-3, over_black / np.maximum(alpha[..., None], 1e-3), 1.0)
    rgba = np.concatenate([np.clip(colour, 0, 1), alpha[..., None]], -1)
    return (rgba * 255 + 0.5).astype(np.uint8)


def picture_png(prompt: str, **kwargs) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(picture_rgba(prompt, **kwargs), "RGBA").save(buf, format="PNG")
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backend.bench.pictures", description=__doc__.split("\n\n")[0])
    parser.add_argument("prompt", help="a prompt of the built-in prior's grammar, e.g. 'a red cube'")
    parser.add_argument("-o", "--output", required=True, help="PNG path")
    parser.add_argument("--elevation", type=float, default=5.0)
    parser.add_argument("--azimuth", type=float, default=0.0)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args(argv)
    with open(args.output, "wb") as f:
        f.write(picture_png(args.prompt, elevation=args.elevation, azimuth=args.azimuth, size=args.size))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
