"""A TCP proxy between clients and the broker that can delay, reset, stall or half-close every link.

Runs on its own thread with its own event loop, so a test can break links while the code under
test (in this process or in a child process) keeps running.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress


class FaultProxy:
    """Forwards 127.0.0.1:``port`` to ``target``; ``reset``, ``stall`` and ``half_close`` break the links.

    ``latency`` (seconds) delays every chunk forwarded either way, from when it is set.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self._target = target
        self._loop = asyncio.new_event_loop()
        self._links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._flowing = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        self.latency = 0.0

    def start(self) -> None:
        """Start listening on a free port of loopback (``port``)."""
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._flowing.set()
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._accept, "127.0.0.1", 0)
            )
            self.port = self._server.sockets[0].getsockname()[1]
            started.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True, name="fault-proxy")
        self._thread.start()
        started.wait(10)

    def stop(self) -> None:
        """Close every link and the listener, and end the proxy's thread."""
        self._call(self._close_all, rst=False)
        if self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        # What the links left pending (their pipes) ends with the loop.
        for task in asyncio.all_tasks(self._loop):
            task.cancel()
        self._loop.run_until_complete(asyncio.sleep(0))
        self._loop.close()

    def reset(self) -> None:
        """Abort every open link with a TCP RST on the client's side (a crashed peer, a middlebox)."""
        self._call(self._close_all, rst=True)

    def stall(self) -> None:
        """Stop forwarding in both directions, links left open (a hung peer, a dropped route)."""
        self._loop.call_soon_threadsafe(self._flowing.clear)

    def resume(self) -> None:
        """Forward again what waited and what comes."""
        self._loop.call_soon_threadsafe(self._flowing.set)

    def half_close(self) -> None:
        """Close the broker-to-client direction of every link with a FIN, the other left open."""

        def shut() -> None:
            for client, _ in self._links:
                with suppress(OSError):
                    client.write_eof()

        self._loop.call_soon_threadsafe(shut)

    def inject(self, data: bytes) -> None:
        """Send ``data`` to every client as if the broker had sent it (between two of its chunks)."""

        def send() -> None:
            for client, _ in self._links:
                client.write(data)

        self._call(send)

    def links(self) -> int:
        """Return how many client links are open."""
        return len(self._links)

    def _call(self, function: object, **kwargs: object) -> None:
        done = threading.Event()

        def call() -> None:
            try:
                function(**kwargs)  # type: ignore[operator]
            finally:
                done.set()

        self._loop.call_soon_threadsafe(call)
        done.wait(10)

    def _close_all(self, *, rst: bool) -> None:
        for client, upstream in list(self._links):
            if rst:  # SO_LINGER 0: close sends RST instead of FIN
                sock = client.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.transport.abort() if rst else client.close()
            upstream.transport.abort()
        self._links.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        link = (writer, up_writer)
        self._links.add(link)
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )
        self._links.discard(link)
        for side in link:
            side.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            await self._flowing.wait()
            if self.latency:
                await asyncio.sleep(self.latency)
            writer.write(data)
            await writer.drain()


@contextmanager
def fault_proxy(target: tuple[str, int]) -> Iterator[FaultProxy]:
    """Run a ``FaultProxy`` to ``target`` for the block."""
    proxy = FaultProxy(target)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()
