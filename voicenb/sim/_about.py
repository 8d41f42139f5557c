"""Telling a simulator from a real service: ``GET /sim/about`` and :func:`serves`.

Figures and tables made against the simulators should say so. Each simulator port (the HTTP
one and the streaming websocket's) answers ``GET /sim/about`` with who it is; :func:`serves`
asks, but only on this machine: a URL on any other host is a real service (or nothing), and
is answered ``False`` without a single packet sent.
"""

from __future__ import annotations

import ipaddress
import json
import threading
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

ABOUT_PATH = "/sim/about"
NAME = "voicenb"
_LOOPBACK_NAMES = ("localhost",)
_DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}

_cache: dict[tuple[str, str, int], bool] = {}
_cache_lock = threading.Lock()


def about(word_error_rate: float) -> dict[str, Any]:
    """The body of ``GET /sim/about``."""
    from .. import __version__

    return {"simulator": NAME, "version": __version__, "word_error_rate": word_error_rate}


def _loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name: only "localhost" is trusted not to leave the machine
        return False


def _origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of a loopback URL we know how to probe, else None."""
    try:
        parts = urlsplit(url.strip())
        scheme, host, port = parts.scheme.lower(), parts.hostname or "", parts.port
    except ValueError:  # a malformed port, say
        return None
    if scheme not in _DEFAULT_PORTS or not _loopback(host):
        return None
    return scheme, host, port or _DEFAULT_PORTS[scheme]


def serves(url: str | None, timeout: float = 0.5) -> bool:
    """Whether ``url`` (an AssemblyAI, Sync, OpenAI base URL or a ``ws://`` streaming URL)
    is served by a voicenb simulator, e.g. to label a figure as simulated.

    Only loopback hosts (127.0.0.1, ::1, localhost) are asked, with one small GET of
    ``/sim/about``; any other URL is ``False`` at once, without a request. An answer is kept
    for the process (per scheme, host and port); a refused connection is not, since a
    simulator may start on that port later.

    >>> serves("https://api.assemblyai.com")
    False
    >>> with running() as sim:                                    # doctest: +SKIP
    ...     serves(sim.env()["OPENAI_BASE_URL"])
    True
    """
    origin = _origin(url) if url else None
    if origin is None:
        return False
    with _cache_lock:
        if origin in _cache:
            return _cache[origin]
    answer = _probe(*origin, timeout=timeout)
    if answer is not None:
        with _cache_lock:
            _cache[origin] = answer
    return bool(answer)


def _probe(scheme: str, host: str, port: int, *, timeout: float) -> bool | None:
    """True/False from ``/sim/about``; None when nothing listens there (worth asking again)."""
    http = "https" if scheme in ("https", "wss") else "http"
    netloc = f"[{host}]" if ":" in host else host
    # No proxy: a proxy from the environment would carry a loopback probe off the machine.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"{http}://{netloc}:{port}{ABOUT_PATH}", timeout=timeout) as reply:
            body = json.loads(reply.read(4096) or b"null")
    except ConnectionRefusedError:
        return None
    except urllib.error.URLError as exc:
        return None if isinstance(exc.reason, ConnectionRefusedError) else False
    except (OSError, ValueError):  # a timeout, a reset, an error status, not JSON
        return False
    return isinstance(body, dict) and body.get("simulator") == NAME


def remember(url: str, simulated: bool | None) -> None:
    """What a simulator knows of its own URLs: ``True`` when it starts, ``None`` (ask
    again) when it stops, so a port it gave up is not taken for a simulator later."""
    origin = _origin(url)
    if origin is None:
        return
    with _cache_lock:
        if simulated is None:
            _cache.pop(origin, None)
        else:
            _cache[origin] = simulated


__all__ = ["ABOUT_PATH", "about", "remember", "serves"]
