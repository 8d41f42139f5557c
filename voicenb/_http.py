"""One requests session per service, with urllib3's Retry, timeouts, and typed errors.

429, 5xx and connection errors are retried with exponential backoff and jitter, honouring
``Retry-After``; other 4xx are returned at once. Whatever is left is turned into a
:class:`~voicenb.ServiceError` here, at the boundary, so no requests/urllib3/json exception
leaves a public call.
"""

from __future__ import annotations

import json
import logging
import socket
from typing import Any

import requests
import requests.auth
from requests.adapters import HTTPAdapter
from urllib3.util import Retry

from ._config import Settings
from ._errors import (
    AuthenticationError,
    ConfigError,
    RateLimitError,
    ServiceError,
    ServiceTimeoutError,
)

log = logging.getLogger("voicenb")

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})

#: set on every socket a client opens. TCP_NODELAY: a body streamed while it is recorded
#: ends in small writes (its last chunk, then the chunked terminator), and with Nagle's
#: algorithm each waits for the acknowledgement of the one before, which the service may
#: delay ~40 ms. urllib3's default is the same; set here so it holds whatever that becomes.
SOCKET_OPTIONS = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)


def make_retry(settings: Settings, *, every_method: bool = True) -> Retry:
    """``every_method=False``: a POST is retried only when it never reached the service (a
    connection that did not open); after a read error or a 5xx the work may have been done,
    so the caller decides (see ``AssemblyAI.submit``)."""
    return Retry(
        total=settings.max_retries,
        connect=settings.max_retries,
        read=settings.max_retries,
        status=settings.max_retries,
        other=0,
        allowed_methods=None if every_method else Retry.DEFAULT_ALLOWED_METHODS,
        status_forcelist=RETRY_STATUSES,
        backoff_factor=settings.backoff,
        backoff_jitter=settings.backoff / 2,
        backoff_max=30,
        respect_retry_after_header=True,
        retry_after_max=int(settings.max_retry_after),
        raise_on_status=False,  # hand back the last response so its error text is kept
    )


def clean_key(key: str, service: str, env: str) -> str:
    """``key`` without the spaces or line break it may have been pasted with; a
    :class:`ConfigError` (that does not show it) if it still has a character an HTTP header
    cannot carry, which would otherwise fail every request with a confusing error."""
    key = key.strip()
    if not key:
        raise ConfigError(f"The {service} API key is blank. Set {env} to your key.")
    if not (key.isascii() and key.isprintable()):
        raise ConfigError(
            f"The {service} API key contains a character an HTTP header cannot carry (a line "
            "break, a tab, or a non-ASCII character such as a typographic dash or quote). "
            f"Copy the key again into {env}, or wherever you set it.")
    return key


class _HeaderAuth(requests.auth.AuthBase):
    """Adds the key header to each request. Kept as auth, not a session header, so requests
    skips its ~/.netrc lookup on every call and the key is not in ``session.headers``."""

    def __init__(self, headers: dict[str, str]) -> None:
        self._headers = headers

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers.update(self._headers)
        return request

    def __repr__(self) -> str:
        return "_HeaderAuth(<hidden>)"


class _Adapter(HTTPAdapter):
    """requests' adapter with :data:`SOCKET_OPTIONS` on its sockets, through a proxy too."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("socket_options", list(SOCKET_OPTIONS))
        super().init_poolmanager(*args, **kwargs)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        proxy_kwargs.setdefault("socket_options", list(SOCKET_OPTIONS))
        return super().proxy_manager_for(proxy, **proxy_kwargs)


class HttpClient:
    """A base URL, auth headers, a pooled retrying session and error mapping for one service."""

    def __init__(
        self,
        service: str,
        base_url: str,
        headers: dict[str, str],
        settings: Settings,
        *,
        pool_size: int = 32,
    ) -> None:
        self.service = service
        self.base_url = base_url.rstrip("/")
        self.timeout = (settings.connect_timeout, settings.read_timeout)
        self.session = requests.Session()
        self.session.auth = _HeaderAuth(headers)
        self.session.headers["User-Agent"] = "voicenb"
        adapter = _Adapter(
            max_retries=make_retry(settings), pool_connections=4, pool_maxsize=pool_size
        )
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        # For requests that create something billed: no blind retry once it was sent.
        self.once = requests.Session()
        self.once.auth, self.once.headers = self.session.auth, self.session.headers
        once = _Adapter(max_retries=make_retry(settings, every_method=False),
                        pool_connections=2, pool_maxsize=pool_size)
        self.once.mount("http://", once)
        self.once.mount("https://", once)

    def request(self, method: str, path: str, *, retry: bool = True, **kwargs: Any) -> Any:
        """Send a request and return the decoded JSON body, or raise a ServiceError.
        ``retry=False``: once it was sent, it is not sent again (see :func:`make_retry`)."""
        url = path if path.startswith(("http://", "https://")) else f"{self.base_url}{path}"
        kwargs.setdefault("timeout", self.timeout)
        what = f"{self.service} {method} {path}"
        try:
            response = (self.session if retry else self.once).request(method, url, **kwargs)
        except requests.exceptions.Timeout:
            raise ServiceTimeoutError(
                f"{what} timed out after retries (timeouts: connect {self.timeout[0]} s, read "
                f"{self.timeout[1]} s). The service may be slow; try again or raise "
                "Settings.read_timeout.", service=self.service) from None
        except requests.exceptions.RetryError:  # pragma: no cover - raise_on_status=False
            raise ServiceError(f"{what} failed after retries.", service=self.service) from None
        except requests.exceptions.ConnectionError as exc:
            raise ServiceError(
                f"Cannot reach {self.service} at {self.base_url} ({_reason(exc)}). Check the "
                "network and the base URL; for offline use start `python -m voicenb.sim`.",
                service=self.service) from None
        except requests.exceptions.ChunkedEncodingError as exc:
            raise ServiceError(
                f"{what} broke off while its answer was arriving ({_reason(exc)}). Try again "
                "(a session's retry_failed() does).", service=self.service) from None
        except requests.exceptions.RequestException as exc:
            raise ServiceError(f"{what} failed: {_reason(exc)}", service=self.service) from None
        except ValueError as exc:  # http.client refusing a header value, for one
            raise ServiceError(f"{what} could not be sent ({type(exc).__name__}). Check the "
                               "key and the base URL for stray characters.",
                               service=self.service) from None
        return self._decode(response, what)

    def _decode(self, response: requests.Response, what: str) -> Any:
        status = response.status_code
        if status >= 400:
            detail, code = _error_text(response)
            kwargs = dict(service=self.service, status_code=status, detail=detail, code=code)
            if status in (401, 403):
                raise AuthenticationError(
                    f"{self.service} refused the API key ({status}: {detail}). Check the key "
                    "you set; it may be wrong, expired, or lack access.", **kwargs)
            if status == 429:
                retry_after = _float(response.headers.get("Retry-After"))
                raise RateLimitError(
                    f"{self.service} is rate limiting requests (429: {detail}) and still was "
                    "after voicenb's retries. Lower the concurrency or try again later.",
                    retry_after=retry_after, **kwargs)
            raise ServiceError(f"{what} failed with {status}: {detail}", **kwargs)
        try:
            return response.json()
        except (ValueError, json.JSONDecodeError):
            raise ServiceError(
                f"{what} returned a body that is not JSON (status {status}): "
                f"{response.text[:200]!r}", service=self.service, status_code=status,
                detail=response.text[:200]) from None

    def sockets(self) -> list[socket.socket]:
        """The sockets of the idle connections kept for the next requests, to read the
        options they really have (``bench.sync_api`` prints them)."""
        found = []
        adapters = {id(a): a for s in (self.session, self.once) for a in s.adapters.values()}
        for adapter in adapters.values():
            # urllib3 lists its idle connections nowhere public: they wait in each pool's queue
            manager = adapter.poolmanager
            for key in manager.pools.keys():
                pool = manager.pools.get(key)
                idle = list(pool.pool.queue) if pool is not None and pool.pool else []
                found += [conn.sock for conn in idle if conn is not None and conn.sock]
        return found

    def close(self) -> None:
        self.session.close()
        self.once.close()


def field(data: Any, name: str, service: str) -> Any:
    """``data[name]``, or a ServiceError when the service's answer lacks it."""
    if isinstance(data, dict) and data.get(name) is not None:
        return data[name]
    raise ServiceError(f"{service} answered without {name!r}: {str(data)[:200]!r}",
                       service=service)


def _error_text(response: requests.Response) -> tuple[str, str | None]:
    """The service's error text, and its machine-readable code when it sent one."""
    try:
        body = response.json()
    except ValueError:
        return (response.text or response.reason or "").strip()[:500], None
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):  # OpenAI's shape
            return str(err.get("message") or err)[:500], err.get("code")
        if err:
            return str(err)[:500], None
        message = body.get("message") or body.get("detail")  # the Sync API's shapes
        if message:
            title = body.get("title")
            code = body.get("error_code") or (
                title.lower().replace(" ", "_") if isinstance(title, str) else None)
            return (f"{code}: {message}" if code else str(message))[:500], code
    return json.dumps(body)[:500], None


def _reason(exc: Exception) -> str:
    """A short reason without the URL's query or any header."""
    text = str(exc.__context__ or exc) if not str(exc) else str(exc)
    for marker in ("Caused by ", "due to "):
        if marker in text:
            text = text.split(marker, 1)[1]
    return text.strip("()")[:200]


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
