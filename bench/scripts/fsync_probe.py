#!/usr/bin/env python3
"""Probe of the disk's sync latency: an 8 KiB pwrite + fdatasync in a loop for N seconds
(default 10), then p50, p99, p99.9 and max. Usage: bench/scripts/fsync_probe.py [seconds] [file]."""
import os
import sys
import time

seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
path = sys.argv[2] if len(sys.argv) > 2 else "/tmp/bookd-fsync-probe"
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
os.ftruncate(fd, 64 << 20)
latencies = []
offset = 0
end = time.time() + seconds
while time.time() < end:
    os.pwrite(fd, b"x" * 8192, offset)
    offset = (offset + 8192) % (60 << 20)
    started = time.time()
    os.fdatasync(fd)
    latencies.append(time.time() - started)
os.close(fd)
os.unlink(path)
latencies.sort()
n = len(latencies)
print(f"{n} syncs: p50 {latencies[n // 2] * 1e3:.2f} ms, p99 {latencies[int(n * .99)] * 1e3:.2f} ms, "
      f"p99.9 {latencies[int(n * .999)] * 1e3:.2f} ms, max {latencies[-1] * 1e3:.1f} ms")
