# Session 60 scratch script, kept as run: python3 THIS PROMPT [SEED] -> the built-in prior's own samples of PROMPT (prior_hull.sample_views)
# against the truth's silhouettes from the same cameras (results/quality/README.md, session 60).
# Does the built-in prior draw a cube larger than the truth? Its own DDIM samples of the prompt (prior_hull's
# sample_views: 8 compass views at elevation 15, 2 samples each), their foreground's area against the truth's
# silhouette from the same cameras.
import sys, numpy as np, torch
sys.path.insert(0, '/work/main'); torch.set_num_threads(2)
from backend.bench.quality import settings_for
from backend.engine.api import load_guidance_for
from backend.engine import prior_hull as PH
from backend.engine.cameras import camera_rays
from backend.prior.catalogue import ground_truth
prompt = sys.argv[1]
s = settings_for(prompt, 0, {}, "builtin", "cpu")
g = load_guidance_for(s, "cpu")
images, cams = PH.sample_views(g, s, seed=int(sys.argv[2]) if len(sys.argv) > 2 else 0)
size = images.shape[1]
gt = ground_truth(prompt)
origins, dirs = camera_rays(cams, size)
origins, dirs = origins.reshape(len(PH.VIEWS), -1, 3), dirs.reshape(len(PH.VIEWS), -1, 3)
d = float(cams.distance[0])
ts = torch.linspace(d - 1.8, d + 1.8, 384)
ratios = []
for i, image in enumerate(images):
    k = i // PH.SAMPLES_PER_VIEW
    pts = origins[k][:, None, :] + dirs[k][:, None, :] * ts[None, :, None]
    with torch.no_grad():
        truth = (gt.sdf(pts.reshape(-1, 3)) < 0).reshape(-1, len(ts)).any(-1).reshape(size, size).numpy()
    mask = PH.foreground(image)
    ratios.append(mask.sum() / truth.sum())
    print(f"view {PH.VIEWS[k]:3d} sample {i % PH.SAMPLES_PER_VIEW}: foreground {mask.sum():4d} px, truth {truth.sum():4d} px, ratio {ratios[-1]:.2f}")
print(prompt, "median ratio", f"{np.median(ratios):.2f}", "(the foreground is dilated one pixel: a 1-px ring adds ~", f"{4*np.sqrt(truth.sum())/truth.sum():.2f})")
