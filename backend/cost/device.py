"""Facts about the device a generation runs on (name, memory), without importing torch.

GPUs come from ``nvidia-smi`` (the server does the same to decide its workers), the CPU from
``/proc``: the server and ``generate --estimate`` answer in a fraction of a second, before any model
or torch is loaded.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import asdict, dataclass

MB = 2**20

# Peak memory bandwidth (GB/s) of common NVIDIA GPUs, from the vendors' data sheets: the scale for a
# GPU without a profile of its own (an SDS step at the default settings is bound by memory traffic:
# GroupNorm, elementwise kernels and the hash grid's gathers lead the profile in results/speed).
BANDWIDTH_GBS = {
    "nvidia-h200": 4800, "nvidia-h100-80gb-hbm3": 3350, "nvidia-h100-pcie": 2000, "nvidia-h100-nvl": 3900,
    "nvidia-a100-sxm4-80gb": 2039, "nvidia-a100-80gb-pcie": 1935, "nvidia-a100-sxm4-40gb": 1555,
    "nvidia-a100-pcie-40gb": 1555, "nvidia-l40s": 864, "nvidia-l40": 864, "nvidia-l4": 300,
    "nvidia-a10": 600, "nvidia-a10g": 600, "tesla-t4": 320, "tesla-v100-sxm2-16gb": 900,
    "tesla-v100-sxm2-32gb": 900, "nvidia-rtx-a6000": 768, "nvidia-rtx-6000-ada-generation": 960,
    "nvidia-geforce-rtx-4090": 1008, "nvidia-geforce-rtx-4080": 717, "nvidia-geforce-rtx-4070": 504,
    "nvidia-geforce-rtx-3090": 936, "nvidia-geforce-rtx-3080": 760, "nvidia-geforce-rtx-3060": 360,
    "nvidia-geforce-rtx-5090": 1792, "nvidia-geforce-rtx-5080": 960,
}


@dataclass
class DeviceFacts:
    kind: str                          # "cuda" | "cpu"
    name: str
    memory_total_bytes: int | None
    memory_free_bytes: int | None
    index: str | None = None           # CUDA device index

    @property
    def slug(self) -> str:
        return "cpu" if self.kind == "cpu" else slugify(self.name)

    @property
    def bandwidth_gbs(self) -> float | None:
        return BANDWIDTH_GBS.get(self.slug)

    def to_dict(self) -> dict:
        return {**asdict(self), "slug": self.slug}


def slugify(name: str) -> str:
    """'NVIDIA H200' -> 'nvidia-h200' (the profile file's name)."""
    return re.sub(r"[^a-z0-9]+", "-", str(name).lower()).strip("-") or "unknown"


def gpu_facts() -> list[DeviceFacts]:
    """The visible NVIDIA GPUs (``CUDA_VISIBLE_DEVICES`` respected); [] without a driver."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index,name,memory.total,memory.free",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 4 and parts[0].isdigit():
            try:
                total, free = int(float(parts[2]) * MB), int(float(parts[3]) * MB)
            except ValueError:
                total = free = None
            gpus.append(DeviceFacts("cuda", parts[1], total, free, index=parts[0]))
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        wanted = [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
        gpus = [g for d in wanted for g in gpus if g.index == d]
    return gpus


def cpu_facts() -> DeviceFacts:
    name = "CPU"
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"^model name\s*:\s*(.+)$", f.read(), re.M)
            name = m.group(1).strip() if m else name
    except OSError:
        pass
    total = free = None
    try:
        with open("/proc/meminfo") as f:
            info = {k: int(v.split()[0]) * 1024 for k, v in (line.split(":", 1) for line in f if ":" in line)}
        total, free = info.get("MemTotal"), info.get("MemAvailable")
    except (OSError, ValueError):
        pass
    return DeviceFacts("cpu", f"{name} ({os.cpu_count()} threads)", total, free)


def local_device(device: str = "auto") -> DeviceFacts:
    """The device ``generate --device DEVICE`` would run on (auto: the first GPU, else the CPU)."""
    if device == "cpu":
        return cpu_facts()
    gpus = gpu_facts()
    if device == "auto":
        return gpus[0] if gpus else cpu_facts()
    index = device.split(":", 1)[1] if ":" in device else None
    if not gpus:
        raise ValueError("device: CUDA was requested but nvidia-smi finds no GPU (use --device cpu or auto)")
    if index is None:
        return gpus[0]
    if not index.isdigit() or int(index) >= len(gpus):
        raise ValueError(f"device: {device} does not exist; this machine has cuda:0..cuda:{len(gpus) - 1}")
    return gpus[int(index)]
