"""The openai SDK client voicenb uses, and the one place its exceptions become voicenb's.

Retries are the SDK's own (``max_retries``, from Settings); voicenb adds no second layer, and
takes one away: a 429 saying the account is out of credit (``insufficient_quota``) is not
retried, since no wait clears it.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from ._config import DEFAULT_OPENAI_BASE_URL, Settings
from ._errors import (
    AuthenticationError,
    ModelNotFoundError,
    RateLimitError,
    ServiceError,
    ServiceTimeoutError,
    VoicenbError,
)

SERVICE = "OpenAI"
#: what the SDK is given as a key for servers that need none (Ollama, llama.cpp, vLLM)
NO_KEY = "not-needed"
#: OpenAI's error code for a 429 that waiting does not fix: the account has no credit left
#: (vs. ``rate_limit_exceeded``, which passes)
OUT_OF_CREDIT = "insufficient_quota"
BILLING_URL = "https://platform.openai.com/settings/organization/billing"

_clients: dict[tuple, Any] = {}
_lock = threading.Lock()


def client(settings: Settings) -> Any:
    """An ``openai.OpenAI`` for these settings (cached, so connections are reused).

    With the default OpenAI URL a key is required; any other base URL (an OpenAI-compatible
    local server) works without one.
    """
    import openai

    base_url = settings.openai_base_url or DEFAULT_OPENAI_BASE_URL
    key = settings.openai_api_key
    if key:
        from ._http import clean_key

        key = clean_key(key, SERVICE, "OPENAI_API_KEY")
    if not key:
        if base_url.rstrip("/") == DEFAULT_OPENAI_BASE_URL:
            settings.require("openai_api_key")  # raises ConfigError naming every way
        key = NO_KEY
    cache_key = (key, base_url, settings.read_timeout, settings.max_retries)
    with _lock:
        found = _clients.get(cache_key)
        if found is None:
            found = _clients[cache_key] = openai.OpenAI(
                api_key=key, base_url=base_url, max_retries=settings.max_retries,
                timeout=settings.read_timeout, http_client=openai.DefaultHttpxClient(
                    event_hooks={"response": [_no_retry_when_out_of_credit]}))
        return found


def _no_retry_when_out_of_credit(response: Any) -> None:
    """The SDK retries every 429, ``insufficient_quota`` included, so an empty account would
    cost ``max_retries`` pointless waits. Mark that one with the header the SDK obeys."""
    if response.status_code != 429:
        return
    response.read()  # small, and the SDK reads it again from the buffer
    try:
        body = response.json()
    except ValueError:
        return
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("code") == OUT_OF_CREDIT:
        response.headers["x-should-retry"] = "false"


def _detail(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error")
        message = inner.get("message") if isinstance(inner, dict) else body.get("message")
        if message:
            return str(message)[:500]
    return str(getattr(exc, "message", None) or exc)[:500]


def convert(exc: BaseException, *, model: str | None, base_url: str | None,
            what: str = "request") -> VoicenbError:
    """Turn an openai (or httpx) exception into the matching :class:`VoicenbError`."""
    import openai

    where = base_url or DEFAULT_OPENAI_BASE_URL
    if isinstance(exc, VoicenbError):
        return exc
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        detail = _detail(exc)
        code = exc.code if isinstance(getattr(exc, "code", None), str) else None
        kw = dict(service=SERVICE, status_code=status, detail=detail, code=code)
        if isinstance(exc, (openai.AuthenticationError, openai.PermissionDeniedError)):
            return AuthenticationError(
                f"{SERVICE} at {where} refused the API key ({status}: {detail}). Check "
                "OPENAI_API_KEY; it may be wrong, revoked, or lack access to this model.", **kw)
        if code == "model_not_found" or (isinstance(exc, openai.NotFoundError) and "model" in
                                         detail.lower()):
            return ModelNotFoundError(
                f"Model {model!r} is not available at {where} ({detail}). Choose another with "
                "model=..., Settings(model=...) or VOICENB_MODEL (e.g. gpt-4o-mini); the "
                "server lists its models at GET /v1/models.", model=model, **kw)
        if isinstance(exc, openai.RateLimitError) and code == OUT_OF_CREDIT:
            return RateLimitError(
                f"The {SERVICE} account behind this key has no credit left (429 {code}: "
                f"{detail}). Retrying will not help, so voicenb did not: add credit or raise "
                f"the usage limit at {BILLING_URL}, or use another key (OPENAI_API_KEY).",
                **kw)
        if isinstance(exc, openai.RateLimitError):
            retry_after = None
            try:
                retry_after = float(exc.response.headers.get("retry-after"))
            except (TypeError, ValueError):
                pass
            return RateLimitError(
                f"{SERVICE} is rate limiting requests (429: {detail}) and still was after "
                "the SDK's retries. Wait, lower the request rate, or raise "
                "Settings(max_retries=...).", retry_after=retry_after, **kw)
        if code == "context_length_exceeded":
            return ServiceError(
                f"The conversation is too long for {model!r} ({detail}). Shorten the prompt, "
                "or start a new Chat / lower max_history.", **kw)
        return ServiceError(f"{SERVICE} {what} failed with {status}: {detail}", **kw)
    if isinstance(exc, openai.APITimeoutError):
        return ServiceTimeoutError(
            f"{SERVICE} at {where} did not answer in time (after the SDK's retries). Try "
            "again, or raise Settings(read_timeout=...).", service=SERVICE)
    if isinstance(exc, openai.APIConnectionError):
        return ServiceError(
            f"Cannot reach {SERVICE} at {where} ({_detail(exc)}). Check the network and "
            "OPENAI_BASE_URL; for offline use start `python -m voicenb.sim`.", service=SERVICE)
    if isinstance(exc, json.JSONDecodeError):  # a 200 whose body the SDK could not read
        return ServiceError(
            f"{SERVICE} at {where} sent a {what} answer that is not valid JSON ({exc.msg}). "
            "Try again.", service=SERVICE)
    return ServiceError(f"{SERVICE} {what} failed: {type(exc).__name__}: {_detail(exc)}",
                        service=SERVICE)


def is_transport_error(exc: BaseException) -> bool:
    """An error from the SDK or the HTTP library beneath it (vs. a bug in voicenb), including
    the SDK failing to decode a garbled body."""
    import openai

    module = type(exc).__module__ or ""
    return isinstance(exc, (openai.OpenAIError, json.JSONDecodeError)) or module.startswith(
        ("httpx", "httpcore"))
