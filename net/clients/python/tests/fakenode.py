"""A fake node on a loopback port: it speaks whatever a test tells it to, well-formed or not,
so the client's handling of bad input can be checked. Every test runs under a time bound."""

import asyncio
import functools

from bookd_client import protocol as p
from bookd_client.types import HelloOk, Role

#: No test of bad input may take longer than this: a hang fails the test.
TEST_TIMEOUT_S = 20.0

HELLO_OK = HelloOk(Role.PRIMARY, 1, 2, 1 << 20, 1000, 256)


def bounded(test):
    """Runs an async test on a fresh event loop, failing it if it takes too long."""
    @functools.wraps(test)
    def run(*args, **kwargs):
        asyncio.run(asyncio.wait_for(test(*args, **kwargs), TEST_TIMEOUT_S))
    return run


class Peer:
    """One connection to the fake node, seen from the node."""

    def __init__(self, reader, writer):
        self.reader = reader
        self.writer = writer
        self.buffer = p.FrameBuffer()
        self.frames = []

    async def frame(self):
        """The next frame from the client: (kind, request_id, payload); None at EOF."""
        while not self.frames:
            data = await self.reader.read(65536)
            if not data:
                return None
            self.frames.extend(self.buffer.feed(data))
        return self.frames.pop(0)

    def send(self, data):
        self.writer.write(data)

    def send_frame(self, kind, request_id, payload):
        self.send(p.encode_frame(kind, request_id, payload))

    async def handshake(self, hello=HELLO_OK):
        kind, request_id, payload = await self.frame()
        assert kind == p.Kind.HELLO
        self.hello = p.decode_hello(payload)
        self.send_frame(p.Kind.HELLO_OK, request_id, p.encode_hello_ok(hello))

    def close(self):
        self.writer.close()


class FakeNode:
    """Serves every connection with ``handler(peer)``; ``peers`` are the connections so
    far."""

    def __init__(self, handler):
        self.handler = handler
        self.peers = []
        self.server = None

    async def __aenter__(self):
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        host, port = self.server.sockets[0].getsockname()[:2]
        self.addr = f"{host}:{port}"
        return self

    async def __aexit__(self, *exc):
        self.server.close()
        for peer in self.peers:
            peer.writer.transport.abort()

    async def _serve(self, reader, writer):
        peer = Peer(reader, writer)
        self.peers.append(peer)
        try:
            await self.handler(peer)
        except (ConnectionError, AssertionError, TypeError):
            pass
        finally:
            writer.transport.abort()
