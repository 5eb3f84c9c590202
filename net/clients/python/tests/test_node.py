"""The client against a real node (BOOKD_BIN, see nodeutil): every command and read, each error
code the node answers, batches, pipelining, reconnects, and the change feed with its resume
across a node killed with SIGKILL. A missing binary fails these tests."""

import asyncio
import json
import time
import urllib.request

import pytest

import bookd_client as b
from bookd_client import protocol as p
from fakenode import bounded
from nodeutil import Node

P = "concert-1"


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    started = Node(tmp_path_factory.mktemp("primary")).start()
    yield started
    started.stop()


def connect(node, **settings):
    return b.connect(node.binary, **{"connections": 2, "call_timeout": 20.0, **settings})


async def wait_until(check, what, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.05)


@bounded
async def test_the_worked_example_three_seats(node):
    async with await connect(node) as client:
        assert client.hello.role == b.Role.PRIMARY and client.hello.shards >= 1
        for seat in ("A-1", "A-2", "A-3"):
            created = await client.put_resource("ex-1", seat, 1)
            assert (created.created, created.available) == (True, 1)
        held = await client.hold("ex-1", "order-1001", [("A-1", 1), ("A-2", 1)],
                                 ttl_ms=60_000, ref="cart-77")
        assert (held.status, held.existing, held.ref) == (b.HoldStatus.HELD, False, "cart-77")
        assert [(i.resource, i.quantity) for i in held.items] == [("A-1", 1), ("A-2", 1)]
        with pytest.raises(b.InsufficientCapacityError) as refused:
            await client.hold("ex-1", "order-1002", [("A-2", 1), ("A-3", 1)])
        assert refused.value.details == {"resource": "A-2", "requested": 1, "available": 0}
        assert refused.value.http_status == 409
        assert str(refused.value) == "resource A-2: requested 1, available 0"
        assert (await client.get_resource("ex-1", "A-3")).available == 1  # nothing taken
        confirmed = await client.confirm("ex-1", "order-1001")
        assert confirmed.status == b.HoldStatus.CONFIRMED
        seat = await client.get_resource("ex-1", "A-1")
        assert (seat.held, seat.confirmed, seat.available) == (0, 1, 0)


@bounded
async def test_every_command_and_read(node):
    async with await connect(node) as client:
        assert (await client.put_resource(P, "ga", 10)).created is True
        changed = await client.put_resource(P, "ga", 20)
        assert (changed.created, changed.capacity) == (False, 20)
        held = await client.hold(P, "h-1", [("ga", 2)], ttl_ms=60_000)
        again = await client.hold(P, "h-1", [("ga", 2)], ttl_ms=60_000)
        assert (again.existing, again.expires_at_ms) == (True, held.expires_at_ms)
        extended = await client.extend(P, "h-1", 120_000)
        assert extended.expires_at_ms > held.expires_at_ms
        assert (await client.get_hold(P, "h-1")).status == b.HoldStatus.HELD
        assert (await client.get_resource(P, "ga")).held == 2
        assert (await client.release(P, "h-1")).status == b.HoldStatus.RELEASED
        await client.hold(P, "h-2", [b.Item("ga", 3)])
        await client.confirm(P, "h-2")
        assert (await client.cancel(P, "h-2")).status == b.HoldStatus.CANCELLED
        resource = await client.get_resource(P, "ga")
        assert (resource.held, resource.confirmed, resource.available) == (0, 0, 20)
        for index in range(5):
            await client.put_resource("list-1", f"s-{index}", 1)
        await client.put_resource("list-1", "t-0", 1)
        page = await client.list_resources("list-1", prefix="s-", limit=2)
        assert [r.id for r in page.resources] == ["s-0", "s-1"] and page.next == "s-1"
        page = await client.list_resources("list-1", prefix="s-", after=page.next, limit=10)
        assert [r.id for r in page.resources] == ["s-2", "s-3", "s-4"] and page.next is None
        deleted = await client.delete_partition("list-1")
        assert (deleted.partition, deleted.resources, deleted.holds) == ("list-1", 6, 0)


@bounded
async def test_each_result_error_code(node):
    async with await connect(node) as client:
        await client.put_resource("err-1", "r", 5)
        with pytest.raises(b.ResourceNotFoundError) as error:
            await client.get_resource("err-1", "nope")
        assert error.value.resource == "nope" and error.value.http_status == 404
        with pytest.raises(b.ResourceNotFoundError):
            await client.hold("err-1", "h-x", [("nope", 1)])
        with pytest.raises(b.HoldNotFoundError):
            await client.get_hold("err-1", "nope")
        with pytest.raises(b.NotFoundError):
            await client.delete_partition("no-such-partition")
        with pytest.raises(b.InsufficientCapacityError):
            await client.hold("err-1", "h-big", [("r", 6)])
        await client.hold("err-1", "h-1", [("r", 1)])
        with pytest.raises(b.HoldIdConflictError):
            await client.hold("err-1", "h-1", [("r", 2)])
        with pytest.raises(b.HoldNotConfirmedError):
            await client.cancel("err-1", "h-1")
        with pytest.raises(b.CapacityBelowUsageError) as error:
            await client.put_resource("err-1", "r", 0)
        assert (error.value.capacity, error.value.used) == (0, 1)
        with pytest.raises(b.PartitionHasLiveHoldsError) as error:
            await client.delete_partition("err-1")
        assert error.value.held == 1
        await client.release("err-1", "h-1")
        with pytest.raises(b.HoldReleasedError):
            await client.confirm("err-1", "h-1")
        await client.hold("err-1", "h-2", [("r", 1)])
        await client.confirm("err-1", "h-2")
        with pytest.raises(b.HoldConfirmedError):
            await client.release("err-1", "h-2")
        await client.cancel("err-1", "h-2")
        with pytest.raises(b.HoldCancelledError):
            await client.confirm("err-1", "h-2")
        await client.hold("err-1", "h-3", [("r", 1)], ttl_ms=1)

        async def expired():
            return (await client.get_hold("err-1", "h-3")).status == b.HoldStatus.EXPIRED
        await wait_until(expired, "the hold expires")
        with pytest.raises(b.HoldExpiredError):
            await client.confirm("err-1", "h-3")
        with pytest.raises(b.InvalidError) as error:
            await client.hold("err-1", "h-4", [("r", 0)])
        assert error.value.field and error.value.http_status == 422
        with pytest.raises(b.InvalidError):
            await client.put_resource("err-1", "bad name!", 1)
        with pytest.raises(b.InvalidError):
            await client.list_resources("err-1", limit=0)


@bounded
async def test_a_batch_answers_each_command_in_order(node):
    async with await connect(node) as client:
        results = await client.execute([
            b.PutResource("batch-1", "ga", 3),
            b.Hold("batch-1", "h-1", [("ga", 2)]),
            b.Hold("batch-1", "h-2", [("ga", 2)]),
            b.Confirm("batch-1", "h-1"),
            b.GetHold("batch-1", "h-2"),
            b.GetResource("batch-1", "ga"),
            b.ListResources("batch-1"),
        ])
        assert isinstance(results[0], b.ResourceView) and results[0].created
        assert results[1].status == b.HoldStatus.HELD
        assert isinstance(results[2], b.InsufficientCapacityError)
        assert results[2].available == 1
        assert results[3].status == b.HoldStatus.CONFIRMED
        assert isinstance(results[4], b.HoldNotFoundError)
        assert (results[5].confirmed, results[5].available) == (2, 1)
        assert [r.id for r in results[6].resources] == ["ga"]
        statuses = await client.statuses([b.GetResource("batch-1", "ga"),
                                          b.GetHold("batch-1", "none")])
        assert statuses == [0, b.ErrorCode.HOLD_NOT_FOUND]
        assert await client.status(b.Confirm("batch-1", "h-1")) == 0


@bounded
async def test_pipelined_concurrent_calls_share_frames(node):
    async with await connect(node, connections=1) as client:
        await client.put_resource("pipe-1", "ga", 100_000)
        before = client.stats.frames_sent
        holds = await asyncio.gather(*(client.hold("pipe-1", f"h-{i}", [("ga", 1)])
                                       for i in range(2000)))
        assert sorted(h.id for h in holds) == sorted(f"h-{i}" for i in range(2000))
        frames = client.stats.frames_sent - before
        assert 2 <= frames <= 40, frames  # 1 000 commands a frame at most, many per frame
        assert (await client.get_resource("pipe-1", "ga")).held == 2000


@bounded
async def test_the_node_refuses_bad_frames_with_error_frames(node):
    async def handshaken():
        host, port = node.binary.rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(p.encode_frame(p.Kind.HELLO, 1, p.encode_hello(None, "raw")))
        buffer = p.FrameBuffer()
        frames = []
        while not frames:
            frames = buffer.feed(await reader.read(65536))
        assert frames[0][0] == p.Kind.HELLO_OK
        return reader, writer, buffer

    async def error_after(data):
        reader, writer, buffer = await handshaken()
        writer.write(data)
        while True:
            chunk = await reader.read(65536)
            assert chunk, "closed without an ERROR frame"
            for kind, _, payload in buffer.feed(chunk):
                assert kind == p.Kind.ERROR
                writer.close()
                return p.decode_error(payload)

    too_large = await error_after((2 << 20).to_bytes(4, "little"))
    assert isinstance(too_large, b.PayloadTooLargeError) and too_large.closed
    bad = await error_after(p.encode_frame(p.Kind.REQUEST, 5, b"\x00\x00"))
    assert isinstance(bad, b.BadRequestError) and bad.http_status == 400
    # A ref the wire carries (under 65 536 bytes) but the engine does not is `invalid`.
    async with await connect(node) as client:
        with pytest.raises(b.InvalidError) as error:
            await client.hold(P, "huge", [("ga", 1)], ref="x" * 60_000)
        assert error.value.field == "ref"


@bounded
async def test_a_wrong_token_is_unauthorized(tmp_path):
    secured = Node(tmp_path, "--token", "s3cret").start()
    try:
        with pytest.raises(b.UnauthorizedError) as error:
            await b.connect(secured.binary, token="wrong")
        assert error.value.closed and error.value.http_status == 401
        async with await b.connect(secured.binary, token="s3cret") as client:
            assert (await client.put_resource(P, "ga", 1)).created
    finally:
        secured.stop()


@bounded
async def test_memory_budget_is_storage_full(tmp_path):
    full = Node(tmp_path, "--memory-max", "1").start()
    try:
        async with await b.connect(full.binary) as client:
            with pytest.raises(b.StorageFullError) as error:
                await client.put_resource(P, "ga", 1)
            assert error.value.reason == "memory" and error.value.http_status == 507
    finally:
        full.stop()


@bounded
async def test_missing_standbys_are_replication_timeout_and_a_standby_is_read_only(tmp_path):
    primary = Node(tmp_path / "p", "--sync-standbys", "1",
                   "--replication-timeout-ms", "300").start()
    standby = None
    try:
        async with await b.connect(primary.binary) as client:
            with pytest.raises(b.ReplicationTimeoutError):
                await client.put_resource(P, "ga", 1)
        standby = Node(tmp_path / "s", "--primary", primary.binary, command="standby").start()
        async with await b.connect(standby.binary) as client:
            assert client.hello.role == b.Role.STANDBY
            with pytest.raises(b.StandbyReadOnlyError):
                await client.put_resource(P, "gb", 1)

            async def replicated():
                try:
                    return await client.get_resource(P, "ga")
                except b.ResourceNotFoundError:
                    return None
            assert (await wait_until(replicated, "the standby has ga")).capacity == 1
    finally:
        if standby is not None:
            standby.stop()
        primary.stop()


@bounded
async def test_an_old_cursor_is_cursor_expired(tmp_path):
    node = Node(tmp_path, "--feed-retention", "0s", "--shards", "1",
                "--segment-size", "4KiB").start()
    try:
        listing = json.load(urllib.request.urlopen(
            f"http://{node.http}/v1/partitions/{P}/resources"))
        async with await b.connect(node.binary) as client:
            for round_ in range(2):
                await client.execute([b.PutResource(P, f"r{round_}-{i}", 1)
                                      for i in range(300)])
                urllib.request.urlopen(urllib.request.Request(
                    f"http://{node.http}/admin/checkpoint", method="POST")).read()
            async with client.subscribe(cursor=listing["cursor"]) as feed:
                with pytest.raises(b.CursorExpiredError) as error:
                    await feed.__anext__()
                assert error.value.oldest and error.value.http_status == 410
    finally:
        node.stop()


@bounded
async def test_calls_and_the_feed_resume_after_the_node_is_killed(tmp_path):
    node = Node(tmp_path).start()
    try:
        async with await b.connect(node.binary, connections=1, retries=5,
                                   backoff_max=0.5) as client:
            listing = json.load(urllib.request.urlopen(
                f"http://{node.http}/v1/partitions/feed-1/resources"))
            feed = client.subscribe(cursor=listing["cursor"], partition="feed-1",
                                    backoff_max=0.2)
            for index in range(5):
                await client.put_resource("feed-1", f"r{index}", index + 1)
            seen = [(await feed.__anext__()) for _ in range(5)]
            assert [c.resources[0].id for c in seen] == [f"r{i}" for i in range(5)]
            assert all(c.op == b.ChangeOp.PUT_RESOURCE for c in seen)
            node.restart()  # SIGKILL, then the same ports and data
            for index in range(5, 8):
                await client.put_resource("feed-1", f"r{index}", 1)  # reconnects
            await client.hold("feed-1", "h-1", [("r0", 1)], ref="cart")
            more = [(await feed.__anext__()) for _ in range(4)]
            # Exactly the changes after the last one handed out: no gap, no repeat.
            assert [c.resources[0].id for c in more[:3]] == ["r5", "r6", "r7"]
            assert (more[3].op, more[3].hold.id, more[3].hold.ref) == (b.ChangeOp.HOLD,
                                                                       "h-1", "cart")
            assert more[3].resources[0].held == 1
            assert feed.connects == 2 and client.stats.connects >= 2
            assert feed.cursor == more[3].cursor
            await feed.close()
    finally:
        node.stop()


def run_bench(*args):
    import subprocess
    import sys

    from conftest import PACKAGE_DIR
    return subprocess.run([sys.executable, "-m", "bookd_client.bench", *args], cwd=PACKAGE_DIR,
                          capture_output=True, text=True, timeout=60)


def test_the_bench_prints_the_bookd_bench_json_object(node):
    run = run_bench("--addr", node.binary, "--workload", "flash-sale", "--clients", "8",
                    "--connections", "2", "--duration", "1s", "--warmup", "200ms",
                    "--interval", "500ms", "--json")
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert set(report) == {"transport", "workload", "clients", "connections", "duration_s",
                           "commands", "commands_per_s", "latency_us", "by_op", "success",
                           "windows", "unanswered"}
    assert report["transport"] == "binary"
    assert (report["workload"], report["clients"], report["connections"]) == ("flash-sale", 8, 2)
    assert report["commands"] > 0 and report["unanswered"] == 0
    assert set(report["by_op"]) == {"hold", "confirm"}
    assert report["by_op"]["hold"]["count"] + report["by_op"]["confirm"]["count"] == \
        report["commands"]
    assert report["success"]["bookings"] == report["by_op"]["confirm"]["ok"]
    assert report["success"]["errors"] == 0
    assert [w["t_s"] for w in report["windows"]] == [0.0, 0.5]
    assert sum(w["commands"] for w in report["windows"]) == report["commands"]
    latency = report["latency_us"]
    assert 0 < latency["p50"] <= latency["p99"] <= latency["p999"] <= latency["max"]


def test_the_bench_runs_the_same_loops_over_http_json_batches(tmp_path):
    node = Node(tmp_path / "bench-http", "--token", "bench-token").start()
    try:
        run = run_bench("--transport", "http", "--http-addr", node.http, "--token", "bench-token",
                        "--workload", "flash-sale", "--clients", "16", "--connections", "2",
                        "--duration", "1s", "--warmup", "200ms", "--json")
        assert run.returncode == 0, run.stderr
        report = json.loads(run.stdout)
        assert report["transport"] == "http"
        assert (report["workload"], report["clients"], report["connections"]) == \
            ("flash-sale", 16, 2)
        assert set(report["by_op"]) == {"hold", "confirm"}
        assert report["commands"] > 0 and report["by_op"]["hold"]["ok"] > 0
        assert report["by_op"]["hold"]["count"] + report["by_op"]["confirm"]["count"] == \
            report["commands"]
        assert report["success"]["bookings"] == report["by_op"]["confirm"]["ok"] > 0
        assert (report["success"]["errors"], report["success"]["follow_ups_refused"],
                report["unanswered"]) == (0, 0, 0)
        request = urllib.request.Request(f"http://{node.http}/v1/partitions/{P}/resources/ga",
                                         headers={"Authorization": "Bearer bench-token"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.load(response)["confirmed"] >= report["success"]["bookings"]
        # Without the token the node refuses every batch, and the bench says so.
        refused = run_bench("--transport", "http", "--http-addr", node.http, "--clients", "2",
                            "--connections", "1", "--duration", "200ms", "--warmup", "0s")
        assert refused.returncode == 1 and "401 unauthorized" in refused.stderr, refused
    finally:
        node.stop()
