"""Speech to text: one module per service, each returning a :class:`Transcript`."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from .._config import Settings, resolve
from .._errors import ConfigError
from ..audio import AudioLike
from .assemblyai import AssemblyAI
from .base import Backend, Checkpoint, Transcript
from .local import SphinxTranscriber, WhisperTranscriber, auto_backend, whisper_model_name
from .openai import OpenAITranscriber

__all__ = ["Transcript", "Backend", "Checkpoint", "AssemblyAI", "OpenAITranscriber",
           "SphinxTranscriber", "WhisperTranscriber", "get_backend", "transcribe",
           "transcribe_many"]

BACKENDS = ("assemblyai", "openai", "sphinx", "whisper", "auto")

_clients: dict[tuple, Any] = {}
_clients_lock = threading.Lock()


def get_backend(name: str | None = None, settings: Settings | None = None,
                api_key: str | None = None) -> Backend:
    """The backend called ``name`` (else ``Settings.stt``; ``"auto"`` picks one), shared by
    every caller with the same key and URL so its connections and poll timing are reused."""
    cfg = resolve(settings, stt=name)
    if cfg.stt not in BACKENDS:
        raise ConfigError(
            f"Unknown speech-to-text backend {cfg.stt!r}. Choose one of: {', '.join(BACKENDS)} "
            "(backend= argument, Settings(stt=...) or VOICENB_STT).")
    if cfg.stt == "auto":
        cfg = cfg.replace(stt=auto_backend(cfg.replace(assemblyai_api_key=api_key)))
    if cfg.stt == "sphinx":
        key = ("sphinx",)
        factory = SphinxTranscriber
    elif cfg.stt == "whisper":
        key = ("whisper", whisper_model_name(settings=cfg))
        factory = lambda: WhisperTranscriber(settings=cfg)  # noqa: E731
    elif cfg.stt == "openai":
        cfg = cfg.replace(openai_api_key=api_key)
        key = (cfg.stt, cfg.openai_api_key, cfg.openai_base_url, cfg.read_timeout,
               cfg.max_retries)
        factory = lambda: OpenAITranscriber(settings=cfg)  # noqa: E731
    else:
        cfg = cfg.replace(assemblyai_api_key=api_key)
        key = (cfg.stt, cfg.assemblyai_api_key, cfg.assemblyai_base_url,
               cfg.assemblyai_sync_url, cfg.assemblyai_api, cfg.sync_model, cfg.speech_models,
               cfg.connect_timeout, cfg.read_timeout, cfg.max_retries, cfg.backoff,
               cfg.max_retry_after, cfg.poll_timeout)
        factory = lambda: AssemblyAI(settings=cfg)  # noqa: E731
    # One client per key and URL, so its connection pool and its learned poll timing are reused.
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = factory()
        return client


def transcribe(
    audio: AudioLike,
    *,
    backend: str | None = None,
    api_key: str | None = None,
    settings: Settings | None = None,
    **options: Any,
) -> Transcript:
    """Transcribe one clip (path, bytes or :class:`Audio`).

    >>> vnb.transcribe("question.wav").text         # doctest: +SKIP
    'What is the capital of France?'

    ``backend`` is ``"assemblyai"`` (default, or ``VOICENB_STT``), ``"openai"`` (Whisper:
    ``model="whisper-1"`` or ``"gpt-4o-mini-transcribe"``), ``"sphinx"`` or ``"whisper"``
    (on this machine, see :mod:`voicenb.stt.local`) or ``"auto"`` (AssemblyAI if its key,
    or ``api_key``, is set, else OpenAI if its key is, else a local engine). Other
    ``options`` go to the service as they are (e.g. ``language_code="de"`` for AssemblyAI).
    Raises :class:`AudioError` for unusable audio and :class:`TranscriptionError` when the
    service fails the transcript.
    """
    return get_backend(backend, settings, api_key).transcribe(audio, **options)


def transcribe_many(
    items: Iterable[AudioLike],
    *,
    concurrency: int = 32,
    progress: bool = True,
    backend: str | None = None,
    api_key: str | None = None,
    settings: Settings | None = None,
    **options: Any,
) -> list[Transcript]:
    """Transcribe many clips concurrently; one :class:`Transcript` per item, in input order.

    A clip that fails (unreadable, rejected, errored by the service) comes back with
    ``status="error"`` and ``.error`` set instead of raising. A ``tqdm`` progress bar shows
    while it runs (``progress=False`` hides it).

    >>> ts = vnb.transcribe_many(["a.wav", "b.wav"])   # doctest: +SKIP
    >>> [t.text for t in ts]                            # doctest: +SKIP
    """
    return get_backend(backend, settings, api_key).transcribe_many(
        items, concurrency=concurrency, progress=progress, **options)
