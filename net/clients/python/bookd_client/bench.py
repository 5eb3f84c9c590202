"""``python -m bookd_client.bench``: the flash-sale workload (docs/WORKLOADS.md) against a node
through this client, closed loop, printing what ``bookd bench`` prints (``--json``: the same
object, ``{"workload", "clients", "connections", "duration_s", "commands", "commands_per_s",
"latency_us": {"p50", "p99", "p999", "max"}, "by_op": {OP: {"count", "ok", "refused", "p50_us",
"p99_us"}}, "success": {...}, "windows": [{"t_s", "commands", "p99_us", "max_us"}, ...],
"unanswered"}``).

flash-sale: partition ``concert-1``, one resource ``ga`` of capacity 100 000 000; each client
holds a fresh hold id for q units (q uniform in 1..=4, ttl 600 s), then confirms it. Clients
are spread over the connections, each pinned to one (its calls gather with its neighbours'
into one frame). Every loop stops by itself at the end of the run, once its command in flight
is answered or timed out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import sys
import time
from typing import Dict, List, Optional

from .client import Client, ClientConfig
from .errors import BookdError, CallTimeoutError, ErrorCode

PARTITION = "concert-1"
RESOURCE = "ga"
CAPACITY = 100_000_000
QUANTITY_MAX = 4
HOLD_TTL_MS = 600_000
OPS = ("hold", "confirm")
_MASK = (1 << 64) - 1
_GAMMA = 0x9E3779B97F4A7C15
_TIMED_OUT = -1
_FAILED = -2


def _mix64(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


class SplitMix64:
    """The seeded generator of the workloads (the same streams as ``bookd bench``)."""

    __slots__ = ("state",)

    def __init__(self, seed: int) -> None:
        self.state = seed & _MASK

    @classmethod
    def stream(cls, seed: int, stream: int) -> "SplitMix64":
        return cls(_mix64(seed ^ _mix64((stream + _GAMMA) & _MASK)))

    def next_u64(self) -> int:
        self.state = (self.state + _GAMMA) & _MASK
        return _mix64(self.state)

    def below(self, n: int) -> int:
        return (self.next_u64() * n) >> 64


class Histogram:
    """Latencies in microseconds, to about 0.1 % (1 024 sub-buckets per power of two)."""

    __slots__ = ("counts", "total", "max")

    def __init__(self) -> None:
        self.counts: Dict[int, int] = {}
        self.total = 0
        self.max = 0

    def record(self, value: int) -> None:
        if value < 1:
            value = 1
        if value < 2048:
            key = value
        else:
            shift = value.bit_length() - 11
            key = (shift << 11) | (value >> shift)
        counts = self.counts
        counts[key] = counts.get(key, 0) + 1
        self.total += 1
        if value > self.max:
            self.max = value

    def merge(self, other: "Histogram") -> None:
        for key, count in other.counts.items():
            self.counts[key] = self.counts.get(key, 0) + count
        self.total += other.total
        self.max = max(self.max, other.max)

    @staticmethod
    def _highest(key: int) -> int:
        if key < 2048:
            return key
        shift, top = key >> 11, key & 2047
        return ((top + 1) << shift) - 1

    def quantile(self, q: float) -> int:
        """The value at quantile ``q`` (the highest value of its bucket, as HDR reports it)."""
        if not self.total:
            return 0
        wanted = max(1, math.ceil(q * self.total))
        seen = 0
        for key in sorted(self.counts):
            seen += self.counts[key]
            if seen >= wanted:
                return min(self._highest(key), self.max)
        return self.max


def parse_duration(text: str) -> float:
    """``20s``, ``500ms``, ``2m``, ``1.5s`` or ``20`` (seconds), in seconds."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|h)?\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (try 20s, 500ms or 20)")
    unit = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}[match.group(2)]
    return float(match.group(1)) * unit


class Stats:
    """What the run measured; one instance for every client (one event loop, no locks)."""

    def __init__(self, measure_from: float, end: float, interval: float) -> None:
        self.measure_from = measure_from
        self.end = end
        self.interval = interval
        self.window_count = max(1, round((end - measure_from) / interval))
        self.ops = [Histogram() for _ in OPS]
        self.ok = [0, 0]
        self.refused = [0, 0]
        self.failed = [0, 0]
        self.windows = [Histogram() for _ in range(self.window_count)]
        self.unanswered = 0
        self.confirmed = 0
        self.follow_ups_refused = 0
        self.first_failure: Optional[str] = None

    def record(self, op: int, status: int, started_ns: int, finished: float) -> None:
        micros = (time.perf_counter_ns() - started_ns) // 1000
        if status == _TIMED_OUT:
            self.unanswered += 1
        if not self.measure_from <= finished < self.end:
            return
        self.ops[op].record(micros)
        index = min(int((finished - self.measure_from) / self.interval), self.window_count - 1)
        self.windows[index].record(micros)
        if status == 0:
            self.ok[op] += 1
            if op == 1:
                self.confirmed += 1
        elif status > 0:
            self.refused[op] += 1
            if op == 1:
                self.follow_ups_refused += 1
        else:
            self.failed[op] += 1


async def flash_sale_client(index: int, client: Client, stats: Stats, seed: int,
                            id_prefix: str) -> None:
    """One closed-loop client: hold q of ``ga`` under a fresh id, then confirm it."""
    rng = SplitMix64.stream(seed, index)
    head = b"\x02" + bytes([len(PARTITION)]) + PARTITION.encode()
    confirm_head = b"\x03" + bytes([len(PARTITION)]) + PARTITION.encode()
    tails = [b""] + [b"\x01" + bytes([len(RESOURCE)]) + RESOURCE.encode()
                     + q.to_bytes(8, "little") + b"\x01" + HOLD_TTL_MS.to_bytes(8, "little")
                     + b"\x00" for q in range(1, QUANTITY_MAX + 1)]
    prefix = f"{id_prefix}.c{index}-".encode()
    send = client.status_encoded
    clock = time.perf_counter
    clock_ns = time.perf_counter_ns
    end = stats.end
    record = stats.record
    sequence = 0
    while clock() < end:
        sequence += 1
        hold_id = prefix + str(sequence).encode()
        name = bytes([len(hold_id)]) + hold_id
        quantity = 1 + rng.below(QUANTITY_MAX)
        started = clock_ns()
        status = await _send(send, head + name + tails[quantity], stats)
        record(0, status, started, clock())
        if status != 0:
            continue
        started = clock_ns()
        status = await _send(send, confirm_head + name, stats)
        record(1, status, started, clock())


async def _send(send, payload: bytes, stats: Stats) -> int:
    try:
        return await send(payload)
    except CallTimeoutError:
        return _TIMED_OUT
    except BookdError as error:
        if stats.first_failure is None:
            stats.first_failure = f"{type(error).__name__}: {error}"
        return _FAILED


def report(args: argparse.Namespace, stats: Stats) -> dict:
    """The ``bookd bench --json`` object."""
    duration = stats.end - stats.measure_from
    every = Histogram()
    by_op = {}
    for index, name in enumerate(OPS):
        histogram = stats.ops[index]
        if not histogram.total:
            continue
        every.merge(histogram)
        by_op[name] = {"count": histogram.total, "ok": stats.ok[index],
                       "refused": stats.refused[index], "p50_us": histogram.quantile(0.5),
                       "p99_us": histogram.quantile(0.99)}
    per_s = lambda count: round(count / max(duration, 1e-9), 3)  # noqa: E731
    return {
        "workload": args.workload,
        "clients": args.clients,
        "connections": args.connections,
        "duration_s": round(duration, 3),
        "commands": every.total,
        "commands_per_s": per_s(every.total),
        "latency_us": {"p50": every.quantile(0.5), "p99": every.quantile(0.99),
                       "p999": every.quantile(0.999), "max": every.max},
        "by_op": by_op,
        "success": {"bookings": stats.confirmed, "bookings_per_s": per_s(stats.confirmed),
                    "follow_ups_refused": stats.follow_ups_refused,
                    "errors": sum(stats.failed)},
        "windows": [{"t_s": round(i * stats.interval, 3), "commands": w.total,
                     "p99_us": w.quantile(0.99), "max_us": w.max}
                    for i, w in enumerate(stats.windows)],
        "unanswered": stats.unanswered,
    }


def table(result: dict, warmup: float) -> str:
    """The report for a person."""
    lines = [
        f"bookd (python client) {result['workload']}: closed loop, {result['clients']} clients "
        f"over {result['connections']} connections, {result['duration_s']:.1f} s after "
        f"{warmup:.1f} s warm-up",
        f"  commands       {result['commands']:>12}  {result['commands_per_s']:>12.0f}/s",
        f"  bookings       {result['success']['bookings']:>12}  "
        f"{result['success']['bookings_per_s']:>12.0f}/s",
        "  latency us     p50 {p50}  p99 {p99}  p99.9 {p999}  max {max}".format(
            **result["latency_us"]),
    ]
    for op, figures in result["by_op"].items():
        lines.append(f"  {op:<14} {figures['count']:>12}  ok {figures['ok']}  refused "
                     f"{figures['refused']}  p50 {figures['p50_us']} us  p99 "
                     f"{figures['p99_us']} us")
    if result["unanswered"]:
        lines.append(f"  unanswered     {result['unanswered']:>12}")
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> dict:
    config = ClientConfig(connections=args.connections, token=args.token,
                          call_timeout=args.timeout, client_name="bookd-client-python-bench")
    async with await Client.connect(args.addr, config) as client:
        resource = await client.put_resource(PARTITION, RESOURCE, CAPACITY)
        assert resource.capacity == CAPACITY
        start = time.perf_counter()
        measure_from = start + args.warmup
        stats = Stats(measure_from, measure_from + args.duration, args.interval)
        id_prefix = f"py{int(time.time() * 1000)}"
        await asyncio.gather(*(
            flash_sale_client(index, client.pinned(index), stats, args.seed, id_prefix)
            for index in range(args.clients)))
        result = report(args, stats)
        if stats.first_failure:
            print(f"first failure: {stats.first_failure}", file=sys.stderr)
        if args.verbose:
            s = client.stats
            print(f"frames {s.frames_sent}, commands {s.commands_sent}, "
                  f"{s.commands_sent / max(1, s.frames_sent):.1f} commands per frame",
                  file=sys.stderr)
        return result


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bookd_client.bench",
        description="Run a workload of docs/WORKLOADS.md against a node through the Python "
                    "client (closed loop) and report as `bookd bench` does.")
    parser.add_argument("--addr", required=True, help="the node's binary address host:port")
    parser.add_argument("--workload", default="flash-sale", choices=["flash-sale"])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--duration", type=parse_duration, default=20.0)
    parser.add_argument("--warmup", type=parse_duration, default=5.0)
    parser.add_argument("--interval", type=parse_duration, default=10.0)
    parser.add_argument("--timeout", type=parse_duration, default=30.0)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--token", default=None)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--verbose", action="store_true", help="frame statistics on stderr")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.connections < 1:
        parser.error("--clients and --connections must be at least 1")
    if args.interval <= 0:
        parser.error("--interval must be longer than zero")
    if args.duration <= 0:
        parser.error("--duration must be longer than zero")
    args.interval = min(args.interval, args.duration)
    windows = args.duration / args.interval
    if abs(windows - round(windows)) > 1e-9:
        parser.error("--duration must be a whole number of --interval windows")
    try:
        result = asyncio.run(run(args))
    except BookdError as error:
        print(f"bench: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    print(json.dumps(result) if args.json else table(result, args.warmup))
    return 0


if __name__ == "__main__":
    sys.exit(main())
