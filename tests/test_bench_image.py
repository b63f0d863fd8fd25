"""The image benchmark's pieces (``backend/bench/image.py``): objects drawn outside training, their
renders with given proportions, and the one reference picture each job starts from."""

import io
import json

import numpy as np
import pytest
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


# auto_prompt off: reading the prompt from the picture (tests/test_recognise.py) cost each job here ~9 s
# and nothing in this test looks at what was read.
SHORT = ["--objects", "cube", "--set", "steps=4", "mesh_resolution=48", "texture_size=64", "auto_prompt=false",
         "--iou-resolution", "48"]


def _rows(out):
    return [json.loads(line) for line in (out / "image.jsonl").read_text().splitlines() if line.strip()]


def test_bench_image_runs_in_a_time_budget_then_resumes_only_the_rest(tmp_path, capsys):
    """A 3-seed GPU run spans several 10-minute device commands: --time-budget skips the jobs not
    started in time, --resume keeps the finished ones and runs only the others (in worker processes)."""
    from backend.bench.image import main

    assert main([*SHORT, "--seeds", "0", "--time-budget", "0", "--device", "cpu", "--out", str(tmp_path)]) == 0
    assert _rows(tmp_path) == []
    assert "1 jobs not started within --time-budget" in capsys.readouterr().out

    assert main([*SHORT, "--seeds", "0", "--device", "cpu", "--out", str(tmp_path)]) == 0
    (first,) = _rows(tmp_path)
    assert first["seed"] == 0 and not first.get("crashed"), first.get("error")

    assert main([*SHORT, "--seeds", "0", "1", "2", "--workers", "2", "--resume", "--device", "cpu",
                 "--out", str(tmp_path)]) == 0
    rows = _rows(tmp_path)
    assert sorted(r["seed"] for r in rows) == [0, 1, 2]
    assert [r for r in rows if r["seed"] == 0] == [first]          # kept as it was, not run again
    assert all(not r.get("crashed") and r["iou"] > 0.0 for r in rows), [r.get("error") for r in rows]
    assert "resuming: 1 jobs already done" in capsys.readouterr().out
    report = (tmp_path / "image.md").read_text()
    assert all(f"image/seed{s}" in report for s in (0, 1, 2))
    # A picture per seed a person looks at, also for the job kept from the first run.
    for s in (0, 1, 2):
        grid = np.asarray(Image.open(tmp_path / f"pictures_image_seed{s}.png").convert("RGB"))
        assert (grid < 200).any(axis=-1).mean() > 0.02
    views = np.asarray(Image.open(tmp_path / first["views_file"]).convert("RGB")).astype(int)
    side = views.shape[0] // 2
    picture = views[:side, :side]                                   # the input picture, top left
    red = (picture[..., 0] > 120) & (picture[..., 1] < 90) & (picture[..., 2] < 90)
    assert 0.05 < red.mean() < 0.9, red.mean()
    assert (views[side:, : side - 2] >= 245).all()                  # nothing under it (but resampling's edge)
    held_out_truth = views[:side, side:]
    assert (held_out_truth < 200).any(axis=-1).mean() > 0.02        # the truth's held-out views
    assert (tmp_path / first["turntable_file"]).is_file()


def test_bench_image_rejects_bad_options_naming_them(capsys):
    from backend.bench.image import main

    for argv, name in ((["--workers", "0"], "--workers"), (["--time-budget", "-1"], "--time-budget"),
                       (["--variants", "picture"], "--variants")):
        with pytest.raises(SystemExit):
            main(argv)
        assert name in capsys.readouterr().err


def test_every_set_counts_whether_repeated_or_listed_after_one():
    """`--set a=1 --set b=2` overrides both settings (until session 52 the second --set replaced the first, so a
    sweep of two settings ran with one of them), as `--set a=1 b=2` does."""
    from backend.bench.image import parse_args
    from backend.bench.quality import parse_overrides

    repeated = parse_args(["--set", "shape_model=builtin-shape", "--set", "shape_guidance_scale=10"])
    listed = parse_args(["--set", "shape_model=builtin-shape", "shape_guidance_scale=10"])
    for args in (repeated, listed):
        assert parse_overrides(args.set) == {"shape_model": "builtin-shape", "shape_guidance_scale": "10"}
    assert parse_args([]).set == [] and parse_args([]).set is not parse_args([]).set


def test_bench_image_runs_only_the_variants_asked_for(tmp_path, capsys):
    """An A/B of the text prior's settings runs joint mode alone (--variants joint), not the picture variant too."""
    from backend.bench.image import main

    assert main([*SHORT, "--seeds", "0", "--variants", "joint", "--device", "cpu", "--out", str(tmp_path)]) == 0
    rows = _rows(tmp_path)
    assert [(r["variant"], r["object"]) for r in rows] == [("joint", "cube")], rows
    assert not rows[0].get("crashed"), rows[0].get("error")
    out = capsys.readouterr().out
    assert "joint/seed0" in out and "image/seed0" not in out


def test_an_object_is_seen_from_its_own_side_in_any_list_of_objects():
    """``--objects mug`` draws the mug's picture from the side the whole benchmark does (a few objects on a CPU
    compared with the GPU's run of record), and two objects of one run from different sides."""
    from backend.bench.image import DEFAULT_OBJECTS, plan_jobs

    def cameras(objects, seed=1):
        return {(j["object"], j["variant"]): reference_camera(j["seed"], j["index"])
                for j in plan_jobs(objects, [seed], ["image", "joint"])}

    whole, few = cameras(DEFAULT_OBJECTS), cameras(["mug", "cube", "vase"])
    assert few[("mug", "image")] == whole[("mug", "image")] == few[("mug", "joint")]
    assert few[("cube", "image")] == whole[("cube", "image")] != few[("mug", "image")]
    assert few[("vase", "image")] not in set(whole.values())          # outside the list: a camera of its own
    assert cameras(["vase"]) == {k: v for k, v in few.items() if k[0] == "vase"}


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


def test_bench_image_export_variants_export_the_same_run_again(tmp_path, capsys):
    """--export-variants A/Bs export-only settings (``seal_radius``) at the cost of an export: each job's final mesh
    exported again from its run, scored as ``<variant>+<name>``; the same export settings give the same mesh's
    scores, and --resume counts a job done only with every row of it. A setting the run depends on is refused."""
    from backend.bench.image import main

    exports = tmp_path / "exports.json"
    exports.write_text(json.dumps({"same": {"seal_radius": 0.05}, "coarse": {"mesh_resolution": 32}}))
    out = tmp_path / "out"
    assert main([*SHORT, "--seeds", "0", "--device", "cpu", "--export-variants", str(exports), "--out", str(out)]) == 0
    rows = {r["variant"]: r for r in _rows(out)}
    assert set(rows) == {"image", "image+same", "image+coarse"}
    assert all(not r.get("crashed") for r in rows.values()), [r.get("error") for r in rows.values()]
    own, same, coarse = rows["image"], rows["image+same"], rows["image+coarse"]
    assert same["iou"] == own["iou"] and same["chamfer"] == own["chamfer"]       # the same run, exported alike
    assert coarse["chamfer"] != own["chamfer"]                                    # the same run, a coarser mesh
    # exported again from the finished run, not run again: no optimisation steps in it
    assert same["export_of"] == "image" and same["optimise_s"] < 0.25 * own["optimise_s"]
    assert "image+coarse/seed0" in (out / "image.md").read_text()
    capsys.readouterr()
    assert main([*SHORT, "--seeds", "0", "--device", "cpu", "--export-variants", str(exports), "--resume",
                 "--out", str(out)]) == 0
    assert "resuming: 1 jobs already done" in capsys.readouterr().out
    assert {r["variant"]: r["iou"] for r in _rows(out)} == {v: r["iou"] for v, r in rows.items()}

    exports.write_text(json.dumps({"longer": {"steps": 8}}))
    with pytest.raises(SystemExit, match="'longer' changes steps"):
        main([*SHORT, "--seeds", "0", "--device", "cpu", "--export-variants", str(exports), "--out", str(out)])
