"""The whole engine as a user runs it: generate() and the CLI, refine from a mesh, bad flags."""

import io
import subprocess
import sys

import numpy as np
import pytest
import torch
import trimesh

from backend.cli import generate_main
from backend.engine.api import Cancelled, generate
from tests.helpers import load_rgb, object_fraction, tiny_settings


def load_glb(data: bytes) -> trimesh.Trimesh:
    scene = trimesh.load(io.BytesIO(data), file_type="glb")
    meshes = list(scene.geometry.values()) if isinstance(scene, trimesh.Scene) else [scene]
    assert len(meshes) == 1
    return meshes[0]


def test_generate_writes_textured_glb_with_progress_and_turntable(tiny_model_path):
    events = []
    settings = tiny_settings(steps=8, preview_interval=4, proxy_mesh_interval=8, blob_density=20.0,
                             sparsity_weight=0.0)
    result = generate(settings, device="cpu", callback=events.append)
    mesh = load_glb(result.glb)
    assert len(mesh.faces) > 100
    material = mesh.visual.material
    assert mesh.visual.uv is not None and material.baseColorTexture is not None
    assert material.metallicFactor == 0.0 and material.roughnessFactor == 1.0
    optimise = [e for e in events if e.stage == "optimise"]
    assert [e.step for e in optimise] == [4, 8]
    assert all(e.total == 8 and e.preview_png.startswith(b"\x89PNG") for e in optimise)
    assert optimise[-1].proxy_glb is not None and load_glb(optimise[-1].proxy_glb).faces.shape[0] > 0
    assert optimise[0].eta_s > 0 and "sds" in optimise[0].losses
    assert any(e.stage == "export" for e in events)
    assert result.turntable_png.startswith(b"\x89PNG")
    assert result.metadata["faces"] == len(mesh.faces) and result.metadata["settings"]["steps"] == 8
    # the CPU path: what a run without the GPU fast path records (issue 13.4)
    assert result.metadata["fast_path"] == {"sampler": "pure-PyTorch", "sampling": "dynamic", "hashgrid": "PyTorch",
                                            "render_graphs": False, "complete": True}


def test_cancel_saves_a_checkpoint_and_a_new_call_resumes(tiny_model_path, tmp_path):
    ckpt = tmp_path / "job.ckpt"
    settings = tiny_settings(steps=6, checkpoint_interval=2, preview_interval=0)
    calls = {"n": 0}

    def cancel_after_three():
        calls["n"] += 1
        return calls["n"] > 3

    with pytest.raises(Cancelled) as e:
        generate(settings, device="cpu", checkpoint_path=str(ckpt), should_cancel=cancel_after_three)
    assert e.value.step == 3 and ckpt.is_file()
    result = generate(settings, device="cpu", checkpoint_path=str(ckpt))
    assert result.metadata["resumed_from_step"] == 3


def test_refine_initialises_the_field_from_a_mesh(tiny_model_path):
    """A green box in, a green box-shaped field out (before any SDS step changes it much)."""
    from backend.engine.guidance import load_guidance
    from backend.engine.mesh_init import fit_field_to_mesh
    from backend.engine.trainer import Trainer
    from backend.export.mesh import to_glb

    box = trimesh.creation.box(extents=(1.0, 0.5, 0.5))      # engine coords: long along X
    colors = np.tile(np.array([[0.1, 0.8, 0.2]], dtype=np.float32), (len(box.vertices), 1))
    glb = to_glb(np.asarray(box.vertices, np.float32), np.asarray(box.faces, np.int32), vertex_colors=colors)
    trainer = Trainer(tiny_settings(hash_log2_size=14, hash_max_resolution=256), load_guidance("tiny-random", "cpu"),
                      torch.device("cpu"))
    transform = fit_field_to_mesh(trainer, glb, iterations=120, batch=4096)
    assert transform["scale"] == pytest.approx(1.2, rel=1e-3)    # half-extent 0.5 -> 0.6
    field = trainer.field.eval()
    with torch.no_grad():
        inside = torch.tensor([[0.0, 0.0, 0.0], [0.45, 0.0, 0.0], [-0.45, 0.1, 0.1]])
        outside = torch.tensor([[0.0, 0.5, 0.0], [0.0, 0.0, -0.5], [0.8, 0.0, 0.0]])
        assert field.density(inside).min() > 5 * field.density(outside).max()
        surface = torch.tensor([[0.6, 0.0, 0.0], [0.0, 0.3, 0.0], [0.0, 0.0, 0.3]])
        albedo = field.albedo(surface)
    assert (albedo[:, 1] > albedo[:, 0] + 0.3).all() and (albedo[:, 1] > albedo[:, 2] + 0.3).all()


def test_cli_generates_glb_and_turntable(tiny_model_path, tmp_path):
    out = tmp_path / "cube.glb"
    proc = subprocess.run(
        [sys.executable, "-m", "backend", "generate", "a red cube", "-o", str(out), "--model", "tiny-random",
         "--steps", "4", "--resolution-schedule", "32x1", "--samples-per-ray", "32", "--hash-log2-size", "12",
         "--preview-interval", "2", "--preview-size", "32", "--mesh-resolution", "48", "--texture-size", "64",
         "--blob-density", "20", "--device", "cpu"],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    strip = load_rgb(out.with_suffix(".turntable.png"))
    assert strip.shape == (256, 8 * 256, 3)                      # eight 256 px views side by side
    for view in np.split(strip, 8, axis=1):                     # the object shows in every view
        assert object_fraction(view, (255, 255, 255)) > 0.01
    assert "4/4" in proc.stderr           # the progress bar reached the end
    assert load_glb(out.read_bytes()).visual.uv is not None


def test_cli_quiet_runs_to_the_end_without_a_bar(tiny_model_path, tmp_path):
    """--quiet: no progress bar, the same GLB (session 37: a disabled tqdm bar has no description, and the
    first progress event crashed the run)."""
    out = tmp_path / "cube.glb"
    proc = subprocess.run(
        [sys.executable, "-m", "backend", "generate", "a red cube", "-o", str(out), "--model", "tiny-random",
         "--steps", "4", "--resolution-schedule", "32x1", "--samples-per-ray", "32", "--hash-log2-size", "12",
         "--preview-interval", "2", "--preview-size", "32", "--mesh-resolution", "48", "--texture-size", "64",
         "--blob-density", "20", "--device", "cpu", "--quiet"],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "4/4" not in proc.stderr and "Traceback" not in proc.stderr
    assert load_glb(out.read_bytes()).faces.shape[0] > 0


@pytest.mark.parametrize("flags,named", [
    (["--steps", "0"], "--steps"), (["--steps", "many"], "--steps"), (["--guidance-scale", "1000"], "--guidance-scale"),
    (["--t-min", "0.9", "--t-max", "0.1"], "--t-min"), (["--elevation-min", "-100"], "--elevation-min"),
    (["--fovy-max", "179"], "--fovy-max"), (["--resolution-schedule", "64"], "--resolution-schedule"),
    (["--resolution-schedule", "64x1,32x1@0"], "--resolution-schedule"), (["--mesh-resolution", "4096"], "--mesh-resolution"),
    (["--face-budget", "10"], "--face-budget"), (["--texture-size", "10"], "--texture-size"),
    (["--sds-weighting", "magic"], "--sds-weighting"), (["--seed", "-1"], "--seed"),
    (["--device", "tpu"], "--device"), (["-o", "out.obj"], "--output"), (["--distance-min", "nan"], "--distance-min")])
def test_cli_bad_values_name_the_flag(flags, named, capsys):
    with pytest.raises(SystemExit) as e:
        generate_main(["a red cube", *flags])
    assert e.value.code != 0
    err = capsys.readouterr().err
    assert named in err and "error" in err


def test_cli_rejects_missing_model_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "backend", "generate", "a red cube", "--model",
                           str(tmp_path / "no-such-model")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "model" in proc.stderr and "Traceback" not in proc.stderr
