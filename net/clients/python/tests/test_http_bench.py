"""The bench's HTTP transport (bookd_client.httpbatch) and its command codecs against a fake
HTTP node on a loopback port: how calls are coalesced into ``POST /v1/batch`` requests, how
results find their callers, and how a refused request, a malformed answer or silence end the
calls it carried. Every test runs under fakenode's time bound."""

import asyncio
import json

import pytest

from bookd_client import bench
from bookd_client import protocol as p
from bookd_client.errors import CallTimeoutError, ErrorCode, NodeError, ProtocolError
from bookd_client.httpbatch import BATCH_COMMANDS_MAX, BODY_SIZE_MAX_BYTES, HttpBatcher
from bookd_client.types import Cancel, Confirm, Hold, Item
from fakenode import bounded


def echo(commands, request):
    """Each command's result is 200 ``{"id", "n"}``, but 409 for ids starting with ``bad``."""
    results = [{"status": 409, "body": {"error": "insufficient_capacity", "message": "no",
                                        "resource": "ga", "requested": 1, "available": 0}}
               if str(command["id"]).startswith("bad") else
               {"status": 200, "body": {"id": command["id"], "n": n}}
               for n, command in enumerate(commands)]
    return 200, {"results": results}, "length"


class FakeHttpNode:
    """Answers ``POST /v1/batch`` with ``answer(commands, request_number)``: ``(status, body,
    framing)``, framing ``"length"`` or ``"chunked"``, or an awaitable of it (an answer that
    comes later); ``None`` never answers. Records every request."""

    def __init__(self, answer=echo):
        self.answer = answer
        self.seen = []  # (commands, body bytes, authorization)
        self.in_flight = 0
        self.max_in_flight = 0
        self.server = None
        self.addr = ""
        self.release = None

    async def __aenter__(self):
        self.release = asyncio.Event()
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.addr = "127.0.0.1:%d" % self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc):
        self.server.close()
        self.release.set()

    async def _serve(self, reader, writer):
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                lines = head.decode("latin-1").split("\r\n")
                assert lines[0] == "POST /v1/batch HTTP/1.1", lines[0]
                headers = {}
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name:
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers["content-length"]))
                commands = json.loads(body)["commands"]
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
                self.seen.append((commands, len(body), headers.get("authorization")))
                answer = self.answer(commands, len(self.seen))
                if asyncio.iscoroutine(answer):
                    answer = await answer
                if answer is None:
                    await self.release.wait()
                    return
                status, payload, framing = answer
                data = json.dumps(payload).encode()
                if framing == "chunked":
                    pieces = [data[at:at + 7] for at in range(0, len(data), 7)]
                    out = (b"HTTP/1.1 %d X\r\ncontent-type: application/json\r\n"
                           b"transfer-encoding: chunked\r\n\r\n" % status)
                    out += b"".join(b"%x;ext=1\r\n%s\r\n" % (len(piece), piece)
                                    for piece in pieces) + b"0\r\nx-trailer: 1\r\n\r\n"
                else:
                    out = (b"HTTP/1.1 %d X\r\ncontent-type: application/json\r\n"
                           b"content-length: %d\r\n\r\n" % (status, len(data))) + data
                self.in_flight -= 1
                # In pieces, so the client reads a response over several reads.
                for at in range(0, len(out), 1000):
                    writer.write(out[at:at + 1000])
                    await writer.drain()
        finally:
            writer.close()


def hold_json(hold_id):
    return (b'{"op":"hold","partition":"concert-1","id":"' + hold_id.encode()
            + b'","items":[{"resource":"ga","quantity":2}],"ttl_ms":600000}')


def confirm_json(hold_id):
    return b'{"op":"confirm","partition":"p","id":"' + hold_id.encode() + b'"}'


@bounded
async def test_concurrent_calls_go_in_one_batch_per_connection_each_with_its_own_result():
    async with FakeHttpNode() as node:
        batcher = HttpBatcher(node.addr, 2, 30.0, token="sesame")
        try:
            ids = ["bad-37" if index == 37 else f"h-{index}" for index in range(100)]
            outcomes = await asyncio.gather(*(batcher.pinned(index).status(hold_json(ident))
                                              for index, ident in enumerate(ids)))
        finally:
            await batcher.close()
    assert [len(commands) for commands, _, _ in node.seen] == [50, 50]
    assert [auth for _, _, auth in node.seen] == ["Bearer sesame", "Bearer sesame"]
    assert node.seen[0][0][0] == {"op": "hold", "partition": "concert-1", "id": "h-0",
                                  "items": [{"resource": "ga", "quantity": 2}],
                                  "ttl_ms": 600000}
    # Connection index % 2 carried each, in order; the refused one alone is refused.
    batches = sorted((commands for commands, _, _ in node.seen),
                     key=lambda commands: commands[0]["id"] != "h-0")
    assert [batches[index % 2][index // 2]["id"] for index in range(100)] == ids
    assert outcomes == [ErrorCode.INSUFFICIENT_CAPACITY if index == 37 else 0
                        for index in range(100)]
    assert (batcher.stats.requests, batcher.stats.commands) == (2, 100)


@bounded
async def test_batches_keep_within_1000_commands_and_64_kib_one_request_in_flight():
    async with FakeHttpNode() as node:
        batcher = HttpBatcher(node.addr, 1, 30.0)
        try:
            small = await asyncio.gather(*(batcher.status(confirm_json(str(index)))
                                           for index in range(2500)))
            long = "x" * 40
            large = await asyncio.gather(*(batcher.status(hold_json(f"{long}-{index}"))
                                           for index in range(1200)))
        finally:
            await batcher.close()
    assert small == [0] * 2500 and large == [0] * 1200
    sizes = [len(commands) for commands, _, _ in node.seen]
    assert sizes[:3] == [1000, 1000, 500]
    assert all(size <= BATCH_COMMANDS_MAX for size in sizes)
    assert all(length <= BODY_SIZE_MAX_BYTES for _, length, _ in node.seen)
    assert sum(sizes[3:]) == 1200 and len(sizes[3:]) >= 2
    assert [c["id"] for commands, _, _ in node.seen[3:] for c in commands] == \
        [f"{long}-{index}" for index in range(1200)]
    assert node.max_in_flight == 1


@bounded
async def test_callers_woken_by_an_answer_send_their_next_calls_with_those_that_waited():
    first_arrived = asyncio.Event()
    release = asyncio.Event()

    async def later(commands, request):
        first_arrived.set()
        await release.wait()
        return echo(commands, request)

    def answer(commands, request):
        return later(commands, request) if request == 1 else echo(commands, request)

    async def client(batcher, name, index):
        for step in range(10):
            assert await batcher.pinned(index).status(confirm_json(f"{name}{index}-{step}")) == 0

    async with FakeHttpNode(answer) as node:
        batcher = HttpBatcher(node.addr, 1, 30.0)
        try:
            first = [asyncio.ensure_future(client(batcher, "a", index)) for index in range(25)]
            await first_arrived.wait()
            # The first group's calls are in flight while the second group's first calls queue.
            second = [asyncio.ensure_future(client(batcher, "b", index)) for index in range(25)]
            await asyncio.sleep(0)
            release.set()
            await asyncio.gather(*first, *second)
        finally:
            await batcher.close()
    # Each answer wakes its callers, whose next calls leave with those that queued meanwhile:
    # 25, then 50 at a time, then the second group's last 25.
    assert [len(commands) for commands, _, _ in node.seen] == [25] + [50] * 9 + [25]


@bounded
async def test_chunked_answers_are_read():
    async with FakeHttpNode(lambda commands, request: (200, {"results": [
            {"status": 201, "body": {"id": c["id"]}} for c in commands]}, "chunked")) as node:
        batcher = HttpBatcher(node.addr, 1, 30.0)
        try:
            for round_ in range(3):
                outcomes = await asyncio.gather(*(batcher.status(confirm_json(f"r{round_}-{i}"))
                                                  for i in range(20)))
                assert outcomes == [0] * 20
        finally:
            await batcher.close()
    assert len(node.seen) == 3


@bounded
async def test_a_request_refused_as_a_whole_or_answered_wrongly_fails_each_of_its_calls():
    def answer(commands, request):
        if request == 1:
            return 401, {"error": "unauthorized", "message": "a token is required"}, "length"
        if request == 2:
            return 200, {"results": [{"status": 200, "body": {}}] * (len(commands) - 1)}, \
                "length"
        if request == 3:
            return 200, {"results": [{"status": 200, "body": {}}, {"status": 418},
                                     {"status": 409, "body": {"error": "no_such_code"}}]}, \
                "length"
        return echo(commands, request)

    async with FakeHttpNode(answer) as node:
        batcher = HttpBatcher(node.addr, 1, 30.0)
        try:
            first = await asyncio.gather(*(batcher.status(hold_json(f"h{i}")) for i in range(3)),
                                         return_exceptions=True)
            assert all(isinstance(e, NodeError) and e.code == ErrorCode.UNAUTHORIZED
                       for e in first), first
            assert "answered 401 unauthorized: a token is required" in str(first[0])
            second = await asyncio.gather(*(batcher.status(hold_json(f"h{i}")) for i in range(3)),
                                          return_exceptions=True)
            assert all(isinstance(e, ProtocolError) for e in second), second
            assert "answered 2 results for 3 commands" in str(second[0])
            third = await asyncio.gather(*(batcher.status(hold_json(f"h{i}")) for i in range(3)),
                                         return_exceptions=True)
            assert third[0] == 0
            assert isinstance(third[1], ProtocolError) and isinstance(third[2], ProtocolError)
            # The transport goes on.
            assert await batcher.status(hold_json("after")) == 0
        finally:
            await batcher.close()


@bounded
async def test_a_request_without_an_answer_times_out_and_the_next_goes_on_a_new_connection():
    def answer(commands, request):
        return None if request == 1 else echo(commands, request)

    async with FakeHttpNode(answer) as node:
        batcher = HttpBatcher(node.addr, 1, 0.3)
        try:
            outcomes = await asyncio.gather(batcher.status(hold_json("a")),
                                            batcher.status(hold_json("b")),
                                            return_exceptions=True)
            assert all(isinstance(e, CallTimeoutError) for e in outcomes), outcomes
            assert await batcher.status(hold_json("c")) == 0
        finally:
            await batcher.close()


@bounded
async def test_calls_to_an_address_nothing_listens_on_fail_as_unavailable():
    async with FakeHttpNode() as node:
        addr = node.addr
    batcher = HttpBatcher(addr, 1, 5.0)
    try:
        outcomes = await asyncio.gather(batcher.status(hold_json("a")),
                                        batcher.status(hold_json("b")), return_exceptions=True)
    finally:
        await batcher.close()
    assert all(isinstance(e, NodeError) and e.code == ErrorCode.UNAVAILABLE
               for e in outcomes), outcomes


@pytest.mark.parametrize("workload", bench.WORKLOADS)
def test_the_codecs_write_what_the_binary_protocol_and_the_batch_api_take(workload):
    binary, api = bench.BinaryCodec(workload), bench.JsonCodec(workload)
    partitions, resources = bench.partition_names(workload), bench.resource_names(workload)
    last = len(partitions) - 1
    chosen = [0, len(resources) - 1] if workload == "hotel" else [0]
    hold = Hold(partitions[last], "run.c3-17", [Item(resources[r], 3) for r in chosen],
                ttl_ms=bench.HOLD_TTL_MS)
    expected = bytearray()
    p.encode_command(hold, expected)
    assert binary.hold(last, b"run.c3-17", [binary.item(r, 3) for r in chosen]) == expected
    for op, command in ((bench.CONFIRM, Confirm), (bench.CANCEL, Cancel)):
        expected = bytearray()
        p.encode_command(command(partitions[last], "run.c3-17"), expected)
        assert binary.verb(op, last, b"run.c3-17") == expected
    assert json.loads(api.hold(last, b"run.c3-17", [api.item(r, 3) for r in chosen])) == {
        "op": "hold", "partition": partitions[last], "id": "run.c3-17",
        "items": [{"resource": resources[r], "quantity": 3} for r in chosen],
        "ttl_ms": bench.HOLD_TTL_MS}
    assert json.loads(api.verb(bench.CANCEL, last, b"h-1")) == {
        "op": "cancel", "partition": partitions[last], "id": "h-1"}


@pytest.mark.parametrize("transport", bench.TRANSPORTS)
@pytest.mark.parametrize("workload", bench.WORKLOADS)
def test_the_loop_sends_the_workload_of_docs_workloads_over_either_codec(workload, transport):
    codec = (bench.BinaryCodec if transport == "binary" else bench.JsonCodec)(workload)

    def decode(payload):
        if transport == "binary":
            (command,) = p.decode_request(b"\x01\x00" + payload)
            items = [(i.resource, i.quantity) for i in getattr(command, "items", [])]
            return type(command).__name__.lower(), command.partition, command.id, items
        command = json.loads(payload)
        if command["op"] == "hold":
            assert command["ttl_ms"] == bench.HOLD_TTL_MS
        items = [(i["resource"], i["quantity"]) for i in command.get("items", [])]
        return command["op"], command["partition"], command["id"], items

    sent = []
    stats = bench.Stats(0.0, 1e12, 1e12)

    class Enough(Exception):
        pass

    async def send(payload):
        if len(sent) == 60:
            raise Enough
        sent.append(decode(payload))
        # Holds number 1, 6, 11, ... are refused: the loop goes on with a new hold.
        holds = sum(1 for op, *_ in sent if op == "hold")
        return ErrorCode.INSUFFICIENT_CAPACITY if sent[-1][0] == "hold" and holds % 5 == 1 else 0

    with pytest.raises(Enough):
        asyncio.run(bench.closed_client(3, workload, send, codec, stats, 42, "run"))
    steps = ["hold", "confirm", "cancel"] if workload == "hotel" else ["hold", "confirm"]
    at = 0
    holds = 0
    while at < len(sent):
        op, partition, ident, items = sent[at]
        assert op == "hold" and ident == f"run.c3-{holds + 1}", sent[at]
        holds += 1
        if workload == "flash-sale":
            assert partition == "concert-1" and len(items) == 1
            assert items[0][0] == "ga" and 1 <= items[0][1] <= 4
        else:
            assert partition.startswith("hotel-") and 0 <= int(partition[6:]) < 1000
            nights = [(r.split("@")[0], int(r.split("@")[1])) for r, _ in items]
            assert 1 <= len(nights) <= 7 and all(q == 1 for _, q in items)
            assert len({room for room, _ in nights}) == 1 and nights[0][1] <= 358
            assert [n for _, n in nights] == list(range(nights[0][1], nights[0][1] + len(nights)))
        if holds % 5 == 1:  # refused: no follow-up
            at += 1
            continue
        follow = sent[at + 1:at + len(steps)]
        assert [(o, pa, i) for o, pa, i, _ in follow] == \
            [(step, partition, ident) for step in steps[1:]][:len(follow)]
        at += len(steps)
    assert holds >= 20
    assert stats.refused[bench.HOLD] == (holds + 4) // 5
