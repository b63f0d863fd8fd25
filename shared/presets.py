"""Named groups of settings: quality presets for the add-on and a CPU demo preset for the CLI.

Kept next to the settings schema so the CLI (--preset) and the Blender panel (quality preset)
mean the same thing by the same name. Values are validated by GenerationSettings like any input.
"""

from __future__ import annotations

PRESETS: dict[str, dict] = {
    # A few minutes on a GPU: a quick look at the shape.
    "draft": {"steps": 2000, "resolution_schedule": "64x1", "albedo_warmup_steps": 400,
              "mesh_resolution": 128, "texture_size": 512},
    # threestudio's dreamfusion-sd budget.
    "standard": {"steps": 10000, "resolution_schedule": "64x1", "albedo_warmup_steps": 2000},
    # Finer renders late in the run (the 512^2-class memory regime is what the GPU issue targets).
    "high": {"steps": 10000, "resolution_schedule": "64x1,128x1@5000,256x1@8000", "albedo_warmup_steps": 2000,
             "mesh_resolution": 384, "texture_size": 2048},
    # Minutes on a 2-core CPU with the built-in prior.
    "cpu-demo": {"steps": 300, "resolution_schedule": "32x2", "samples_per_ray": 64, "hash_log2_size": 16,
                 "albedo_warmup_steps": 100, "preview_interval": 25, "checkpoint_interval": 0,
                 "mesh_resolution": 128, "texture_size": 512, "face_budget": 20000},
}

QUALITY_PRESETS = ("draft", "standard", "high")


def preset_settings(name: str) -> dict:
    if name not in PRESETS:
        raise KeyError(f"preset must be one of {', '.join(PRESETS)}, got {name!r}")
    return dict(PRESETS[name])
