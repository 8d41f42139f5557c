"""Every failure voicenb raises on purpose is a :class:`VoicenbError`.

::

    VoicenbError
     ├── ConfigError                 a key, URL or setting is missing or wrong
     │    └── MissingDependencyError an optional extra is not installed
     ├── AudioError                  the audio cannot be used (missing, empty, not audio, too big)
     ├── ServiceError                a service answered with an error, or could not be reached
     │    ├── AuthenticationError    401/403: the key is missing, wrong or lacks permission
     │    ├── RateLimitError         429 after the retries ran out, or at once when the
     │    │                          account is out of credit (code "insufficient_quota")
     │    ├── ServiceTimeoutError    no answer in time (a request, or polling a transcript)
     │    ├── ModelNotFoundError     the chat or transcription model does not exist there
     │    └── TranscriptionError     the service finished a transcript with status "error"
     └── (nothing else)

Messages say what to do next. They carry the service's own error text and status code, never
request headers, and every known key is masked out of them (see :func:`redact`).
"""

from __future__ import annotations

import builtins
import threading

__all__ = [
    "VoicenbError",
    "ConfigError",
    "MissingDependencyError",
    "AudioError",
    "ServiceError",
    "AuthenticationError",
    "RateLimitError",
    "ServiceTimeoutError",
    "ModelNotFoundError",
    "TranscriptionError",
    "redact",
]

_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def remember_secret(value: str | None) -> None:
    """Register a key so that :func:`redact` masks it wherever it turns up (also without
    the spaces or line break it may have been pasted with)."""
    if not isinstance(value, str):
        return
    with _secrets_lock:
        for secret in {value, value.strip()}:
            if len(secret) >= 4:
                _secrets.add(secret)


def redact(text: str) -> str:
    """Return ``text`` with every key voicenb has seen replaced by ``***``."""
    if not text:
        return text
    with _secrets_lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, "***")
    return text


class VoicenbError(Exception):
    """Root of every error voicenb raises on purpose."""

    def __init__(self, message: str) -> None:
        self.message = redact(message)
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


class ConfigError(VoicenbError):
    """A key, URL or setting is missing or invalid."""


class MissingDependencyError(ConfigError):
    """An optional dependency is not installed; the message names the ``pip install``."""

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        self.package = package
        self.extra = extra
        super().__init__(
            f"{purpose} needs the optional package {package!r}, which is not installed. "
            f"Install it with: pip install 'voicenb[{extra}]'"
        )


class AudioError(VoicenbError):
    """The audio cannot be used: missing, empty, not audio, truncated, silent or too large."""

    def __init__(self, message: str, *, source: str | None = None) -> None:
        self.source = source
        super().__init__(message)


class ServiceError(VoicenbError):
    """A service answered with an error status, sent something unreadable, or was unreachable.

    ``status_code`` is the HTTP status (``None`` when no response arrived), ``detail`` the
    service's own error text and ``code`` its error code when it sent one (OpenAI's
    ``"context_length_exceeded"``, ``"invalid_api_key"``...).
    """

    def __init__(
        self,
        message: str,
        *,
        service: str = "",
        status_code: int | None = None,
        detail: str | None = None,
        code: str | None = None,
    ) -> None:
        self.service = service
        self.status_code = status_code
        self.detail = redact(detail) if detail else detail
        self.code = code
        super().__init__(message)


class AuthenticationError(ServiceError):
    """The service refused the key (401) or the key lacks permission (403)."""


class RateLimitError(ServiceError):
    """The service kept answering 429 after the retries ran out (``retry_after``: the wait it
    asked for). With ``code == "insufficient_quota"`` (OpenAI) the account has no credit left:
    that one is raised at once, since no wait fixes it."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs) -> None:
        self.retry_after = retry_after
        super().__init__(message, **kwargs)


class ServiceTimeoutError(ServiceError, builtins.TimeoutError):
    """A request or a wait ran past its timeout. ``transcript_id`` is set when polling."""

    def __init__(self, message: str, *, transcript_id: str | None = None, **kwargs) -> None:
        self.transcript_id = transcript_id
        super().__init__(message, **kwargs)


class ModelNotFoundError(ServiceError):
    """The service has no model by that name; the message says how to choose one."""

    def __init__(self, message: str, *, model: str | None = None, **kwargs) -> None:
        self.model = model
        super().__init__(message, **kwargs)


class TranscriptionError(ServiceError):
    """The service finished a transcript with status ``error``."""

    def __init__(self, message: str, *, transcript_id: str | None = None, **kwargs) -> None:
        self.transcript_id = transcript_id
        super().__init__(message, **kwargs)
