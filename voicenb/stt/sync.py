"""AssemblyAI's Sync API: a short clip in, its transcript out, in one HTTP request.

:func:`transcribe` posts a whole clip to ``/v1/transcribe``; :class:`LiveUpload` posts the
clip to ``/v1/transcribe/live`` while it is being recorded (a chunked ``multipart/form-data``
body whose ``config`` part goes first), so once the speaker stops only the last stretch is
waited for; :func:`warm` opens the connection ahead of time (``/v1/warm``). The model is the
``X-AAI-Model`` header. The API takes 80 ms to 120 s of 16-bit WAV or raw PCM S16LE at 8 to
48 kHz, 40 MB at most: :func:`eligible` says whether a clip qualifies (anything else takes
the async API, see :class:`~voicenb.stt.assemblyai.AssemblyAI`).
"""

from __future__ import annotations

import json
import queue
import secrets
import threading
import time
import wave
from collections.abc import Iterator
from typing import Any

from .._errors import ServiceError, VoicenbError
from .._http import HttpClient
from ..audio import Audio
from .base import Transcript

MODEL_HEADER = "X-AAI-Model"
MIN_S, MAX_S = 0.08, 120.0
MAX_BYTES = 40 * 1000 * 1000
RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)
#: the options the Sync API's ``config`` part takes; any other option needs the async API
OPTIONS = frozenset({"prompt", "keyterms_prompt", "conversation_context", "language_codes",
                     "timestamps"})
#: statuses after which the async API is tried instead: the clip is not one it takes
REFUSALS = (413, 415)
BACKEND = "assemblyai-sync"


def eligible(audio: Audio, options: dict[str, Any]) -> bool:
    """True when the Sync API takes this clip and these options (a clip it would have to be
    decoded for is sent as 16 kHz PCM)."""
    if set(options) - OPTIONS or audio.size > MAX_BYTES:
        return False
    try:
        seconds = audio.duration
    except VoicenbError:
        return False
    return MIN_S <= seconds <= MAX_S and seconds * 32_000 <= MAX_BYTES


def _as_sent(audio: Audio) -> tuple[bytes, str, dict[str, Any]]:
    """(bytes, content type, config) to send: a 16-bit WAV at a supported rate as it is,
    anything else decoded to 16 kHz mono PCM."""
    if audio.format == "wav":
        with audio.open() as fh, wave.open(fh, "rb") as w:
            ok = w.getsampwidth() == 2 and w.getframerate() in RATES and w.getnchannels() <= 2
        if ok:
            return audio.read(), "audio/wav", {}
    return audio.pcm16k(), "audio/pcm", {"sample_rate": 16000, "channels": 1}


class _Multipart:
    """The body framing, written out as it goes so a live upload can start before its audio
    exists (``config`` first: the service decodes audio as it lands)."""

    def __init__(self) -> None:
        self.boundary = secrets.token_hex(16)
        self.content_type = f"multipart/form-data; boundary={self.boundary}"

    def head(self, config: dict[str, Any], audio_type: str) -> bytes:
        filename = "audio.pcm" if audio_type == "audio/pcm" else "audio.wav"
        return (f"--{self.boundary}\r\nContent-Disposition: form-data; name=\"config\"\r\n"
                f"Content-Type: application/json\r\n\r\n{json.dumps(config)}\r\n"
                f"--{self.boundary}\r\nContent-Disposition: form-data; name=\"audio\"; "
                f"filename=\"{filename}\"\r\nContent-Type: {audio_type}\r\n\r\n").encode()

    def tail(self) -> bytes:
        return f"\r\n--{self.boundary}--\r\n".encode()


def transcribe(http: HttpClient, model: str, audio: bytes, audio_type: str,
               config: dict[str, Any]) -> dict[str, Any]:
    """POST a whole clip to ``/v1/transcribe`` once (a transcription is billed: see
    :func:`retry_delay` for when to send it again); the SyncTranscriptResponse JSON."""
    body = _Multipart()
    return http.request("POST", "/v1/transcribe", retry=False,
                        data=body.head(config, audio_type) + audio + body.tail(),
                        headers={MODEL_HEADER: model, "Content-Type": body.content_type})


def retry_delay(exc: ServiceError, attempt: int, failed: int, settings: Any) -> float | None:
    """Seconds to wait before sending a clip again after ``exc`` (``attempt`` retries so far,
    ``failed`` of them after a 500 or 504), or None to give up, as the Sync API's error guide
    says: 429 and 503 (refused before any work) are retried after ``Retry-After`` or a
    backoff; 500 and 504 are safe to retry once; the rest never."""
    status = exc.status_code
    if status in (429, 503) and attempt < settings.max_retries:
        after = getattr(exc, "retry_after", None)
        delay = after if after is not None else settings.backoff * 2 ** attempt
        return min(delay, settings.max_retry_after)
    if status in (500, 504) and failed == 0:
        return settings.backoff
    return None


def warm(http: HttpClient, model: str) -> bool:
    """GET ``/v1/warm``: opens the pooled connection now; False if it cannot be opened."""
    try:
        http.request("GET", "/v1/warm", headers={MODEL_HEADER: model}, retry=False)
    except ServiceError as exc:
        return exc.status_code is not None  # any answer means the connection is open
    return True


def to_transcript(data: dict[str, Any], model: str, **extra: Any) -> Transcript:
    """A :class:`Transcript` from a SyncTranscriptResponse (``model`` is the one routed to:
    the response does not name it)."""
    return Transcript(text=data.get("text") or "", id=data.get("session_id"),
                      confidence=data.get("confidence"), backend=BACKEND, polls=0,
                      speech_model=model, **extra)


class LiveUpload:
    """A clip uploaded to ``/v1/transcribe/live`` while it is recorded.

    ``write(pcm)`` queues 16-bit PCM as it is captured (never blocks); ``close()`` ends the
    audio; ``result()`` ends it if need be and returns the :class:`Transcript`; ``abort()``
    drops the request (an upload still being fed is cut off, so nothing is transcribed; after
    ``close()`` whatever comes back is discarded). The request runs on its own thread from
    the moment the upload is opened; if no audio comes for ``idle_s`` seconds (a page closed
    mid-recording) the upload aborts itself, so no thread or connection is left waiting.
    """

    def __init__(self, http: HttpClient, model: str, *, sample_rate: int = 16000,
                 channels: int = 1, idle_s: float = 30.0, **config: Any) -> None:
        self.model = model
        self.sample_rate, self.channels = sample_rate, channels
        self._chunks: queue.Queue[bytes | None] = queue.Queue()
        self._bytes = 0
        self._lock = threading.Lock()
        self._closed = self._aborted = False
        self._result: dict[str, Any] | BaseException | None = None
        self._last_byte = 0.0
        body = _Multipart()
        head = body.head({**config, "sample_rate": sample_rate, "channels": channels},
                         "audio/pcm")

        def produce() -> Iterator[bytes]:
            yield head
            while True:
                try:
                    chunk = self._chunks.get(timeout=idle_s)
                except queue.Empty:
                    self.abort()
                    chunk = None
                if chunk is None:
                    break
                yield chunk
            if self._aborted:
                raise _Aborted  # drops the connection: the service never gets a whole body
            self._last_byte = time.monotonic()
            yield body.tail()

        def run() -> None:
            try:
                self._result = http.request(
                    "POST", "/v1/transcribe/live", data=produce(), retry=False,
                    headers={MODEL_HEADER: model, "Content-Type": body.content_type})
            except BaseException as exc:  # handed to result()
                self._result = exc

        self._thread = threading.Thread(target=run, name="voicenb-sync-live", daemon=True)
        self._thread.start()

    @property
    def seconds(self) -> float:
        """How much audio was written so far."""
        return self._bytes / (2 * self.channels * self.sample_rate)

    def write(self, pcm: bytes) -> None:
        with self._lock:
            if self._closed:
                raise VoicenbError("This live upload has ended (closed or aborted): open "
                                   "another with open_live() for the next recording.")
            if pcm:
                self._bytes += len(pcm)
                self._chunks.put(bytes(pcm))

    def close(self) -> None:
        """End the audio (the recording stopped); the service transcribes the last stretch
        while :meth:`result` is still to be called."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._chunks.put(None)

    def result(self, timeout: float = 60.0) -> Transcript:
        """End the audio if still open and wait for the transcript. ``stt_s`` is this wait
        (what the caller's turn spent on speech to text: nothing, if the service answered
        while the turn waited for another); ``transcribe_s`` runs from the last byte sent."""
        waited_from = time.monotonic()
        self.close()
        self._thread.join(timeout)
        if self._aborted:
            raise ServiceError("This live upload was aborted: it has no transcript.",
                               service="AssemblyAI")
        if self._thread.is_alive():
            self.abort()  # whatever it still returns is not kept
            raise ServiceError(f"AssemblyAI's Sync API gave no answer {timeout:.0f} s after "
                               "the recording ended.", service="AssemblyAI")
        if isinstance(self._result, BaseException):
            raise self._result
        done = time.monotonic()
        return to_transcript(self._result or {}, self.model, audio_s=self.seconds,
                             transcribe_s=done - (self._last_byte or done),
                             stt_s=done - waited_from, upload_s=0.0)

    def abort(self) -> None:
        """Drop the request; nothing it may still return is kept. Safe from any thread, at
        any time, more than once."""
        with self._lock:
            self._aborted = True
            if not self._closed:
                self._closed = True
                self._chunks.put(None)


class _Aborted(Exception):
    """Raised inside the body producer to drop an aborted upload's connection."""
