"""A small threaded HTTP/1.1 server with routing, streamed bodies and injected faults."""

from __future__ import annotations

import contextlib
import json
import logging
import random
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from ._about import ABOUT_PATH

log = logging.getLogger("voicenb.sim")

FAULT_KINDS = ("429", "500", "502", "503", "drop", "slow", "malformed", "cut")


@dataclass
class Fault:
    """One injected failure: ``kind`` for requests whose path starts with ``path``.

    Kinds: ``"429"`` (with ``Retry-After: retry_after``), ``"500"``, ``"502"``, ``"503"``,
    ``"drop"`` (the connection closes with no response), ``"slow"`` (the answer comes after
    ``delay`` seconds), ``"malformed"`` (200 with a body that is not JSON). These hit before
    the request does any work, so a retry never duplicates anything. ``"cut"`` is the
    exception: the request is served, but the connection closes after ``after`` chunks of a
    streamed answer (or half of a plain one).
    """

    kind: str
    path: str = "/"
    method: str | None = None
    times: int = 1
    retry_after: int = 1
    delay: float = 30.0
    after: int = 3

    def matches(self, method: str, path: str) -> bool:
        return self.times > 0 and path.startswith(self.path) and (
            self.method is None or self.method.upper() == method)


@dataclass
class FaultHit:
    """A fault the simulator served: its kind, the request it hit, and for a ``cut``
    response the part of the body the route produced (so a test can tell which upload or
    transcript the client never heard about)."""

    kind: str
    method: str
    path: str
    body: bytes | None = None


class Request:
    """What a route handler sees."""

    def __init__(self, handler: _Handler, method: str, path: str, params: dict[str, str]):
        self._handler = handler
        self.method = method
        self.path = path
        self.params = params
        self.headers = handler.headers
        self.query: dict[str, str] = {}
        self._body_read = False
        self._body_done = False

    def iter_body(self, chunk: int = 1 << 16) -> Iterator[bytes]:
        """The request body in pieces, from Content-Length or chunked encoding."""
        self._body_read = True
        rfile = self._handler.rfile
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                line = rfile.readline()
                if not line:  # the client hung up: an aborted body is not a whole one
                    raise ConnectionError("client closed mid-body")
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    self._body_done = True
                    return
                left = size
                while left:
                    block = rfile.read(min(chunk, left))
                    if not block:
                        raise ConnectionError("client closed mid-body")
                    left -= len(block)
                    yield block
                rfile.readline()
        else:
            left = int(self.headers.get("Content-Length") or 0)
            while left:
                block = rfile.read(min(chunk, left))
                if not block:
                    raise ConnectionError("client closed mid-body")
                left -= len(block)
                yield block
            self._body_done = True

    def body(self) -> bytes:
        return b"".join(self.iter_body())

    @property
    def tcp_nodelay(self) -> int:
        """1 if the connection this request came on has TCP_NODELAY set, as the OS says."""
        sock = self._handler.connection
        return int(bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)))

    def json(self) -> Any:
        raw = self.body()
        try:
            return json.loads(raw or b"null")
        except ValueError:
            return None

    def drain(self) -> None:
        if not self._body_read:
            for _ in self.iter_body():
                pass

    @property
    def half_read(self) -> bool:
        """The route stopped reading the body part-way (an early refusal)."""
        return self._body_read and not self._body_done


class Response:
    def __init__(self, status: int = 200, body: Any = None, *, headers: dict[str, str] | None = None,
                 content_type: str = "application/json",
                 stream: Iterator[bytes] | None = None) -> None:
        self.status = status
        self.headers = headers or {}
        self.content_type = content_type
        self.stream = stream
        if isinstance(body, (bytes, str)):
            self.body = body.encode() if isinstance(body, str) else body
        elif body is None:
            self.body = b""
        else:
            self.body = json.dumps(body).encode()


def error(status: int, message: str, **headers: str) -> Response:
    return Response(status, {"error": message}, headers=headers)


Route = Callable[..., Response]
#: ``shape(status, message, headers)``: an error response in one service's own body shape
ErrorShape = Callable[[int, str, dict[str, str]], Response]


class App:
    """Routes, faults and counters shared by the simulated services."""

    def __init__(self, *, fault_rate: float = 0.0, fault_kinds: tuple[str, ...] = FAULT_KINDS,
                 seed: int | None = 0) -> None:
        self.routes: list[tuple[str, re.Pattern[str], Route]] = []
        self.faults: list[Fault] = []
        self.fault_rate = fault_rate
        self.fault_kinds = fault_kinds
        self.stats: Counter[str] = Counter()
        #: every fault served, in order (see :class:`FaultHit`)
        self.fault_log: list[FaultHit] = []
        #: seconds a random ``slow`` fault holds its answer
        self.slow_delay = 30.0
        self.seed = seed
        self.lock = threading.Lock()
        self._rng = random.Random(seed)
        #: (path prefix, shape) of each service whose errors are not AssemblyAI's {"error": str}
        self.error_shapes: list[tuple[str, ErrorShape]] = []
        #: path prefix -> (host, port) of the websocket server that answers this App's
        #: ``Upgrade: websocket`` requests under it (longest prefix wins; none: routed like
        #: any GET). A client that derives its websocket URL from the same base URL as its
        #: HTTP calls needs both on one port, and a websocket server cannot answer a POST.
        self.websocket_routes: dict[str, tuple[str, int]] = {}

    def websocket_backend(self, path: str) -> tuple[str, int] | None:
        """The websocket server that answers an upgrade to ``path``, if any."""
        best = max((p for p in self.websocket_routes if path.startswith(p)), key=len,
                   default=None)
        return None if best is None else self.websocket_routes[best]

    def error_shape(self, prefix: str, shape: ErrorShape) -> None:
        """Shape injected errors under ``prefix`` as that service does (longest prefix wins)."""
        self.error_shapes.append((prefix, shape))
        self.error_shapes.sort(key=lambda item: -len(item[0]))

    def error(self, path: str, status: int, message: str, **headers: str) -> Response:
        """An error response for ``path`` in the body shape of the service that owns it."""
        for prefix, shape in self.error_shapes:
            if path.startswith(prefix):
                return shape(status, message, headers)
        return error(status, message, **headers)

    def route(self, method: str, pattern: str, fn: Route) -> None:
        self.routes.append((method, re.compile(f"^{pattern}$"), fn))

    def count(self, name: str, n: int = 1) -> None:
        with self.lock:
            self.stats[name] += n

    def record_fault(self, kind: str, method: str, path: str, body: bytes | None = None
                     ) -> None:
        with self.lock:
            self.stats[f"fault:{kind}"] += 1
            self.fault_log.append(FaultHit(kind, method, path, body))

    def pick_fault(self, method: str, path: str) -> Fault | None:
        if path in ("/health", ABOUT_PATH):  # asking who answers must not fail at random
            return None
        with self.lock:
            for fault in self.faults:
                if fault.matches(method, path):
                    fault.times -= 1
                    return fault
            if self.fault_rate and self._rng.random() < self.fault_rate:
                return Fault(self._rng.choice(self.fault_kinds), delay=self.slow_delay)
        return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # A response is its head and then its body: with Nagle's algorithm the body waited for
    # the client's acknowledgement of the head, which a client with nothing to send delays
    # ~40 ms (a live Sync API upload's answer took that long). Real servers turn it off, and
    # write a short answer's head and body in one segment: wfile is buffered, and _send
    # flushes once both are in.
    disable_nagle_algorithm = True
    wbufsize = 1 << 16
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.client_address[0], *args)

    def _dispatch(self, method: str) -> None:
        app = self.server.app
        path, _, query = self.path.partition("?")
        backend = app.websocket_backend(path)
        if (backend is not None and method == "GET"
                and self.headers.get("Upgrade", "").lower() == "websocket"):
            self._tunnel(backend)
            return
        app.count("requests")
        for m, pattern, fn in app.routes:
            match = pattern.match(path)
            if m == method and match:
                break
        else:
            self._send(app.error(path, 404, f"Not found: {method} {path}"))
            return
        request = Request(self, method, path, match.groupdict())
        request.query = {k: v[-1] for k, v in parse_qs(query).items()}
        fault = app.pick_fault(method, path)
        try:
            if fault is not None and fault.kind == "cut":
                response = fn(request, **match.groupdict())
                app.record_fault("cut", method, path,
                                 response.body if response.stream is None else None)
                request.drain()
                self._send(response, cut_after=fault.after)
                return
            if fault is not None:
                app.record_fault(fault.kind, method, path)
                response = self._fault(fault, request)
                if response is None:
                    return
            else:
                response = fn(request, **match.groupdict())
            request.drain()
            if request.half_read:  # the rest of the body must not be read as a request
                response.headers["Connection"] = "close"
                self.close_connection = True
            self._send(response)
        except (BrokenPipeError, ConnectionError, socket.timeout):
            self.close_connection = True

    def handle_expect_100(self) -> bool:
        answered = super().handle_expect_100()
        self.wfile.flush()  # the client waits for this 100 before it sends the body
        return answered

    def _fault(self, fault: Fault, request: Request) -> Response | None:
        app = self.server.app
        request.drain()
        if fault.kind == "drop":
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return None
        if fault.kind == "slow":
            time.sleep(fault.delay)
            self.close_connection = True
            return app.error(request.path, 503, "The simulator was told to answer slowly.")
        if fault.kind == "429":
            return app.error(request.path, 429, "Too Many Requests",
                             **{"Retry-After": str(int(fault.retry_after))})
        if fault.kind == "500":
            return app.error(request.path, 500, "Internal Server Error")
        if fault.kind in ("502", "503"):
            text = {"502": "Bad Gateway", "503": "Service Unavailable"}[fault.kind]
            return Response(int(fault.kind), f"<html><body>{fault.kind} {text}</body></html>",
                            content_type="text/html")
        if fault.kind == "malformed":
            return Response(200, b'{"id": "', content_type="application/json")
        raise ValueError(f"unknown fault kind {fault.kind!r}")

    def _send(self, response: Response, cut_after: int | None = None) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        for key, value in response.headers.items():
            self.send_header(key, value)
        if response.stream is not None:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.flush()  # the head now: the first chunk may be a while coming
            for n, block in enumerate(response.stream):
                if cut_after is not None and n >= cut_after:
                    return self._cut()
                if block:
                    self.wfile.write(f"{len(block):x}\r\n".encode() + block + b"\r\n")
                    self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_header("Content-Length", str(len(response.body)))
            self.end_headers()
            if cut_after is not None:
                self.wfile.write(response.body[: len(response.body) // 2])
                return self._cut()
            self.wfile.write(response.body)
        self.wfile.flush()

    def _tunnel(self, backend: tuple[str, int]) -> None:
        """Hand this connection to the websocket server at ``backend``: replay the request
        head it was sent, then copy bytes both ways (a thread each) until either side ends."""
        self.close_connection = True  # whatever happens, this is no longer HTTP
        try:
            upstream = socket.create_connection(backend, timeout=10)
        except OSError:
            self._send(self.server.app.error(self.path, 502, "The websocket server is down."))
            return
        upstream.settimeout(None)
        # frames are small and come in bursts: Nagle's algorithm would hold one back ~40 ms
        # for the acknowledgement of the one before
        for sock in (upstream, self.connection):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        head = [self.requestline, *(f"{k}: {v}" for k, v in self.headers.items()), "", ""]
        try:
            upstream.sendall("\r\n".join(head).encode("latin-1", "replace"))
            back = threading.Thread(target=_pipe, args=(upstream.recv, self.connection),
                                    name="voicenb-sim-ws-tunnel", daemon=True)
            back.start()
            # bytes the client sent after its head may already sit in rfile's buffer
            _pipe(self.rfile.read1, upstream)
            back.join()
        finally:
            upstream.close()

    def _cut(self) -> None:
        self.wfile.flush()
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")


def _pipe(read: Callable[[int], bytes], to: socket.socket) -> None:
    """Copy what ``read`` gives to ``to`` until it ends, then end ``to``'s side of the talk:
    a shutdown that also wakes the other direction's reader, so neither thread is left."""
    try:
        while block := read(1 << 16):
            to.sendall(block)
    except OSError:  # either side reset: the tunnel is over
        pass
    try:
        to.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 512

    def __init__(self, address: tuple[str, int], app: App) -> None:
        self.app = app
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-request is normal here (timeouts, injected faults); the
        # default would print a traceback into whatever notebook cell runs the simulator.
        log.debug("request from %s failed", client_address, exc_info=True)
