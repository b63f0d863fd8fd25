"""Time the export chain on a cheap analytic field: ``python -m backend.export.bench_export``.

Also times the live proxy mesh (a worker sends one every ``proxy_mesh_interval`` steps, so it
must stay well under a second; the tests check what it contains, this script how long it takes).

The field is a mushroom-like prop (cap, stem, ring base) with a fine ripple on its surface, so
marching cubes makes far more faces than the budget and every stage does real work.
Pass ``--out DIR`` to also write the GLB and the turntable PNG there.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from backend.export.mesh import export_field, proxy_glb
from backend.export.turntable import turntable_png

SURFACE_WIDTH = 0.01    # density rises from 0 to its plateau over about this distance


def _capsule_z(p, z0, z1, radius):
    z = p[:, 2].clamp(z0, z1)
    return torch.linalg.vector_norm(p - torch.stack([torch.zeros_like(z), torch.zeros_like(z), z], 1), dim=1) - radius


def prop_sdf(p: torch.Tensor) -> torch.Tensor:
    cap = (torch.linalg.vector_norm((p - p.new_tensor([0.0, 0.0, 0.3])) / p.new_tensor([0.6, 0.6, 0.32]), dim=1)
           - 1.0) * 0.32
    stem = _capsule_z(p, -0.7, 0.2, 0.14)
    ring = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p[:, :2], dim=1) - 0.2,
                                                 p[:, 2] + 0.72], 1), dim=1) - 0.08
    ripple = 0.006 * torch.sin(25 * p[:, 0]) * torch.sin(25 * p[:, 1]) * torch.sin(25 * p[:, 2])
    return torch.minimum(torch.minimum(cap, stem), ring) + ripple


def prop_density(p: torch.Tensor) -> torch.Tensor:
    return 100.0 * torch.sigmoid(-prop_sdf(p) / SURFACE_WIDTH)


def prop_albedo(p: torch.Tensor) -> torch.Tensor:
    spots = (torch.sin(14 * p[:, 0]) * torch.sin(14 * p[:, 1]) > 0.6).float()[:, None]
    cap = torch.lerp(p.new_tensor([0.8, 0.15, 0.1]).expand(len(p), 3), p.new_tensor([0.95, 0.95, 0.9]), spots)
    stem = p.new_tensor([0.85, 0.75, 0.55]) * (0.8 + 0.2 * (p[:, 2:] + 0.7))
    return torch.where(p[:, 2:] > 0.18, cap, stem)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--faces", type=int, default=50000)
    parser.add_argument("--texture", type=int, default=1024)
    parser.add_argument("--device", default="cpu", help="where the field runs (cpu, cuda)")
    parser.add_argument("--out", type=Path, help="folder for prop.glb and turntable.png")
    args = parser.parse_args()

    start = time.perf_counter()
    result = export_field(prop_density, prop_albedo, resolution=args.resolution, threshold=None,
                          keep_components=1, face_budget=args.faces, texture_size=args.texture,
                          vertex_colors=False, device=args.device)
    total = time.perf_counter() - start
    print(f"export {args.resolution}^3 / {args.faces} faces / {args.texture}^2 texture "
          f"(threads: {torch.get_num_threads()})")
    for stage, seconds in result.timings.items():
        print(f"  {stage:<15}{seconds:7.2f} s")
    print(f"  {'total':<15}{total:7.2f} s   -> {result.n_faces} faces, {result.n_vertices} vertices, "
          f"threshold {result.threshold:.3g}, GLB {len(result.glb) / 1e6:.1f} MB")

    start = time.perf_counter()
    png = turntable_png(result.vertices, result.faces, uvs=result.uvs, texture=result.texture)
    print(f"turntable 8 x 256^2: {time.perf_counter() - start:.2f} s")
    proxy_glb(prop_density, prop_albedo)                    # warm-up (first-call allocations)
    start = time.perf_counter()
    proxy = proxy_glb(prop_density, prop_albedo)
    print(f"proxy mesh 64^3: {time.perf_counter() - start:.2f} s ({len(proxy) / 1e3:.0f} kB)")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "prop.glb").write_bytes(result.glb)
        (args.out / "turntable.png").write_bytes(png)


if __name__ == "__main__":
    main()
