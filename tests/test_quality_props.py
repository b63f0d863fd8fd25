"""The 2-prompt prop quality check of issue 11: the real pipeline on the CPU with the built-in prior's own
settings, against the props' procedural ground truth. Its own file (not test_quality.py) so that the
suite's two test processes run it beside the cube-and-sphere run there (``--dist loadfile``)."""

import json

import numpy as np
import pytest

from backend.prior import available
from shared.presets import PRESETS


# Two props the v3 prior draws well on the GPU (seed 0: barrel IoU 0.88, albedo 0.08; bottle 0.84,
# 0.05). The thin and hollow props (chair, mug...) do not meet the floor yet: results/quality/README.md.
PROP_CHECK = ["a wooden barrel", "a green bottle"]


@pytest.mark.slow
@pytest.mark.skipif(not available(), reason="backend/prior/weights is not installed")
def test_builtin_prior_draws_a_barrel_and_a_bottle_on_cpu(tmp_path):
    """The 2-prompt prop quality check: the real pipeline on the CPU with the prior's own settings
    (the plain command's) on a short budget, each GLB against its procedural ground truth: shape (IoU at
    least the benchmark's floor for every prompt) and colour (wood-brown staves, green glass)."""
    from backend.bench.quality import TARGETS, main

    # Side by side, one thread each, as the cube and sphere of test_quality.py (one after the other took 150 s).
    # Half the preset's steps (the "short budget"): the preset's 500 took 247 s of the suite's 15 minutes in
    # CI; at 250 (133 s here) the barrel is 0.89 (albedo 0.065) and the bottle 0.86 (0.057), session 51.
    assert main(["--device", "cpu", "--prompts", *PROP_CHECK, "--seeds", "0", "--workers", "2", "--threads", "1",
                 "--set", "steps=250", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "quality.json").read_text())["results"]
    final = [r for r in results if r["stages"] == PRESETS["builtin"]["stages"]]     # the mesh a user gets
    assert [r["prompt"] for r in final] == PROP_CHECK
    for r in results:                                     # and every stage's mesh before it
        assert not r.get("error") and not r["empty"], r
        assert r["iou"] >= TARGETS["min_iou"], r
        assert r["albedo_error"] <= 0.12, r
    barrel, bottle = (np.asarray(r["mean_color"]) for r in final)
    assert barrel[0] > barrel[1] > barrel[2]            # brown: red over green over blue
    assert bottle[1] > max(bottle[0], bottle[2])          # green
