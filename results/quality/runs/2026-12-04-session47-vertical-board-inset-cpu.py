"""Lead (session 47, not shipped): vertical boards (thin along one horizontal axis, wide along the other) drawn
thinner at export than the thin-part inset draws them. CPU preset, seed 0: each prop generated once with a
checkpoint, then exported with the preset and with an extra inset on vertical boards, and scored."""
import sys, json
import numpy as np
import backend.export.mesh as M
from backend.bench.quality import settings_for, score
from backend.engine.guidance.models import load_guidance_for
from backend.engine.api import generate

EXTRA = 0.0


def run_length(mask: np.ndarray, axis: int) -> np.ndarray:
    m = np.moveaxis(mask, axis, -1)
    shape = m.shape
    m = m.reshape(-1, shape[-1])
    padded = np.pad(m, ((0, 0), (1, 0)))
    starts = m & ~padded[:, :-1]
    ids = np.cumsum(starts.ravel()) * m.ravel()
    out = np.bincount(ids)[ids]
    out[~m.ravel()] = 0
    return np.moveaxis(out.reshape(shape), -1, axis)


orig = M.thin_inset


def thin_plus_boards(inside, inset, **kw):
    out = orig(inside, inset, **kw)
    if EXTRA <= 0:
        return out
    from scipy import ndimage
    solid = out > 0
    rx, ry = run_length(solid, 0), run_length(solid, 1)
    thin, wide = np.minimum(rx, ry), np.maximum(rx, ry)
    board = solid & (thin <= 4) & (wide >= 6)
    near = ndimage.binary_dilation(board, iterations=2)
    return np.where(near, out - EXTRA, out).astype(out.dtype)


M.thin_inset = thin_plus_boards
import backend.engine.fine as F  # noqa: E402  (fine.py imports thin_inset at call time from the module)

rows = []
for prompt in sys.argv[1:]:
    ck = f"/work/s47/vb_{prompt.replace(' ', '_')}.pt"
    for extra in (0.0, 0.01, 0.02):
        EXTRA = extra
        s = settings_for(prompt, 0, {"stages": "coarse,fine"}, "builtin", "cpu")
        r = generate(s, device="cpu", guidance=load_guidance_for(s, "cpu"), checkpoint_path=ck)
        m = score(r.glb, prompt, 0, views=False)
        row = {"prompt": prompt, "extra": extra, "iou": round(m["iou"], 3), "volume": round(m["volume_ratio"], 2),
               "chamfer": round(m["chamfer"], 4), "nc": round(m["normal_consistency"], 3)}
        print(row, flush=True)
        rows.append(row)
json.dump(rows, open("/work/s47/vboard_" + sys.argv[1].split()[-1] + ".json", "w"))
