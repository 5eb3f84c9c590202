"""The bench's HTTP/JSON transport: the same calls as the binary client's, coalesced into
``POST /v1/batch`` requests (docs/API.md) over keep-alive HTTP/1.1 connections, on asyncio
streams and the standard library alone.

Each connection has one request in flight at a time (HTTP/1.1 without pipelining). Calls made
while it waits queue up; once an answer is in and the callers it woke have run (and made their
next calls), the connection sends everything queued in one batch, up to 1 000 commands and
64 KiB of body (the API's limits), the rest in the batches after it. That is how the binary
client's automatic batching gathers calls into frames, so the two transports differ only in
what goes over the wire.

A call is one command already written as its JSON element of ``commands`` (bytes); it ends
with the command's outcome as the binary client's ``status`` gives it: 0 for a success, else
the number of its error code (:class:`ErrorCode`). A whole request that fails (a lost
connection, no answer within the timeout, a status other than 200, a body that is not the
batch's results) raises in every call it carried: :class:`CallTimeoutError`, ``unavailable``
(:class:`NodeError`) or :class:`ProtocolError`.
"""

from __future__ import annotations

import asyncio
import collections
import json
from typing import Deque, List, Optional, Tuple

from .client import parse_addr
from .errors import (BookdError, CallTimeoutError, ClientClosedError, ErrorCode, ProtocolError,
                     invalid, node_error)

#: Most commands in one batch (docs/API.md, "Names and limits").
BATCH_COMMANDS_MAX = 1000
#: Largest request body the node reads (docs/API.md, "Names and limits").
BODY_SIZE_MAX_BYTES = 64 * 1024
#: Largest response head (status line and headers) read.
HEAD_SIZE_MAX_BYTES = 16 * 1024
#: Largest response body read: 1 000 results of the largest holds fit well within it.
RESPONSE_SIZE_MAX_BYTES = 32 * 1024 * 1024
#: Pause before connecting again after a connection could not be made.
RECONNECT_PAUSE_S = 0.1
_OPEN = b'{"commands":['
_CLOSE = b"]}"
_ENVELOPE = len(_OPEN) + len(_CLOSE)
_CODES = {code.text: int(code) for code in ErrorCode}


class HttpStats:
    """What the batcher sent."""

    __slots__ = ("requests", "commands")

    def __init__(self) -> None:
        self.requests = 0
        self.commands = 0


def _outcome(result: object) -> int:
    """A result element's outcome: 0, or its error code's number."""
    if not isinstance(result, dict) or not isinstance(result.get("status"), int):
        raise ProtocolError("a batch result that is not {\"status\", \"body\"}")
    status = result["status"]
    if 200 <= status < 300:
        return 0
    body = result.get("body")
    code = _CODES.get(body.get("error")) if isinstance(body, dict) else None
    if code is None:
        raise ProtocolError(f"a batch result of status {status} without a known error code")
    return code


async def read_response(reader: asyncio.StreamReader) -> Tuple[int, bytes, bool]:
    """Reads one response: its status, its body (Content-Length or chunked), and whether the
    server closes the connection after it."""
    head = await reader.readuntil(b"\r\n\r\n")
    if len(head) > HEAD_SIZE_MAX_BYTES:
        raise ProtocolError(f"a response head over {HEAD_SIZE_MAX_BYTES} bytes")
    lines = head[:-4].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or parts[0] not in ("HTTP/1.1", "HTTP/1.0") or \
            not (len(parts[1]) == 3 and parts[1].isdigit()):
        raise ProtocolError(f"a status line {lines[0][:80]!r}")
    status = int(parts[1])
    close = parts[0] == "HTTP/1.0"
    length: Optional[int] = None
    chunked = False
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            continue
        name = name.strip().lower()
        value = value.strip()
        if name == "content-length":
            if not (value.isdigit() and len(value) <= 10):
                raise ProtocolError(f"a content-length {value[:40]!r}")
            length = int(value)
        elif name == "transfer-encoding":
            chunked = "chunked" in (part.strip() for part in value.lower().split(","))
        elif name == "connection":
            tokens = [part.strip() for part in value.lower().split(",")]
            if "close" in tokens:
                close = True
            elif "keep-alive" in tokens:
                close = False
    if chunked:
        body = await _chunked(reader)
    elif length is None:
        raise ProtocolError("a response with neither content-length nor chunked encoding")
    elif length > RESPONSE_SIZE_MAX_BYTES:
        raise ProtocolError(f"a body of {length} bytes, over {RESPONSE_SIZE_MAX_BYTES}")
    else:
        body = await reader.readexactly(length)
    return status, body, close


async def _chunked(reader: asyncio.StreamReader) -> bytes:
    pieces: List[bytes] = []
    size = 0
    while True:
        line = await reader.readuntil(b"\r\n")
        text = line[:-2].split(b";", 1)[0].strip()
        if not text or len(text) > 8 or any(c not in b"0123456789abcdefABCDEF" for c in text):
            raise ProtocolError(f"a chunk size {line[:40]!r}")
        chunk = int(text, 16)
        if chunk == 0:
            break
        size += chunk
        if size > RESPONSE_SIZE_MAX_BYTES:
            raise ProtocolError(f"a body over {RESPONSE_SIZE_MAX_BYTES} bytes")
        data = await reader.readexactly(chunk + 2)
        if data[-2:] != b"\r\n":
            raise ProtocolError("a chunk not followed by CRLF")
        pieces.append(data[:-2])
    # Trailer fields, if any, up to an empty line.
    trailers = 0
    while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
        trailers += len(line)
        if trailers > HEAD_SIZE_MAX_BYTES:
            raise ProtocolError(f"trailers over {HEAD_SIZE_MAX_BYTES} bytes")
    return b"".join(pieces)


class HttpConnection:
    """One keep-alive HTTP/1.1 connection and the calls queued on it."""

    def __init__(self, host: str, port: int, timeout: float, token: Optional[str],
                 stats: HttpStats) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.stats = stats
        host_header = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self._head = (f"POST /v1/batch HTTP/1.1\r\nHost: {host_header}\r\n"
                      "Content-Type: application/json\r\nAccept: application/json\r\n"
                      + (f"Authorization: Bearer {token}\r\n" if token else "")).encode("latin-1")
        self._queue: Deque[Tuple[bytes, asyncio.Future]] = collections.deque()
        self._wakeup: Optional[asyncio.Event] = None
        self._task: Optional[asyncio.Task] = None
        self._reader: Optional[asyncio.StreamReader] = None
        self._writer: Optional[asyncio.StreamWriter] = None
        self._closed = False

    def status(self, command: bytes) -> asyncio.Future:
        """Queues one command (its JSON element); the future ends with its outcome."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if self._closed:
            future.set_exception(ClientClosedError("the HTTP transport is closed"))
            return future
        if len(command) + _ENVELOPE > BODY_SIZE_MAX_BYTES:
            future.set_exception(invalid("command", f"{len(command)} bytes of JSON: no batch of "
                                         f"at most {BODY_SIZE_MAX_BYTES} bytes carries it"))
            return future
        self._queue.append((command, future))
        if self._task is None:
            self._wakeup = asyncio.Event()
            self._task = loop.create_task(self._run())
        self._wakeup.set()  # type: ignore[union-attr]
        return future

    async def close(self) -> None:
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._disconnect()
        self._fail(list(self._queue), ClientClosedError("the HTTP transport is closed"))
        self._queue.clear()

    # -- the connection's loop --

    async def _run(self) -> None:
        wakeup = self._wakeup
        assert wakeup is not None
        queue = self._queue
        while not self._closed:
            if not queue:
                wakeup.clear()
                await wakeup.wait()
                continue
            if self._writer is None and not await self._connect():
                continue
            calls = self._take()
            try:
                results = await self._exchange(calls)
            except asyncio.CancelledError:
                self._fail(calls, ClientClosedError("the HTTP transport is closed"))
                raise
            except BookdError as error:
                self._disconnect()
                self._fail(calls, error)
            except Exception as error:  # noqa: BLE001 - no call may wait for ever on a bug
                self._disconnect()
                self._fail(calls, ProtocolError(f"HTTP transport: {error!r}"))
            else:
                for (_, future), result in zip(calls, results):
                    if future.done():
                        continue
                    try:
                        future.set_result(_outcome(result))
                    except ProtocolError as error:
                        future.set_exception(error)
            # Let the callers just answered run: their next calls join what queued meanwhile.
            await asyncio.sleep(0)

    async def _connect(self) -> bool:
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port, limit=BODY_SIZE_MAX_BYTES),
                self.timeout)
            return True
        except (OSError, asyncio.TimeoutError) as error:
            calls = list(self._queue)
            self._queue.clear()
            self._fail(calls, node_error(
                ErrorCode.UNAVAILABLE,
                message=f"could not connect to {self.host}:{self.port}: {error or 'timed out'}"))
            # Nothing answers there: the calls failed rather than wait; pause before the next try.
            await asyncio.sleep(RECONNECT_PAUSE_S)
            return False

    def _take(self) -> List[Tuple[bytes, asyncio.Future]]:
        """Everything queued that fits one batch, in order (calls already cancelled dropped)."""
        queue = self._queue
        calls: List[Tuple[bytes, asyncio.Future]] = []
        size = _ENVELOPE
        while queue and len(calls) < BATCH_COMMANDS_MAX:
            command, future = queue[0]
            if future.done():
                queue.popleft()
                continue
            more = len(command) + (1 if calls else 0)
            if size + more > BODY_SIZE_MAX_BYTES:
                break
            queue.popleft()
            calls.append((command, future))
            size += more
        return calls

    async def _exchange(self, calls: List[Tuple[bytes, asyncio.Future]]) -> list:
        """Sends one batch and reads its results (one per call, in order)."""
        writer, reader = self._writer, self._reader
        assert writer is not None and reader is not None
        body = _OPEN + b",".join(command for command, _ in calls) + _CLOSE
        self.stats.requests += 1
        self.stats.commands += len(calls)
        # A timer rather than asyncio.wait_for (a task per request): past the timeout it aborts
        # the connection, which ends the read.
        expired = []
        timer = asyncio.get_running_loop().call_later(
            self.timeout, lambda: (expired.append(True), writer.transport.abort()))
        try:
            writer.write(self._head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
            status, payload, close = await read_response(reader)
        except (OSError, asyncio.IncompleteReadError) as error:
            if expired:
                raise CallTimeoutError(f"no answer to a batch of {len(calls)} commands within "
                                       f"{self.timeout} s") from None
            raise node_error(ErrorCode.UNAVAILABLE, message=f"lost the connection to "
                             f"{self.host}:{self.port}: {error}") from None
        except asyncio.LimitOverrunError:
            raise ProtocolError(f"a response head over {BODY_SIZE_MAX_BYTES} bytes") from None
        finally:
            timer.cancel()
        if close:
            self._disconnect()
        try:
            parsed = json.loads(payload)
        except ValueError:
            parsed = None
        if status != 200:
            code = parsed.get("error") if isinstance(parsed, dict) else None
            message = parsed.get("message") if isinstance(parsed, dict) else None
            text = f"POST /v1/batch answered {status}" + (f" {code}" if isinstance(code, str)
                                                            else "") + (
                f": {message}" if isinstance(message, str) else "")
            if code in _CODES:
                raise node_error(ErrorCode(_CODES[code]), dict(parsed), text, closed=True)
            raise ProtocolError(text)
        results = parsed.get("results") if isinstance(parsed, dict) else None
        if not isinstance(results, list) or len(results) != len(calls):
            got = f"{len(results)} results" if isinstance(results, list) else "no results"
            raise ProtocolError(f"POST /v1/batch answered {got} for {len(calls)} commands")
        return results

    def _disconnect(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()

    @staticmethod
    def _fail(calls: List[Tuple[bytes, asyncio.Future]], error: BaseException) -> None:
        for _, future in calls:
            if not future.done():
                future.set_exception(error)


class HttpBatcher:
    """A pool of connections: calls on :meth:`pinned` connections, or round robin."""

    def __init__(self, addr: str, connections: int, timeout: float,
                 token: Optional[str] = None) -> None:
        if connections < 1:
            raise ValueError("connections must be at least 1")
        self.host, self.port = parse_addr(addr)
        self.stats = HttpStats()
        self._connections = [HttpConnection(self.host, self.port, timeout, token, self.stats)
                             for _ in range(connections)]
        self._next = 0

    def pinned(self, index: int) -> HttpConnection:
        """The connection of closed-loop client ``index``: ``index mod connections``."""
        return self._connections[index % len(self._connections)]

    def status(self, command: bytes) -> asyncio.Future:
        """Runs one command (its JSON element) on the next connection."""
        connection = self._connections[self._next]
        self._next = (self._next + 1) % len(self._connections)
        return connection.status(command)

    async def close(self) -> None:
        for connection in self._connections:
            await connection.close()

    async def __aenter__(self) -> "HttpBatcher":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def get_json(addr: str, path: str, timeout: float,
                   token: Optional[str] = None) -> Tuple[int, object]:
    """``GET path`` on a connection of its own: the status and the JSON body (``None`` when the
    body is not JSON)."""
    host, port = parse_addr(addr)
    host_header = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    request = (f"GET {path} HTTP/1.1\r\nHost: {host_header}\r\nAccept: application/json\r\n"
               + (f"Authorization: Bearer {token}\r\n" if token else "")
               + "Connection: close\r\n\r\n").encode("latin-1")

    async def exchange() -> Tuple[int, bytes, bool]:
        reader, writer = await asyncio.open_connection(host, port, limit=BODY_SIZE_MAX_BYTES)
        try:
            writer.write(request)
            return await read_response(reader)
        finally:
            writer.close()

    try:
        status, body, _ = await asyncio.wait_for(exchange(), timeout)
    except asyncio.TimeoutError:
        raise CallTimeoutError(f"no answer to GET {path} within {timeout} s") from None
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as error:
        raise node_error(ErrorCode.UNAVAILABLE,
                         message=f"GET {path} on {host}:{port} failed: {error}") from None
    try:
        return status, json.loads(body)
    except ValueError:
        return status, None
