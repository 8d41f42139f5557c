"""The :class:`Transcript` every speech-to-text backend returns."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .._errors import ConfigError, VoicenbError
from ..audio import Audio


@dataclass
class Transcript:
    """What a backend heard, with how long each stage took.

    ``status`` is ``"completed"`` or ``"error"`` (then ``error`` says why). Timings are
    seconds: ``upload_s`` sending the audio, ``transcribe_s`` from submit until completion
    was seen, ``stt_s`` the whole call; ``polls`` counts status requests.
    """

    text: str = ""
    id: str | None = None
    status: str = "completed"
    error: str | None = None
    backend: str = "assemblyai"
    audio_s: float | None = None
    confidence: float | None = None
    upload_s: float | None = None
    transcribe_s: float | None = None
    polls: int = 0
    stt_s: float | None = None
    #: where the audio came from (a path or "<bytes>") and where the service keeps it
    source: str | None = None
    audio_url: str | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.status == "completed"

    @classmethod
    def from_response(cls, data: dict[str, Any], **extra: Any) -> Transcript:
        """Build from an AssemblyAI transcript JSON object plus voicenb's own timings."""
        status = data.get("status") or "error"
        return cls(
            text=data.get("text") or "",
            id=data.get("id"),
            status="completed" if status == "completed" else "error",
            error=data.get("error") if status != "completed" else None,
            confidence=data.get("confidence"),
            audio_url=data.get("audio_url"),
            **extra,
        )

    @classmethod
    def failed(cls, error: str, **extra: Any) -> Transcript:
        return cls(status="error", error=error, **extra)

    def to_row(self) -> dict[str, Any]:
        """The history columns this transcript fills."""
        return {
            "audio_s": self.audio_s,
            "stt_backend": self.backend,
            "transcript_id": self.id,
            "transcript": self.text,
            "confidence": self.confidence,
            "upload_s": self.upload_s,
            "transcribe_s": self.transcribe_s,
            "polls": self.polls,
            "stt_s": self.stt_s,
        }

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return self.text if self.ok else f"[error] {self.error}"


def source_name(item: object) -> str:
    """How a clip is named in results: its path, or ``<bytes>``."""
    if isinstance(item, Audio):
        return item.name
    if isinstance(item, (bytes, bytearray, memoryview)):
        return "<bytes>"
    return str(item)


def transcribe_each(transcribe: Callable[[Any], Transcript], items: Iterable[Any], *,
                    backend: str, concurrency: int, progress: bool) -> list[Transcript]:
    """``transcribe`` each item on a thread pool, in input order, with a tqdm.auto bar; a clip
    that fails becomes an error item. For backends that answer in one request."""
    items = list(items)
    if concurrency < 1:
        raise ConfigError(f"concurrency must be at least 1, not {concurrency}.")
    if not items:
        return []
    from tqdm.auto import tqdm

    def one(item: Any) -> Transcript:
        t0 = time.monotonic()
        try:
            return transcribe(item)
        except VoicenbError as exc:
            return Transcript.failed(str(exc), backend=backend, source=source_name(item),
                                     stt_s=time.monotonic() - t0)

    with ThreadPoolExecutor(min(concurrency, len(items))) as pool, \
            tqdm(total=len(items), desc="transcribing", unit="clip", disable=not progress) as bar:
        futures = [pool.submit(one, item) for item in items]
        for future in futures:
            future.add_done_callback(lambda _f: bar.update(1))
        return [f.result() for f in futures]
