"""A websockets server on an event loop of its own thread: how every simulated socket runs
(streaming, text to speech, the Realtime API, the Voice Agent API). CPU work never runs on
that loop; each service hands it to its executors."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterable
from typing import Any


class SocketServer:
    """Start with :meth:`start`, end with :meth:`stop`; :meth:`abort` cuts sockets as a
    network failure does (no close frame)."""

    def __init__(self, name: str, what: str) -> None:
        self.name, self.what = name, what  # the thread's name; what it is, for errors
        self.loop: asyncio.AbstractEventLoop | None = None
        self.server: Any = None
        self.thread: threading.Thread | None = None

    def start(self, handler: Callable[[Any], Awaitable[None]], host: str, port: int = 0, *,
              beside: Callable[[], Awaitable[None]] | None = None,
              **options: Any) -> tuple[str, int]:
        """Serve ``handler`` (one call per connection) with websockets' ``serve(**options)``;
        ``beside`` runs on the same loop while it serves. Returns (host, port)."""
        ready = threading.Event()
        address: list[tuple[str, int]] = []

        def run() -> None:
            from websockets.asyncio.server import serve

            async def main() -> None:
                self.server = await serve(handler, host, port, **options)
                address.append((host, next(iter(self.server.sockets)).getsockname()[1]))
                task = asyncio.create_task(beside()) if beside is not None else None
                ready.set()
                await self.server.wait_closed()
                if task is not None:
                    task.cancel()

            self.loop = asyncio.new_event_loop()
            self.loop.run_until_complete(main())
            self.loop.close()

        self.thread = threading.Thread(target=run, name=self.name, daemon=True)
        self.thread.start()
        if not ready.wait(10):
            raise RuntimeError(f"{self.what} did not start")
        return address[0]

    def stop(self) -> None:
        if self.loop is not None and self.server is not None:
            self.loop.call_soon_threadsafe(self.server.close)
            if self.thread is not None:
                self.thread.join(10)
            self.server = None

    def abort(self, sockets: Callable[[], Iterable[Any]], timeout: float = 10.0) -> int:
        """Cut ``sockets()`` (read on the loop) without a close frame; how many."""
        if self.loop is None:
            return 0

        async def cut() -> int:
            found = list(sockets())
            for ws in found:
                ws.transport.abort()
            return len(found)

        return asyncio.run_coroutine_threadsafe(cut(), self.loop).result(timeout)
