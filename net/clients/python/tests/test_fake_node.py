"""The client against a fake node that misbehaves: truncated frames, garbage, unknown kinds
and codes, oversized frames, wrong counts and ids, silence. Each raises a clear error and none
hangs the caller (every test is bounded by fakenode.TEST_TIMEOUT_S)."""

import asyncio

import pytest

import bookd_client as b
from bookd_client import protocol as p
from bookd_client.types import HelloOk, HoldStatus, HoldView, Item, ResourceView, Role
from fakenode import HELLO_OK, FakeNode, bounded

FAST = dict(connections=1, connect_timeout=2.0, call_timeout=5.0, backoff_initial=0.01,
            backoff_max=0.05)


def resource(ident="ga", held=0):
    return ResourceView("concert-1", ident, 10, held, 0)


async def answer_with(peer, respond):
    """Handshake, then ``respond(peer, request_id, commands)`` for every REQUEST."""
    await peer.handshake()
    while True:
        frame = await peer.frame()
        if frame is None:
            return
        kind, request_id, payload = frame
        if kind == p.Kind.REQUEST:
            await respond(peer, request_id, p.decode_request(payload))


async def correct(peer, request_id, commands):
    peer.send_frame(p.Kind.RESPONSE, request_id,
                    p.encode_response(resource(c.id) for c in commands))


@bounded
async def test_a_well_behaved_fake_answers_each_call():
    async with FakeNode(lambda peer: answer_with(peer, correct)) as node:
        async with await b.connect(node.addr, **FAST) as client:
            assert (await client.get_resource("concert-1", "x")).id == "x"
            assert client.hello == HELLO_OK
            assert node.peers[0].hello == (b"", "bookd-client-python", None)


@bounded
async def test_concurrent_calls_are_batched_into_frames_and_matched_by_position():
    frames = []

    async def respond(peer, request_id, commands):
        frames.append(len(commands))
        peer.send_frame(p.Kind.RESPONSE, request_id,
                        p.encode_response(resource(c.id) for c in commands))

    async with FakeNode(lambda peer: answer_with(peer, respond)) as node:
        async with await b.connect(node.addr, **FAST) as client:
            ids = [f"r{i}" for i in range(300)]
            results = await asyncio.gather(*(client.get_resource("concert-1", i) for i in ids))
            assert [r.id for r in results] == ids
    assert sum(frames) == 300
    assert len(frames) <= 3, frames  # gathered, not one frame per call


@bounded
async def test_responses_out_of_order_reach_their_callers():
    async def respond(peer, request_id, commands):
        peer.pending = getattr(peer, "pending", []) + [(request_id, commands)]
        if len(peer.pending) == 2:  # answer the second request first
            for rid, cmds in reversed(peer.pending):
                peer.send_frame(p.Kind.RESPONSE, rid,
                                p.encode_response(resource(c.id) for c in cmds))
            peer.pending = []

    async with FakeNode(lambda peer: answer_with(peer, respond)) as node:
        async with await b.connect(node.addr, **FAST) as client:
            first = asyncio.ensure_future(client.get_resource("concert-1", "one"))
            await asyncio.sleep(0.05)
            second = asyncio.ensure_future(client.get_resource("concert-1", "two"))
            assert (await first).id == "one"
            assert (await second).id == "two"


def misbehaving(send_bad):
    async def respond(peer, request_id, commands):
        send_bad(peer, request_id, commands)
    return lambda peer: answer_with(peer, respond)


BAD_RESPONSES = {
    "garbage": lambda peer, rid, cmds: peer.send(b"\x00garbage, not a frame at all\xff" * 4),
    "unknown kind": lambda peer, rid, cmds: peer.send(
        bytes.fromhex("0c000000" "01090000") + rid.to_bytes(8, "little")),
    "wrong version": lambda peer, rid, cmds: peer.send(
        bytes.fromhex("0e000000" "02040000") + rid.to_bytes(8, "little") + b"\x00\x00"),
    "unknown status": lambda peer, rid, cmds: peer.send_frame(
        p.Kind.RESPONSE, rid, b"\x01\x00\x63"),
    "unknown tag": lambda peer, rid, cmds: peer.send_frame(
        p.Kind.RESPONSE, rid, b"\x01\x00\x00\x09"),
    "truncated result": lambda peer, rid, cmds: peer.send_frame(
        p.Kind.RESPONSE, rid, p.encode_response([resource()])[:-3]),
    "trailing bytes": lambda peer, rid, cmds: peer.send_frame(
        p.Kind.RESPONSE, rid, p.encode_response([resource()]) + b"\x00"),
    "wrong count": lambda peer, rid, cmds: peer.send_frame(
        p.Kind.RESPONSE, rid, p.encode_response([resource(), resource()])),
    "unknown request id": lambda peer, rid, cmds: peer.send_frame(
        p.Kind.RESPONSE, rid + 1000, p.encode_response([resource()])),
    "over capacity": lambda peer, rid, cmds: peer.send_frame(
        p.Kind.RESPONSE, rid, p.encode_response([resource(held=11)])),
    "a HELLO_OK again": lambda peer, rid, cmds: peer.send_frame(
        p.Kind.HELLO_OK, rid, p.encode_hello_ok(HELLO_OK)),
    "unknown ERROR code": lambda peer, rid, cmds: peer.send_frame(
        p.Kind.ERROR, rid, b"\x63\x02\x00no"),
    "CHANGES on a request connection": lambda peer, rid, cmds: peer.send_frame(
        p.Kind.CHANGES, rid, p.encode_changes("c", [])),
    "result of the wrong type": lambda peer, rid, cmds: peer.send_frame(
        p.Kind.RESPONSE, rid, p.encode_response(
            [HoldView("concert-1", "h", HoldStatus.HELD, (Item("ga", 1),), 1)])),
}


@pytest.mark.parametrize("name", list(BAD_RESPONSES))
@bounded
async def test_bad_input_raises_protocol_error(name):
    async with FakeNode(misbehaving(BAD_RESPONSES[name])) as node:
        async with await b.connect(node.addr, **FAST) as client:
            with pytest.raises(b.ProtocolError) as raised:
                await client.get_resource("concert-1", "ga")
            assert str(raised.value)


@bounded
async def test_an_oversized_frame_is_refused_from_its_prefix():
    # Only the length prefix (16 MiB + 1) arrives: the client refuses it without waiting.
    async with FakeNode(misbehaving(
            lambda peer, rid, cmds: peer.send((p.FRAME_SIZE_CAP + 1).to_bytes(4, "little")))
    ) as node:
        async with await b.connect(node.addr, **FAST) as client:
            with pytest.raises(b.FrameTooLargeError, match="exceeds the limit"):
                await client.get_resource("concert-1", "ga")


@bounded
async def test_a_frame_cut_short_by_a_close_is_resent_then_unavailable():
    def cut(peer, rid, cmds):
        frame = p.encode_frame(p.Kind.RESPONSE, rid, p.encode_response([resource()]))
        peer.send(frame[: len(frame) // 2])
        peer.writer.transport.close()

    async with FakeNode(misbehaving(cut)) as node:
        async with await b.connect(node.addr, **FAST, retries=2) as client:
            with pytest.raises(b.UnavailableError, match="connection lost"):
                await client.get_resource("concert-1", "ga")
            # The first send and two resends, each on a connection of its own.
            assert len(node.peers) == 3
            assert client.stats.connects == 3


@bounded
async def test_silence_is_a_call_timeout():
    async def silent(peer, rid, cmds):
        pass

    async with FakeNode(lambda peer: answer_with(peer, silent)) as node:
        async with await b.connect(node.addr, **{**FAST, "call_timeout": 0.3}) as client:
            started = asyncio.get_running_loop().time()
            with pytest.raises(b.CallTimeoutError):
                await client.get_resource("concert-1", "ga")
            assert asyncio.get_running_loop().time() - started < 2.0


@bounded
async def test_error_unavailable_resends_on_a_new_connection():
    async def handler(peer):
        if len(node.peers) == 1:
            await peer.handshake()
            await peer.frame()
            peer.send_frame(p.Kind.ERROR, 0, p.encode_error(b.ErrorCode.UNAVAILABLE,
                                                            "node stopping"))
            return
        await answer_with(peer, correct)

    async with FakeNode(handler) as node:
        async with await b.connect(node.addr, **FAST) as client:
            assert (await client.get_resource("concert-1", "ga")).id == "ga"
            assert len(node.peers) == 2


@bounded
async def test_an_error_frame_fails_the_calls_in_flight_with_its_code():
    def refuse(peer, rid, cmds):
        peer.send_frame(p.Kind.ERROR, rid, p.encode_error(b.ErrorCode.BAD_REQUEST,
                                                          "undecodable command"))

    async with FakeNode(misbehaving(refuse)) as node:
        async with await b.connect(node.addr, **FAST) as client:
            with pytest.raises(b.BadRequestError, match="undecodable command") as raised:
                await client.get_resource("concert-1", "ga")
            assert raised.value.closed and raised.value.http_status == 400


HANDSHAKES = {
    "garbage": (lambda peer: peer.send(b"HTTP/1.1 200 OK\r\n\r\n"), b.ProtocolError),
    "a RESPONSE": (lambda peer: peer.send_frame(p.Kind.RESPONSE, 0, b"\x00\x00"),
                   b.ProtocolError),
    "a short HELLO_OK": (lambda peer: peer.send_frame(p.Kind.HELLO_OK, 0, b"\x00"),
                         b.ProtocolError),
    "unauthorized": (lambda peer: peer.send_frame(
        p.Kind.ERROR, 0, p.encode_error(b.ErrorCode.UNAUTHORIZED, "wrong or missing token")),
        b.UnauthorizedError),
    "a close": (lambda peer: peer.writer.transport.close(), b.UnavailableError),
    "silence": (lambda peer: None, b.UnavailableError),
}


@pytest.mark.parametrize("name", list(HANDSHAKES))
@bounded
async def test_a_bad_handshake_fails_connect(name):
    act, error = HANDSHAKES[name]

    async def handler(peer):
        await peer.frame()
        act(peer)
        await asyncio.sleep(5)

    async with FakeNode(handler) as node:
        with pytest.raises(error):
            await b.connect(node.addr, **{**FAST, "connect_timeout": 0.5})


@bounded
async def test_what_cannot_be_sent_is_refused_before_sending():
    small = HelloOk(Role.PRIMARY, 1, 2, 200, 1000, 256)
    requests = []

    async def handler(peer):
        await peer.handshake(small)
        while (frame := await peer.frame()) is not None:
            requests.append(frame)

    async with FakeNode(handler) as node:
        async with await b.connect(node.addr, **FAST) as client:
            with pytest.raises(b.InvalidError) as raised:
                await client.get_resource("concert-1", "x" * 256)
            assert raised.value.field == "id"
            with pytest.raises(b.InvalidError):
                await client.hold("concert-1", "h", [("ga", 1)], ref="r" * 70000)
            with pytest.raises(b.InvalidError):
                await client.put_resource("concert-1", "ga", -1)
            with pytest.raises(b.InvalidError):
                await client.execute([])
            with pytest.raises(b.PayloadTooLargeError, match="frame limit of 200"):
                await client.hold("concert-1", "h", [(f"r{i}", 1) for i in range(20)])
            await asyncio.sleep(0.2)
    assert requests == []


# ---- the change feed ----

def change(cursor, ident="ga"):
    return b.Change(cursor, b.ChangeOp.PUT_RESOURCE, 1, "concert-1",
                    resources=[b.ChangedResource(ident, 5, 0, 0)])


@bounded
async def test_a_subscription_resumes_after_the_last_change_handed_out():
    subscribes = []

    async def handler(peer):
        await peer.handshake()
        kind, rid, payload = await peer.frame()
        assert kind == p.Kind.SUBSCRIBE
        subscribes.append(p.decode_subscribe(payload))
        if len(subscribes) == 1:
            peer.send_frame(p.Kind.CHANGES, rid, p.encode_changes(
                "c2", [change("c1", "a"), change("c2", "b")]))
            await asyncio.sleep(0.2)
            peer.writer.transport.abort()  # lost: the client has handed out one change
            return
        peer.send_frame(p.Kind.CHANGES, rid, p.encode_changes("c3", [change("c3", "c")]))
        await asyncio.sleep(5)

    async with FakeNode(handler) as node:
        async with b.Subscription(node.addr, cursor="c0", credit_window=8,
                                  backoff_initial=0.01) as feed:
            first = await feed.__anext__()
            assert (first.cursor, feed.cursor) == ("c1", "c1")
            await asyncio.sleep(0.5)  # the connection is lost meanwhile
            # b arrived before the loss: it is handed out; then the subscription connects
            # again and resumes after it.
            assert (await feed.__anext__()).cursor == "c2"
            third = await feed.__anext__()
            assert (third.cursor, third.resources[0].id) == ("c3", "c")
            assert feed.connects == 2
    assert subscribes == [("c0", None, 8), ("c2", None, 8)]


@bounded
async def test_a_page_cursor_past_the_last_change_is_where_the_subscription_resumes():
    subscribes = []

    async def handler(peer):
        await peer.handshake()
        _, rid, payload = await peer.frame()
        subscribes.append(p.decode_subscribe(payload)[0])
        if len(subscribes) == 1:
            peer.send_frame(p.Kind.CHANGES, rid, p.encode_changes("c1", [change("c1")]))
            peer.send_frame(p.Kind.CHANGES, rid, p.encode_changes("c7", []))  # heartbeat
            await asyncio.sleep(0.1)
            peer.writer.transport.abort()
            return
        peer.send_frame(p.Kind.CHANGES, rid, p.encode_changes("c8", [change("c8")]))
        await asyncio.sleep(5)

    async with FakeNode(handler) as node:
        async with b.Subscription(node.addr, backoff_initial=0.01) as feed:
            assert (await feed.__anext__()).cursor == "c1"
            await asyncio.sleep(0.3)
            assert (await feed.__anext__()).cursor == "c8"
    assert subscribes == ["", "c7"]


@bounded
async def test_a_subscription_refuses_changes_beyond_its_credit():
    async def handler(peer):
        await peer.handshake()
        _, rid, _ = await peer.frame()
        peer.send_frame(p.Kind.CHANGES, rid,
                        p.encode_changes("c3", [change(f"c{i}") for i in range(3)]))
        await asyncio.sleep(5)

    async with FakeNode(handler) as node:
        async with b.Subscription(node.addr, credit_window=2) as feed:
            with pytest.raises(b.ProtocolError, match="credit"):
                await feed.__anext__()


@bounded
async def test_a_subscription_grants_credit_as_changes_are_consumed():
    credits = []

    async def handler(peer):
        await peer.handshake()
        _, rid, _ = await peer.frame()
        peer.send_frame(p.Kind.CHANGES, rid,
                        p.encode_changes("c4", [change(f"c{i}") for i in range(1, 5)]))
        while (frame := await peer.frame()) is not None:
            kind, _, payload = frame
            assert kind == p.Kind.CREDIT
            credits.append(p.decode_credit(payload))

    async with FakeNode(handler) as node:
        async with b.Subscription(node.addr, credit_window=4) as feed:
            got = [(await feed.__anext__()).cursor for _ in range(4)]
            assert got == ["c1", "c2", "c3", "c4"]
            await asyncio.sleep(0.2)
    assert credits == [2, 2]


FEED_ERRORS = {
    "malformed CHANGES": (lambda peer, rid: peer.send_frame(p.Kind.CHANGES, rid, b"\x01"),
                          b.ProtocolError),
    "a RESPONSE": (lambda peer, rid: peer.send_frame(p.Kind.RESPONSE, rid, b"\x00\x00"),
                   b.ProtocolError),
    "another request id": (lambda peer, rid: peer.send_frame(
        p.Kind.CHANGES, rid + 1, p.encode_changes("c", [])), b.ProtocolError),
    "garbage": (lambda peer, rid: peer.send(b"\xff" * 64), b.ProtocolError),
    "cursor_expired": (lambda peer, rid: peer.send_frame(
        p.Kind.ERROR, rid, p.encode_error(b.ErrorCode.CURSOR_EXPIRED, "oldest cursor: c9.0")),
        b.CursorExpiredError),
    "invalid": (lambda peer, rid: peer.send_frame(
        p.Kind.ERROR, rid, p.encode_error(b.ErrorCode.INVALID, "invalid cursor")),
        b.InvalidError),
}


@pytest.mark.parametrize("name", list(FEED_ERRORS))
@bounded
async def test_a_subscription_raises_what_no_reconnect_cures(name):
    act, error = FEED_ERRORS[name]

    async def handler(peer):
        await peer.handshake()
        _, rid, _ = await peer.frame()
        act(peer, rid)
        await asyncio.sleep(5)

    async with FakeNode(handler) as node:
        async with b.Subscription(node.addr, cursor="c1") as feed:
            with pytest.raises(error) as raised:
                await feed.__anext__()
    if error is b.CursorExpiredError:
        assert raised.value.oldest == "c9.0"


@bounded
async def test_a_silent_subscription_connection_is_made_again():
    async def handler(peer):
        await peer.handshake()
        _, rid, _ = await peer.frame()
        if len(node.peers) >= 2:
            peer.send_frame(p.Kind.CHANGES, rid, p.encode_changes("c1", [change("c1")]))
        await asyncio.sleep(5)

    async with FakeNode(handler) as node:
        async with b.Subscription(node.addr, heartbeat_timeout=0.3) as feed:
            assert (await feed.__anext__()).cursor == "c1"
            assert feed.connects == 2


@bounded
async def test_a_node_gone_for_good_is_unavailable_after_the_retries():
    async with FakeNode(lambda peer: answer_with(peer, correct)) as node:
        client = await b.connect(node.addr, **FAST, retries=2)
    # The fake node is closed: every reconnect is refused.
    started = asyncio.get_running_loop().time()
    with pytest.raises(b.UnavailableError, match="not reachable within the retries"):
        await client.get_resource("concert-1", "ga")
    assert asyncio.get_running_loop().time() - started < 5.0
    await client.close()
    with pytest.raises(b.ClientClosedError):
        await client.get_resource("concert-1", "ga")
