"""A hollow object SDS drew filled, opened from the top when the coarse stage ends (``hollow`` setting).

The cut itself on voxel grids; which runs open their result; and a real coarse field fitted to a filled box
(CPU, the tiny random model: what matters is the field's shape, not what SDS makes of it) opened at the
coarse stage's last step, handed over open to the fine stage, and not opened twice by a resumed run.
"""

import io

import numpy as np
import pytest
import torch
import trimesh

from backend.engine import hollow
from backend.engine.hollow import cavity, open_cavity, wanted
from shared.settings import GenerationSettings, SettingError
from tests.helpers import tiny_settings
from tests.test_fine import cube_glb

OPENING = "opening the hollow object from the top"


def test_cavity_leaves_walls_and_a_bottom_and_opens_the_top():
    solid = np.zeros((40, 40, 40), bool)
    solid[10:30, 10:30, 10:30] = True                    # a 20-cell box
    solid[30:36, 18:21, 15:25] = True                    # a 3-cell-thick handle on its +x side
    out = cavity(solid, wall_cells=2.5)                  # deeper than 2.5 cells: the 3rd cell in and beyond
    assert not (out & ~solid).any()                      # only the solid is cut
    kept = solid & ~out
    assert kept[10:12, 15, 20].all() and kept[28:30, 15, 20].all() and not kept[12:28, 15, 20].any()  # walls
    assert kept[15, 15, 10:12].all() and not kept[15, 15, 12:30].any()  # the bottom; above it, open to the top
    assert kept[30:36, 18:21, 15:25].all()                              # the thin handle stays whole
    assert out[12:28, 12:28, 12:30].all() and kept[10:30, 10:30, 10:12].all()   # open top, whole bottom
    # A slab no thicker than two walls has no inside: nothing to open.
    slab = np.zeros((40, 40, 40), bool)
    slab[5:35, 5:35, 10:14] = True
    assert not cavity(slab, wall_cells=2.5).any()


def test_auto_opens_the_built_in_priors_hollow_props_only():
    builtin = GenerationSettings.from_dict({"prompt": "a red mug", "model": "builtin"})
    assert builtin.hollow == "auto" and wanted(builtin)
    assert wanted(builtin.replace(prompt="a wooden bowl")) and wanted(builtin.replace(prompt="a wooden bucket, side view"))
    assert not wanted(builtin.replace(prompt="a red cube")) and not wanted(builtin.replace(prompt="a wooden barrel"))
    assert not wanted(builtin.replace(prompt="a weathered wooden mug"))          # not one of the prior's prompts
    assert not wanted(builtin.replace(model="/models/sd15"))                    # another model: only when asked
    assert wanted(builtin.replace(model="/models/sd15", hollow="on"))
    assert not wanted(builtin.replace(hollow="off"))
    # An image job without a typed prompt: the prompt read from its picture decides.
    assert wanted(builtin.replace(prompt=""), prompt="a red mug") and not wanted(builtin.replace(prompt=""))
    with pytest.raises(SettingError) as e:
        GenerationSettings.from_dict({"prompt": "a red mug", "hollow": "yes"})
    assert e.value.name == "hollow" and "auto, on, off" in str(e.value)


def _density(trainer, points) -> np.ndarray:
    trainer.field.eval()
    with torch.no_grad():
        return trainer.field.density(torch.tensor(points, dtype=torch.float32)).numpy()


# Engine coordinates (z up) of the filled box mesh_init fits (half-extent 0.6): its middle, under its top face,
# and the middles of two of the walls and of the bottom that opening it leaves.
MIDDLE, TOP, MID_WALL = [0.0, 0.0, 0.0], [0.0, 0.0, 0.58], 0.6 - hollow.WALL / 2
WALLS, BOTTOM = [[MID_WALL, 0.0, 0.0], [0.0, -MID_WALL, 0.2]], [[0.1, 0.1, -MID_WALL]]


def test_a_filled_box_is_opened_when_the_coarse_stage_ends_and_stays_open(tiny_model_path, tmp_path):
    from backend.engine.fine import FineTrainer
    from backend.engine.guidance import load_guidance
    from backend.engine.mesh_init import fit_field_to_mesh
    from backend.engine.trainer import Trainer

    guidance = load_guidance("tiny-random", "cpu")
    settings = tiny_settings(steps=2, albedo_warmup_steps=2, preview_interval=0, hollow="on",
                             stages="coarse,fine", hash_log2_size=14, hash_max_resolution=256)
    trainer = Trainer(settings, guidance, torch.device("cpu"))
    assert trainer.opens_cavity
    fit_field_to_mesh(trainer, cube_glb(), iterations=150)
    before = _density(trainer, [MIDDLE, TOP, *WALLS, *BOTTOM])
    assert (before > 10).all(), before                       # a filled box

    events, checkpoint = [], str(tmp_path / "run.ckpt")
    trainer.fit(events.append, None, checkpoint)
    assert [e.message for e in events if e.stage == "init"] == [OPENING]
    middle, top, *walls_and_bottom = _density(trainer, [MIDDLE, TOP, *WALLS, *BOTTOM])
    assert middle < 1 and top < 1, (middle, top)                    # emptied, through the top
    assert (np.array(walls_and_bottom) > 10).all(), walls_and_bottom  # the walls and the bottom stay

    # The fine stage starts on the open box: its inside is the walls, not the middle.
    fine = FineTrainer(settings, guidance, torch.device("cpu"))
    assert not fine.opens_cavity
    fine.init_from_coarse(trainer)
    inside = fine.inside(torch.tensor([MIDDLE, *WALLS, *BOTTOM], dtype=torch.float32)).numpy()
    assert inside[0] <= 0 and (inside[1:] > 0).all(), inside

    # Its export thins the opened box's walls from the inside (fine_cavity_inset): less volume, the same outside
    # (this tiny field's walls have holes: only the slices they ring are thinned, 15% of the volume).
    assert fine.thins_cavity
    meshes = {}
    for inset in (0.0, 0.04):
        fine.s = fine.s.replace(fine_cavity_inset=inset, fine_thin_inset=0.0, vertex_colors=True, mesh_resolution=160)
        meshes[inset] = trimesh.load(io.BytesIO(fine.export().glb), file_type="glb", force="mesh")
    assert meshes[0.04].volume < 0.9 * meshes[0.0].volume, (meshes[0.04].volume, meshes[0.0].volume)
    assert np.allclose(meshes[0.04].bounds, meshes[0.0].bounds, atol=0.02)

    # Resumed from the checkpoint of the last step: open already, not opened again.
    resumed = Trainer(settings, guidance, torch.device("cpu"))
    resumed.load_checkpoint(checkpoint)
    again: list = []
    resumed.fit(again.append, None, None)
    assert not [e for e in again if e.stage == "init"]
    assert _density(resumed, [MIDDLE])[0] < 1


def test_hollow_off_leaves_the_filled_box_filled(tiny_model_path):
    from backend.engine.guidance import load_guidance
    from backend.engine.mesh_init import fit_field_to_mesh
    from backend.engine.trainer import Trainer

    guidance = load_guidance("tiny-random", "cpu")
    trainer = Trainer(tiny_settings(steps=2, albedo_warmup_steps=2, preview_interval=0, hollow="off",
                                    hash_log2_size=14, hash_max_resolution=256), guidance, torch.device("cpu"))
    assert not trainer.opens_cavity
    from backend.engine.fine import FineTrainer
    assert not FineTrainer(trainer.s, guidance, torch.device("cpu")).thins_cavity     # its export keeps its walls
    fit_field_to_mesh(trainer, cube_glb(), iterations=150)
    events: list = []
    trainer.fit(events.append, None, None)
    assert not [e for e in events if e.stage == "init"]
    assert _density(trainer, [MIDDLE])[0] > 10


def test_a_field_with_nothing_deep_enough_is_left_as_it_is(tiny_model_path):
    """A blob thinner than two walls (the tiny model's start, shrunk) has no inside to open: untouched."""
    from backend.engine.guidance import load_guidance
    from backend.engine.trainer import Trainer

    guidance = load_guidance("tiny-random", "cpu")
    trainer = Trainer(tiny_settings(hollow="on", blob_radius=0.05), guidance, torch.device("cpu"))
    state = {k: v.clone() for k, v in trainer.field.state_dict().items() if torch.is_tensor(v)}
    assert hollow.open_cavity(trainer) == 0.0
    after = trainer.field.state_dict()
    assert state and all(torch.equal(v, after[k]) for k, v in state.items())


def test_the_cli_progress_bar_says_what_the_pause_between_steps_is(capsys):
    """The opening takes seconds after the coarse stage's last step: the CLI's bar names it, then steps on."""
    from backend.cli import _ProgressBar
    from backend.engine.types import ProgressEvent

    bar = _ProgressBar(total=10)
    bar(ProgressEvent(step=5, total=10, losses={"sds": 1.0}, elapsed_s=1.0, eta_s=1.0))
    bar(ProgressEvent(step=5, total=10, losses={}, elapsed_s=0.0, eta_s=0.0, stage="init", message=OPENING))
    assert bar.bar.n == 5 and bar.bar.desc.startswith(OPENING)
    bar(ProgressEvent(step=8, total=10, losses={}, elapsed_s=2.0, eta_s=1.0, stage="fine"))
    assert bar.bar.n == 8 and not bar.bar.desc
    bar.close()
    assert OPENING in capsys.readouterr().err
