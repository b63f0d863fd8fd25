"""A fine step's cost against a coarse step's, on a loaded machine: after ``tune_fine.py coarse "a red
cube"``, the cached coarse run and fine stages at the given resolutions take 8 steps each in turn,
3 rounds, in one process (so other jobs' load falls on both alike); prints each one's time / the
coarse time.  ``python tools/fine/step_cost.py 32 64``"""
import os
import sys, time, json, torch
torch.set_num_threads(1)
from backend.bench import quality as q
from backend.engine.api import load_guidance_for
from backend.engine.trainer import Trainer
from backend.engine.fine import FineTrainer
prompt = "a red cube"
res = [int(r) for r in sys.argv[1:]] or [32, 64]
s = q.settings_for(prompt, 0, {"stages": "coarse"}, "builtin")
g = load_guidance_for(s, "cpu")
c = Trainer(s, g, torch.device("cpu")); c.load_checkpoint(os.path.join(os.environ.get("FINE_TUNE_DIR", "/tmp/ft"), "cache", f"{q._slug(prompt)}.pt"))
c.step = 400
fines = {}
for r in res:
    fs = q.settings_for(prompt, 0, {"stages": "coarse,fine", "fine_resolution": r}, "builtin")
    f = FineTrainer(fs, g, torch.device("cpu")); f.init_from_coarse(c); fines[r] = f
times = {"coarse": 0.0, **{r: 0.0 for r in res}}
for rep in range(3):
    t = time.perf_counter()
    for _ in range(8): c.train_step()
    times["coarse"] += time.perf_counter() - t
    for r, f in fines.items():
        t = time.perf_counter()
        for _ in range(8): f.train_step()
        times[r] += time.perf_counter() - t
print({k: v / times["coarse"] for k, v in times.items()}, times)
