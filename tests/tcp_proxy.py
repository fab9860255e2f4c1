"""A TCP proxy for fault tests: forwards a local port to a target, and on command
cuts every connection, goes silent (a network that drops packets: connections stay
open, nothing passes, until it heals) or delays what passes. Runs its own event loop
in a thread, so a synchronous test can drive it."""

from __future__ import annotations

import asyncio
import threading
from typing import Literal

Mode = Literal["pass", "cut", "silent"]


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.mode: Mode = "pass"
        self.delay_s = 0.0
        self.accepted = 0  # connections accepted since the start
        self._links: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self.port = 0

    def start(self) -> TcpProxy:
        self._thread.start()
        serving = asyncio.start_server(self._serve, "127.0.0.1", 0)
        self._server = asyncio.run_coroutine_threadsafe(serving, self._loop).result(timeout=10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        self.cut()
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- faults ------------------------------------------------------------------------
    def cut(self) -> None:
        """Reset every connection; new ones are closed at once until `heal()`."""
        self.mode = "cut"
        self._loop.call_soon_threadsafe(self._abort_all)

    def silence(self) -> None:
        """Pass nothing either way (connections stay open) until `heal()`."""
        self.mode = "silent"

    def delay(self, seconds: float) -> None:
        """Hold every chunk `seconds` before passing it on."""
        self.delay_s = seconds

    def heal(self) -> None:
        self.mode, self.delay_s = "pass", 0.0

    @property
    def links(self) -> int:
        return len(self._links) // 2

    # -- inside the loop -----------------------------------------------------------------
    def _abort_all(self) -> None:
        for writer in list(self._links):
            writer.transport.abort()
        self._links.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.mode == "cut":
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._links.update((writer, up_writer))
        await asyncio.gather(
            self._pump(reader, up_writer), self._pump(up_reader, writer), return_exceptions=True
        )
        for w in (writer, up_writer):
            self._links.discard(w)
            w.transport.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            data = await reader.read(65536)
            if not data:
                return
            while self.mode == "silent":
                await asyncio.sleep(0.05)
            if self.mode == "cut":
                return
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            writer.write(data)
            await writer.drain()
