"""The gateway client: a pool of connections to one node, each pipelining REQUEST frames by
request id and gathering the calls made while it is busy into one frame (automatic batching).

How a call travels: it is encoded at once (what cannot be sent is refused before anything is
queued) and queued on one connection. The connection writes queued calls as one REQUEST frame
of up to ``commands_per_frame_max`` commands and ``frame_size_max`` bytes whenever it has fewer
than ``frames_in_flight_max`` frames in flight and the socket's buffer is below its bound; the
calls made while it waits leave together in its next frame. A RESPONSE hands each call its
results by position. Every call gets exactly one answer: its result, or an error.

Lost connections are made again with exponential backoff; calls whose results were lost with
one are resent (up to ``retries`` times, within the call timeout). Every command is safe to
resend: a hold is idempotent by its id (a resent hold that had taken effect answers
``existing=True``), confirm/release/cancel are idempotent, ``put_resource`` sets a value, reads
read; a resent ``extend`` sets the expiry to now + ttl again; a resent ``delete_partition`` that
had taken effect answers ``not_found``. Results, ``overloaded`` and ``unavailable`` included,
are returned to the caller, never retried.
"""

from __future__ import annotations

import asyncio
import collections
import struct
from dataclasses import dataclass, replace
from typing import Any, Deque, Dict, List, Optional, Sequence, Tuple, Union

from . import protocol as p
from .errors import (BookdError, CallTimeoutError, ClientClosedError, ErrorCode, NodeError,
                     ProtocolError, UnavailableError, invalid, node_error)
from .types import (Cancel, Command, Confirm, DeletePartition, Extend, GetHold, GetResource,
                    Hold, HelloOk, HoldView, ItemsLike, ListResources, PartitionDeleted,
                    PutResource, Release, ResourcePage, ResourceView)

#: The default :attr:`ClientConfig.frames_in_flight_max`: one frame on the wire, one being
#: answered, and the calls made meanwhile gathering into the next.
FRAMES_IN_FLIGHT_MAX_DEFAULT = 2
#: How often a connection fails the calls past their deadline (no timer per call).
DEADLINE_CHECK_INTERVAL_S = 0.1

_ONE, _MANY, _STATUS, _STATUSES = 0, 1, 2, 3
_REQUEST_HEAD = struct.Struct("<IBBHQH")


@dataclass
class ClientConfig:
    """Settings of a :class:`Client` (and of the subscriptions it opens)."""

    #: Connections in the pool (at least 1).
    connections: int = 4
    #: The node's ``--token``, if it has one.
    token: Optional[str] = None
    #: Sent in HELLO; shows up in the node's logs.
    client_name: str = "bookd-client-python"
    #: Seconds to connect and complete the handshake.
    connect_timeout: float = 5.0
    #: Seconds a call may take, resends included; ``None``: no limit. Checked every 100 ms.
    call_timeout: Optional[float] = 30.0
    #: How many times a call is resent after a lost connection (or a failed reconnect).
    retries: int = 3
    #: First pause before a reconnect, in seconds; doubles up to ``backoff_max``.
    backoff_initial: float = 0.02
    backoff_max: float = 1.0
    #: Most REQUEST frames a connection keeps in flight (also capped by the node's
    #: ``in_flight_max``).
    frames_in_flight_max: int = FRAMES_IN_FLIGHT_MAX_DEFAULT
    #: Bytes the socket may buffer before the connection builds no new frame.
    write_buffer_max: int = 1024 * 1024


def parse_addr(addr: str) -> Tuple[str, int]:
    """``host:port`` (``[v6]:port`` too) as ``(host, port)``."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"address {addr!r} is not host:port")
    return host.strip("[]") or "127.0.0.1", int(port)


class _Call:
    __slots__ = ("payload", "count", "future", "deadline", "mode", "attempts")

    def __init__(self, payload: bytes, count: int, future: asyncio.Future,
                 deadline: Optional[float], mode: int) -> None:
        self.payload = payload
        self.count = count
        self.future = future
        self.deadline = deadline
        self.mode = mode
        self.attempts = 0


class _Protocol(asyncio.Protocol):
    """One connection's events: the handshake first (its frames decoded here), then
    everything goes to the channel that attached it. What arrives between the handshake and
    the attach (data, or the connection's loss) is kept and handed over at the attach."""

    def __init__(self, addr: str) -> None:
        self.addr = addr
        self.channel: Optional["_Channel"] = None
        self.handshake: asyncio.Future = asyncio.get_running_loop().create_future()
        self.frames = p.FrameBuffer()
        self.early: List[bytes] = []
        self.lost = False
        self.lost_exc: Optional[Exception] = None

    def data_received(self, data: bytes) -> None:
        if self.channel is not None:
            self.channel._on_data(self, data)
        elif self.handshake.done():
            self.early.append(data)
        else:
            self._handshake_data(data)

    def _handshake_data(self, data: bytes) -> None:
        handshake = self.handshake
        try:
            parsed = self.frames.feed(data)
            if not parsed:
                return
            kind, _, payload = parsed[0]
            if kind == p.Kind.HELLO_OK:
                handshake.set_result(p.decode_hello_ok(payload))
            elif kind == p.Kind.ERROR:
                handshake.set_exception(p.decode_error(payload))
            else:
                handshake.set_exception(ProtocolError(f"{kind.name} frame before HELLO_OK"))
        except ProtocolError as error:
            handshake.set_exception(error)
            return
        rest = b"".join(p.encode_frame(k, r, pl) for k, r, pl in parsed[1:])
        rest += bytes(self.frames._buf)
        if rest:
            self.early.append(rest)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Optional[Exception]) -> None:
        if self.channel is not None:
            self.channel._on_lost(self, exc)
            return
        self.lost, self.lost_exc = True, exc
        if not self.handshake.done():
            self.handshake.set_exception(node_error(
                ErrorCode.UNAVAILABLE, message=f"{self.addr}: connection closed during the "
                f"handshake{': ' + str(exc) if exc else ''}"))

    def pause_writing(self) -> None:
        if self.channel is not None:
            self.channel._paused = True

    def resume_writing(self) -> None:
        if self.channel is not None:
            self.channel._paused = False
            self.channel._schedule_flush()


async def open_connection(addr: str, config: ClientConfig,
                          ) -> Tuple[asyncio.Transport, _Protocol, HelloOk]:
    """Connects to ``addr`` and completes the handshake: HELLO out, HELLO_OK (or ERROR) in.
    Raises the node's typed error for a refused handshake (``UnauthorizedError``),
    :class:`ProtocolError` for anything else than HELLO_OK, and ``UnavailableError`` when the
    node cannot be reached in time."""
    loop = asyncio.get_running_loop()
    host, port = parse_addr(addr)

    async def connect() -> Tuple[asyncio.Transport, _Protocol, HelloOk]:
        transport, protocol = await loop.create_connection(lambda: _Protocol(addr), host, port)
        try:
            transport.write(p.encode_frame(p.Kind.HELLO, 0,
                                           p.encode_hello(config.token, config.client_name)))
            hello = await protocol.handshake
        except BaseException:
            transport.abort()
            raise
        return transport, protocol, hello  # type: ignore[return-value]

    try:
        return await asyncio.wait_for(connect(), config.connect_timeout)
    except asyncio.TimeoutError:
        raise node_error(ErrorCode.UNAVAILABLE,
                         message=f"{addr}: no handshake within {config.connect_timeout} s"
                         ) from None
    except OSError as error:
        raise node_error(ErrorCode.UNAVAILABLE, message=f"{addr}: {error}") from error


class _Channel:
    """One connection of the pool: its queue, its frames in flight, its reconnects."""

    def __init__(self, addr: str, config: ClientConfig, stats: "ClientStats") -> None:
        self.addr = addr
        self.config = config
        self.stats = stats
        self.loop = asyncio.get_running_loop()
        self.queue: Deque[_Call] = collections.deque()
        self.inflight: Dict[int, List[_Call]] = {}
        self.protocol: Optional[_Protocol] = None
        self.transport: Optional[asyncio.Transport] = None
        self.frames = p.FrameBuffer()
        self.next_id = 1
        self.hello: Optional[HelloOk] = None
        self.frames_max = max(1, config.frames_in_flight_max)
        self.frame_size_max = p.FRAME_SIZE_MAX_DEFAULT
        self.commands_max = p.COMMANDS_PER_FRAME_MAX
        self._paused = False
        self._flush_scheduled = False
        self._reconnecting: Optional[asyncio.Task] = None
        self._sweeper: Optional[asyncio.Task] = None
        self.closed = False

    # -- connecting --

    async def connect(self) -> HelloOk:
        transport, protocol, hello = await open_connection(self.addr, self.config)
        self._attach(transport, protocol, hello)
        return hello

    def _attach(self, transport: asyncio.Transport, protocol: _Protocol,
                hello: HelloOk) -> None:
        if self.closed:
            transport.abort()
            return
        transport.set_write_buffer_limits(high=self.config.write_buffer_max)
        self.transport, self.protocol, self.hello = transport, protocol, hello
        self.frames = p.FrameBuffer()
        self.frames_max = max(1, min(self.config.frames_in_flight_max, hello.in_flight_max))
        self.frame_size_max = min(max(hello.frame_size_max, 64), p.FRAME_SIZE_CAP)
        self.commands_max = max(1, min(hello.commands_per_frame_max, p.COMMANDS_PER_FRAME_MAX))
        self._paused = False
        self.stats.connects += 1
        if self._sweeper is None and self.config.call_timeout is not None:
            self._sweeper = self.loop.create_task(self._sweep())
        protocol.channel = self
        for data in protocol.early:
            if protocol is self.protocol:
                self._on_data(protocol, data)
        protocol.early.clear()
        if protocol.lost:
            self._on_lost(protocol, protocol.lost_exc)
        self._schedule_flush()

    def _start_reconnect(self) -> None:
        if self._reconnecting is None and not self.closed:
            self._reconnecting = self.loop.create_task(self._reconnect())

    async def _reconnect(self) -> None:
        backoff = self.config.backoff_initial
        try:
            while not self.closed and self.transport is None:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.config.backoff_max)
                try:
                    transport, protocol, hello = await open_connection(self.addr, self.config)
                except NodeError as error:
                    refused = error.code != ErrorCode.UNAVAILABLE
                    self._count_failed_attempt(error, fail_all=refused)
                    continue
                except ProtocolError as error:
                    self._count_failed_attempt(error, fail_all=True)
                    continue
                self._attach(transport, protocol, hello)
        finally:
            self._reconnecting = None

    def _count_failed_attempt(self, error: BookdError, fail_all: bool) -> None:
        """A reconnect failed: every queued call used one of its resends (all fail at once
        when the node refused the handshake, which no resend changes)."""
        kept: Deque[_Call] = collections.deque()
        for call in self.queue:
            if call.future.done():
                continue
            call.attempts += 1
            if fail_all or call.attempts > self.config.retries:
                call.future.set_exception(_unreachable(self.addr, error)
                                          if not fail_all else error)
            else:
                kept.append(call)
        self.queue = kept

    # -- sending --

    def submit(self, call: _Call) -> None:
        if self.closed:
            call.future.set_exception(ClientClosedError("client closed"))
            return
        if len(call.payload) + 18 > self.frame_size_max:
            call.future.set_exception(node_error(
                ErrorCode.PAYLOAD_TOO_LARGE,
                {"size": len(call.payload) + 18, "max": self.frame_size_max},
                f"a REQUEST of {len(call.payload) + 18} bytes exceeds the node's frame limit "
                f"of {self.frame_size_max} bytes"))
            return
        self.queue.append(call)
        if self.transport is None:
            self._start_reconnect()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled and self.queue:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        transport = self.transport
        if transport is None or self._paused:
            return
        queue = self.queue
        inflight = self.inflight
        size_max = self.frame_size_max
        commands_max = self.commands_max
        while queue and len(inflight) < self.frames_max and not self._paused:
            calls: List[_Call] = []
            parts: List[bytes] = [b""]
            size = 18
            count = 0
            while queue:
                call = queue[0]
                if call.future.done():
                    queue.popleft()
                    continue
                if count + call.count > commands_max or size + len(call.payload) > size_max:
                    if not calls:  # cannot happen: submit checks; never loop on it
                        queue.popleft()
                        call.future.set_exception(node_error(ErrorCode.PAYLOAD_TOO_LARGE))
                        continue
                    break
                queue.popleft()
                calls.append(call)
                parts.append(call.payload)
                size += len(call.payload)
                count += call.count
            if not calls:
                break
            request_id = self.next_id
            self.next_id = request_id + 1
            parts[0] = _REQUEST_HEAD.pack(size - 4, p.PROTOCOL_VERSION, p.Kind.REQUEST, 0,
                                          request_id, count)
            inflight[request_id] = calls
            transport.write(b"".join(parts))
            stats = self.stats
            stats.frames_sent += 1
            stats.commands_sent += count

    # -- receiving --

    def _on_data(self, protocol: _Protocol, data: bytes) -> None:
        if protocol is not self.protocol:
            return
        try:
            for kind, request_id, payload in self.frames.feed(data):
                self._on_frame(kind, request_id, payload)
        except ProtocolError as error:
            self._fail_inflight(error)
            self._drop(protocol)

    def _on_frame(self, kind: p.Kind, request_id: int, payload: bytes) -> None:
        if kind == p.Kind.RESPONSE:
            calls = self.inflight.pop(request_id, None)
            if calls is None:
                raise ProtocolError(f"RESPONSE for request id {request_id}, which is not in "
                                    f"flight")
            try:
                self._answer(calls, payload)
            except ProtocolError:
                self.inflight[request_id] = calls  # failed with the others
                raise
            if self.queue and not self._flush_scheduled:
                self._flush_scheduled = True
                self.loop.call_soon(self._flush)
        elif kind == p.Kind.ERROR:
            error = p.decode_error(payload)
            if error.code == ErrorCode.UNAVAILABLE:
                # The node stops or closes an idle connection and reads nothing more: every
                # call without a result is resent on the next connection.
                self._drop(self.protocol, resend=True)
                return
            self._fail_inflight(error)
            self._drop(self.protocol)
        else:
            raise ProtocolError(f"unexpected {kind.name} frame on a request connection")

    def _answer(self, calls: List[_Call], payload: bytes) -> None:
        if all(call.mode >= _STATUS for call in calls):
            results: List[Any] = p.decode_statuses(payload)
            statuses = results
        else:
            results = p.decode_response(payload)
            statuses = None
        expected = sum(call.count for call in calls)
        if len(results) != expected:
            raise ProtocolError(f"RESPONSE has {len(results)} results for {expected} commands")
        index = 0
        for call in calls:
            future = call.future
            count = call.count
            if not future.done():
                mode = call.mode
                if mode == _ONE:
                    result = results[index]
                    if isinstance(result, NodeError):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
                elif mode == _STATUS:
                    result = results[index]
                    future.set_result(result if statuses is not None else _status_of(result))
                elif mode == _MANY:
                    future.set_result(results[index:index + count])
                else:
                    part = results[index:index + count]
                    future.set_result(part if statuses is not None else
                                      [_status_of(result) for result in part])
            index += count

    # -- failures --

    def _fail_inflight(self, error: BookdError) -> None:
        for calls in self.inflight.values():
            for call in calls:
                if not call.future.done():
                    call.future.set_exception(error)
        self.inflight.clear()

    def _drop(self, protocol: Optional[_Protocol], resend: bool = False) -> None:
        """Closes the connection; with ``resend`` its calls in flight go back to the queue."""
        if protocol is None or protocol is not self.protocol:
            return
        transport = self.transport
        self._lost(resend=resend, error=None)
        if transport is not None:
            transport.abort()

    def _on_lost(self, protocol: _Protocol, exc: Optional[Exception]) -> None:
        if protocol is self.protocol:
            self._lost(resend=True, error=exc)

    def _lost(self, resend: bool, error: Optional[Exception]) -> None:
        self.transport = None
        self.protocol = None
        self.stats.disconnects += 1
        if resend and self.inflight:
            lost = node_error(ErrorCode.UNAVAILABLE,
                              message=f"{self.addr}: connection lost"
                              f"{': ' + str(error) if error else ''}")
            again: List[_Call] = []
            for request_id in sorted(self.inflight):
                for call in self.inflight[request_id]:
                    if call.future.done():
                        continue
                    call.attempts += 1
                    if call.attempts > self.config.retries:
                        call.future.set_exception(lost)
                    else:
                        again.append(call)
            self.queue.extendleft(reversed(again))
        self.inflight.clear()
        if self.queue and not self.closed:
            self._start_reconnect()

    async def _sweep(self) -> None:
        """Fails the calls past their deadline, every 100 ms."""
        timeout = CallTimeoutError(f"no answer within {self.config.call_timeout} s")
        while not self.closed:
            await asyncio.sleep(DEADLINE_CHECK_INTERVAL_S)
            now = self.loop.time()
            for call in self.queue:
                if call.deadline is not None and call.deadline <= now and not call.future.done():
                    call.future.set_exception(timeout)
            for calls in self.inflight.values():
                for call in calls:
                    if (call.deadline is not None and call.deadline <= now
                            and not call.future.done()):
                        call.future.set_exception(timeout)

    def close(self) -> None:
        self.closed = True
        closed = ClientClosedError("client closed")
        for call in self.queue:
            if not call.future.done():
                call.future.set_exception(closed)
        self.queue.clear()
        self._fail_inflight(closed)
        for task in (self._reconnecting, self._sweeper):
            if task is not None:
                task.cancel()
        if self.transport is not None:
            self.transport.abort()
        self.transport = None
        self.protocol = None


def _status_of(result: Any) -> int:
    return int(result.code) if isinstance(result, NodeError) else 0


def _unreachable(addr: str, error: BookdError) -> NodeError:
    return node_error(ErrorCode.UNAVAILABLE, message=f"{addr}: not reachable within the "
                      f"retries: {error}")


@dataclass
class ClientStats:
    """What the pool's connections did (statistics only)."""

    #: REQUEST frames sent, and the commands in them (commands per frame shows how well
    #: calls were batched).
    frames_sent: int = 0
    commands_sent: int = 0
    #: Connections made (the first ones included) and lost.
    connects: int = 0
    disconnects: int = 0


class _Pool:
    def __init__(self, addr: str, config: ClientConfig) -> None:
        self.addr = addr
        self.config = config
        self.stats = ClientStats()
        self.channels = [_Channel(addr, config, self.stats)
                         for _ in range(max(1, config.connections))]
        self.next = 0
        self.hello: Optional[HelloOk] = None
        self.closed = False


class Client:
    """A pool of connections to one node (see the module's documentation). Make one with
    :func:`connect`; close it with :meth:`close` or ``async with``.

    Every command method raises the typed error of the node's refusal
    (``InsufficientCapacityError``, ``HoldNotFoundError``, …, all :class:`NodeError`), or
    :class:`CallTimeoutError`, :class:`ProtocolError`, :class:`ClientClosedError`.
    """

    def __init__(self, pool: _Pool, pin: Optional[int] = None) -> None:
        self._pool = pool
        self._pin = pin
        self._loop = asyncio.get_running_loop()

    @classmethod
    async def connect(cls, addr: str, config: Optional[ClientConfig] = None,
                      **settings: Any) -> "Client":
        """Connects ``config.connections`` connections to ``addr`` (``host:port``, the node's
        binary listener) and completes each handshake. ``settings`` override fields of
        ``config``. Raises the node's error if the handshake is refused (a wrong token:
        ``UnauthorizedError``) and ``UnavailableError`` if the node cannot be reached."""
        config = replace(config or ClientConfig(), **settings)
        pool = _Pool(addr, config)
        try:
            for channel in pool.channels:
                hello = await channel.connect()
                if pool.hello is None:
                    pool.hello = hello
        except BaseException:
            for channel in pool.channels:
                channel.close()
            raise
        return cls(pool)

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def close(self) -> None:
        """Closes every connection; calls still waiting fail with ClientClosedError."""
        self._pool.closed = True
        for channel in self._pool.channels:
            channel.close()
        await asyncio.sleep(0)

    def pinned(self, index: int) -> "Client":
        """A handle on the same pool whose calls all go to connection ``index % connections``.
        Give each closed-loop caller its own: the callers of one connection then wake
        together when its RESPONSE arrives and their next calls leave together in one frame."""
        return Client(self._pool, index % len(self._pool.channels))

    @property
    def hello(self) -> HelloOk:
        """What the node said in its handshake (role, epoch, limits)."""
        assert self._pool.hello is not None
        return self._pool.hello

    @property
    def stats(self) -> ClientStats:
        """Counters of the pool (frames, commands, connects)."""
        return self._pool.stats

    @property
    def config(self) -> ClientConfig:
        return self._pool.config

    @property
    def addr(self) -> str:
        return self._pool.addr

    # -- the calls --

    def _submit(self, payload: bytes, count: int, mode: int) -> asyncio.Future:
        pool = self._pool
        future = self._loop.create_future()
        if pool.closed:
            future.set_exception(ClientClosedError("client closed"))
            return future
        timeout = pool.config.call_timeout
        deadline = None if timeout is None else self._loop.time() + timeout
        pin = self._pin
        if pin is None:
            pin = pool.next
            pool.next = (pin + 1) % len(pool.channels)
        pool.channels[pin].submit(_Call(payload, count, future, deadline, mode))
        return future

    def _encode(self, command: Command) -> bytes:
        out = bytearray()
        p.encode_command(command, out)
        return bytes(out)

    async def call(self, command: Command) -> Any:
        """Runs one command (a :mod:`bookd_client.types` command object) and returns its
        result; a refusal is raised as its typed error."""
        return await self._submit(self._encode(command), 1, _ONE)

    async def execute(self, commands: Sequence[Command]) -> List[Any]:
        """Sends ``commands`` (1–1 000) in one REQUEST frame, like ``POST /v1/batch``: they are
        independent, and each gets its own result, in order. A refused command's element is
        its typed error (returned, not raised)."""
        if not 1 <= len(commands) <= self._pool.channels[0].commands_max:
            raise invalid("commands", "1 to 1000 commands per frame")
        out = bytearray()
        for command in commands:
            p.encode_command(command, out)
        return await self._submit(bytes(out), len(commands), _MANY)

    async def status(self, command: Command) -> int:
        """Runs one command for its outcome only: 0 for success, else the error code's number
        (an :class:`ErrorCode`). The result is not built: what a load generator needs."""
        return await self._submit(self._encode(command), 1, _STATUS)

    async def status_encoded(self, payload: bytes) -> int:
        """:meth:`status` of a command already encoded (:func:`protocol.encode_command`):
        for callers that send the same shapes over and over."""
        return await self._submit(payload, 1, _STATUS)

    async def statuses(self, commands: Sequence[Command]) -> List[int]:
        """:meth:`execute` for the outcomes only: one status per command."""
        if not 1 <= len(commands) <= self._pool.channels[0].commands_max:
            raise invalid("commands", "1 to 1000 commands per frame")
        out = bytearray()
        for command in commands:
            p.encode_command(command, out)
        return await self._submit(bytes(out), len(commands), _STATUSES)

    async def _typed(self, command: Command, expected: type) -> Any:
        result = await self.call(command)
        if type(result) is not expected:
            raise ProtocolError(f"{type(command).__name__} answered with "
                                f"{type(result).__name__}")
        return result

    async def put_resource(self, partition: str, id: str, capacity: int) -> ResourceView:
        """Creates a resource or sets its capacity (``created`` tells which)."""
        return await self._typed(PutResource(partition, id, capacity), ResourceView)

    async def hold(self, partition: str, id: str, items: ItemsLike,
                   ttl_ms: Optional[int] = None, ref: Optional[str] = None) -> HoldView:
        """Takes the units of every item — ``(resource, quantity)`` pairs or :class:`Item` —
        all or nothing, until confirmed, released or expired (``ttl_ms``, default 600 000).
        The hold id is the idempotency key: a repeat answers ``existing=True``."""
        return await self._typed(Hold(partition, id, items, ttl_ms, ref), HoldView)

    async def confirm(self, partition: str, id: str) -> HoldView:
        """Confirms a held hold."""
        return await self._typed(Confirm(partition, id), HoldView)

    async def release(self, partition: str, id: str) -> HoldView:
        """Releases a held hold: its units come back."""
        return await self._typed(Release(partition, id), HoldView)

    async def cancel(self, partition: str, id: str) -> HoldView:
        """Cancels a confirmed hold: its units come back."""
        return await self._typed(Cancel(partition, id), HoldView)

    async def extend(self, partition: str, id: str, ttl_ms: int) -> HoldView:
        """Sets a held hold's expiry to now + ``ttl_ms``."""
        return await self._typed(Extend(partition, id, ttl_ms), HoldView)

    async def get_resource(self, partition: str, id: str) -> ResourceView:
        """The resource ``id`` of ``partition``."""
        return await self._typed(GetResource(partition, id), ResourceView)

    async def get_hold(self, partition: str, id: str) -> HoldView:
        """The hold ``id`` of ``partition``."""
        return await self._typed(GetHold(partition, id), HoldView)

    async def list_resources(self, partition: str, prefix: str = "",
                             after: Optional[str] = None,
                             limit: Optional[int] = None) -> ResourcePage:
        """A page of ``partition``'s resources in id order (``limit`` 1–1 000, default 100);
        pass the page's ``next`` as ``after`` for the following page."""
        return await self._typed(ListResources(partition, prefix, after, limit), ResourcePage)

    async def delete_partition(self, partition: str) -> PartitionDeleted:
        """Removes ``partition`` with every resource and hold in it; refused with
        ``PartitionHasLiveHoldsError`` while a hold is held, ``NotFoundError`` if there is no
        such partition (also when a resent delete had already taken effect)."""
        return await self._typed(DeletePartition(partition), PartitionDeleted)

    def subscribe(self, cursor: Optional[str] = None, partition: Optional[str] = None,
                  **settings: Any) -> "Subscription":
        """Follows the node's change feed after ``cursor`` (``None``: from its current end),
        of one ``partition`` or all, on a connection of its own; see :class:`Subscription`."""
        from .feed import Subscription
        return Subscription(self._pool.addr, cursor=cursor, partition=partition,
                            config=self._pool.config, **settings)


async def connect(addr: str, config: Optional[ClientConfig] = None, **settings: Any) -> Client:
    """Shorthand for :meth:`Client.connect`."""
    return await Client.connect(addr, config, **settings)
