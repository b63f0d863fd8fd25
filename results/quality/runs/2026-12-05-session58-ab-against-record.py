# Session 58 script, kept as run: python3 THIS /tmp/ab_default_<hash> (a quality_ab.sh folder unpacked from $OUT) -> its summary beside the run of record's seed 0.
"""Compare an A/B folder's rows (variant default + export variant no_flat_base) with the run of record's seed 0."""
import json, sys, glob, collections
rec = [json.loads(l) for l in open("/work/main/results/quality/quality.jsonl")]
rec = {r["prompt"]: r for r in rec if r["seed"] == 0 and r["stages"] != "coarse"}
recc = {r["prompt"]: r for r in [json.loads(l) for l in open("/work/main/results/quality/quality.jsonl")] if r["seed"] == 0 and r["stages"] == "coarse"}
rows = []
for f in glob.glob(sys.argv[1] + "/**/*.jsonl", recursive=True):
    rows += [json.loads(l) for l in open(f)]
by = collections.defaultdict(dict)
for r in rows:
    by[(r["variant"], r["stages"])][r["prompt"]] = r
print({k: len(v) for k, v in by.items()})
fine = [k for k in by if k[1] != "coarse"]
def summ(name, d, dc=None):
    ps = [p for p in d if p in rec]
    g = lambda grp: [p for p in ps if d[p]["group"] == grp]
    m = lambda k, P: sum(d[p][k] for p in P) / max(1, len(P))
    cube = [p for p in ps if d[p]["category"] == "cube"]; pyr = [p for p in ps if d[p]["category"] == "pyramid"]
    line = f"{name:28s} n {len(ps)} solids {m('iou', g('solid')):.3f} props {m('iou', g('prop')):.3f} NC {m('normal_consistency', ps):.4f} chamfer {m('chamfer', ps):.4f} cube vol {m('volume_ratio', cube):.2f} pyr vol {m('volume_ratio', pyr):.2f} min {min(d[p]['iou'] for p in ps):.3f}"
    if dc: line += f" chamfer red {1 - m('chamfer', ps) / m('chamfer', [p for p in ps]) if False else 1 - m('chamfer', ps) / (sum(dc[p]['chamfer'] for p in ps) / len(ps)):.1%}"
    print(line)
summ("record seed 0", rec, recc)
for k in fine:
    summ(f"{k[0]} {k[1]}", by[k], by.get((k[0], "coarse")) or by.get(("default", "coarse")))
