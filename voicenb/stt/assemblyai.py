"""AssemblyAI's REST API in two layers.

The endpoint functions :func:`upload`, :func:`submit` and :func:`get` are stateless: one
request each, over an :class:`~voicenb._http.HttpClient`. :class:`AssemblyAI` coordinates
them (upload -> submit -> poll) for one clip or a batch, so batch, session and CLI reuse the
same calls.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, Any

from .._config import Settings, resolve
from .._errors import (
    AuthenticationError,
    ConfigError,
    ServiceError,
    ServiceTimeoutError,
    TranscriptionError,
    VoicenbError,
)
from .._http import HttpClient
from ..audio import ASSEMBLYAI_MAX_BYTES, Audio, AudioLike, as_audio
from .base import Transcript

#: Models in priority order; AssemblyAI routes to the first one available for the audio.
DEFAULT_SPEECH_MODELS = ("universal-3-5-pro", "universal-2")
TERMINAL_STATUSES = ("completed", "error")
#: consecutive failed status checks tolerated while waiting
MAX_POLL_FAILURES = 3
#: Files at least this big show an upload progress bar.
UPLOAD_PROGRESS_BYTES = 32 << 20


# -- endpoints ------------------------------------------------------------------------------


def upload(http: HttpClient, body: IO[bytes] | bytes) -> str:
    """POST the raw audio to ``/v2/upload`` (streamed from a file object); return its URL."""
    data = http.request(
        "POST", "/v2/upload", data=body, headers={"Content-Type": "application/octet-stream"}
    )
    return data["upload_url"]


def submit(http: HttpClient, audio_url: str, **options: Any) -> dict[str, Any]:
    """POST ``/v2/transcript``; ``options`` are passed through (``speech_models``, ...)."""
    payload = {"audio_url": audio_url, **options}
    payload.setdefault("speech_models", list(DEFAULT_SPEECH_MODELS))
    return http.request("POST", "/v2/transcript", json=payload)


def get(http: HttpClient, transcript_id: str) -> dict[str, Any]:
    """GET ``/v2/transcript/{id}``."""
    return http.request("GET", f"/v2/transcript/{transcript_id}")


# -- polling --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PollPolicy:
    """When to ask again whether a transcript is done.

    Without an estimate the interval starts at ``first`` and grows by ``growth`` up to
    ``ceiling``. Once a few transcripts have completed, the client predicts when the next one
    will finish from its audio length, sleeps until just before then, and checks densely
    (``dense`` growing by ``growth``) around the predicted moment.
    """

    first: float = 0.1
    growth: float = 1.3
    ceiling: float = 2.0
    dense: float = 0.1
    #: start dense checks at this fraction of the predicted processing time
    lead: float = 0.85

    def delay(self, polls: int, elapsed: float, predicted: float | None, dense_polls: int) -> float:
        if predicted is None:
            return min(self.ceiling, self.first * self.growth**polls)
        window = predicted * self.lead
        if elapsed < window:
            return min(self.ceiling, max(self.first, window - elapsed))
        return min(self.ceiling, self.dense * self.growth**dense_polls)


class _Estimator:
    """Processing seconds per audio second, learned from this client's completed jobs."""

    def __init__(self) -> None:
        self._ratios: deque[float] = deque(maxlen=64)
        self._lock = threading.Lock()

    def record(self, audio_s: float | None, processing_s: float) -> None:
        if audio_s and audio_s > 0 and processing_s > 0:
            with self._lock:
                self._ratios.append(processing_s / audio_s)

    def predict(self, audio_s: float | None) -> float | None:
        with self._lock:
            if not audio_s or len(self._ratios) < 2:
                return None
            return statistics.median(self._ratios) * audio_s


class _ProgressReader:
    """A file object wrapper that reports bytes read (it keeps seek/tell for retries)."""

    def __init__(self, fh: IO[bytes], callback: Callable[[int], None]) -> None:
        self._fh, self._callback = fh, callback

    def read(self, size: int = -1) -> bytes:
        block = self._fh.read(size)
        self._callback(len(block))
        return block

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._fh.seek(offset, whence)

    def tell(self) -> int:
        return self._fh.tell()


# -- the coordinator ------------------------------------------------------------------------


class AssemblyAI:
    """Upload, submit and poll against AssemblyAI (or anything speaking its API).

    >>> client = AssemblyAI()                              # doctest: +SKIP
    >>> client.transcribe("question.wav").text            # doctest: +SKIP
    'What is the capital of France?'
    """

    backend = "assemblyai"

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        settings: Settings | None = None,
        poll: PollPolicy | None = None,
        pool_size: int = 32,
    ) -> None:
        self.settings = resolve(
            settings, assemblyai_api_key=api_key, assemblyai_base_url=base_url
        )
        key = self.settings.require("assemblyai_api_key")
        self.http = HttpClient(
            "AssemblyAI",
            self.settings.assemblyai_base_url,
            {"Authorization": key},
            self.settings,
            pool_size=pool_size,
        )
        self.poll = poll or PollPolicy()
        self._estimator = _Estimator()

    def __repr__(self) -> str:
        return f"AssemblyAI(base_url={self.settings.assemblyai_base_url!r})"

    # stages --------------------------------------------------------------------------------

    def upload(self, audio: AudioLike, *, progress: bool = True) -> str:
        """Stream the audio to the service in chunks; return the ``upload_url``."""
        audio = as_audio(audio)
        audio.check_size(ASSEMBLYAI_MAX_BYTES, "AssemblyAI uploads")
        with audio.open() as fh:
            if progress and audio.size >= UPLOAD_PROGRESS_BYTES:
                from tqdm.auto import tqdm

                with tqdm(total=audio.size, unit="B", unit_scale=True,
                          desc=f"upload {audio.name}", leave=False) as bar:
                    return upload(self.http, _ProgressReader(fh, bar.update))
            return upload(self.http, fh)

    def submit(self, audio_url: str, **options: Any) -> dict[str, Any]:
        return submit(self.http, audio_url, **options)

    def get(self, transcript_id: str) -> dict[str, Any]:
        return get(self.http, transcript_id)

    def wait(
        self,
        transcript_id: str,
        *,
        audio_s: float | None = None,
        timeout: float | None = None,
        since: float | None = None,
    ) -> tuple[dict[str, Any], int]:
        """Poll until the transcript is completed or errored; return ``(json, polls)``.

        Raises :class:`ServiceTimeoutError` naming the transcript id after ``timeout``
        seconds (default: ``Settings.poll_timeout``, else 300 s plus the audio's length).
        """
        if timeout is None:
            timeout = self.settings.poll_timeout or 300.0 + (audio_s or 0.0)
        start = time.monotonic()
        deadline = start + timeout
        # Processing began after the last time we saw the job queued (or after submit).
        queued_seen = since if since is not None else start
        predicted = self._estimator.predict(audio_s)
        polls = dense_polls = failures = 0
        while True:
            try:
                data = self.get(transcript_id)
                failures = 0
            except (AuthenticationError, ServiceTimeoutError):
                raise
            except ServiceError:
                # A status check is safe to repeat: ride out a garbled or failed answer or
                # two (the HTTP layer has already retried 429/5xx/connection errors).
                failures += 1
                if failures > MAX_POLL_FAILURES:
                    raise
                time.sleep(self.poll.ceiling)
                continue
            polls += 1
            now = time.monotonic()
            status = data.get("status")
            if status in TERMINAL_STATUSES:
                if status == "completed":
                    self._estimator.record(audio_s, now - queued_seen)
                return data, polls
            if status == "queued":
                queued_seen = now
            elapsed = now - queued_seen
            if predicted is not None and elapsed >= predicted * self.poll.lead:
                dense_polls += 1
            delay = self.poll.delay(polls, elapsed, predicted if status != "queued" else None,
                                    dense_polls)
            if now >= deadline:
                raise ServiceTimeoutError(
                    f"Transcript {transcript_id} was still {status!r} after {timeout:.0f} s. "
                    f"It may finish later: call voicenb.AssemblyAI().wait({transcript_id!r}) "
                    "or raise Settings.poll_timeout.",
                    transcript_id=transcript_id, service="AssemblyAI")
            time.sleep(min(delay, max(0.0, deadline - now)))

    # whole calls -----------------------------------------------------------------------------

    def transcribe(self, audio: AudioLike, *, progress: bool = True, **options: Any) -> Transcript:
        """Upload, submit and wait; raise :class:`TranscriptionError` if the service fails it."""
        t0 = time.monotonic()
        audio = as_audio(audio)
        audio_s = audio.duration
        url = self.upload(audio, progress=progress)
        t1 = time.monotonic()
        created = self.submit(url, **options)
        t2 = time.monotonic()
        data, polls = self.wait(created["id"], audio_s=audio_s, since=t2)
        t3 = time.monotonic()
        transcript = Transcript.from_response(
            data, backend=self.backend, audio_s=audio_s, upload_s=t1 - t0,
            transcribe_s=t3 - t1, polls=polls, stt_s=t3 - t0, source=audio.name,
        )
        if not transcript.ok:
            raise TranscriptionError(
                f"AssemblyAI could not transcribe {audio.name!r} (transcript "
                f"{transcript.id}): {transcript.error}",
                transcript_id=transcript.id, detail=transcript.error, service="AssemblyAI")
        return transcript

    def transcribe_many(
        self,
        items: Iterable[AudioLike],
        *,
        concurrency: int = 32,
        progress: bool = True,
        **options: Any,
    ) -> list[Transcript]:
        """Transcribe many clips at once; results in input order, failures as error items."""
        items = list(items)
        results: list[Transcript | None] = [None] * len(items)

        def one(i: int) -> None:
            item = items[i]
            name = item.name if isinstance(item, Audio) else (
                "<bytes>" if isinstance(item, (bytes, bytearray, memoryview)) else str(item))
            t0 = time.monotonic()
            try:
                results[i] = self.transcribe(item, progress=False, **options)
            except TranscriptionError as exc:
                results[i] = Transcript.failed(exc.detail or str(exc), id=exc.transcript_id,
                                               backend=self.backend, source=name,
                                               stt_s=time.monotonic() - t0)
            except VoicenbError as exc:
                results[i] = Transcript.failed(str(exc), backend=self.backend, source=name,
                                               stt_s=time.monotonic() - t0)

        _run_all(one, len(items), concurrency, progress, "transcribing")
        return [r for r in results if r is not None]


def _run_all(fn: Callable[[int], None], n: int, concurrency: int, progress: bool, desc: str) -> None:
    """Run ``fn(i)`` for each index on a thread pool, with a tqdm.auto bar."""
    if n == 0:
        return
    if concurrency < 1:
        raise ConfigError(f"concurrency must be at least 1, not {concurrency}.")
    from tqdm.auto import tqdm

    bar = tqdm(total=n, desc=desc, unit="clip", disable=not progress)
    try:
        with ThreadPoolExecutor(max_workers=min(concurrency, n),
                                thread_name_prefix="voicenb") as pool:
            futures = [pool.submit(fn, i) for i in range(n)]
            for future in futures:
                future.add_done_callback(lambda _f: bar.update(1))
            for future in futures:
                future.result()
    finally:
        bar.close()
