# Session 57 scratch script, kept as run (/work/main): the ground truth drawn through the export.
# NC / IoU / Chamfer of the ground truth itself drawn through the export (128^3, 20k faces): the pipeline's ceiling
import sys, json; sys.path.insert(0, "/work/main")
import torch; torch.set_num_threads(2)
from backend.export.mesh import export_field
from backend.bench.quality import score
from backend.prior.catalogue import ground_truth
from backend.prior.grammar import benchmark_prompts
res = int(sys.argv[1]); faces = int(sys.argv[2]); out = sys.argv[3]
seen = set()
for prompt in benchmark_prompts():
    t = ground_truth(prompt)
    if t.category.name in seen and t.category.name not in ():
        continue
    seen.add(t.category.name)
    r = export_field(lambda p: -t.sdf(p), t.albedo, resolution=res, threshold=0.0, keep_components=1, face_budget=faces,
                     texture_size=256, vertex_colors=False)
    m = score(r.glb, prompt, 0, views=False)
    row = {"prompt": prompt, "res": res, "faces": faces, "iou": round(m["iou"], 4), "chamfer": round(m["chamfer"], 5),
           "nc": round(m["normal_consistency"], 4), "vol": round(m["volume_ratio"], 3)}
    print(json.dumps(row), flush=True); open(out, "a").write(json.dumps(row) + "\n")
