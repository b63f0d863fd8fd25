"""Cost before submit: how long a generation takes and how much memory it needs, on a given device.

- ``model``: the cost model's form (features of the settings) and its least-squares fit;
- ``device``: what the device is (name, memory), without torch;
- ``estimate``: the estimate for settings on a device, and the refusal of settings that don't fit;
- ``profiles/<device>.json``: fitted coefficients, written by ``python -m backend bench cost``.
"""

from .device import DeviceFacts, cpu_facts, gpu_facts, local_device
from .estimate import DoesNotFit, NoProfile, check_fits, estimate

__all__ = ["DeviceFacts", "DoesNotFit", "NoProfile", "check_fits", "cpu_facts", "estimate", "gpu_facts",
           "local_device"]
