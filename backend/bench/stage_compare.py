"""Coarse only against coarse + fine, side by side (issue 14): the numbers, their report and the
before/after turntables of ``bench quality --stages coarse,fine``.

Each job of such a run exports two meshes from one generation: the coarse stage's (the "before",
row ``stages: "coarse"``) and, continued from the same run, the fine stage's (the "after", row
``stages: "coarse,fine"``). Every comparison here is between the two rows of one job (a "pair"), so
a difference is the fine stage's alone, not another seed's luck. Per seed the fine stage must reach
``FINE_TARGETS``; the report gives per-seed, per-category and per-prompt means of both and a grid
image per seed with each prompt's coarse turntable above its fine one.
"""

from __future__ import annotations

import math
from pathlib import Path

from backend.bench.formatting import finite_mean, fmt, row_image
from shared.settings import STAGES

COARSE, FINE = STAGES          # the ``stages`` setting's values: "coarse" and "coarse,fine"

# Targets of the fine stage against the coarse stage of the same runs, per seed (issue 14): mean normal
# consistency >= 0.95, cube and pyramid volume / truth <= 1.10, mean Chamfer at least 25% lower, IoU
# and albedo error no worse (within a tolerance well under what a viewer could see; both meshes of a
# pair share their coarse run, so the difference is the fine stage's alone), and the fine stage's
# optimisation time <= 35% of the coarse stage's.
FINE_TARGETS = {"mean_normal_consistency": 0.95, "volume_ratio_cube": 1.10, "volume_ratio_pyramid": 1.10,
                "chamfer_reduction": 0.25, "iou_tolerance": 0.005, "albedo_tolerance": 0.005,
                "fine_time_ratio": 0.35}

# What is compared, in table order: (row key, column title, digits).
METRICS = (("normal_consistency", "normal consistency", 3), ("iou", "IoU", 3), ("chamfer", "Chamfer", 4),
           ("albedo_error", "albedo err", 3), ("volume_ratio", "volume / truth", 2))


def stage_of(row: dict) -> str:
    return row.get("stages", COARSE)


def final_rows(rows: list[dict]) -> list[dict]:
    """Each job's last stage (its coarse + fine row where it has one, else its coarse row), in the rows'
    order: the mesh the run hands the user, which a per-seed picture shows."""
    fine = {(r["variant"], r["prompt"], r["seed"]) for r in rows if stage_of(r) == FINE and not r.get("skipped")}
    return [r for r in rows if stage_of(r) == FINE or (r["variant"], r["prompt"], r["seed"]) not in fine]


def pairs(rows: list[dict]) -> list[tuple[dict, dict]]:
    """(coarse row, fine row) of every job that finished both, in the rows' order."""
    fine = {(r["variant"], r["prompt"], r["seed"]): r for r in rows if stage_of(r) == FINE and not r.get("skipped")}
    return [(r, fine[(r["variant"], r["prompt"], r["seed"])]) for r in rows
            if stage_of(r) == COARSE and not r.get("skipped") and (r["variant"], r["prompt"], r["seed"]) in fine]


def _paired_means(ps: list[tuple[dict, dict]], key: str) -> tuple[float, float]:
    """(coarse mean, fine mean) of ``key`` over the pairs where both have it (an empty mesh has no
    Chamfer distance or volume ratio: its pair is left out of those means, not counted as zero)."""
    def value(row):
        v = row.get(key)
        if key in ("volume_ratio", "chamfer") and row.get("empty"):
            return None
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)

    both = [(value(c), value(f)) for c, f in ps if value(c) is not None and value(f) is not None]
    return finite_mean(c for c, _ in both), finite_mean(f for _, f in both)


def compare(ps: list[tuple[dict, dict]]) -> dict:
    """The fine stage against the coarse stage over ``ps`` (one seed's pairs): means of both, the
    Chamfer reduction, the time ratio, and each target of ``FINE_TARGETS`` checked."""
    if not ps:
        return {"pairs": 0, "passed": False, "failed": ["no pairs"], "checks": {}}
    t = FINE_TARGETS
    out = {"pairs": len(ps), "coarse": {}, "fine": {}}
    for key, _, _ in METRICS:
        out["coarse"][key], out["fine"][key] = _paired_means(ps, key)
    for shape in ("cube", "pyramid"):
        of_shape = [(c, f) for c, f in ps if c.get("category") == shape]
        out["coarse"][f"volume_ratio_{shape}"], out["fine"][f"volume_ratio_{shape}"] = (
            _paired_means(of_shape, "volume_ratio") if of_shape else (float("nan"), float("nan")))
    for side, i in (("coarse", 0), ("fine", 1)):
        out[side]["empty"] = sum(bool(p[i].get("empty")) for p in ps)
        out[side]["stage_s"] = finite_mean(p[i].get("stage_s") for p in ps)
    chamfer_c, chamfer_f = out["coarse"]["chamfer"], out["fine"]["chamfer"]
    out["chamfer_reduction"] = 1.0 - chamfer_f / chamfer_c if chamfer_c and chamfer_c > 0 else float("nan")
    timed = [(c["stage_s"], f["stage_s"]) for c, f in ps if c.get("stage_s") and f.get("stage_s")]
    out["fine_time_ratio"] = (sum(f for _, f in timed) / sum(c for c, _ in timed)) if timed else float("nan")

    def check(value, ok):
        return None if value is None or (isinstance(value, float) and math.isnan(value)) else (value, ok(value))

    fine, coarse = out["fine"], out["coarse"]
    checks = {
        "mean_normal_consistency": check(fine["normal_consistency"], lambda v: v >= t["mean_normal_consistency"]),
        "volume_ratio_cube": check(fine["volume_ratio_cube"], lambda v: v <= t["volume_ratio_cube"]),
        "volume_ratio_pyramid": check(fine["volume_ratio_pyramid"], lambda v: v <= t["volume_ratio_pyramid"]),
        "chamfer_reduction": check(out["chamfer_reduction"], lambda v: v >= t["chamfer_reduction"]),
        "iou_no_worse": check(fine["iou"] - coarse["iou"], lambda v: v >= -t["iou_tolerance"]),
        "albedo_no_worse": check(fine["albedo_error"] - coarse["albedo_error"], lambda v: v <= t["albedo_tolerance"]),
        "fine_time_ratio": check(out["fine_time_ratio"], lambda v: v <= t["fine_time_ratio"]),
    }
    out["checks"] = {k: (None if v is None else {"value": float(v[0]), "passed": bool(v[1])})
                     for k, v in checks.items()}
    out["failed"] = [k for k, v in out["checks"].items() if v is not None and not v["passed"]]
    out["passed"] = not out["failed"]
    return out


def summarise(rows: list[dict]) -> dict:
    """Per seed ``compare`` and the verdict over the seeds (one variant's rows, both stages)."""
    ps = pairs(rows)
    seeds = sorted({c["seed"] for c, _ in ps})
    per_seed = {str(s): compare([p for p in ps if p[0]["seed"] == s]) for s in seeds}
    verdicts = {v["passed"] for v in per_seed.values()}
    return {"per_seed": per_seed, "by_category": grouped(ps, _category_key), "by_prompt": grouped(ps, _prompt_key),
            "verdict": ("NO PAIRS" if not verdicts else "PASS" if verdicts == {True} else "FAIL" if verdicts == {False}
                        else "MIXED")}


def _category_key(row: dict) -> str:
    return row.get("category") or row["prompt"]


def _prompt_key(row: dict) -> str:
    return row["prompt"]


def grouped(ps: list[tuple[dict, dict]], key) -> list[dict]:
    """Means of both stages per group of pairs (a category over its looks and seeds, a prompt over
    its seeds), in first-seen order."""
    groups: dict = {}
    for c, f in ps:
        groups.setdefault(key(c), []).append((c, f))
    table = []
    for name, gs in groups.items():
        entry = {"name": name, "runs": len(gs), "looks": sorted({str(c.get("look")) for c, _ in gs}),
                 "group": gs[0][0].get("group", "solid"), "coarse": {}, "fine": {}}
        for k, _, _ in METRICS:
            entry["coarse"][k], entry["fine"][k] = _paired_means(gs, k)
        entry["coarse"]["stage_s"] = finite_mean(c.get("stage_s") for c, _ in gs)
        entry["fine"]["stage_s"] = finite_mean(f.get("stage_s") for _, f in gs)
        table.append(entry)
    return table


# -- report ---------------------------------------------------------------------------------------------
def targets_line() -> str:
    t = FINE_TARGETS
    return (f"mean normal consistency >= {t['mean_normal_consistency']}, cube and pyramid volume / truth <= "
            f"{t['volume_ratio_cube']:.2f}, mean Chamfer >= {t['chamfer_reduction']:.0%} lower than coarse only, "
            f"mean IoU no worse (within {t['iou_tolerance']}) and mean albedo error no worse (within "
            f"{t['albedo_tolerance']}), fine-stage optimisation time <= {t['fine_time_ratio']:.0%} of the coarse "
            f"stage's")


def _arrow(c, f, digits) -> str:
    return f"{fmt(c, digits)} → {fmt(f, digits)}"


def markdown(summary: dict, grid_names: dict) -> list[str]:
    """The side-by-side section of one variant (``summarise``'s output); ``grid_names``: seed -> the
    before/after grid's file name."""
    lines = ["Targets per seed (each job's fine mesh against its own coarse mesh): " + targets_line() + ". "
             "Normal consistency = mean |cos| between the mesh's face normals and the true normals (SDF "
             "gradient at the nearest true-surface point), averaged over mesh -> truth and truth -> mesh "
             "(`normal_consistency_mesh`, `normal_consistency_truth` in `quality.json`); stage time = the "
             "stage's optimisation wall time in its worker (on a GPU run: GPU time, shared by the workers "
             "that run side by side), export not included.", "",
             "| seed | pairs | normal consistency | IoU | Chamfer (reduction) | albedo err | cube volume / truth | "
             "pyramid volume / truth | stage time coarse / fine (ratio) | verdict |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for seed, s in summary["per_seed"].items():
        if not s.get("pairs"):
            continue
        c, f = s["coarse"], s["fine"]
        verdict = "PASS" if s["passed"] else "FAIL (" + ", ".join(s["failed"]) + ")"
        lines.append(
            f"| {seed} | {s['pairs']} | {_arrow(c['normal_consistency'], f['normal_consistency'], 3)} | "
            f"{_arrow(c['iou'], f['iou'], 3)} | {_arrow(c['chamfer'], f['chamfer'], 4)} "
            f"({fmt(100 * s['chamfer_reduction'], 0)}%) | {_arrow(c['albedo_error'], f['albedo_error'], 3)} | "
            f"{_arrow(c['volume_ratio_cube'], f['volume_ratio_cube'], 2)} | "
            f"{_arrow(c['volume_ratio_pyramid'], f['volume_ratio_pyramid'], 2)} | "
            f"{fmt(c['stage_s'], 1)} / {fmt(f['stage_s'], 1)} s ({fmt(100 * s['fine_time_ratio'], 0)}%) | {verdict} |")
    lines += ["", f"Same verdict for every seed: **{summary['verdict']}**", ""]
    head = " | ".join(title for _, title, _ in METRICS)
    for title, key, table in (("By category (all seeds)", "category", summary["by_category"]),
                              ("By prompt (mean over seeds)", "prompt", summary["by_prompt"])):
        lines += [f"#### {title}: coarse → coarse + fine", "",
                  f"| {key} | runs | {head} | stage time coarse / fine (s) |",
                  "|---|---:|" + "---:|" * (len(METRICS) + 1)]
        for e in table:
            cells = " | ".join(_arrow(e["coarse"][k], e["fine"][k], d) for k, _, d in METRICS)
            lines.append(f"| {e['name']} | {e['runs']} | {cells} | {fmt(e['coarse']['stage_s'], 1)} / "
                         f"{fmt(e['fine']['stage_s'], 1)} |")
        lines.append("")
    if grid_names:
        lines += ["Before/after turntables (per prompt: the coarse mesh's turntable above, the same run's coarse "
                  "+ fine mesh below): " + ", ".join(f"`{n}`" for n in grid_names.values()), ""]
    return lines


# -- before/after turntables ------------------------------------------------------------------------------
GRID_VIEW = 96           # turntable view height (px) in the grid
GRID_LABEL_W = 220
GRID_PAD = 4


def grid_cell_origin(index: int, n: int, *, columns: int = 2, view_size: int = GRID_VIEW) -> tuple[int, int]:
    """Top-left pixel of pair ``index``'s cell (of ``n``) in ``before_after_grid``: cells run down the
    first column, then the next. The coarse strip is at (x + GRID_LABEL_W, y), the fine strip one view
    lower, each 8 views wide."""
    rows = math.ceil(n / columns)
    col, row = divmod(index, rows)
    return col * (GRID_LABEL_W + 8 * view_size + GRID_PAD), row * (2 * view_size + GRID_PAD)


def before_after_grid(ps: list[tuple[dict, dict]], path: Path, *, columns: int = 2, view_size: int = GRID_VIEW
                      ) -> bool:
    """One cell per pair: label (prompt, seed, each stage's normal consistency, IoU, Chamfer, volume),
    the coarse mesh's turntable strip, and below it the fine mesh's. Returns whether it wrote one."""
    from PIL import Image, ImageDraw

    if not ps:
        return False
    strip_w = 8 * view_size
    n_rows = math.ceil(len(ps) / columns)
    canvas = Image.new("RGB", (min(columns, len(ps)) * (GRID_LABEL_W + strip_w + GRID_PAD),
                               n_rows * (2 * view_size + GRID_PAD)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for i, pair in enumerate(ps):
        x, y = grid_cell_origin(i, len(ps), columns=columns, view_size=view_size)
        draw.text((x + 4, y + 4), pair[0]["prompt"], fill=(0, 0, 0))
        draw.text((x + 4, y + 18), f"seed {pair[0]['seed']}", fill=(80, 80, 80))
        for j, (row, name) in enumerate(zip(pair, ("coarse", "coarse + fine"))):
            top = y + j * view_size
            ok = (row.get("normal_consistency") or 0.0) >= FINE_TARGETS["mean_normal_consistency"]
            draw.text((x + 4, top + 38), f"{name}: normals {fmt(row.get('normal_consistency'), 3)}",
                      fill=(0, 110, 0) if ok else (200, 0, 0))
            draw.text((x + 4, top + 52), f"IoU {fmt(row.get('iou'), 2)}  Chamfer {fmt(row.get('chamfer'), 4)}",
                      fill=(0, 0, 0))
            draw.text((x + 4, top + 66), f"volume {fmt(row.get('volume_ratio'), 2)}  "
                                         f"{fmt(row.get('stage_s'), 1)} s", fill=(0, 0, 0))
            image = row_image(row, "turntable")
            if image is not None:
                canvas.paste(image.resize((strip_w, view_size), Image.LANCZOS), (x + GRID_LABEL_W, top))
    canvas.quantize(256).save(path, optimize=True)      # 256 colours: a committed run stays small
    return True
