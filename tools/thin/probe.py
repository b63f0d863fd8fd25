"""Thin-prop probe: train one prompt with the builtin preset (+ overrides), keep the field, then
(1) score the shipped export, (2) re-export at several marching-cubes levels, (3) compare the field's
rendered opacity with the ground truth's silhouette at the prior's camera.

python tools/thin/probe.py --prompt "a wooden chair" --tag chair_base [--set key=value ...] [--ckpt-only]
"""
import argparse, json, sys, time
from pathlib import Path

import numpy as np
import torch

OUT = Path("/tmp/thin")


def parse_set(items):
    out = {}
    for it in items:
        k, v = it.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def train(prompt, overrides, seed, ckpt):
    from backend.bench.quality import settings_for
    from backend.engine.trainer import prepare_generation
    s = settings_for(prompt, seed, overrides)
    run = prepare_generation(s, device="cpu")
    t0 = time.time()
    losses = run.trainer.fit()
    fit_s = time.time() - t0
    run.final_losses = {k: float(v) for k, v in losses.items()}
    run.trainer.save_checkpoint(str(ckpt))
    return run, fit_s


def load(prompt, overrides, seed, ckpt):
    from backend.bench.quality import settings_for
    from backend.engine.trainer import prepare_generation
    s = settings_for(prompt, seed, overrides)
    run = prepare_generation(s, device="cpu")
    run.trainer.load_checkpoint(str(ckpt))
    return run


def mesh_metrics(vertices, faces, prompt, seed):
    from backend.bench.metrics import LoadedMesh, evaluate_mesh
    from backend.prior.catalogue import ground_truth
    truth = ground_truth(prompt)
    m = LoadedMesh(np.asarray(vertices, np.float64), np.asarray(faces, np.int64))
    r = evaluate_mesh(m, truth.sdf, (0.5, 0.5, 0.5), period=truth.yaw_period, res=128, seed=seed, n_samples=5000)
    return {k: r[k] for k in ("iou", "iou_canonical", "volume_ratio", "chamfer", "normal_consistency")}


def silhouettes(trainer, prompt, res=64):
    """Field opacity vs truth silhouette at the prior's camera, elevation 15, 4 azimuths."""
    from backend.engine.cameras import orbit_cameras, camera_rays
    from backend.prior.catalogue import ground_truth
    from backend.prior.render import trace
    truth = ground_truth(prompt)
    cams = orbit_cameras(15.0, [0, 45, 90, 180], 1.8, 50.0)
    ro, rd = camera_rays(cams, res)
    trainer.field.eval(); trainer.estimator.eval()
    with torch.no_grad():
        op = trainer.renderer.render_image(ro, rd, shading="albedo", bg_color=torch.ones_like(ro))["opacity"][..., 0]
        hit, _, _ = trace(truth.sdf, ro.reshape(-1, 3), rd.reshape(-1, 3))
    hit = hit.reshape(op.shape).float()
    o = op.numpy(); h = hit.numpy()
    out = {"truth_px": float(h.sum()), "field_px>0.5": float((o > 0.5).sum()), "field_px>0.9": float((o > 0.9).sum()),
           "field_sum_opacity": float(o.sum()),
           "fog_px(0.1-0.9)": float(((o > 0.1) & (o < 0.9)).sum()),
           "mean_opacity_on_truth": float((o * h).sum() / max(1, h.sum())),
           "mean_opacity_off_truth": float((o * (1 - h)).sum() / max(1, (1 - h).sum())),
           "sil_iou@0.5": float(((o > 0.5) & (h > 0)).sum() / max(1, ((o > 0.5) | (h > 0)).sum()))}
    return out, o, h


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompt", required=True)
    ap.add_argument("--tag", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", nargs="*", default=[])
    ap.add_argument("--reuse", action="store_true", help="load the checkpoint instead of training")
    ap.add_argument("--levels", default="0.25,0.5,1,2,4,8")
    args = ap.parse_args()
    torch.set_num_threads(1)
    OUT.mkdir(exist_ok=True)
    overrides = parse_set(args.set)
    ckpt = OUT / f"{args.tag}.pt"
    res = {"prompt": args.prompt, "tag": args.tag, "overrides": overrides}
    if args.reuse:
        run = load(args.prompt, overrides, args.seed, ckpt)
    else:
        run, res["fit_s"] = train(args.prompt, overrides, args.seed, ckpt)
        res["final_losses"] = run.final_losses
        print("fit", res["fit_s"], res["final_losses"], flush=True)
    tr = run.trainer
    from backend.export.mesh import density_grid, auto_threshold, surface_from_grid
    tr.field.eval()
    grid = density_grid(tr.occupied_density, resolution=128)
    auto = auto_threshold(grid)
    res["auto_threshold"] = auto
    res["density_max"] = float(grid.max())
    res["density_p99"] = float(np.percentile(grid[grid > 1e-3], 99)) if (grid > 1e-3).any() else 0
    res["levels"] = {}
    for k in [float(x) for x in args.levels.split(",")]:
        lvl = auto * k
        v, f = surface_from_grid(grid, lvl)
        if len(f) == 0:
            res["levels"][f"{k}x"] = {"threshold": lvl, "empty": True}
            continue
        res["levels"][f"{k}x"] = {"threshold": lvl, **mesh_metrics(v, f, args.prompt, args.seed)}
        print(k, res["levels"][f"{k}x"], flush=True)
    from tools.thin.silhouette_level import silhouette_threshold
    lvl = silhouette_threshold(grid)
    v, f = surface_from_grid(grid, lvl)
    res["silhouette_level"] = {"threshold": lvl, "x_auto": lvl / auto,
                               **(mesh_metrics(v, f, args.prompt, args.seed) if len(f) else {"empty": True})}
    print("silhouette level", res["silhouette_level"], flush=True)
    sil, o, h = silhouettes(tr, args.prompt)
    res["silhouette"] = sil
    np.savez_compressed(OUT / f"{args.tag}_sil.npz", opacity=o, truth=h, grid=grid.astype(np.float16))
    print(json.dumps(res, indent=1))
    with open(OUT / "probe.jsonl", "a") as fh:
        fh.write(json.dumps(res) + "\n")


if __name__ == "__main__":
    main()
