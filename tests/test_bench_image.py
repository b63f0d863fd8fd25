"""The image benchmark's pieces (``backend/bench/image.py``): objects drawn outside training, their
renders with given proportions, and the one reference picture each job starts from."""

import io

import numpy as np
import torch
from PIL import Image

from backend.bench.image import DrawnObject, reference_camera, reference_png
from backend.engine.cameras import orbit_cameras
from backend.prior.render import BACKGROUNDS, entry_index, render


def _render(name, **kw):
    cams = orbit_cameras(20.0, [30.0], 1.8, 50.0)
    entry = torch.tensor([entry_index(name, None)])
    return render(entry, cams, 32, shading=torch.tensor([0]), background=torch.tensor([BACKGROUNDS.index("white")]),
                  supersample=1, generator=torch.Generator().manual_seed(0), **kw)


def test_render_uses_given_proportions():
    from backend.prior.catalogue import category

    canonical = {k: torch.tensor([v]) for k, v in category("barrel").canonical().items()}
    assert torch.equal(_render("barrel", params=canonical), _render("barrel", vary=False))
    drawn = DrawnObject("barrel", None, 0)
    assert not torch.equal(_render("barrel", params=drawn.params), _render("barrel", vary=False))


def test_drawn_objects_are_reproducible_per_seed_and_not_canonical():
    a, b, c = DrawnObject("barrel", None, 0), DrawnObject("barrel", None, 0), DrawnObject("barrel", None, 1)
    canonical = a.category.canonical()
    assert all(torch.equal(a.params[k], b.params[k]) for k in a.params)
    assert any(not torch.equal(a.params[k], c.params[k]) for k in a.params)
    assert any(abs(float(a.params[k]) - v) > 1e-4 for k, v in canonical.items())
    # Its SDF is the drawn object's: negative at its centre, positive far away.
    d = a.sdf(torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 2.0]]))
    assert d[0] < 0 < d[1]


def test_reference_picture_is_an_rgba_view_the_engine_accepts():
    from backend.engine.reference_image import prepare_reference

    elevation, azimuth = reference_camera(0, 0)
    assert 0.0 <= elevation <= 30.0 and -180.0 <= azimuth < 180.0
    png = reference_png(DrawnObject("cube", None, 0), elevation, azimuth)
    image = np.asarray(Image.open(io.BytesIO(png)))
    assert image.shape[-1] == 4
    covered = (image[..., 3] > 127).mean()
    assert 0.05 < covered < 0.6
    prepared = prepare_reference(png, fill=0.0)
    assert prepared.source == "alpha"
