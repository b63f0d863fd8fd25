# Session 59 script, kept as run: python3 THIS SEED FOLDER... (quality_ab.sh / quality_seeds.sh folders unpacked from $OUT)
# -> each folder's rows of SEED beside the run of record's rows of that seed (results/quality/quality.jsonl).
"""The preset as it ships against the run of record, one seed: IoU solids / props, normal consistency, Chamfer, cube and
pyramid volume, min IoU, Chamfer reduction coarse -> fine (mean fine Chamfer over mean coarse Chamfer of the same runs),
albedo error and the fine stage's time over the coarse stage's."""
import json, sys, glob, collections
from pathlib import Path
seed = int(sys.argv[1])
record = [json.loads(l) for l in open(Path(__file__).resolve().parents[1] / "quality.jsonl")]
def split(rows):
    by = collections.defaultdict(dict)
    for r in rows:
        if r["seed"] == seed:
            by[(r.get("variant", "default"), r["stages"])][r["prompt"]] = r
    return by
def line(name, fine, coarse):
    ps = sorted(fine)
    m = lambda k, P, d=fine: sum(d[p][k] for p in P) / max(1, len(P))
    g = lambda grp: [p for p in ps if fine[p]["group"] == grp]
    cat = lambda c: [p for p in ps if fine[p]["category"] == c]
    ratio = [fine[p]["fine_ratio"] for p in ps if fine[p].get("fine_ratio")]
    print(f"{name:34s} n {len(ps)} solids {m('iou', g('solid')):.3f} props {m('iou', g('prop')):.3f} "
          f"NC {m('normal_consistency', ps):.4f} chamfer {m('chamfer', ps):.4f} "
          f"red {1 - m('chamfer', ps) / m('chamfer', ps, coarse):.1%} albedo {m('albedo_error', ps):.4f} "
          f"(coarse {m('albedo_error', ps, coarse):.4f}) cube vol {m('volume_ratio', cat('cube')):.2f} "
          f"pyr vol {m('volume_ratio', cat('pyramid')):.2f} min {min(fine[p]['iou'] for p in ps):.3f} "
          f"fine/coarse time {sorted(ratio)[len(ratio) // 2] if ratio else float('nan'):.2f}")
rec = split(record)
line(f"record seed {seed}", rec[("default", "coarse,fine")] or rec[("b4", "coarse,fine")],
     rec[("default", "coarse")] or rec[("b4", "coarse")])
for folder in sys.argv[2:]:
    rows = [json.loads(l) for f in glob.glob(folder + "/**/quality.jsonl", recursive=True) for l in open(f)]
    by = split(rows)
    for (variant, stages), fine in sorted(by.items()):
        if stages != "coarse":
            line(f"{Path(folder).name} {variant}", fine, by.get((variant, "coarse")) or by[("default", "coarse")])
