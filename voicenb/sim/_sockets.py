"""A websockets server on an event loop of its own thread: how every simulated socket runs
(streaming, text to speech, the Realtime API, the Voice Agent API). CPU work never runs on
that loop; each service hands it to its executors.

Every such server has :class:`SocketFaults`, the network's and the service's failures on
demand: cut a session's socket after N seconds or N frames (no close frame), close it with a
code (1011, 3005...), stall (neither read nor send) for a while, refuse new connections for a
while, or cut every session at a random time (seeded) for a soak::

    sim.streaming.faults.plan("drop", after_s=2.0)            # the next session, 2 s in
    sim.streaming.faults.plan("close", code=1011, after_frames=30, refuse_s=3)
    sim.streaming.faults.cut_every(5, 20, seed=1)             # each session, 5-20 s in

``python -m voicenb.sim --socket-fault SPEC`` plans the same (:func:`parse_fault`).
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

#: what a socket fault does
FAULT_KINDS = ("drop", "close", "stall", "refuse")


@dataclass
class SocketFault:
    """One planned failure of a session's socket."""

    kind: str                        # one of FAULT_KINDS
    after_s: float | None = None     # seconds after the session opened...
    after_frames: int | None = None  # ...or after this many messages from the client
    code: int = 1011                 # close: the close code
    reason: str = "Internal server error (simulated)"
    for_s: float = 0.0               # stall: how long; refuse: how long
    refuse_s: float = 0.0            # after it strikes, new connections are refused this long
    times: int = 1                   # sessions it strikes (each once); -1: every session

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown socket fault {self.kind!r}; choose from {FAULT_KINDS}")
        if self.after_s is None and self.after_frames is None:
            self.after_s = 0.0


class SessionFaults:
    """The faults one session meets: ask :meth:`due` at each message from the client."""

    def __init__(self, owner: SocketFaults, planned: list[SocketFault]) -> None:
        self.owner, self.planned = owner, planned
        self.opened = time.monotonic()
        self.frames = 0

    def due(self) -> SocketFault | None:
        """Count a message; the fault to act out now, if one is due."""
        self.frames += 1
        if not self.planned:
            return None
        elapsed = time.monotonic() - self.opened
        for fault in self.planned:
            if (fault.after_frames is not None and self.frames >= fault.after_frames) or \
                    (fault.after_s is not None and elapsed >= fault.after_s):
                self.planned.remove(fault)
                self.owner.struck(fault)
                return fault
        return None

    async def strike(self, ws: Any, *, sending: bool = False) -> bool:
        """Count a message from the client (``sending``: an event the server sends, which
        counts none, so only a fault due by time strikes) and act out a fault due now;
        True when it ended the session."""
        if sending:
            if not self.planned:
                return False
            self.frames -= 1
        fault = self.due()
        return fault is not None and await self.act(ws, fault)

    async def act(self, ws: Any, fault: SocketFault) -> bool:
        """Act ``fault`` out on ``ws``; True when the session is over."""
        if fault.kind == "stall":
            await asyncio.sleep(fault.for_s)
            return False
        if fault.kind == "close":
            try:
                await ws.close(fault.code, fault.reason[:120])
            except Exception:  # noqa: BLE001 - already gone
                pass
            return True
        ws.transport.abort()  # drop: no close frame, as a network failure
        return True


class SocketFaults:
    """The faults planned for a server's sessions (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._planned: list[SocketFault] = []
        self._refuse_until = 0.0
        self._every: tuple[float, float, str, random.Random] | None = None
        #: faults acted out, by kind; connections refused
        self.stats: dict[str, int] = {kind: 0 for kind in FAULT_KINDS}
        #: (monotonic time, kind) of each fault acted out, latest last
        self.log: deque[tuple[float, str]] = deque(maxlen=10_000)

    def plan(self, kind: str, *, after_s: float | None = None, after_frames: int | None = None,
             code: int = 1011, reason: str | None = None, for_s: float = 0.0,
             refuse_s: float = 0.0, times: int = 1) -> SocketFault:
        """Strike the next ``times`` sessions (-1: every one) with ``kind``. ``refuse``
        refuses new connections for ``for_s`` from now."""
        fault = SocketFault(kind, after_s, after_frames, code,
                            reason or SocketFault.reason, for_s, refuse_s, times)
        if kind == "refuse":
            self.refuse(for_s)
            return fault
        with self._lock:
            self._planned.append(fault)
        return fault

    def cut_every(self, low_s: float, high_s: float, *, seed: int | None = 0,
                  kind: str = "drop") -> None:
        """Cut every session (``drop``, or ``close`` with 1011) at a random time between
        ``low_s`` and ``high_s`` after it opened, the times drawn from ``seed``."""
        with self._lock:
            self._every = (low_s, high_s, kind, random.Random(seed))

    def refuse(self, for_s: float) -> None:
        """Refuse new connections (HTTP 503) for ``for_s`` from now."""
        with self._lock:
            self._refuse_until = max(self._refuse_until, time.monotonic() + for_s)

    def clear(self) -> None:
        with self._lock:
            self._planned.clear()
            self._every = None
            self._refuse_until = 0.0

    def refusing(self) -> bool:
        """Whether a connection now is refused (counted)."""
        with self._lock:
            if time.monotonic() < self._refuse_until:
                self.stats["refuse"] += 1
                return True
        return False

    def session(self) -> SessionFaults:
        """The faults of a session opening now."""
        with self._lock:
            mine = []
            for fault in list(self._planned):
                mine.append(SocketFault(**{**fault.__dict__, "times": 1}))
                if fault.times > 0:
                    fault.times -= 1
                    if fault.times == 0:
                        self._planned.remove(fault)
            if self._every is not None:
                low, high, kind, rng = self._every
                mine.append(SocketFault(kind, after_s=rng.uniform(low, high)))
        return SessionFaults(self, mine)

    def struck(self, fault: SocketFault) -> None:
        with self._lock:
            self.stats[fault.kind] += 1
            self.log.append((time.monotonic(), fault.kind))
            if fault.refuse_s:
                self._refuse_until = max(self._refuse_until, time.monotonic() + fault.refuse_s)


def parse_fault(spec: str) -> tuple[str | None, dict[str, Any]]:
    """``[service:]kind[=value][@N(s|f)][xTIMES]`` as (service or None, :meth:`SocketFaults.plan`
    keywords); ``drop@5-20s`` is :meth:`SocketFaults.cut_every`. Examples: ``drop@2s``,
    ``streaming:close=1011@40f``, ``stall=3@5s``, ``refuse=10``, ``drop@5-20s``, ``drop@3sx*``
    (every session), ``drop@2s,refuse=3`` (then refuse new connections for 3 s)."""
    service, _, rest = spec.rpartition(":") if ":" in spec else (None, "", spec)
    rest, _, then = rest.partition(",")
    refuse_s = 0.0
    if then:
        if not then.startswith("refuse="):
            raise ValueError(f"{spec!r}: only ,refuse=<seconds> may follow a fault")
        refuse_s = float(then.removeprefix("refuse="))
    times = 1
    if "x" in rest.rsplit("@", 1)[-1]:
        rest, _, count = rest.rpartition("x")
        times = -1 if count in ("*", "inf") else int(count)
    head, _, when = rest.partition("@")
    kind, _, value = head.partition("=")
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown socket fault {kind!r} in {spec!r}; choose from "
                         f"{', '.join(FAULT_KINDS)}")
    plan: dict[str, Any] = {"kind": kind, "times": times}
    if refuse_s:
        plan["refuse_s"] = refuse_s
    if value:
        if kind == "close":
            plan["code"] = int(value)
        elif kind in ("stall", "refuse"):
            plan["for_s"] = float(value)
        else:
            raise ValueError(f"{kind} takes no value ({spec!r})")
    if when:
        unit, number = when[-1], when[:-1]
        if unit not in "sf" or not number:
            raise ValueError(f"{spec!r}: write when as @<seconds>s or @<frames>f")
        if "-" in number and unit == "s":
            low, high = (float(x) for x in number.split("-", 1))
            return service or None, {"kind": kind, "every": (low, high)}
        plan["after_s" if unit == "s" else "after_frames"] = \
            float(number) if unit == "s" else int(number)
    return service or None, plan


def apply_fault(faults: SocketFaults, plan: dict[str, Any], seed: int | None = 0) -> None:
    """Plan what :func:`parse_fault` read."""
    plan = dict(plan)
    if "every" in plan:
        low, high = plan.pop("every")
        if plan.get("refuse_s"):
            raise ValueError("a random cut (@low-highs) takes no ,refuse=")
        faults.cut_every(low, high, seed=seed, kind=plan["kind"])
    else:
        faults.plan(plan.pop("kind"), **plan)


class SocketServer:
    """Start with :meth:`start`, end with :meth:`stop`; :meth:`abort` cuts sockets as a
    network failure does (no close frame)."""

    def __init__(self, name: str, what: str) -> None:
        self.name, self.what = name, what  # the thread's name; what it is, for errors
        self.loop: asyncio.AbstractEventLoop | None = None
        self.server: Any = None
        self.thread: threading.Thread | None = None
        #: failures on demand (each service asks it at each session and message)
        self.faults = SocketFaults()

    def start(self, handler: Callable[[Any], Awaitable[None]], host: str, port: int = 0, *,
              beside: Callable[[], Awaitable[None]] | None = None,
              **options: Any) -> tuple[str, int]:
        """Serve ``handler`` (one call per connection) with websockets' ``serve(**options)``;
        ``beside`` runs on the same loop while it serves. Returns (host, port)."""
        ready = threading.Event()
        address: list[tuple[str, int]] = []
        options["process_request"] = self._refusing(options.get("process_request"))

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

    def _refusing(self, inner: Callable[..., Any] | None) -> Callable[..., Any]:
        """The handshake check: a refused connection gets HTTP 503 (the fault ``refuse``)."""

        def check(connection: Any, request: Any) -> Any:
            if self.faults.refusing():
                return connection.respond(503, "Service unavailable (simulated): try again "
                                               "shortly.\n")
            return inner(connection, request) if inner is not None else None

        return check

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
