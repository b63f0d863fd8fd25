"""Cost before submit (issue 13.3): the cost model's fit, ``generate --estimate``, the server's
``estimate`` request and the refusal of settings that don't fit, with the committed CPU profile and a
real server on loopback."""

from __future__ import annotations

import json
import os
from pathlib import Path
import subprocess
import sys

import pytest

from backend.cost import cpu_facts, estimate
from backend.cost.estimate import _duration, choose_profile
from backend.cost.model import (GB, MMAP_THRESHOLD_BYTES, Profile, checkpoint_features, export_features, field_params,
                                fit, predict, preview_features, profile_path, step_features)
from shared.client import ServerError
from shared.layering import resolve
from shared.settings import GenerationSettings
from tests.server_fixtures import REPO

NATIVE = {"builtin": 64, "sd15": 512}


def settings(**changes) -> GenerationSettings:
    return resolve({"prompt": "a red cube", **changes})


def test_fit_recovers_known_coefficients_from_synthetic_measurements():
    """Step times made from known coefficients (with 1% multiplicative noise) over a grid of settings
    of both architectures: the fit gives the coefficients back."""
    import numpy as np

    truth = {"step:builtin": 0.004, "step:sd15": 0.012, "samples": 0.021, "sample_levels": 0.012, "normal_samples": 0.015,
             "guidance:builtin": 0.2, "guidance:sd15": 0.030, "field_params": 0.004, "normal_field_params": 0.003,
             "images:builtin": 0.005, "images:sd15": 0.02, "lit_steps": 0.003,
             "big_field_params": 0.016}     # (CPU features: the 2^19 tables are above the mmap threshold)
    rng = np.random.default_rng(0)
    rows, times = [], []
    for model in ("builtin", "/models/sd"):
        for schedule in ("32x1", "64x1", "128x1", "64x2", "32x2", "256x1"):
            for spr in (64, 256, 512):
                for levels, log2 in ((8, 16), (16, 17), (16, 19)):     # the last above the mmap threshold
                    s = settings(model=model, resolution_schedule=schedule, samples_per_ray=spr, hash_levels=levels,
                                 hash_log2_size=log2, guidance_resolution=0 if spr != 256 else 256)
                    st = s.resolution_stages[0]
                    for phase in (False, True):
                        f = step_features(s, st.resolution, st.batch_size, phase, NATIVE)
                        rows.append(f)
                        times.append(sum(truth[k] * v for k, v in f.items()) * (1 + 0.01 * rng.standard_normal()))
    coef = fit(rows, times)
    assert set(coef) == set(truth)
    for name, value in truth.items():
        assert coef[name] == pytest.approx(value, rel=0.05), (name, coef)


@pytest.fixture(scope="module")
def cpu_profile() -> Profile:
    path = profile_path("cpu")
    assert path.is_file(), "the committed CPU profile is missing: python -m backend bench cost"
    return Profile.load(path)


def test_unknown_device_gets_a_labelled_profile(cpu_profile):
    """A profile given for another device is used, and the estimate says it is uncalibrated."""
    from backend.cost.device import DeviceFacts

    est = estimate(settings(), DeviceFacts("cuda", "NVIDIA Imaginary 1", 24 * GB, 20 * GB),
                   profile_path=str(cpu_profile.path))
    assert not est["calibrated"] and "uncalibrated" in est["notes"][0]
    assert choose_profile(cpu_facts()).calibrated


def _generate(args: list[str], cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": REPO}
    return subprocess.run([sys.executable, "-m", "backend", "generate", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_cli_estimate_prints_time_and_memory_and_runs_nothing(tmp_path, cpu_profile):
    out = tmp_path / "cube.glb"
    # --steps 1: were the estimate to fall through to a run, it would end quickly and leave a GLB
    proc = _generate(["a red cube", "--estimate", "--device", "cpu", "--steps", "1", "-o", str(out)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    expected = estimate(settings(steps=1), cpu_facts(), checkpoints=False)
    first = proc.stdout.splitlines()[0]
    assert "estimate for 'a red cube'" in first and f"cost profile {cpu_profile.slug}" in first, proc.stdout
    assert f"~{expected['peak_memory_bytes'] / GB:.1f} GB" in first, (first, expected["peak_memory_bytes"])
    assert f": {_duration(expected['time_s'])}," in first, (first, expected["time_s"])
    assert "generating" not in proc.stderr and not out.exists() and not (tmp_path / "out").exists()


def test_cli_refuses_settings_that_do_not_fit(tmp_path, cpu_profile):
    """With a memory limit below what 512² renders need: exit 2 before anything loads, naming the
    setting and a value that fits."""
    small = estimate(settings(), cpu_facts())["peak_memory_bytes"]
    limit_gb = 1.3 * small / GB
    assert estimate(settings(resolution_schedule="512x4"), cpu_facts())["peak_memory_bytes"] > limit_gb * GB
    # --steps 1 --mesh-resolution 32: were the refusal missing, the run would still end soon
    proc = _generate(["a red cube", "--device", "cpu", "--resolution-schedule", "512x4", "--memory-limit-gb",
                      f"{limit_gb:.3f}", "--steps", "1", "--mesh-resolution", "32", "-o", str(tmp_path / "x.glb")],
                     tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "--resolution-schedule: render resolution 512 needs ~" in proc.stderr, proc.stderr
    assert "or lower" in proc.stderr and "generating" not in proc.stderr


def test_server_answers_estimate_and_info_has_device_facts(queue_server, cpu_profile):
    c = queue_server.client()
    try:
        est = c.estimate({"prompt": "", "model": "builtin", "resolution_schedule": "64x1"})
        info = c.info()
        with pytest.raises(ServerError) as err:
            c.estimate({"steps": -3})
    finally:
        c.close()
    expected = estimate(settings(resolution_schedule="64x1"), cpu_facts())
    assert est["profile"] == "cpu" and est["device"]["kind"] == "cpu" and est["fits"]
    assert est["time_s"] == pytest.approx(expected["time_s"], rel=1e-6)
    assert est["peak_memory_bytes"] == expected["peak_memory_bytes"] > 0
    assert info["cost"]["profile"] == "cpu" and info["devices"][0]["memory_total_bytes"] > 0
    assert err.value.field == "steps"


def test_submit_that_does_not_fit_is_refused_naming_the_setting(server_factory, cpu_profile):
    small = estimate(settings(), cpu_facts())["peak_memory_bytes"]
    limit_gb = 1.3 * small / GB
    big = {"prompt": "a red cube", "model": "builtin", "resolution_schedule": "512x4"}
    assert estimate(settings(**big), cpu_facts())["peak_memory_bytes"] > limit_gb * GB
    server = server_factory(args=["--workers", "0", "--memory-limit-gb", f"{limit_gb:.3f}"])
    c = server.client()
    try:
        with pytest.raises(ServerError) as err:
            c.submit(big)
        job = c.submit({"prompt": "a red cube", "model": "builtin"})     # the preset fits
    finally:
        c.close()
    assert err.value.code == "does_not_fit" and err.value.field == "resolution_schedule"
    message = err.value.message
    assert "render resolution 512 needs ~" in message and "or lower" in message, message
    suggested = int(message.split("use ")[1].split(" ")[0])
    fixed = settings(**{**big, "resolution_schedule": f"{suggested}x4"})
    assert suggested < 512 and estimate(fixed, cpu_facts())["peak_memory_bytes"] <= limit_gb * GB
    assert len(job) == 32


def test_fast_path_says_what_a_cuda_run_would_miss():
    """On CUDA without nerfacc or Triton (this machine has neither), a run says it uses the pure-PyTorch
    sampler and the PyTorch hash grid, and that the fast path is incomplete (issue 13.4)."""
    from backend.engine.api import fast_path

    pytest.importorskip("torch")
    try:
        import nerfacc  # noqa: F401
        pytest.skip("nerfacc is installed here")
    except ImportError:
        pass
    path = fast_path(settings(), "cuda")
    # (the built-in prior's preset pins the dynamic sampler; "auto" is the budget one on CUDA)
    assert path == {"sampler": "pure-PyTorch", "sampling": "dynamic", "hashgrid": "PyTorch", "render_graphs": False,
                    "complete": False}
    assert fast_path(settings(sampling="auto"), "cuda")["sampling"] == "budget"
    # the training render from CUDA graphs: the default on CUDA with the budget sampler, never on the CPU
    assert fast_path(settings(sampling="auto"), "cuda")["render_graphs"]
    assert not fast_path(settings(sampling="auto", graph_render=False), "cuda")["render_graphs"]
    # a render too big for the budget's candidate grid marches dynamically, eagerly
    assert not fast_path(settings(sampling="auto", resolution_schedule="512x1"), "cuda")["render_graphs"]
    assert not fast_path(settings(sampling="budget"), "cpu")["render_graphs"]
    assert fast_path(settings(sampling="auto"), "cpu")["sampling"] == "dynamic"
    assert fast_path(settings(hashgrid_backend="torch"), "cpu")["complete"]


def test_measure_exports_keeps_the_median_of_repeated_timings():
    """``bench cost`` times each export ``repeats`` times and fits on the median (one timing of a GPU
    export was noise-bound, results/speed/NOTES.md session 17): real exports of a briefly trained
    built-in-prior field on the CPU."""
    import statistics

    import torch

    from backend.bench.cost import measure_exports
    from backend.engine.guidance import load_guidance

    torch.manual_seed(0)
    guidance = load_guidance("builtin", torch.device("cpu"))
    rows = measure_exports(guidance, torch.device("cpu"), [(32, 64, 500, False), (48, 64, 800, True)], repeats=3)
    assert [r["overrides"]["mesh_resolution"] for r in rows] == [32, 48]
    assert [r["held_out"] for r in rows] == [False, True]
    for r in rows:
        assert len(r["export_times_s"]) == 3 and all(t > 0 for t in r["export_times_s"])
        assert r["export_s"] == statistics.median(r["export_times_s"])


def test_a_shape_model_is_costed_loaded_beside_the_model(tmp_path):
    """``shape_model`` (a second prior for the shape): the estimate loads both (load time and weights
    of each), moves the lit renders' guidance work to the shape prior's architecture, which it reads
    from the folder's UNet config (the project's prior layout costs as the built-in prior, not SD),
    and says so."""
    from backend.cost.device import DeviceFacts
    from backend.cost.model import BUILTIN_ARCH, SD_ARCH, architecture
    from backend.prior.model import build_random

    shape = build_random(tmp_path / "shape", arch="v8")
    assert architecture(str(shape)) == BUILTIN_ARCH
    assert architecture(str(tmp_path / "no-such-folder")) == SD_ARCH and architecture("builtin") == BUILTIN_ARCH
    h200 = DeviceFacts("cuda", "NVIDIA H200", 141 * GB, 140 * GB)
    p = Profile.load(profile_path("nvidia-h200"))
    alone = estimate(settings(model="builtin", steps=1000, shape_model=""), h200)
    both = estimate(settings(model="builtin", steps=1000, shape_model=str(shape)), h200)
    # The built-in preset's own shape prior ("builtin-shape", prior v9) costs as that folder does.
    preset = estimate(settings(model="builtin", steps=1000), h200)
    assert preset["parts_s"] == pytest.approx(both["parts_s"])
    assert preset["notes"] == [n.replace(str(shape), "builtin-shape") for n in both["notes"]]
    builtin = p.data["architectures"][BUILTIN_ARCH]
    assert both["parts_s"]["load"] == pytest.approx(alone["parts_s"]["load"] + builtin["load_s"])
    assert both["peak_memory_bytes"] - alone["peak_memory_bytes"] == pytest.approx(
        p.coef("memory")["extra_model:builtin"] * GB, rel=1e-6)
    assert both["parts_s"]["steps"] == pytest.approx(alone["parts_s"]["steps"])   # same architecture, same work
    assert any("shape_model" in n and "built-in prior" in n for n in both["notes"])
    # A start the profile has not measured is named, not silently costed as nothing.
    hull = estimate(settings(model="builtin", steps=1000, shape_init="prior-hull"), h200)
    assert hull["parts_s"] == pytest.approx(preset["parts_s"])
    extra = [n for n in hull["notes"] if n not in preset["notes"]]
    assert len(extra) == 1 and "shape_init 'prior-hull'" in extra[0] and "not counted" in extra[0]

    # SD for the colour, the small prior for the shape: the lit steps (after the albedo warm-up) cost less
    # than with SD alone, the albedo-only warm-up steps the same.
    sd = settings(model=str(tmp_path / "sd"), steps=1000)
    sd_alone, sd_shape = estimate(sd, h200), estimate(sd.replace(shape_model=str(shape)), h200)
    a, b = sd_alone["stages"][0], sd_shape["stages"][0]
    assert b["step_ms_albedo"] == pytest.approx(a["step_ms_albedo"])
    assert b["step_ms_after_warmup"] < a["step_ms_after_warmup"]


SMALL_TABLE = {"hash_levels": 16, "hash_log2_size": 17, "hash_max_resolution": 2048}   # 3.4 M parameters, 13 MiB
BIG_TABLE = {"hash_levels": 16, "hash_log2_size": 19, "hash_max_resolution": 4096}     # 12.6 M, 48 MiB


def test_a_table_above_the_mmap_threshold_costs_a_cpu_step_and_a_cuda_checkpoint_more():
    """glibc maps an allocation above 32 MiB afresh every time: a CPU step's gradient and Adam temporaries
    of a table that large, and a CUDA checkpoint's host copies of it, pay by the byte (backend/cost/model.py).
    The term is there for such a table only, and only on the device where host memory is involved; the
    committed profiles price it."""
    small, big = settings(**SMALL_TABLE), settings(**BIG_TABLE)
    assert field_params(small) * 4 < MMAP_THRESHOLD_BYTES < field_params(big) * 4
    for phase in (False, True):
        f = step_features(big, 32, 1, phase, NATIVE, cuda=False)
        assert f["big_field_params"] == f["field_params"] == field_params(big) / 1e6
        assert "big_field_params" not in step_features(small, 32, 1, phase, NATIVE, cuda=False)
        assert "big_field_params" not in step_features(big, 32, 1, phase, NATIVE, cuda=True)
    assert checkpoint_features(big, cuda=True)["big_field_params"] == field_params(big) / 1e6
    assert "big_field_params" not in checkpoint_features(small, cuda=True)
    assert "big_field_params" not in checkpoint_features(big, cuda=False)

    # per parameter, a big table's CPU step and H200 checkpoint cost clearly more than a small table's
    cpu, h200 = Profile.load(profile_path("cpu")).coef("step"), Profile.load(profile_path("nvidia-h200")).coef("checkpoint")
    assert cpu["big_field_params"] > 0.5 * cpu["field_params"], cpu
    assert h200["big_field_params"] > 0.3 * h200["field_params"], h200


def test_a_preview_costs_per_hash_level():
    """A preview's samples look up every hash level, as a step's do: twice the levels, twice that part."""
    eight, sixteen = settings(hash_levels=8), settings(hash_levels=16)
    a, b = preview_features(eight), preview_features(sixteen)
    assert a["preview_samples"] == b["preview_samples"] > 0
    assert b["preview_sample_levels"] == pytest.approx(2 * a["preview_sample_levels"])
    cpu = Profile.load(profile_path("cpu"))
    assert cpu.coef("preview")["preview_sample_levels"] > 0
    assert predict(cpu.coef("preview"), b) > 1.3 * predict(cpu.coef("preview"), a)


def test_the_first_export_of_an_old_run_is_fitted_with_its_imports_apart():
    """Before session 25 ``bench cost`` timed the mesh libraries' import (~0.5 s) in its first export: that
    row alone gets the ``import`` feature, which no estimate predicts; a run that exported once untimed
    first has none. A recorded face count is used instead of the estimated one."""
    from backend.bench.cost import export_rows

    exports = [{"overrides": {"mesh_resolution": r, "texture_size": 512, "face_budget": 20000}, "held_out": False,
                "export_s": 1.0} for r in (64, 128)]
    old = export_rows({"exports": exports})
    assert old[0][0]["import"] == 1.0 and "import" not in old[1][0]
    new = export_rows({"exports": [{**e, "after_warmup_export": True, "faces": 12345} for e in exports]})
    assert all("import" not in f for f, _, _ in new)
    assert new[1][0]["faces"] == pytest.approx(0.12345)
    assert "import" not in export_features(settings())
    # Both stored runs (the H200's since session 25, the CPU's since session 37) exported once untimed
    # first: no such row, no such coefficient.
    assert all(e.get("after_warmup_export") for e in _stored_h200_run()["exports"])
    cpu_run = Path(REPO) / "results" / "speed" / "cost_cpu.json"
    assert all(e.get("after_warmup_export") for e in json.loads(cpu_run.read_text())["exports"])
    for device in ("nvidia-h200", "cpu"):
        assert "import" not in Profile.load(profile_path(device)).coef("export")


def test_passes_merge_to_the_smallest_times_and_peak():
    """One-off costs and what earlier configurations left allocated only add: the least-affected pass."""
    from backend.bench.cost import merge_passes

    a = {"resolution": 32, "batch": 1, "step_s_albedo": 0.010, "step_s_after_warmup": 0.012, "peak_bytes": 100,
         "preview_s": 0.005, "checkpoint_s": 0.02, "checkpoint_times_s": [0.02]}
    b = {**a, "step_s_albedo": 0.176, "step_s_after_warmup": 0.014, "peak_bytes": 120, "checkpoint_s": 0.04}
    c = {**a, "step_s_albedo": 0.016, "peak_bytes": 90, "preview_s": 0.013}
    row = merge_passes([a, b, c])
    assert row["step_s_albedo"] == 0.010 and row["step_s_after_warmup"] == 0.012 and row["peak_bytes"] == 90
    assert row["checkpoint_s"] == 0.02 and row["preview_s"] == 0.005 and len(row["passes"]) == 3
    assert merge_passes([a]) == a


def _stored_h200_run(name: str = "cost.json") -> dict:
    """The H200 run the shipped profile is fitted on, or an earlier one kept in ``results/speed/runs``."""
    import json

    path = Path(REPO) / "results" / "speed" / (name if name == "cost.json" else f"runs/{name}")
    return json.loads(path.read_text())


def test_stale_cublas_workspaces_are_taken_off_the_stored_peaks():
    """The session 25 H200 run measured each configuration with one more 33 MiB cuBLAS workspace left by
    the earlier ones (one per UNet capture's side stream, up to PyTorch's pool of 32): the refit takes
    them off. Without the correction the prior's fitted peaks are not a function of the settings."""
    from backend.bench.cost import (WORKSPACE_BYTES, config_parts, fit_and_test, peak_gib, remerged,
                                    stale_workspaces)

    run = remerged(_stored_h200_run("2026-12-01-session25-cost-h200.json"))
    stale = stale_workspaces(run)
    prior = [c for c in run["configs"] if c.get("passes")]
    assert stale[:len(prior)] == list(range(len(prior)))      # the first pass, in grid order
    assert max(stale) == 31 and WORKSPACE_BYTES == 33 * 2**20
    # The two passes of each prior configuration differ by one workspace per configuration between them.
    n = len(prior)
    for i, c in enumerate(prior):
        first, second = (p["peak_bytes"] for p in c["passes"])
        assert (second - first) / (2 * n - 1 - 2 * i) == pytest.approx(WORKSPACE_BYTES, rel=0.06)
    assert peak_gib(run, prior[5], 5) == pytest.approx(min(p["peak_bytes"] for p in prior[5]["passes"]) / GB
                                                       - 5 * WORKSPACE_BYTES / GB)
    _, errors = fit_and_test({"memory": config_parts(run)["memory"]})
    assert errors["memory"]["train_max_pct"] < 15
    uncorrected = {**run, "configs": [{**c, "workspaces_cleared": True} for c in run["configs"]]}
    assert stale_workspaces(uncorrected) == [0] * len(run["configs"])
    _, raw = fit_and_test({"memory": config_parts(uncorrected)["memory"]})
    assert raw["memory"]["train_max_pct"] > 30
    # A run before session 25's bench (graphs kept across configurations) or a CPU run: no correction.
    old = {**run, "configs": [{k: v for k, v in c.items() if k != "checkpoint_times_s"} for c in run["configs"]]}
    assert set(stale_workspaces(old)) == {0} and set(stale_workspaces({**run, "cuda": False})) == {0}
    # A run whose bench freed the workspaces per configuration (session 29's, the shipped profile's): nothing to
    # take off.
    assert set(stale_workspaces(remerged(_stored_h200_run()))) == {0}
    # The profile fitted on the corrected peaks: the prior's weights are tens of MB, not ~0.5 GB.
    assert Profile.load(profile_path("nvidia-h200")).coef("memory")["weights:builtin"] < 0.25


def test_reset_peak_frees_cublas_workspaces(monkeypatch):
    import backend.bench.cost as bc

    calls = []
    monkeypatch.setattr(bc.torch._C, "_cuda_clearCublasWorkspaces", lambda: calls.append(1), raising=False)
    monkeypatch.setattr(bc.torch.cuda, "empty_cache", lambda: None)
    monkeypatch.setattr(bc.torch.cuda, "reset_peak_memory_stats", lambda: None)
    bc.reset_peak(bc.torch.device("cuda"))
    assert calls == [1]


def test_each_configuration_captures_its_own_unet_graphs():
    """``bench cost`` drops the guidance's captured graphs (of both priors of a pair) before each
    configuration: a replayed graph's memory is not in max_memory_allocated."""
    from types import SimpleNamespace

    from backend.bench.cost import drop_cuda_graphs

    colour, shape = SimpleNamespace(_graphs={(1,): "g"}), SimpleNamespace(_graphs={(2,): "g"})
    drop_cuda_graphs(SimpleNamespace(colour=colour, shape=shape))
    plain = SimpleNamespace(_graphs={(1,): "g"})
    drop_cuda_graphs(plain)
    assert colour._graphs == shape._graphs == plain._graphs == {}
    drop_cuda_graphs(SimpleNamespace())        # a guidance without graphs (the CPU)


@pytest.mark.parametrize("stored, slug", [("cost.json", "nvidia-h200"), ("cost_cpu.json", "cpu")])
def test_committed_profiles_are_the_fit_of_the_committed_measurements(tmp_path, stored, slug):
    """``bench cost --refit`` of the stored raw numbers gives the committed profile: a change of the model's
    features that was not refitted fails here."""
    import json

    from backend.bench.cost import main

    assert main(["--refit", os.path.join(REPO, "results", "speed", stored), "--out", str(tmp_path),
                 "--profile", str(tmp_path / "p.json")]) == 0
    fitted = json.loads((tmp_path / "p.json").read_text())
    committed = Profile.load(profile_path(slug)).data
    assert fitted["coefficients"].keys() == committed["coefficients"].keys()
    for part, coef in committed["coefficients"].items():
        assert fitted["coefficients"][part] == pytest.approx(coef, rel=1e-6, abs=1e-12), part
    for part, err in committed["held_out_error"].items():
        assert fitted["held_out_error"][part] == pytest.approx(err), part


@pytest.mark.slow
def test_bench_cost_quick_runs_end_to_end_on_the_cpu(tmp_path):
    """``bench cost --quick --cpu``: the whole measuring path (prior grid, the preset with its shape prior,
    exports after an untimed one, repeated checkpoints) on tiny settings, fitted and written (~25 s)."""
    import json

    from backend.bench.cost import main

    assert main(["--quick", "--cpu", "--out", str(tmp_path)]) == 0
    run = json.loads((tmp_path / "cost_cpu.json").read_text())
    assert run["quick"] and not run["partial"] and run["export_warmup"]
    assert [c["overrides"] for c in run["configs"]][-1]["shape_model"] == "builtin-shape"
    assert all(len(c["checkpoint_times_s"]) == 3 for c in run["configs"])
    assert all(e["stages_s"] and e["faces"] > 0 for e in run["exports"])
    profile = Profile.load(tmp_path / "profile.json")
    assert set(profile.data["coefficients"]) == {"step", "memory", "preview", "checkpoint", "export", "fine"}
    assert all(r["handover_s"] > 0 and r["fine_fit_s"] > 0 for r in run["fine"])
    assert "import" not in profile.coef("export")

    # --resume on a run cut short inside the shape prior's grid: the rows and exports it has are kept as they
    # were (not measured again), the rest measured, the fine stage after the shape prior's grid too
    with pytest.raises(SystemExit, match="finished"):
        main(["--quick", "--cpu", "--resume", "--out", str(tmp_path)])
    cut = {**run, "configs": run["configs"][:4], "partial": True, "wall_s": 1000.0}
    del cut["fine"]
    (tmp_path / "cost_cpu.json").write_text(json.dumps(cut))
    assert main(["--quick", "--cpu", "--resume", "--out", str(tmp_path)]) == 0
    resumed = json.loads((tmp_path / "cost_cpu.json").read_text())
    assert not resumed["partial"] and resumed["wall_s"] > 1000.0 and resumed["fine"]
    assert resumed["configs"][:4] == run["configs"][:4] and resumed["exports"] == run["exports"]
    assert [c["overrides"] for c in resumed["configs"]] == [c["overrides"] for c in run["configs"]]
    assert resumed["configs"][4]["step_s_albedo"] != run["configs"][4]["step_s_albedo"]


def test_resume_measures_a_grid_of_two_passes_again_whole(tmp_path):
    """A grid measured in two passes (the prior's on a GPU, the second backwards against the host's drift) is
    kept whole or measured again whole; a one-pass grid keeps each row it has; the exports and the fine stage
    are kept when the run has them."""
    import json

    from backend.bench.cost import SD_ARCH, resume_run
    from backend.cost.model import BUILTIN_ARCH

    grid = [({}, False), ({"resolution_schedule": "64x1"}, False), ({"resolution_schedule": "48x2"}, True)]
    row = lambda arch, o, passes: {"arch": arch, "overrides": o, "settings": {"shape_model": ""},
                                   **({"passes": [{}] * passes} if passes > 1 else {})}
    stored = {"partial": True, "quick": False, "wall_s": 50.0, "exports": [{"export_s": 1.0}],
              "architectures": {BUILTIN_ARCH: {}, SD_ARCH: {}},
              "configs": [row(BUILTIN_ARCH, {}, 2), row(BUILTIN_ARCH, {"resolution_schedule": "64x1"}, 2),
                          row(BUILTIN_ARCH, {"resolution_schedule": "48x2"}, 1),    # its second pass cut short
                          row(SD_ARCH, {}, 1), row(SD_ARCH, {"resolution_schedule": "48x2"}, 1)]}
    path = tmp_path / "cost.json"
    path.write_text(json.dumps(stored))
    run = {"quick": False, "configs": [], "exports": [], "architectures": {}}
    left = resume_run(run, path, [(BUILTIN_ARCH, "builtin", grid, 2), (SD_ARCH, None, grid, 1)])
    assert left == [(BUILTIN_ARCH, "builtin", grid, 2), (SD_ARCH, None, [grid[1]], 1)]
    assert [(c["arch"], c["overrides"]) for c in run["configs"]] == [(SD_ARCH, {}), (SD_ARCH, grid[2][0])]
    assert run["exports"] == stored["exports"] and "fine" not in run      # the fine stage: measured
    assert run["resumed_wall_s"] == 50.0 and set(run["architectures"]) == {SD_ARCH}

def test_the_fine_stage_is_costed_as_its_hand_over_and_its_steps(cpu_profile, tmp_path):
    """A run with a fine stage (the built-in preset) costs its hand-over and its steps, more with more or
    larger fine steps, and a profile measured before the fine stage was says it leaves it out."""
    from backend.cost.device import DeviceFacts
    from backend.cost.model import fine_step_settings
    from backend.engine.fine import fine_settings

    s = settings(model="builtin")                      # the preset: coarse + 5 fine steps at 32 px, its views a step
    assert s.has_fine_stage
    ours, engine = fine_step_settings(s), fine_settings(s)
    for f in (ours, engine):
        assert (f.resolution_stages[0].resolution, f.resolution_stages[0].batch_size) == \
            (s.fine_resolution, s.resolution_stages[-1].batch_size)
    assert ours.samples_per_ray == engine.samples_per_ray

    cpu = cpu_facts()
    base = estimate(s, cpu)
    coarse = estimate(s.replace(stages="coarse"), cpu)
    assert base["parts_s"]["fine"] > cpu_profile.coef("fine")["fine_handover"] > 0
    assert coarse["parts_s"]["fine"] == 0
    assert base["time_s"] - coarse["time_s"] == pytest.approx(base["parts_s"]["fine"] + base["parts_s"]["previews"]
                                                              - coarse["parts_s"]["previews"])
    more = estimate(s.replace(fine_steps=50), cpu)["parts_s"]["fine"]
    larger = estimate(s.replace(fine_resolution=96), cpu)["parts_s"]["fine"]
    assert more > base["parts_s"]["fine"] and larger > base["parts_s"]["fine"]

    h200 = DeviceFacts("cuda", "NVIDIA H200", 141 * GB, 140 * GB)
    p = Profile.load(profile_path("nvidia-h200"))
    assert "fine" in p.data["coefficients"]
    assert estimate(s, h200)["parts_s"]["fine"] > 0
    # a profile fitted before the fine stage was measured (its coefficients without "fine")
    import json

    old = {**cpu_profile.data, "coefficients": {k: v for k, v in cpu_profile.data["coefficients"].items()
                                                  if k != "fine"}}
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    legacy = estimate(s, cpu, profile_path=str(path))
    assert legacy["parts_s"]["fine"] == 0
    assert any("fine stage is not in" in n for n in legacy["notes"])


def test_sd15_only_needs_a_stored_gpu_run(tmp_path):
    """``bench cost --sd15-only`` measures SD-1.5's grid into this GPU's stored run: without one (or without a
    GPU) it stops and names the command that makes it."""
    from backend.bench.cost import main

    with pytest.raises(SystemExit, match="--no-sd15"):
        main(["--sd15-only", "--out", str(tmp_path)])


def test_a_dynamic_sampler_configuration_is_measured_on_several_fields():
    """A render the sample budget cannot hold marches the dynamic sampler, whose step follows the field (SD's
    192x1: 31-41 ms over runs): ``measure_config`` measures it on fresh fields (seeds) and keeps each number's
    median. Real short CPU runs of the built-in prior; which sampler a render takes is the renderer's own rule."""
    import statistics

    import torch

    from backend.bench.cost import QUICK_COUNTS, marches_dynamically, measure_config, settings_for
    from backend.cost.model import BUILTIN_ARCH
    from backend.engine.guidance import load_guidance
    from backend.engine.trainer import Trainer

    cpu = torch.device("cpu")
    guidance = load_guidance("builtin", cpu)
    small = settings_for(BUILTIN_ARCH, "builtin", {"resolution_schedule": "16x1", "steps": 20, "albedo_warmup_steps": 4})
    row = measure_config(guidance, small, cpu, QUICK_COUNTS, checkpoint_repeats=1, fields=3)
    assert [f["seed"] for f in row["fields"]] == [small.seed, small.seed + 1, small.seed + 2]
    for key in ("step_s_albedo", "step_s_after_warmup", "preview_s", "checkpoint_s", "peak_bytes"):
        assert row[key] == statistics.median(f[key] for f in row["fields"])
    assert len({f["step_s_after_warmup"] for f in row["fields"]}) > 1        # three timings, not one copied
    # The CPU's rows: one field each (the dynamic sampler is the CPU's every render, and its grid takes minutes).
    assert "fields" not in measure_config(guidance, small, cpu, QUICK_COUNTS, checkpoint_repeats=1)
    # The budget sampler holds a 16 px render of 64 samples a ray, not a 1024 px one of 512 samples.
    assert not marches_dynamically(Trainer(small.replace(sampling="budget"), guidance, cpu))
    big = small.replace(sampling="budget", resolution_schedule="1024x1", samples_per_ray=512)
    assert marches_dynamically(Trainer(big, guidance, cpu))
    assert marches_dynamically(Trainer(small.replace(sampling="dynamic"), guidance, cpu))


def test_the_shape_priors_configurations_are_measured_with_the_pair_inside_the_priors_passes():
    """``bench cost`` measures the shape prior's configurations in the built-in grid's own passes (one drift for
    both kinds, session 35), each with the models its run loads: the pair for a configuration with
    ``shape_model`` (the prior as its colour half, not a second copy), the prior alone (the shape prior dropped)
    for one without."""
    import torch

    from backend.bench.cost import BuiltinGuidances, PRIOR_GRID, SHAPE_GRID, settings_for
    from backend.cost.model import BUILTIN_ARCH
    from backend.engine.guidance.shape_colour import ShapeColourGuidance

    guidances = BuiltinGuidances("builtin", torch.device("cpu"))
    with_shape = settings_for(BUILTIN_ARCH, "builtin", SHAPE_GRID[0][0])
    pair = guidances.for_settings(with_shape)
    assert isinstance(pair, ShapeColourGuidance) and pair.colour is guidances.plain
    assert pair.shape is not guidances.plain and guidances.for_settings(with_shape) is pair
    assert guidances.for_settings(settings_for(BUILTIN_ARCH, "builtin", PRIOR_GRID[0][0])) is guidances.plain
    assert guidances.for_settings(with_shape) is not pair                 # dropped in between, loaded again


def test_pass_spread_is_the_step_times_spread_between_passes_by_architecture():
    """The report states how far one configuration's step time moved between the passes of its run (the error no fit
    can go under, session 36): (largest - smallest) / smallest per configuration and phase, single-pass rows left out."""
    from backend.bench.cost import pass_spread, spread_note

    def row(arch, albedo, after):
        passes = [{"step_s_albedo": a, "step_s_after_warmup": b} for a, b in zip(albedo, after)]
        return {"arch": arch, "passes": passes} if len(passes) > 1 else {"arch": arch}

    run = {"configs": [row("builtin", [0.010, 0.013], [0.020, 0.020]), row("builtin", [0.016, 0.012], [0.015, 0.030]),
                       row("sd15", [0.030], [0.040])]}
    spread = pass_spread(run)
    assert set(spread) == {"builtin"} and spread["builtin"]["n"] == 4
    assert spread["builtin"]["max_pct"] == pytest.approx(100.0)                 # 15 -> 30 ms
    assert spread["builtin"]["median_pct"] == pytest.approx((30.0 + 100 / 3) / 2)   # of 0, 30, 33.3, 100
    assert "builtin median 32% / max 100% (n=4)" in spread_note(spread)
    assert spread_note(pass_spread({"configs": [row("sd15", [0.03], [0.04])]})) == ""


@pytest.mark.parametrize("sampling", ["auto", "budget", "dynamic"])
def test_the_cost_model_knows_which_sampler_a_training_render_takes(sampling):
    """``samples_on_budget`` (torch-free, at estimate time, on the object's box) agrees with what the engine decides
    (``trainer.resolve_sampling`` and ``occupancy.budget_fits`` on a real estimator's box), across the boundary."""
    import torch

    from backend.engine.sampling_rule import samples_on_budget
    from backend.engine import occupancy
    from backend.engine.renderer import VolumeRenderer
    from backend.engine.sampling_rule import MAX_BUDGET_CANDIDATES
    from backend.engine.trainer import BOUND, resolve_sampling
    from shared.settings import GenerationSettings

    estimator = occupancy.make_estimator(BOUND, 32, torch.device("cpu"))
    seen = set()
    for spr in (32, 64, 96, 384, 512, 1024):
        s = GenerationSettings(prompt="a red cube", sampling=sampling, samples_per_ray=spr)
        step = VolumeRenderer(None, None, estimator, bound=BOUND, samples_per_ray=spr).render_step_size
        edge = MAX_BUDGET_CANDIDATES // (spr + 1)
        for rays in (48 * 48, 128 * 128, 192 * 192, 512 * 512, edge - 1, edge, edge + 1, edge + 2):
            for cuda in (False, True):
                engine = (resolve_sampling(sampling, "cuda" if cuda else "cpu") == "budget"
                          and occupancy.budget_fits(rays, step, estimator))
                assert samples_on_budget(s, rays, cuda, bound=BOUND) == engine, (spr, rays, cuda)
                seen.add(engine)
    assert seen == ({True, False} if sampling != "dynamic" else {False})


def test_first_step_set_up_is_counted_with_the_load_once_a_profile_has_it(tmp_path):
    """A fresh process pays its first step's compiles and graph captures (``bench cost``'s ``measure_setup``): a
    profile that measured them adds them to the load a CLI job pays (not a server worker's, which holds the model);
    a GPU profile from before says it does not count them."""
    from backend.cost.device import DeviceFacts

    h200 = DeviceFacts("cuda", "NVIDIA H200", 141 * GB, 140 * GB)
    data = Profile.load(profile_path("nvidia-h200")).data
    s = settings(model="/models/sd", resolution_schedule="64x1")
    paths = {}
    for name, setup in (("without", None), ("with", 40.0)):
        archs = {a: {k: v for k, v in d.items() if k != "setup_s"} for a, d in data["architectures"].items()}
        if setup is not None:
            archs["sd15"]["setup_s"] = setup
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_text(json.dumps({**data, "architectures": archs}))
    before = estimate(s, h200, profile_path=str(paths["without"]))
    after = estimate(s, h200, profile_path=str(paths["with"]))
    assert after["parts_s"]["load"] == pytest.approx(before["parts_s"]["load"] + 40.0)
    assert after["time_s"] == pytest.approx(before["time_s"] + 40.0)
    assert any("set-up" in n for n in before["notes"]) and not any("set-up" in n for n in after["notes"])
    worker = estimate(s, h200, profile_path=str(paths["with"]), include_load=False)
    assert worker["parts_s"]["load"] == 0 and worker["time_s"] == pytest.approx(after["time_s"] - after["parts_s"]["load"])
