"""OpenAI's ``audio.transcriptions`` (``whisper-1`` by default) as a voicenb backend."""

from __future__ import annotations

import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .. import _openai
from .._config import Settings, resolve
from .._errors import ConfigError, VoicenbError
from ..audio import AudioLike, as_audio
from .base import Transcript, source_name

DEFAULT_MODEL = "whisper-1"
#: OpenAI rejects audio files over 25 MB; checked before the upload starts.
MAX_BYTES = 25 * 1024 * 1024


class OpenAITranscriber:
    """Transcribe with OpenAI (or any server offering ``/v1/audio/transcriptions``)."""

    backend = "openai"

    def __init__(self, model: str | None = None, *, settings: Settings | None = None,
                 api_key: str | None = None, base_url: str | None = None) -> None:
        self.settings = resolve(settings, openai_api_key=api_key, openai_base_url=base_url)
        self.model = model or DEFAULT_MODEL
        self._client = _openai.client(self.settings)

    def __repr__(self) -> str:
        return f"OpenAITranscriber(model={self.model!r})"

    def transcribe(self, audio: AudioLike, *, model: str | None = None, progress: bool = True,
                   **options: Any) -> Transcript:
        t0 = time.monotonic()
        audio = as_audio(audio)
        audio.check_size(MAX_BYTES, "OpenAI transcription, 25 MB")
        audio_s = audio.duration
        model = model or self.model
        try:
            with audio.open() as fh:
                result = self._client.audio.transcriptions.create(
                    model=model, file=(f"audio.{audio.format}", fh), **options)
        except Exception as exc:
            if not _openai.is_transport_error(exc):
                raise
            raise _openai.convert(exc, model=model, base_url=self.settings.openai_base_url,
                                  what="transcription") from None
        elapsed = time.monotonic() - t0
        text = result if isinstance(result, str) else getattr(result, "text", "")
        return Transcript(text=(text or "").strip(), backend=self.backend, audio_s=audio_s,
                          transcribe_s=elapsed, stt_s=elapsed, source=audio.name)

    def transcribe_many(self, items: Iterable[AudioLike], *, concurrency: int = 8,
                        progress: bool = True, **options: Any) -> list[Transcript]:
        items = list(items)
        if concurrency < 1:
            raise ConfigError(f"concurrency must be at least 1, not {concurrency}.")
        if not items:
            return []
        from tqdm.auto import tqdm

        def one(item: AudioLike) -> Transcript:
            t0 = time.monotonic()
            try:
                return self.transcribe(item, **options)
            except VoicenbError as exc:
                return Transcript.failed(str(exc), backend=self.backend,
                                         source=source_name(item), stt_s=time.monotonic() - t0)

        with ThreadPoolExecutor(min(concurrency, len(items))) as pool, \
                tqdm(total=len(items), desc="transcribing", unit="clip",
                     disable=not progress) as bar:
            futures = [pool.submit(one, item) for item in items]
            for future in futures:
                future.add_done_callback(lambda _f: bar.update(1))
            return [f.result() for f in futures]
