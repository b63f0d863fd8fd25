"""`python tools/device/grid_dump.py bench quality ...`: the bench, with every fine-stage export's sampled SDF grid
(before the thin-part / cavity insets) saved to $GRID_DUMP_DIR as <prompt>_<seed>.npz, so that export-time
changes can be tried on the CPU on the GPU preset's own results (session 48). float16, clipped to [-0.05, 0.15]
scene units (the thin-part inset reads depths up to 0.12, the cavity inset the outside within a cell): the export replayed from it scores as the run did (an int8 grid with
a 0.002 step did not: the cavity inset's wall finding turns on cells within 0.001 of the surface).
The patch is at the top level so the bench's spawned workers (which import this file as __mp_main__) get it."""
import os
import sys

import numpy as np

DUMP = os.environ.get("GRID_DUMP_DIR")
LO, HI = -0.05, 0.15

if DUMP:
    import backend.engine.fine as fine
    import backend.export.mesh as mesh

    _export, _export_field = fine.FineTrainer.export, mesh.export_field

    def export(self, progress=None):
        mesh._dump_name = f"{self.s.prompt.replace(' ', '_')}_{self.s.seed}"
        try:
            return _export(self, progress)
        finally:
            mesh._dump_name = None

    def export_field(*args, adjust_grid=None, **kw):
        name = getattr(mesh, "_dump_name", None)
        if name is None:                 # the coarse stage's export
            return _export_field(*args, adjust_grid=adjust_grid, **kw)

        def adjust(grid):
            os.makedirs(DUMP, exist_ok=True)
            np.savez_compressed(os.path.join(DUMP, name + ".npz"), grid=np.clip(grid, LO, HI).astype(np.float16))
            return adjust_grid(grid) if adjust_grid is not None else grid
        return _export_field(*args, adjust_grid=adjust, **kw)

    fine.FineTrainer.export = export
    mesh.export_field = export_field

if __name__ == "__main__":
    # Called, not run with runpy: this file must stay __main__, so that spawned workers import it (and patch).
    from backend.__main__ import main
    sys.exit(main(sys.argv[1:]))
