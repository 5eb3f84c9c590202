#!/usr/bin/env python3
"""Probe of the cost of first touching memory: maps N GiB of anonymous memory (default 4) and
writes one byte a page, timing it, twice. On bare metal the kernel zeroes a fresh page at several
GB/s; a VM whose host takes back freed memory pays a host fault per page too, and recovery (which
builds the whole state in fresh memory) pays the same per byte of state.
Usage: bench/scripts/memory_probe.py [GiB]."""
import mmap
import sys
import time

gib = float(sys.argv[1]) if len(sys.argv) > 1 else 4.0
size = int(gib * (1 << 30))
for attempt in (1, 2):
    region = mmap.mmap(-1, size)
    started = time.time()
    for offset in range(0, size, 4096):
        region[offset] = 1
    elapsed = time.time() - started
    region.close()
    print(f"first touch of {gib:g} GiB, attempt {attempt}: {elapsed:.2f} s ({gib / elapsed:.2f} GiB/s)")
