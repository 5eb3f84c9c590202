"""``python -m bookd_client.bench``: a workload of docs/WORKLOADS.md (flash-sale or hotel)
against a node through this client, closed loop, printing what ``bookd bench`` prints
(``--json``: the same object, ``{"workload", "clients", "connections", "duration_s",
"commands", "commands_per_s", "latency_us": {"p50", "p99", "p999", "max"}, "by_op": {OP:
{"count", "ok", "refused", "p50_us", "p99_us"}}, "success": {...}, "windows": [{"t_s",
"commands", "p99_us", "max_us"}, ...], "unanswered"}``, plus ``"transport"``).

flash-sale: partition ``concert-1``, one resource ``ga`` of capacity 100 000 000; each client
holds a fresh hold id for q units (q uniform in 1..=4, ttl 600 s), then confirms it.
hotel: partitions ``hotel-0`` .. ``hotel-999``, each with resources ``rt{t}@{n}`` (room type t
in 0..=4, night n in 0..=364) of capacity 20; each client holds 1 unit of L consecutive nights
(a hotel, a room type, a first night in 0..=358, L uniform in 1..=7), and if held confirms,
then cancels it.

Clients are spread over the connections, each pinned to one (its calls gather with its
neighbours' into one frame). With ``--transport http`` the same loops run over the node's
HTTP/JSON API: their calls gather the same way into ``POST /v1/batch`` requests over keep-alive
connections (:mod:`bookd_client.httpbatch`). Every loop stops by itself at the end of the
run, once its command in flight is answered or timed out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import sys
import time
from typing import Awaitable, Callable, Dict, List, Optional, Sequence

from .client import Client, ClientConfig
from .errors import BookdError, CallTimeoutError, ErrorCode
from .httpbatch import HttpBatcher, get_json
from .types import PutResource

WORKLOADS = ("flash-sale", "hotel")
TRANSPORTS = ("binary", "http")
HOLD_TTL_MS = 600_000
FLASH_SALE_CAPACITY = 100_000_000
FLASH_SALE_QUANTITY_MAX = 4
HOTEL_PARTITIONS = 1000
HOTEL_ROOM_TYPES = 5
HOTEL_NIGHTS = 365
HOTEL_CAPACITY = 20
HOTEL_STAY_MAX = 7
OPS = ("hold", "confirm", "release", "cancel")
HOLD, CONFIRM, RELEASE, CANCEL = range(len(OPS))
_OPCODES = (2, 3, 4, 5)
#: Setup: commands per batch, batches in flight.
SETUP_BATCH = 1000
SETUP_WORKERS = 16
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
        self.ok = [0] * len(OPS)
        self.refused = [0] * len(OPS)
        self.failed = [0] * len(OPS)
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
            if op == CONFIRM:
                self.confirmed += 1
        elif status > 0:
            self.refused[op] += 1
            if op != HOLD:
                self.follow_ups_refused += 1
        else:
            self.failed[op] += 1


def partition_names(workload: str) -> List[str]:
    if workload == "flash-sale":
        return ["concert-1"]
    return [f"hotel-{index}" for index in range(HOTEL_PARTITIONS)]


def resource_names(workload: str) -> List[str]:
    """The resource ids of one partition (hotel: room type major, as the setup writes them)."""
    if workload == "flash-sale":
        return ["ga"]
    return [f"rt{index // HOTEL_NIGHTS}@{index % HOTEL_NIGHTS}"
            for index in range(HOTEL_ROOM_TYPES * HOTEL_NIGHTS)]


def capacity_of(workload: str) -> int:
    return FLASH_SALE_CAPACITY if workload == "flash-sale" else HOTEL_CAPACITY


def _str8(text: str) -> bytes:
    data = text.encode()
    return bytes([len(data)]) + data


class BinaryCodec:
    """Commands as the binary protocol encodes them (docs/protocol.md, "Commands"), from parts
    built once: a command is ``heads[op][partition] + name(hold id)``, a hold's followed by
    :meth:`hold_tail` of its items (``verb_tail`` for the others), so a loop only joins bytes.
    """

    #: The hold id goes with its length before it.
    length_prefixed = True
    verb_tail = b""

    def __init__(self, workload: str) -> None:
        partitions = partition_names(workload)
        self.resources = [_str8(name) for name in resource_names(workload)]
        self.heads = [[bytes([opcode]) + _str8(name) for name in partitions]
                      for opcode in _OPCODES]
        self.ttl_tail = b"\x01" + HOLD_TTL_MS.to_bytes(8, "little") + b"\x00"
        self.items: Dict[int, bytes] = {}

    def item(self, resource: int, quantity: int) -> bytes:
        key = resource * 16 + quantity
        item = self.items.get(key)
        if item is None:
            item = self.items[key] = self.resources[resource] + quantity.to_bytes(8, "little")
        return item

    def hold_tail(self, items: Sequence[bytes]) -> bytes:
        return bytes([len(items)]) + b"".join(items) + self.ttl_tail

    def hold(self, partition: int, hold_id: bytes, items: Sequence[bytes]) -> bytes:
        return (self.heads[HOLD][partition] + bytes([len(hold_id)]) + hold_id
                + self.hold_tail(items))

    def verb(self, op: int, partition: int, hold_id: bytes) -> bytes:
        return self.heads[op][partition] + bytes([len(hold_id)]) + hold_id


class JsonCodec:
    """Commands as elements of ``POST /v1/batch``'s ``commands`` (docs/API.md, "Batches"), from
    parts built once, as :class:`BinaryCodec` builds them. Names are of the API's characters,
    which JSON strings carry as they are."""

    length_prefixed = False
    verb_tail = b'"}'

    def __init__(self, workload: str) -> None:
        partitions = [json.dumps(name).encode() for name in partition_names(workload)]
        self.resources = [json.dumps(name).encode() for name in resource_names(workload)]
        self.heads = [[b'{"op":"' + op.encode() + b'","partition":' + name + b',"id":"'
                       for name in partitions] for op in OPS]
        self.ttl_tail = b'],"ttl_ms":%d}' % HOLD_TTL_MS
        self.items: Dict[int, bytes] = {}

    def item(self, resource: int, quantity: int) -> bytes:
        key = resource * 16 + quantity
        item = self.items.get(key)
        if item is None:
            item = self.items[key] = (b'{"resource":' + self.resources[resource]
                                      + b',"quantity":%d}' % quantity)
        return item

    def hold_tail(self, items: Sequence[bytes]) -> bytes:
        return b'","items":[' + b",".join(items) + self.ttl_tail

    def hold(self, partition: int, hold_id: bytes, items: Sequence[bytes]) -> bytes:
        return self.heads[HOLD][partition] + hold_id + self.hold_tail(items)

    def verb(self, op: int, partition: int, hold_id: bytes) -> bytes:
        return self.heads[op][partition] + hold_id + self.verb_tail


Send = Callable[[bytes], Awaitable[int]]


async def closed_client(index: int, workload: str, send: Send, codec, stats: Stats, seed: int,
                        id_prefix: str) -> None:
    """One closed-loop client of ``workload`` until the end of the run. The commands are
    joined from the codec's parts in the loop itself (a Python call per command shows)."""
    rng = SplitMix64.stream(seed, index)
    below = rng.below
    prefix = f"{id_prefix}.c{index}-".encode()
    hotel = workload == "hotel"
    prefixed = codec.length_prefixed
    hold_heads, confirm_heads, cancel_heads = (codec.heads[HOLD], codec.heads[CONFIRM],
                                               codec.heads[CANCEL])
    verb_tail, hold_tail, item = codec.verb_tail, codec.hold_tail, codec.item
    flash_tails = [b""] + [hold_tail([item(0, quantity)])
                           for quantity in range(1, FLASH_SALE_QUANTITY_MAX + 1)]
    clock = time.perf_counter
    clock_ns = time.perf_counter_ns
    end = stats.end
    record = stats.record
    sequence = 0
    while clock() < end:
        sequence += 1
        hold_id = prefix + str(sequence).encode()
        name = bytes((len(hold_id),)) + hold_id if prefixed else hold_id
        if hotel:
            partition = below(HOTEL_PARTITIONS)
            room_type = below(HOTEL_ROOM_TYPES)
            first = below(HOTEL_NIGHTS - HOTEL_STAY_MAX + 1)
            nights = 1 + below(HOTEL_STAY_MAX)
            base = room_type * HOTEL_NIGHTS + first
            tail = hold_tail([item(base + night, 1) for night in range(nights)])
        else:
            partition = 0
            tail = flash_tails[1 + below(FLASH_SALE_QUANTITY_MAX)]
        started = clock_ns()
        status = await _send(send, hold_heads[partition] + name + tail, stats)
        record(HOLD, status, started, clock())
        if status != 0:
            continue
        started = clock_ns()
        status = await _send(send, confirm_heads[partition] + name + verb_tail, stats)
        record(CONFIRM, status, started, clock())
        if status != 0 or not hotel:
            continue
        started = clock_ns()
        status = await _send(send, cancel_heads[partition] + name + verb_tail, stats)
        record(CANCEL, status, started, clock())


async def _send(send: Send, payload: bytes, stats: Stats) -> int:
    try:
        return await send(payload)
    except CallTimeoutError:
        return _TIMED_OUT
    except BookdError as error:
        if stats.first_failure is None:
            stats.first_failure = f"{type(error).__name__}: {error}"
        return _FAILED


def report(args: argparse.Namespace, stats: Stats) -> dict:
    """The ``bookd bench --json`` object, plus ``"transport"``."""
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
    name = "bookings" if args.workload == "flash-sale" else "stays_booked"
    return {
        "transport": args.transport,
        "workload": args.workload,
        "clients": args.clients,
        "connections": args.connections,
        "duration_s": round(duration, 3),
        "commands": every.total,
        "commands_per_s": per_s(every.total),
        "latency_us": {"p50": every.quantile(0.5), "p99": every.quantile(0.99),
                       "p999": every.quantile(0.999), "max": every.max},
        "by_op": by_op,
        "success": {name: stats.confirmed, f"{name}_per_s": per_s(stats.confirmed),
                    "follow_ups_refused": stats.follow_ups_refused,
                    "errors": sum(stats.failed)},
        "windows": [{"t_s": round(i * stats.interval, 3), "commands": w.total,
                     "p99_us": w.quantile(0.99), "max_us": w.max}
                    for i, w in enumerate(stats.windows)],
        "unanswered": stats.unanswered,
    }


def table(result: dict, warmup: float) -> str:
    """The report for a person."""
    over = " HTTP/JSON" if result["transport"] == "http" else ""
    name = "bookings" if result["workload"] == "flash-sale" else "stays_booked"
    lines = [
        f"bookd (python client) {result['workload']}: closed loop, {result['clients']} clients "
        f"over {result['connections']}{over} connections, {result['duration_s']:.1f} s after "
        f"{warmup:.1f} s warm-up",
        f"  commands       {result['commands']:>12}  {result['commands_per_s']:>12.0f}/s",
        f"  {name.replace('_', ' '):<14} {result['success'][name]:>12}  "
        f"{result['success'][name + '_per_s']:>12.0f}/s",
        "  latency us     p50 {p50}  p99 {p99}  p99.9 {p999}  max {max}".format(
            **result["latency_us"]),
    ]
    for op, figures in result["by_op"].items():
        lines.append(f"  {op:<14} {figures['count']:>12}  ok {figures['ok']}  refused "
                     f"{figures['refused']}  p50 {figures['p50_us']} us  p99 "
                     f"{figures['p99_us']} us")
    if result["success"]["errors"]:
        lines.append(f"  errors         {result['success']['errors']:>12}")
    if result["unanswered"]:
        lines.append(f"  unanswered     {result['unanswered']:>12}")
    return "\n".join(lines)


class BinaryTarget:
    """The node over the binary protocol, through :class:`Client`."""

    def __init__(self, client: Client, workload: str) -> None:
        self.client = client
        self.codec = BinaryCodec(workload)
        self.sent = (0, 0)

    @classmethod
    async def open(cls, args: argparse.Namespace) -> "BinaryTarget":
        config = ClientConfig(connections=args.connections, token=args.token,
                              call_timeout=args.timeout,
                              client_name="bookd-client-python-bench")
        return cls(await Client.connect(args.addr, config), args.workload)

    def send(self, index: int) -> Send:
        return self.client.pinned(index).status_encoded

    async def capacity_of(self, partition: str, resource: str) -> Optional[int]:
        try:
            return (await self.client.get_resource(partition, resource)).capacity
        except BookdError as error:
            if getattr(error, "code", None) == ErrorCode.RESOURCE_NOT_FOUND:
                return None
            raise

    async def put_all(self, commands: List[PutResource]) -> List[int]:
        return await self.client.statuses(commands)

    def mark(self) -> None:
        s = self.client.stats
        self.sent = (s.frames_sent, s.commands_sent)

    def gathering(self) -> str:
        s = self.client.stats
        frames, commands = s.frames_sent - self.sent[0], s.commands_sent - self.sent[1]
        return f"{commands / max(1, frames):.1f} commands per frame"

    async def close(self) -> None:
        await self.client.close()


class HttpTarget:
    """The node over HTTP/JSON, the calls coalesced into ``POST /v1/batch`` requests."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.addr = args.addr
        self.token = args.token
        self.timeout = args.timeout
        self.batcher = HttpBatcher(args.addr, args.connections, args.timeout, args.token)
        self.codec = JsonCodec(args.workload)
        self.sent = (0, 0)

    def send(self, index: int) -> Send:
        return self.batcher.pinned(index).status

    async def capacity_of(self, partition: str, resource: str) -> Optional[int]:
        path = f"/v1/partitions/{partition}/resources/{resource}"
        status, body = await get_json(self.addr, path, self.timeout, self.token)
        if status == 404:
            return None
        if status != 200 or not isinstance(body, dict) or not isinstance(body.get("capacity"),
                                                                          int):
            raise BookdError(f"GET {path} answered {status}: {json.dumps(body)[:200]}")
        return body["capacity"]

    async def put_all(self, commands: List[PutResource]) -> List[int]:
        status = self.batcher.status
        return list(await asyncio.gather(*(status(
            b'{"op":"put_resource","partition":' + json.dumps(c.partition).encode() + b',"id":'
            + json.dumps(c.id).encode() + b',"capacity":%d}' % c.capacity) for c in commands)))

    def mark(self) -> None:
        self.sent = (self.batcher.stats.requests, self.batcher.stats.commands)

    def gathering(self) -> str:
        stats = self.batcher.stats
        requests, commands = stats.requests - self.sent[0], stats.commands - self.sent[1]
        return f"{commands / max(1, requests):.1f} commands per POST /v1/batch"

    async def close(self) -> None:
        await self.batcher.close()


async def setup(target, workload: str) -> int:
    """Creates the workload's resources, in batches of 1 000 with 16 in flight, unless they are
    there already; how many it wrote."""
    partitions = partition_names(workload)
    resources = resource_names(workload)
    capacity = capacity_of(workload)
    total = len(partitions) * len(resources)
    last = PutResource(partitions[-1], resources[-1], capacity)
    if workload != "flash-sale" and \
            await target.capacity_of(last.partition, last.id) == capacity:
        return 0
    counter = iter(range(total - 1))

    async def worker() -> None:
        while True:
            batch = [PutResource(partitions[index // len(resources)],
                                 resources[index % len(resources)], capacity)
                     for index, _ in zip(counter, range(SETUP_BATCH))]
            if not batch:
                return
            await _check_setup(await target.put_all(batch))

    await asyncio.gather(*(worker() for _ in range(SETUP_WORKERS)))
    # The last resource last: seeing it means everything is there.
    await _check_setup(await target.put_all([last]))
    return total


async def _check_setup(statuses: List[int]) -> None:
    for status in statuses:
        if status != 0:
            raise BookdError(f"setup: put_resource refused with {ErrorCode(status).text}")


async def run(args: argparse.Namespace) -> dict:
    target = HttpTarget(args) if args.transport == "http" else await BinaryTarget.open(args)
    try:
        started = time.perf_counter()
        written = await setup(target, args.workload)
        if args.verbose:
            print(f"set up {written} resources in {time.perf_counter() - started:.1f} s",
                  file=sys.stderr)
        target.mark()
        start = time.perf_counter()
        measure_from = start + args.warmup
        stats = Stats(measure_from, measure_from + args.duration, args.interval)
        id_prefix = f"py{int(time.time() * 1000)}"
        codec = target.codec
        await asyncio.gather(*(
            closed_client(index, args.workload, target.send(index), codec, stats, args.seed,
                          id_prefix)
            for index in range(args.clients)))
        result = report(args, stats)
        if stats.first_failure:
            print(f"first failure: {stats.first_failure}", file=sys.stderr)
        if args.verbose:
            print(target.gathering(), file=sys.stderr)
        return result
    finally:
        await target.close()


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bookd_client.bench",
        description="Run a workload of docs/WORKLOADS.md against a node through the Python "
                    "client (closed loop) and report as `bookd bench` does.")
    parser.add_argument("--addr", default=None,
                        help="the node's binary address host:port (--transport binary)")
    parser.add_argument("--http-addr", default=None,
                        help="the node's HTTP address host:port (--transport http)")
    parser.add_argument("--transport", default="binary", choices=TRANSPORTS,
                        help="binary: this client; http: the same loops, their calls coalesced "
                             "into POST /v1/batch requests over keep-alive connections")
    parser.add_argument("--workload", default="flash-sale", choices=WORKLOADS)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--duration", type=parse_duration, default=20.0)
    parser.add_argument("--warmup", type=parse_duration, default=5.0)
    parser.add_argument("--interval", type=parse_duration, default=10.0)
    parser.add_argument("--timeout", type=parse_duration, default=30.0)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--token", default=None)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--verbose", action="store_true",
                        help="setup time and commands per frame (or request) on stderr")
    args = parser.parse_args(argv)
    if args.transport == "binary":
        if args.http_addr is not None:
            parser.error("--http-addr goes with --transport http")
        if args.addr is None:
            parser.error("--addr is required (the node's binary address)")
    else:
        if args.addr is not None:
            parser.error("--transport http takes the node's HTTP address as --http-addr, "
                         "not --addr")
        if args.http_addr is None:
            parser.error("--http-addr is required with --transport http")
        args.addr = args.http_addr
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
    except (BookdError, ValueError) as error:
        print(f"bench: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    print(json.dumps(result) if args.json else table(result, args.warmup))
    return 0


if __name__ == "__main__":
    sys.exit(main())
