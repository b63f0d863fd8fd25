"""The speed report is assembled from the section files the benchmarks write (single job,
throughput, cost estimate): ordered, joined, and honest about a missing section."""

import json

import pytest

from backend.bench.speed_report import assemble


def test_report_joins_the_sections_that_exist_in_order(tmp_path):
    (tmp_path / "cost.json").write_text(json.dumps({"table_md": "# Estimator\n\n| error |\n|---|\n| 12% |",
                                                    "held_out_error": 0.12}))
    (tmp_path / "single.json").write_text(json.dumps({"table_md": "| bound |\n|---|\n| 25.0 |", "bound": 25.0}))
    assemble(tmp_path)
    text = (tmp_path / "report.md").read_text()
    assert text.index("## Single job") < text.index("| 25.0 |") < text.index("## Cost estimate") < text.index("12%")
    assert "### Estimator" in text                       # a section's own title sits under the report's
    assert "Throughput" in text.split("## Single job")[0]   # listed as missing, before the sections
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["sections"] == ["single", "cost"]
    assert data["cost"]["held_out_error"] == 0.12 and "throughput" not in data


def test_a_section_without_its_table_is_refused_by_name(tmp_path):
    (tmp_path / "throughput.json").write_text(json.dumps({"props_per_hour": 10}))
    with pytest.raises(ValueError, match="throughput.json.*table_md"):
        assemble(tmp_path)


def _single_job_report(bound_vae: float, lever_vae: float, vae_default: str = "matmul, compiled") -> dict:
    return {"versions": {"device": "test GPU"}, "cuda_graphs": True,
            "bound": {"unet_cfg_ms": 10.4, "vae_encode_fwd_bwd_ms": bound_vae, "bound_ms": 10.4 + bound_vae,
                      "resolution": 512, "batch": 1},
            "bound_variants": {"unet_eager": 28.3, "unet_graph": 10.7, "vae_sdpa_eager": 24.7,
                               "vae_matmul_eager": 18.4, "vae_matmul_compiled": lever_vae, "vae_default": vae_default},
            "steps": [{"stage": "64x1", "albedo_ms": 27.3, "mixed_ms": 32.2, "peak_gb": 4.8, "variant": {}}]}


def test_the_bound_is_each_parts_lowest_reading_of_the_default_configuration():
    """Session 38: the same compiled VAE encoder read 15.5 ms as the bound and 12.8 ms as a lever in one run;
    the report divides by the lower (the step's 32.2 ms is 1.39x, not the 1.24x a slow reading gave)."""
    from backend.bench.speed import bound_of_record, render_report

    report = _single_job_report(bound_vae=15.5, lever_vae=12.8)
    bound = bound_of_record(report)
    assert bound["unet_cfg_ms"] == 10.4 and bound["vae_encode_fwd_bwd_ms"] == 12.8
    assert bound["bound_ms"] == pytest.approx(23.2)
    table = render_report(report)
    assert "| 23.2 | 32.2 | 1.39 |" in table and "VAE 15.5 / 12.8 ms" in table
    # a lever of another configuration is not a reading of the default's: eager SDPA stays out of it
    other = bound_of_record(_single_job_report(bound_vae=15.5, lever_vae=12.8, vae_default="sdpa, eager"))
    assert other["vae_encode_fwd_bwd_ms"] == 15.5
    # the bound's own reading stands when it is the lowest
    assert bound_of_record(_single_job_report(bound_vae=10.8, lever_vae=13.9))["bound_ms"] == pytest.approx(21.2)


def _whole_run(elapsed_s: float, complete: bool = True) -> dict:
    steps = 9999 if complete else 4999
    return {"device": "test GPU", "overrides": {}, "setup_s": 40.0, "steps_timed": steps, "elapsed_s": elapsed_s,
            "complete": complete, "ms_per_step": 1000 * elapsed_s / steps,
            "projected_10k_s": elapsed_s / steps * 9999, "peak_gb": 8.7,
            "marks": [{"step": 500, "elapsed_s": 14.0}, {"step": 1000, "elapsed_s": 30.0}],
            "estimated_steps_s": 300.0 * steps / 9999, "estimate_error": 300.0 * steps / 9999 / elapsed_s - 1}


def test_the_whole_run_section_says_whether_10k_steps_took_five_minutes_and_the_estimates_error(tmp_path):
    """The default schedule timed whole (tools/device/full_run.py) is a section of its own, after the single job's:
    its verdict against 5 minutes follows the measured time, the set-up step shown apart, and the cost model's
    estimate of the same steps beside it with its signed error."""
    from backend.bench.speed import whole_run_section

    fast, slow = whole_run_section(_whole_run(278.0))["table_md"], whole_run_section(_whole_run(330.0))["table_md"]
    assert "**4.63 min**" in fast and "**met**" in fast and "5.30 min" in fast and "+8%" in fast, fast
    assert "**5.50 min**" in slow and "**not met**" in slow and "-9%" in slow, slow
    assert "500: 28.1, 1000: 32.0" in fast     # each stretch's own ms a step (the first from step 1: 499 steps)
    partial = whole_run_section(_whole_run(150.0, complete=False))["table_md"]
    assert "stopped after 4999 steps: projected" in partial and "**5.00 min**" in partial
    (tmp_path / "single.json").write_text(json.dumps({"table_md": "| bound |\n|---|\n| 25.0 |"}))
    (tmp_path / "whole.json").write_text(json.dumps(whole_run_section(_whole_run(278.0))))
    assemble(tmp_path)
    text = (tmp_path / "report.md").read_text()
    assert text.index("## Single job") < text.index("## The default schedule timed whole") < text.index("4.63 min")
    assert json.loads((tmp_path / "report.json").read_text())["sections"] == ["single", "whole"]


def test_the_whole_run_is_set_against_a_bound_read_on_the_same_machine_after_the_warm_up():
    """With a bound read in the run's process, the section divides the steps after the albedo warm-up (marks at
    2000 and 10000) by it; without one it says so instead of borrowing another instance's bound."""
    from backend.bench.speed import whole_run_section

    run = {**_whole_run(278.0), "albedo_warmup_steps": 2000,
           "marks": [{"step": 2000, "elapsed_s": 54.0}, {"step": 10000, "elapsed_s": 278.0}]}
    assert "No bound read on this instance; steps 2000-10000 (after the albedo warm-up) 28.0 ms" in \
        whole_run_section(run)["table_md"]
    bound = {"unet_cfg_ms": 10.0, "vae_encode_fwd_bwd_ms": 12.0, "bound_ms": 22.0, "readings": [{}, {}, {}]}
    text = whole_run_section({**run, "bound": bound})["table_md"]
    assert "**22.0 ms**" in text and "28.0 ms a step = **1.27x** the bound" in text and "**met**)" in text, text
    slow = whole_run_section({**run, "bound": {**bound, "bound_ms": 20.0}})["table_md"]
    assert "**1.40x** the bound (target <= 1.3x: **not met**)" in slow, slow
