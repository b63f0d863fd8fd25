# Session 58 scratch script, kept as run: session 55's replay script (same arguments) with keep_thin_parts' band set
# by THIN / THICK (scene units; defaults 0.03 / 0.06). Replaces the module function before the replay runs, because
# keep_thin_parts' own defaults are bound when it is defined.
# Its rows (...-silhouette-props-cpu.jsonl) were made before body_weight (commit d24728f): since then a stool keeps the automatic level.
import functools, os, runpy, sys
sys.path.insert(0, "/work/main")
import backend.engine.silhouette_level as SL
SL.keep_thin_parts = functools.partial(SL.keep_thin_parts, thin=float(os.environ.get("THIN", 0.03)),
                                       thick=float(os.environ.get("THICK", 0.06)))
runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                            "2026-12-05-session55-silhouette-level-seed1.py"), run_name="__main__")
