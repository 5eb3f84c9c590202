"""The change feed: :class:`Subscription`, an async iterator of changes on a connection of its
own (SUBSCRIBE, then CHANGES as credit allows, CREDIT as changes are consumed). After a lost
connection it connects again and resumes after the last change it handed out, so its caller
sees every change once, in order, across node restarts and failovers to the same address."""

from __future__ import annotations

import asyncio
import collections
from typing import Any, Deque, Optional, Union

from . import protocol as p
from .client import ClientConfig, open_connection
from .errors import BookdError, ErrorCode, NodeError, ProtocolError, node_error
from .types import Change

#: Changes granted to the node at a time: it sends no more until they are consumed.
CREDIT_WINDOW = 1024
#: The node sends an empty CHANGES after 5 s without a change; nothing for this long means
#: the connection is dead, and it is made again.
HEARTBEAT_TIMEOUT_S = 15.0
#: The request id of the subscription on its connection.
SUBSCRIPTION_ID = 1


class Subscription:
    """A subscription to a node's change feed::

        async with client.subscribe(cursor=listing_cursor, partition="concert-1") as feed:
            async for change in feed:
                apply(change)          # change.cursor: resume from here

    ``cursor`` ``None`` (or ``""``) follows from the feed's current end. Credit flows in
    windows of ``credit_window``: the node never has more than that many changes on their way,
    and the subscription buffers no more. A lost connection, an ERROR ``unavailable`` (the node
    stopping) or ``heartbeat_timeout`` seconds without a frame make it connect again (with
    backoff) and resume after the last change handed out. It raises only what no reconnect
    can cure: the node's refusal (``CursorExpiredError`` with ``oldest``: list, then follow
    from a listing's cursor; ``InvalidError``; ``UnauthorizedError``), or
    :class:`ProtocolError` for bytes that are not the protocol.
    """

    def __init__(self, addr: str, *, cursor: Optional[str] = None,
                 partition: Optional[str] = None, config: Optional[ClientConfig] = None,
                 credit_window: int = CREDIT_WINDOW,
                 heartbeat_timeout: float = HEARTBEAT_TIMEOUT_S,
                 backoff_initial: float = 0.01, backoff_max: float = 2.0) -> None:
        if not 1 <= credit_window <= 1 << 20:
            raise ValueError("credit_window must be 1 to 2^20")
        self.addr = addr
        self.partition = partition
        self.config = config or ClientConfig()
        self.credit_window = credit_window
        self.heartbeat_timeout = heartbeat_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self._cursor = cursor or ""
        self._transport: Optional[asyncio.Transport] = None
        self._protocol: Any = None
        self._frames: asyncio.Queue = asyncio.Queue()
        self._ready: Deque[Union[Change, str]] = collections.deque()
        self._outstanding = 0
        self._consumed = 0
        self._connects = 0
        self._closed = False

    @property
    def cursor(self) -> str:
        """The position after the last change handed out (``""`` before any and when following
        from the end): resume from here."""
        return self._cursor

    @property
    def connects(self) -> int:
        """Connections made so far."""
        return self._connects

    def __aiter__(self) -> "Subscription":
        return self

    async def __aenter__(self) -> "Subscription":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def close(self) -> None:
        """Closes the connection; iteration ends."""
        self._closed = True
        self._disconnect()

    async def __anext__(self) -> Change:
        backoff = self.backoff_initial
        while True:
            while self._ready:
                item = self._ready.popleft()
                if isinstance(item, str):
                    self._cursor = item
                    continue
                self._cursor = item.cursor
                self._consumed += 1
                if self._consumed >= max(1, self.credit_window // 2):
                    self._grant()
                return item
            if self._closed:
                raise StopAsyncIteration
            try:
                await self._receive()
                backoff = self.backoff_initial
            except (NodeError, ProtocolError) as error:
                if isinstance(error, NodeError) and error.code == ErrorCode.UNAVAILABLE:
                    self._disconnect()
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self.backoff_max)
                    continue
                self._disconnect()
                raise

    def next(self) -> "asyncio.Future[Change]":
        """The next change (``await sub.next()``), as ``async for`` gives it."""
        return asyncio.ensure_future(self.__anext__())

    def _grant(self) -> None:
        if self._transport is not None and self._consumed:
            self._transport.write(p.encode_frame(p.Kind.CREDIT, SUBSCRIPTION_ID,
                                                 p.encode_credit(self._consumed)))
            self._outstanding += self._consumed
        self._consumed = 0

    def _disconnect(self) -> None:
        if self._transport is not None:
            self._transport.abort()
        self._transport = None
        self._protocol = None
        # Changes received but not handed out come again after the resume.
        self._ready.clear()
        self._frames = asyncio.Queue()

    async def _open(self) -> None:
        transport, protocol, _ = await open_connection(self.addr, self.config)
        frames: asyncio.Queue = asyncio.Queue()
        self._frames = frames
        feed = _Feed(frames)
        protocol.channel = feed
        for data in protocol.early:
            feed._on_data(protocol, data)
        if protocol.lost:
            feed._on_lost(protocol, protocol.lost_exc)
        self._transport, self._protocol = transport, protocol
        transport.write(p.encode_frame(p.Kind.SUBSCRIBE, SUBSCRIPTION_ID,
                                       p.encode_subscribe(self._cursor, self.partition,
                                                          self.credit_window)))
        self._outstanding = self.credit_window
        self._consumed = 0
        self._connects += 1

    async def _receive(self) -> None:
        """Connects if needed, then takes one CHANGES frame into the ready queue."""
        if self._transport is None:
            await self._open()
        try:
            item = await asyncio.wait_for(self._frames.get(), self.heartbeat_timeout)
        except asyncio.TimeoutError:
            raise node_error(ErrorCode.UNAVAILABLE, message=f"{self.addr}: nothing for "
                             f"{self.heartbeat_timeout} s, not even a heartbeat") from None
        if isinstance(item, BaseException):
            raise item
        kind, request_id, payload = item
        if kind == p.Kind.ERROR:
            raise p.decode_error(payload)
        if kind != p.Kind.CHANGES:
            raise ProtocolError(f"unexpected {kind.name} frame on a subscription")
        if request_id != SUBSCRIPTION_ID:
            raise ProtocolError(f"CHANGES for request id {request_id}, not the subscription's")
        cursor, changes = p.decode_changes(payload)
        if len(changes) > self._outstanding:
            raise ProtocolError(f"CHANGES of {len(changes)} changes with only "
                                f"{self._outstanding} credit left")
        self._outstanding -= len(changes)
        self._ready.extend(changes)
        if not changes or changes[-1].cursor != cursor:
            self._ready.append(cursor)


class _Feed:
    """Receives a subscription connection's frames into a queue (bounded by the credit: the
    node sends no more changes than granted, and a heartbeat at most every 5 s)."""

    def __init__(self, frames: asyncio.Queue) -> None:
        self.frames = frames
        self.buffer = p.FrameBuffer()
        self.failed = False
        self._paused = False

    def _on_data(self, protocol: Any, data: bytes) -> None:
        if self.failed:
            return
        try:
            for frame in self.buffer.feed(data):
                self.frames.put_nowait(frame)
        except ProtocolError as error:
            self.failed = True
            self.frames.put_nowait(error)

    def _on_lost(self, protocol: Any, exc: Optional[Exception]) -> None:
        if not self.failed:
            self.frames.put_nowait(node_error(
                ErrorCode.UNAVAILABLE,
                message=f"connection lost{': ' + str(exc) if exc else ''}"))

    def _schedule_flush(self) -> None:
        pass
