"""Rows of the notes' table from /tmp/thin/probe.jsonl (one per probe run)."""
import json, sys
seen = {}
for line in open("/tmp/thin/probe.jsonl"):
    r = json.loads(line)
    old = seen.get(r["tag"])
    if old:                      # a --reuse run adds levels to the trained run's row
        old["levels"].update(r["levels"])
        r = {**r, "levels": old["levels"], "fit_s": old.get("fit_s", 0)}
    seen[r["tag"]] = r
for tag, r in seen.items():
    if sys.argv[1:] and tag not in sys.argv[1:]:
        continue
    L, s = r["levels"], r["silhouette"]
    a, b = L.get("1.0x", {}), L.get("2.0x", {})
    ov = " ".join(f"{k}={v}" for k, v in r["overrides"].items()) or "(preset)"
    f = lambda d, k: f"{d[k]:.3f}" if k in d else "-"
    print(f"| {r['prompt']} | {ov} | {f(a,'iou')} | {a.get('volume_ratio', 0):.2f} | {f(b,'iou')} | "
          f"{b.get('volume_ratio', 0):.2f} | {r['auto_threshold']:.2f} | {r['density_max']:.1f} | "
          f"{s['field_px>0.9']:.0f} | {s['fog_px(0.1-0.9)']:.0f} | {s['mean_opacity_on_truth']:.2f} | "
          f"{r.get('fit_s', 0):.0f} |")
