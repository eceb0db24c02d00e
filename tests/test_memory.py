"""Memory figures of the training log: the peak and the memory in use now."""

from __future__ import annotations

import numpy as np
import torch

from lorafit.train import current_memory_mb, peak_memory_mb


def test_current_memory_falls_when_memory_is_freed_and_the_peak_does_not():
    cpu = torch.device("cpu")
    before = current_memory_mb(cpu)
    block = np.ones(300 * 2**20 // 8)  # 300 MB, touched
    held = current_memory_mb(cpu)
    peak = peak_memory_mb(cpu)
    del block
    after = current_memory_mb(cpu)
    assert held - before > 250  # the block is resident while held
    assert held - after > 250  # and gone when freed (numpy's large blocks are returned at once)
    assert peak_memory_mb(cpu) >= peak >= held - 1  # the peak keeps the high mark


def test_pages_of_a_memory_mapped_file_are_not_memory_in_use(tmp_path):
    """The activation cache is memory-mapped: reading it fills the page cache (VmRSS), which
    the kernel reclaims at will; the log's memory in use must not count it."""
    path = tmp_path / "states.bin"
    np.ones(200 * 2**20 // 8).tofile(path)
    cpu = torch.device("cpu")
    before = current_memory_mb(cpu)
    mapped = np.memmap(path, dtype=np.float64, mode="r")
    assert float(mapped.sum()) == len(mapped)  # every page read
    assert current_memory_mb(cpu) - before < 50
    del mapped
