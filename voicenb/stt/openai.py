"""OpenAI's ``audio.transcriptions`` (``whisper-1`` by default) as a voicenb backend."""

from __future__ import annotations

import time
from typing import Any

from .. import _openai
from .._config import Settings, resolve
from .._errors import ModelNotFoundError
from ..audio import AudioLike, as_audio
from .base import OneRequest, Transcript

DEFAULT_MODEL = "whisper-1"
#: OpenAI rejects audio files over 25 MB; checked before the upload starts.
MAX_BYTES = 25 * 1024 * 1024


class OpenAITranscriber(OneRequest):
    """Transcribe with OpenAI (or any server offering ``/v1/audio/transcriptions``)."""

    backend = "openai"
    max_bytes = MAX_BYTES
    limit_name = "OpenAI transcription, 25 MB"

    def __init__(self, model: str | None = None, *, settings: Settings | None = None,
                 api_key: str | None = None, base_url: str | None = None) -> None:
        self.settings = resolve(settings, openai_api_key=api_key, openai_base_url=base_url)
        self.model = model or DEFAULT_MODEL
        self._client = _openai.client(self.settings)

    def __repr__(self) -> str:
        return f"OpenAITranscriber(model={self.model!r})"

    def _transcribe(self, audio: AudioLike, *, model: str | None = None,
                    progress: bool = False, **options: Any) -> Transcript:
        t0 = time.monotonic()
        audio = as_audio(audio)
        audio.check_size(self.max_bytes, self.limit_name)
        audio_s = audio.duration
        model = model or self.model
        try:
            with audio.open() as fh:
                result = self._client.audio.transcriptions.create(
                    model=model, file=(f"audio.{audio.format}", fh), **options)
        except Exception as exc:
            if not _openai.is_transport_error(exc):
                raise
            error = _openai.convert(exc, model=model, base_url=self.settings.openai_base_url,
                                    what="transcription")
            if isinstance(error, ModelNotFoundError):
                error = ModelNotFoundError(
                    f"Transcription model {model!r} is not available at "
                    f"{self.settings.openai_base_url or 'OpenAI'} ({error.detail}). Choose "
                    f"another with model=, e.g. {DEFAULT_MODEL!r} or 'gpt-4o-mini-transcribe'.",
                    model=model, service=error.service, status_code=error.status_code,
                    detail=error.detail, code=error.code)
            raise error from None
        elapsed = time.monotonic() - t0
        text = result if isinstance(result, str) else getattr(result, "text", "")
        return Transcript(text=(text or "").strip(), backend=self.backend, audio_s=audio_s,
                          transcribe_s=elapsed, stt_s=elapsed, source=audio.name,
                          speech_model=model)
