#!/usr/bin/env python3
"""Probe of the disk's sync latency: an 8 KiB pwrite + fdatasync in a loop for N seconds
(default 10), then p50, p99, p99.9 and max. With a third argument, another thread meanwhile
writes a 2 GiB file in 1 MiB pieces at that many MB/s (0: as fast as it can), as a snapshot
written in the background does: it shows what a bulk write does to the slowest sync.
Usage: bench/scripts/fsync_probe.py [seconds] [file] [background MB/s]."""
import os
import sys
import threading
import time

seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
path = sys.argv[2] if len(sys.argv) > 2 else "/tmp/bookd-fsync-probe"
background = float(sys.argv[3]) if len(sys.argv) > 3 else None


def bulk_writer(rate_mb_s, stop):
    """Writes up to 2 GiB at rate_mb_s (0: unpaced), syncing every 8 MiB, until stopped."""
    bulk = path + ".bulk"
    fd = os.open(bulk, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    piece, done, started = b"y" * (1 << 20), 0, time.time()
    while not stop.is_set() and done < (2 << 30):
        os.write(fd, piece)
        done += len(piece)
        if done % (8 << 20) == 0:
            os.fdatasync(fd)
        if rate_mb_s > 0:
            ahead = done / (rate_mb_s * 1e6) - (time.time() - started)
            if ahead > 0:
                time.sleep(ahead)
    os.close(fd)
    os.unlink(bulk)
    print(f"background: {done / 1e6 / (time.time() - started):.0f} MB/s")


stop = threading.Event()
writer = None
if background is not None:
    writer = threading.Thread(target=bulk_writer, args=(background, stop))
    writer.start()
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
stop.set()
if writer is not None:
    writer.join()
latencies.sort()
n = len(latencies)
print(f"{n} syncs: p50 {latencies[n // 2] * 1e3:.2f} ms, p99 {latencies[int(n * .99)] * 1e3:.2f} ms, "
      f"p99.9 {latencies[int(n * .999)] * 1e3:.2f} ms, max {latencies[-1] * 1e3:.1f} ms")
