"""What every speech-to-text backend shares: the :class:`Transcript` it returns, and the
:class:`Backend` protocol the turn pipeline calls (and nothing else).

A backend transcribes one clip (:meth:`Backend.transcribe`) or many
(:meth:`Backend.transcribe_many`), telling ``on_stage(stage, value)`` what it did as soon as
it is done, so a crash loses nothing that was paid for:

- ``("started", None)`` before the clip's work begins;
- ``("uploaded", url)`` and ``("submitted", transcript_id)`` for services that keep the audio
  and the job (AssemblyAI's async API);
- ``("done", Transcript)`` when the clip is finished, completed or failed.

``resume=Checkpoint(upload_url, transcript_id)`` hands back what an earlier attempt recorded;
backends with nothing to resume ignore it. ``max_bytes`` is the largest clip the service takes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

from .._errors import ConfigError, VoicenbError
from ..audio import Audio, AudioLike

#: ``on_stage(stage, value)`` of one clip; in a batch ``on_stage(index, stage, value)``
OnStage = Callable[[str, Any], None]
OnItemStage = Callable[[int, str, Any], None]


@dataclass(frozen=True)
class Checkpoint:
    """What an earlier attempt at a clip got done: where its audio was uploaded, and the
    transcript the service was asked for."""

    upload_url: str | None = None
    transcript_id: str | None = None


@runtime_checkable
class Backend(Protocol):
    """The surface every speech-to-text backend offers the turn pipeline."""

    #: the name recorded in the history's ``stt_backend``
    backend: str
    #: the largest clip in bytes (None: no limit), and how the limit is named in errors
    max_bytes: int | None
    limit_name: str
    #: True when the audio is uploaded first and transcribed as a separate job
    uploads: bool

    def uploads_clip(self, audio: Audio, options: dict[str, Any]) -> bool:
        """Whether this clip is uploaded first (the turn shows "uploading" until it is)."""
        ...

    def transcribe(self, audio: AudioLike, *, progress: bool = True,
                   on_stage: OnStage | None = None, resume: Checkpoint | None = None,
                   **options: Any) -> Transcript: ...

    def transcribe_many(self, items: Iterable[AudioLike], *, concurrency: int = 8,
                        progress: bool = True, on_stage: OnItemStage | None = None,
                        resume: Sequence[Checkpoint | None] | None = None,
                        **options: Any) -> list[Transcript]: ...


def check_size(backend: Backend, audio: Audio) -> None:
    """Raise :class:`AudioError` before anything is sent when ``audio`` is over the limit."""
    if backend.max_bytes is not None:
        audio.check_size(backend.max_bytes, backend.limit_name)


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
    #: the speech model that ran, as the service reported it
    speech_model: str | None = None
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
            speech_model=data.get("speech_model_used"),
            **extra,
        )

    @classmethod
    def failed(cls, error: str, **extra: Any) -> Transcript:
        return cls(status="error", error=error, **extra)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Transcript:
        """The transcript a history row recorded (the inverse of :meth:`to_row`)."""
        return cls(text=row.get("transcript") or "", id=row.get("transcript_id"),
                   backend=row.get("stt_backend") or "", audio_s=row.get("audio_s"),
                   confidence=row.get("confidence"), upload_s=row.get("upload_s"),
                   transcribe_s=row.get("transcribe_s"), polls=row.get("polls") or 0,
                   stt_s=row.get("stt_s"), speech_model=row.get("speech_model"))

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
            "speech_model": self.speech_model,
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


class OneRequest:
    """The protocol for backends that answer each clip in one call and keep nothing between
    attempts (OpenAI, the local engines): ``resume`` is ignored, ``on_stage`` hears
    ``started`` and ``done``. Subclasses implement :meth:`_transcribe`."""

    backend = ""
    max_bytes: int | None = None
    limit_name = ""
    uploads = False
    #: how many clips a batch runs at once, at most
    max_workers = 32

    def uploads_clip(self, audio: Audio, options: dict[str, Any]) -> bool:
        return self.uploads

    def transcribe(self, audio: AudioLike, *, progress: bool = True,
                   on_stage: OnStage | None = None, resume: Checkpoint | None = None,
                   **options: Any) -> Transcript:
        """Transcribe one clip; raises a :class:`VoicenbError` when it cannot."""
        if on_stage:
            on_stage("started", None)
        transcript = self._transcribe(audio, progress=progress, **options)
        if on_stage:
            on_stage("done", transcript)
        return transcript

    def transcribe_many(self, items: Iterable[AudioLike], *, concurrency: int = 8,
                        progress: bool = True, on_stage: OnItemStage | None = None,
                        resume: Sequence[Checkpoint | None] | None = None,
                        **options: Any) -> list[Transcript]:
        """Transcribe clips in input order; a failed clip is an error item, never a raise."""
        items = list(items)
        if concurrency < 1:
            raise ConfigError(f"concurrency must be at least 1, not {concurrency}.")
        if not items:
            return []
        from tqdm.auto import tqdm

        def one(i: int) -> Transcript:
            t0 = time.monotonic()
            if on_stage:
                on_stage(i, "started", None)
            try:
                transcript = self._transcribe(items[i], progress=False, **options)
            except VoicenbError as exc:
                transcript = Transcript.failed(str(exc), backend=self.backend,
                                               source=source_name(items[i]),
                                               stt_s=time.monotonic() - t0)
            if on_stage:
                on_stage(i, "done", transcript)
            return transcript

        workers = min(concurrency, self.max_workers, len(items))
        with ThreadPoolExecutor(workers) as pool, \
                tqdm(total=len(items), desc="transcribing", unit="clip",
                     disable=not progress) as bar:
            futures = [pool.submit(one, i) for i in range(len(items))]
            for future in futures:
                future.add_done_callback(lambda _f: bar.update(1))
            return [f.result() for f in futures]

    def _transcribe(self, audio: AudioLike, *, progress: bool = False,
                    **options: Any) -> Transcript:
        """One clip; ``progress``: the caller asked for progress on long work."""
        raise NotImplementedError
