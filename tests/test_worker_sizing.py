"""How many worker processes the local pool starts on a GPU, and how many jobs each groups.

Several processes per GPU beat one process's group on an H200 (results/speed/NOTES.md, "Throughput,
processes mode": 45.9 s against 138.3 s for 16 built-in-prior props), so an unset ``--workers``
fills a GPU as far as its memory (12 GB a worker) and the cores (2 a worker) allow, and those
workers take two jobs at a time as a group where every job keeps 7 GiB of the GPU (session 30: 8
processes of 2-job groups 52.9 s against 55.9 s one job at a time), else one. ``detect_gpus`` is replaced by the GPUs a machine would report:
this machine has none.
"""

from __future__ import annotations

import pytest

from backend.server import local_pool
from backend.server.jobfiles import JobFiles
from backend.server.local_pool import LocalProcessPool, gpu_workers_per_device

GB = 1024 ** 3


@pytest.mark.parametrize("memory_gb, cores, gpus, expected", [
    (141, 16, 1, 8),       # one H200, 16 cores: memory allows 11, cores 8
    (141, 128, 8, 8),      # eight H200s, 128 cores: 8 each (the cap)
    (80, 16, 2, 4),        # two 80 GB cards on 16 cores: the cores decide
    (24, 16, 1, 2),        # a 24 GB card: the memory decides
    (12, 16, 1, 1),        # a 12 GB card: one
    (None, 16, 1, 1),      # memory unknown: one, as before
    (141, 1, 1, 1),        # never none
])
def test_workers_per_gpu_follow_memory_and_cores(memory_gb, cores, gpus, expected):
    assert gpu_workers_per_device(memory_gb * GB if memory_gb else None, cores, gpus) == expected


def _pool(tmp_path, monkeypatch, gpus, cores=16, **kw):
    monkeypatch.setattr(local_pool, "detect_gpus", lambda: gpus)
    monkeypatch.setattr(local_pool, "available_cores", lambda: cores)
    return LocalProcessPool(JobFiles(str(tmp_path)), devices="auto", **kw)


def test_an_h200_gets_eight_workers_of_two_job_groups_and_flags_still_win(tmp_path, monkeypatch):
    h200 = [{"index": "0", "name": "NVIDIA H200", "memory_bytes": 141 * GB}]
    pool = _pool(tmp_path, monkeypatch, h200)
    assert [(w.device, w.cuda_device, w.capacity) for w in pool.workers] == [("cuda", "0", 2)] * 8
    assert pool.threads_per_worker == 2
    pool = _pool(tmp_path, monkeypatch, h200, workers=1)             # --workers 1: one group of 8, as before
    assert [(w.cuda_device, w.capacity) for w in pool.workers] == [("0", 8)]
    pool = _pool(tmp_path, monkeypatch, h200, batch_jobs=3)          # --batch-jobs wins everywhere
    assert len(pool.workers) == 8 and {w.capacity for w in pool.workers} == {3}


def test_small_and_mixed_gpus_and_no_gpu(tmp_path, monkeypatch):
    mixed = [{"index": "0", "name": "big", "memory_bytes": 48 * GB},
             {"index": "1", "name": "small", "memory_bytes": 11 * GB}]
    pool = _pool(tmp_path, monkeypatch, mixed)
    assert [(w.cuda_device, w.capacity) for w in pool.workers] == [("0", 1)] * 4 + [("1", 8)]   # 6 GiB a job
    eighty = [{"index": "0", "name": "80 GB", "memory_bytes": 80 * GB}]
    pool = _pool(tmp_path, monkeypatch, eighty, cores=8)                # 4 workers: 10 GiB a job in pairs
    assert [(w.cuda_device, w.capacity) for w in pool.workers] == [("0", 2)] * 4
    pool = _pool(tmp_path, monkeypatch, [])                           # no GPU: one CPU worker
    assert [(w.device, w.capacity) for w in pool.workers] == [("cpu", 1)]


def test_workers_sharing_a_gpu_each_get_their_share_of_its_memory(tmp_path, monkeypatch):
    """The server's default memory limit per job (what ``_refuse_if_too_large`` checks against): the
    usable GPU memory split among the workers that run on it at once, not among their groups' places (a
    job joins a group only if it fits in the memory then free: ``worker.fits_beside_group``, below), so
    the 2-job groups of an H200 refuse nothing that 8 single-job workers ran (an SD job at 256x1 peaks
    at ~8.1 GB); no split for a GPU's only worker."""
    h200 = [{"index": "0", "name": "NVIDIA H200", "memory_bytes": 141 * GB}]
    assert _pool(tmp_path, monkeypatch, h200).job_memory_share(0.92) == int(141 * GB * 0.92 / 8)
    assert _pool(tmp_path, monkeypatch, h200, workers=2).job_memory_share(0.92) == int(141 * GB * 0.92 / 2)
    assert _pool(tmp_path, monkeypatch, h200, workers=1).job_memory_share(0.92) is None
    assert _pool(tmp_path, monkeypatch, []).job_memory_share(0.92) is None


def test_a_job_joins_a_running_group_only_if_it_fits_in_the_free_memory():
    from backend.server.worker import JOIN_FREE_MARGIN, fits_beside_group

    free = 10 * GB
    assert fits_beside_group(4 * GB, free)
    assert not fits_beside_group(int(free * JOIN_FREE_MARGIN) + 1, free)
    assert fits_beside_group(int(free * JOIN_FREE_MARGIN) + 1, free, cached_bytes=GB)   # this process's cache
    assert fits_beside_group(None, 0)                          # no estimate (no cost profile): it joins
