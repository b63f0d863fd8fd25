"""The farm benchmark's report (``python -m backend bench farm``): its CPU scaling table and its
one-GPU table live in one ``report.md`` but come from two runs on different machines, so writing
either must keep the other; and the GPU mode submits the built-in prior's preset as a user gets it.

No Ray here: the runs themselves are benchmarks (results/farm/README.md says how they were made).
"""

from __future__ import annotations

import json

from backend.bench.farm import prop_settings, write_gpu_report, write_markdown, write_report
from shared.presets import PRESETS


def cpu_data() -> dict:
    run = {"nodes": 1, "actors": 1, "props": 6, "steps": 100, "elapsed_s": 96.5, "props_per_hour": 224.0,
           "per_node": {"abc": 6}, "s_per_prop_mean": 15.9, "loadavg_before": 5.6, "loadavg_after": 6.3}
    return {"argv": [], "machine": "cpu-box", "cores": 2, "ray": "2.60.0", "date": "d", "throughput": [run]}


def gpu_data(ks=(1, 2), argv=None) -> dict:
    runs = []
    for k, pph in zip(ks, (213.0, 430.0, 755.0)):
        runs.append({"k": k, "gpus_per_actor": 1 / k, "props": k, "steps": 500, "devices": ["cuda"],
                     "gpu_name": "NVIDIA H200", "elapsed_s": 17.0, "props_per_hour": pph, "s_per_prop_mean": 16.7,
                     "optimise_s_mean": 12.5, "export_s_mean": 4.2, "ms_per_step_mean": 25.0, "rounds": 1,
                     "torch_peak_allocated_mib": 254.0, "smi_process_peak_mib": 1224.0, "smi_gpu_used_peak_mib": 1233.0,
                     "smi_gpu_util_mean": 11.0, "actors_ready_s": 12.0, "warmup_s": 95.0, "warmup_steps": 20})
    return {"argv": argv or ["--gpu", "1,2,4,8"], "machine": "gpu-box", "cores": 16, "ray": "2.60.0", "date": "d",
            "torch": "2.11", "cpus": 8, "runs": runs}


def test_gpu_run_keeps_the_cpu_table_and_a_cpu_run_keeps_the_gpu_table(tmp_path):
    write_report(str(tmp_path), cpu_data())
    write_gpu_report(str(tmp_path), gpu_data())
    md = (tmp_path / "report.md").read_text()
    assert "| 1 | 1 | 6 | 96.5 | 224 | 100% |" in md                  # the CPU row
    assert "| 2 | 0.5 | 2 | 17.0 | 430 | 2.02x |" in md                # the GPU row, relative to k = 1
    assert "as a user gets it (500 steps" in md

    write_report(str(tmp_path), cpu_data())                             # the CPU benchmark run again
    md = (tmp_path / "report.md").read_text()
    assert "| 2 | 0.5 | 2 | 17.0 | 430 | 2.02x |" in md
    assert json.loads((tmp_path / "gpu_report.json").read_text())["runs"][1]["k"] == 2


def test_actor_counts_asked_for_but_not_measured_are_named(tmp_path):
    write_markdown(str(tmp_path), None, gpu_data(ks=(1, 2)))
    assert "Not measured (the run ended before them): k = 4, 8." in (tmp_path / "report.md").read_text()
    write_markdown(str(tmp_path), None, gpu_data(ks=(1, 2), argv=["--gpu=1,2"]))
    assert "Not measured" not in (tmp_path / "report.md").read_text()


def test_gpu_props_are_the_builtin_preset_as_a_user_gets_it():
    s = prop_settings(3, None)
    assert {k: v for k, v in s.items() if k not in ("prompt", "model", "seed")} == PRESETS["builtin"]
    assert s["model"] == "builtin" and s["steps"] == 500
    assert prop_settings(3, 40)["steps"] == 40
