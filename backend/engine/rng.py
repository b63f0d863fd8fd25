"""One job's own random streams, so that a job draws the same numbers alone or in a group.

Several jobs stepped in one process (``backend.engine.batching``) must not share the process's
global RNG: each job's draws would then depend on how many others drew before it. Each job gets
three generators, seeded from its ``seed`` (``numpy.random.SeedSequence`` splits it into independent
streams):

- ``python``: a ``random.Random`` (the shading choice, whether the background is random),
- ``host``: a CPU ``torch.Generator`` (cameras, lights, background colours: small tensors drawn on
  the host and copied over without a sync),
- ``device``: a ``torch.Generator`` on the job's device (the SDS timestep and noise, the VAE's
  posterior sample, and inside ``global_scope`` the renderer's jitter and occupancy-grid draws).

The renderer and the occupancy grid draw from the device's *default* generator (nerfacc's kernels
take no generator), so ``global_scope`` lends them the job's ``device`` stream: it swaps the job's
state into the default generator and takes the advanced state back afterwards. Getting and setting
a generator's state is host-side bookkeeping (a CUDA generator's state is a seed and an offset), so
the swap costs no device sync. Activation checkpointing stores the default generator's state at
forward time and restores it for the recomputation, so recomputed chunks see the same jitter.
"""

from __future__ import annotations

import random
from contextlib import contextmanager

import numpy as np
import torch


def _default_generator(device: torch.device) -> torch.Generator:
    if device.type == "cuda":
        torch.cuda.init()             # fills torch.cuda.default_generators (idempotent)
        index = device.index if device.index is not None else torch.cuda.current_device()
        return torch.cuda.default_generators[index]
    return torch.default_generator


class JobRandom:
    """The random streams of one job (see the module docstring)."""

    def __init__(self, seed: int, device: torch.device | str):
        self.device_type = torch.device(device)
        python_seed, host_seed, device_seed = np.random.SeedSequence(int(seed)).generate_state(3, dtype=np.uint64)
        self.python = random.Random(int(python_seed))
        self.host = torch.Generator("cpu")
        self.host.manual_seed(int(host_seed) & (2**63 - 1))
        self.device = torch.Generator(self.device_type)
        self.device.manual_seed(int(device_seed) & (2**63 - 1))

    @contextmanager
    def global_scope(self):
        """Code inside draws from this job's ``device`` stream through the device's default generator."""
        default = _default_generator(self.device_type)
        saved = default.get_state()
        default.set_state(self.device.get_state())
        try:
            yield
        finally:
            self.device.set_state(default.get_state())
            default.set_state(saved)

    # -- checkpoints -----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"python": self.python.getstate(), "host": self.host.get_state(), "device": self.device.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.python.setstate(state["python"])
        # Generator states are CPU byte tensors whatever the generator's device (a checkpoint loaded
        # with map_location="cuda" moved them).
        self.host.set_state(state["host"].cpu())
        self.device.set_state(state["device"].cpu())
