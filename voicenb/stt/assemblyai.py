"""AssemblyAI's REST API in two layers.

The endpoint functions :func:`upload`, :func:`submit` and :func:`get` are stateless: one
request each, over an :class:`~voicenb._http.HttpClient`. :class:`AssemblyAI` coordinates
them (upload -> submit -> poll) for one clip or a batch, so batch, session and CLI reuse the
same calls.

What a rerun after an interruption (Ctrl-C, a kill, a lost answer) may repeat, given the
:class:`~voicenb.stt.base.Checkpoint` of what was recorded:

- **An upload, at most once more.** Uploads are not billed. One the service completed but
  whose URL was never recorded (the process stopped between the service storing it and the
  answer being written down) is uploaded again: a second upload, bandwidth only. One killed
  mid-body, before its last byte left the process, never completes at the service. (A short
  clip is in the kernel's socket buffers a moment after it is sent: killed then, its upload
  completes anyway.)
- **A transcript, never.** Creating one is billed. A rerun looks for the transcript an
  unrecorded submit created among the account's newest (``GET /v2/transcript``, by the
  upload URL, unique per upload) before it submits. A submit interrupted by Ctrl-C goes on
  in its own thread: a rerun in the same process waits for it and takes its transcript, and
  a script stopped by Ctrl-C exits only once the service has answered, so a rerun in a new
  process finds it in the list. The one window left: a process killed (SIGKILL, power loss)
  while the service was still working on its submit, rerun elsewhere before the service
  answered that submit (normally milliseconds): the list cannot show it yet.
"""

from __future__ import annotations

import heapq
import json
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass
from typing import IO, Any

from .._config import ASSEMBLYAI_APIS, Settings, resolve
from .._errors import (
    AuthenticationError,
    ConfigError,
    RateLimitError,
    ServiceError,
    ServiceTimeoutError,
    TranscriptionError,
    VoicenbError,
)
from .._http import HttpClient, clean_key, field
from ..audio import ASSEMBLYAI_MAX_BYTES, Audio, AudioLike, as_audio
from . import sync
from .base import Checkpoint, OnItemStage, OnStage, Transcript, source_name

TERMINAL_STATUSES = ("completed", "error")
#: consecutive failed status checks tolerated while waiting
MAX_POLL_FAILURES = 3
#: how far the service's clock may be behind ours when matching a transcript we created
SUBMIT_CLOCK_SKEW_S = 120.0
#: Files at least this big show an upload progress bar.
UPLOAD_PROGRESS_BYTES = 32 << 20


class _Submit:
    """One transcript creation (POST /v2/transcript) of this process, in flight or
    interrupted, listed by :func:`_submit_key` (service, audio URL, options) so that a second
    submit of the same request waits for it instead of paying again.

    Why: Ctrl-C used to cut the POST off mid-flight; the service still created the
    transcript, but a rerun at once read the account's list before it existed and submitted
    again. Now the POST runs in a thread Ctrl-C does not reach; the caller that stops waiting
    marks it ``abandoned``, and the next submit of that audio (the rerun) takes its result.

    ``state``: ``new`` (its thread has not begun), ``sending``, or ``dropped`` (claimed
    before its thread began, so it sends nothing). Changed under :data:`_SUBMITS_LOCK`.
    """

    __slots__ = ("future", "state", "abandoned")

    def __init__(self) -> None:
        self.future: Future = Future()
        self.state = "new"
        self.abandoned = False


_SUBMITS: dict[tuple[str, str, str], _Submit] = {}
_SUBMITS_LOCK = threading.Lock()
_DROPPED: Any = object()  # a _Submit's result when it never sent anything


def _submit_key(http: HttpClient, audio_url: str,
                options: dict[str, Any]) -> tuple[str, str, str]:
    return http.base_url, audio_url, json.dumps(options, sort_keys=True, default=str)


def _forget(key: tuple[str, str, str], submit: _Submit) -> None:
    """Take ``submit`` off the list if it is still there (call with the lock held)."""
    if _SUBMITS.get(key) is submit:
        del _SUBMITS[key]


def _claim(key: tuple[str, str, str]) -> _Submit | None:
    """The submit of ``key`` sent (in flight, answered or interrupted) by this process, to
    wait for; one whose thread has not begun is dropped instead, as it has sent nothing
    (call with the lock held)."""
    earlier = _SUBMITS.get(key)
    if earlier is not None and earlier.state == "new":
        earlier.state = "dropped"
        del _SUBMITS[key]
        return None
    return earlier


# -- endpoints ------------------------------------------------------------------------------


def upload(http: HttpClient, body: IO[bytes] | bytes) -> str:
    """POST the raw audio to ``/v2/upload`` (streamed from a file object); return its URL."""
    data = http.request(
        "POST", "/v2/upload", data=body, headers={"Content-Type": "application/octet-stream"}
    )
    return field(data, "upload_url", http.service)


def submit(http: HttpClient, audio_url: str, **options: Any) -> dict[str, Any]:
    """POST ``/v2/transcript`` once (creating a transcript is billed: it is never re-sent
    blindly); ``options`` are passed through (``speech_models``, ...)."""
    payload = {"audio_url": audio_url, **options}
    return http.request("POST", "/v2/transcript", json=payload, retry=False)


def recent(http: HttpClient, limit: int = 100) -> list[dict[str, Any]]:
    """GET ``/v2/transcript``: the account's newest transcripts (TranscriptListItems)."""
    data = http.request("GET", "/v2/transcript", params={"limit": limit})
    return list(data.get("transcripts") or []) if isinstance(data, dict) else []


def get(http: HttpClient, transcript_id: str) -> dict[str, Any]:
    """GET ``/v2/transcript/{id}``."""
    return http.request("GET", f"/v2/transcript/{transcript_id}")


def _wall(created: Any) -> float:
    """A list item's ``created`` (ISO 8601, UTC when it has no zone) as a Unix time."""
    from datetime import datetime, timezone

    try:
        when = datetime.fromisoformat(str(created).replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp()


# -- polling --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PollPolicy:
    """When to ask again whether a transcript is done.

    Without an estimate the interval starts at ``first`` and grows by ``growth`` up to
    ``ceiling``. Once a few transcripts have completed, the client predicts when the next one
    will finish from its audio length, sleeps until just before then (``lead`` of the
    prediction), and checks densely (``dense`` growing by ``growth``) around that moment.

    In a batch only the first ``scouts`` jobs check that eagerly while nothing is known yet;
    the others start at ``sparse`` and grow faster, and are brought forward as soon as a scout
    finishes (jobs submitted together finish together). A job the service keeps ``queued``
    is checked from ``queued`` growing to every ``queued_ceiling`` seconds, and presumed
    started when one of the batch's own jobs finishes and so frees a slot for it.
    """

    first: float = 0.1
    growth: float = 1.3
    ceiling: float = 2.0
    dense: float = 0.1
    lead: float = 0.95
    scouts: int = 3
    scout_growth: float = 1.1
    sparse: float = 2.0
    sparse_growth: float = 1.5
    queued: float = 0.5
    queued_growth: float = 1.6
    queued_ceiling: float = 10.0

    def delay(self, polls: int, elapsed: float, predicted: float | None, dense_polls: int,
              *, scout: bool | None = None, queued: bool = False) -> float:
        """``scout``: None for a job on its own, True/False for a batch's scouts/others."""
        if queued:
            return min(self.queued_ceiling, self.queued * self.queued_growth**max(polls - 1, 0))
        if predicted is None:
            if scout is None:
                return min(self.ceiling, self.first * self.growth**polls)
            if scout:
                return min(self.ceiling, self.first * self.scout_growth**polls)
            return min(self.ceiling, self.sparse * self.sparse_growth**max(polls - 1, 0))
        window = predicted * self.lead
        if elapsed < window:
            return min(self.ceiling, max(self.first, window - elapsed))
        return min(self.ceiling, self.dense * self.growth**dense_polls)


class _Estimator:
    """How long processing takes for a given audio length, learned from this client's
    completed jobs: a least-squares line (fixed + factor x seconds) once lengths vary,
    a plain ratio before that."""

    def __init__(self) -> None:
        self._samples: deque[tuple[float, float]] = deque(maxlen=64)
        self._lock = threading.Lock()

    def record(self, audio_s: float | None, processing_s: float) -> None:
        if audio_s and audio_s > 0 and processing_s > 0:
            with self._lock:
                self._samples.append((audio_s, processing_s))

    def predict(self, audio_s: float | None) -> float | None:
        with self._lock:
            samples = list(self._samples)
        if not audio_s or len(samples) < 2:
            return None
        near = [p for a, p in samples if abs(a - audio_s) <= 0.03 * audio_s]
        if len(near) >= 2:  # clips of this length have finished: they are the best guide
            return statistics.median(near)
        shorter = [p for a, p in samples if a <= audio_s]
        if shorter:  # a longer clip takes at least as long: start checking from there
            return max(shorter)
        ratio = statistics.median(p / a for a, p in samples) * audio_s
        xs, ys = [a for a, _ in samples], [p for _, p in samples]
        mx, my = statistics.fmean(xs), statistics.fmean(ys)
        var = sum((x - mx) ** 2 for x in xs)
        if var / len(xs) <= (0.1 * mx) ** 2:  # lengths too alike to fit a line
            return ratio
        slope = max(0.0, sum((x - mx) * (y - my) for x, y in samples) / var)
        fit = max(0.0, my - slope * mx) + slope * audio_s
        # Guessing early costs a check or two; guessing late costs latency.
        return min(fit, ratio, min(p for a, p in samples if a >= audio_s))


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
    max_bytes = ASSEMBLYAI_MAX_BYTES
    limit_name = "AssemblyAI uploads"
    uploads = True

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
        key = clean_key(self.settings.require("assemblyai_api_key"), "AssemblyAI",
                        "ASSEMBLYAI_API_KEY")
        self.http = HttpClient(
            "AssemblyAI",
            self.settings.assemblyai_base_url,
            {"Authorization": key},
            self.settings,
            pool_size=pool_size,
        )
        self.poll = poll or PollPolicy()
        self._estimator = _Estimator()
        if self.settings.assemblyai_api not in ASSEMBLYAI_APIS:
            raise ConfigError(
                f"Unknown AssemblyAI API {self.settings.assemblyai_api!r}: choose one of "
                f"{', '.join(ASSEMBLYAI_APIS)} (Settings(assemblyai_api=...) or "
                "VOICENB_ASSEMBLYAI_API).")
        sync_url = self.settings.assemblyai_sync_url
        #: the Sync API's client (None: not used, see Settings.assemblyai_sync_url)
        self.sync_http = HttpClient("AssemblyAI", sync_url, {"Authorization": key},
                                    self.settings, pool_size=pool_size) if sync_url else None
        if self.settings.assemblyai_api == "sync" and self.sync_http is None:
            raise ConfigError(
                "assemblyai_api='sync' needs the Sync API's URL: ASSEMBLYAI_BASE_URL points "
                "away from AssemblyAI, so set ASSEMBLYAI_SYNC_URL too (voicenb.sim sets both).")

    def __repr__(self) -> str:
        return f"AssemblyAI(base_url={self.settings.assemblyai_base_url!r})"

    # the Sync API ------------------------------------------------------------------------------

    def takes_sync(self, audio: Audio, options: dict[str, Any],
                   resume: Checkpoint | None = None) -> bool:
        """Whether this clip goes to the Sync API: it is on, nothing of an async attempt is
        there to reuse, and the API takes the clip and the options."""
        if self.sync_http is None or self.settings.assemblyai_api == "async":
            return False
        if resume is not None and (resume.upload_url or resume.transcript_id):
            return False
        takes = sync.eligible(audio, options)
        if self.settings.assemblyai_api == "sync" and not takes:
            raise ConfigError(
                f"assemblyai_api='sync', but the Sync API does not take {audio.name!r}: it "
                "takes 80 ms to 120 s and 40 MB, with the options "
                f"{', '.join(sorted(sync.OPTIONS))}. Set VOICENB_ASSEMBLYAI_API=auto to send "
                "such clips to the async API.")
        return takes

    def uploads_clip(self, audio: Audio, options: dict[str, Any]) -> bool:
        """False for a clip the Sync API takes (one request, nothing uploaded first)."""
        try:
            return not self.takes_sync(audio, options)
        except ConfigError:  # said when the clip is transcribed, with the turn recorded
            return False

    def transcribe_sync(self, audio: AudioLike, **options: Any) -> Transcript:
        """One request to the Sync API (``/v1/transcribe``)."""
        if self.sync_http is None:
            raise ConfigError("The Sync API is off: set ASSEMBLYAI_SYNC_URL (see the README).")
        t0 = time.monotonic()
        audio = as_audio(audio)
        body, audio_type, config = sync._as_sent(audio)
        model = self.settings.sync_model
        attempt = failed = 0
        while True:
            try:
                data = sync.transcribe(self.sync_http, model, body, audio_type,
                                       {**config, **options})
                break
            except ServiceError as exc:
                if exc.status_code == 400:
                    raise _refused(exc, audio.name) from None
                delay = sync.retry_delay(exc, attempt, failed, self.settings)
                if delay is None:
                    raise
                failed += exc.status_code in (500, 504)
            time.sleep(delay)
            attempt += 1
        elapsed = time.monotonic() - t0
        return sync.to_transcript(data, model, audio_s=audio.duration, upload_s=0.0,
                                  transcribe_s=elapsed, stt_s=elapsed, source=audio.name)

    def open_live(self, *, sample_rate: int = 16000, channels: int = 1,
                  **options: Any) -> sync.LiveUpload | None:
        """A :class:`~voicenb.stt.sync.LiveUpload` to feed while recording, or None when the
        Sync API is off (then transcribe the finished clip as usual)."""
        if self.sync_http is None or self.settings.assemblyai_api == "async" or (
                set(options) - sync.OPTIONS):
            return None
        return sync.LiveUpload(self.sync_http, self.settings.sync_model,
                               sample_rate=sample_rate, channels=channels, **options)

    def warm(self) -> bool:
        """Open the Sync API's connection ahead of the clip (when Record is pressed)."""
        return (self.sync_http is not None and self.settings.assemblyai_api != "async"
                and sync.warm(self.sync_http, self.settings.sync_model))

    # stages --------------------------------------------------------------------------------

    def upload(self, audio: AudioLike, *, progress: bool = True) -> str:
        """Stream the audio to the service in chunks; return the ``upload_url``."""
        audio = as_audio(audio)
        audio.check_size(self.max_bytes, self.limit_name)
        with audio.open() as fh:
            if progress and audio.size >= UPLOAD_PROGRESS_BYTES:
                from tqdm.auto import tqdm

                with tqdm(total=audio.size, unit="B", unit_scale=True,
                          desc=f"upload {audio.name}", leave=False) as bar:
                    return upload(self.http, _ProgressReader(fh, bar.update))
            return upload(self.http, fh)

    def submit(self, audio_url: str, **options: Any) -> dict[str, Any]:
        """Create a transcript, safely retried: after an answer that never arrived or a 5xx,
        the transcript may exist already, so the account's newest transcripts are searched
        for this ``audio_url`` before it is submitted again. Returns its JSON (or its
        list item), with at least ``id``.

        Never two at once for one ``audio_url`` in a process: the request runs in a thread
        of its own that Ctrl-C does not stop, and a submit of the same audio while one is in
        flight, or after one was interrupted (a rerun), waits for it and takes its
        transcript (see :class:`_Submit`). A script stopped by Ctrl-C exits once the
        service has answered, so a rerun in a new process finds the transcript in the list.
        """
        key = _submit_key(self.http, audio_url, options)
        while True:
            with _SUBMITS_LOCK:
                earlier = _claim(key)
                if earlier is None:
                    mine = _SUBMITS[key] = _Submit()
            if earlier is not None:
                found = self._take(key, earlier, audio_url)
                if found is not None:
                    return found
                continue
            # not a daemon: an interpreter exiting on Ctrl-C waits for the service's answer
            thread = threading.Thread(target=self._submit_in_thread, name="voicenb-submit",
                                      args=(mine, audio_url, options))
            try:
                thread.start()
                wait_futures([mine.future])
            except BaseException:  # Ctrl-C: the request goes on; the next submit takes it
                with _SUBMITS_LOCK:
                    if mine.state == "new":
                        mine.state = "dropped"
                        _forget(key, mine)
                    else:
                        mine.abandoned = True
                raise
            with _SUBMITS_LOCK:
                _forget(key, mine)
            created = mine.future.result()  # or the error it raised
            if created is not _DROPPED:
                return created

    def _take(self, key: tuple[str, str, str], earlier: _Submit,
              audio_url: str) -> dict[str, Any] | None:
        """Wait for a submit of the same audio in flight (or interrupted) and take its
        transcript; None when it created none, which the account's list then confirms."""
        try:
            created = earlier.future.result()
        except VoicenbError:
            created = None  # refused, or unanswered: its own search found nothing
        finally:
            with _SUBMITS_LOCK:
                _forget(key, earlier)
        if created is _DROPPED:
            return None
        if created is None:  # it may still have created one its search could not see
            return self._created(audio_url)
        return created

    def _submit_in_thread(self, mine: _Submit, audio_url: str, options: dict[str, Any]
                          ) -> None:
        with _SUBMITS_LOCK:
            if mine.state == "dropped":
                mine.future.set_result(_DROPPED)
                return
            mine.state = "sending"
        try:
            mine.future.set_result(self._submit(audio_url, **options))
        except BaseException as exc:  # for whoever waits on it
            mine.future.set_exception(exc)

    def _submit(self, audio_url: str, **options: Any) -> dict[str, Any]:
        since = time.time() - SUBMIT_CLOCK_SKEW_S
        models = self.settings.speech_model_list
        if models is not None and "speech_model" not in options:
            options = {"speech_models": models, **options}
        attempt = 0
        while True:
            try:
                return submit(self.http, audio_url, **options)
            except RateLimitError as exc:  # refused before any work: wait, send again
                if attempt == self.settings.max_retries:
                    raise
                delay = exc.retry_after or self.settings.backoff * 2 ** attempt
            except ServiceError as exc:
                if exc.status_code is not None and 400 <= exc.status_code < 500:
                    raise  # refused (a bad request, a wrong key): nothing was created
                # a 5xx, or an answer broken off or not JSON: the transcript may exist
                found = self._created(audio_url, since, exc)
                if found is not None:
                    return found
                if attempt == self.settings.max_retries:
                    raise
                delay = self.settings.backoff * 2 ** attempt
            time.sleep(min(delay, self.settings.max_retry_after))
            attempt += 1

    def _created(self, audio_url: str, since: float = 0.0,
                 unanswered: ServiceError | None = None) -> dict[str, Any] | None:
        """The transcript an unanswered POST created for ``audio_url``, or None when the
        account has none. The list is read again while it fails; when it cannot be read
        at all, ``unanswered`` (else the list's error) is raised: submitting blind could
        pay twice."""
        for attempt in range(self.settings.max_retries + 1):
            try:
                items = recent(self.http)
            except ServiceError:
                if attempt == self.settings.max_retries:
                    if unanswered is None:
                        raise
                    raise unanswered from None
                time.sleep(min(self.settings.backoff * 2 ** attempt,
                               self.settings.max_retry_after))
                continue
            for item in items:  # newest first
                if (item.get("audio_url") == audio_url and item.get("status") != "error"
                        and _wall(item.get("created")) >= since):
                    return item
            return None
        return None  # pragma: no cover - the loop returns or raises

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
        waiter = _Waiter(self, transcript_id, audio_s, timeout, since)
        while True:
            try:
                delay = waiter.observe(self.get(transcript_id))
            except ServiceError as exc:
                delay = waiter.failed(exc)
            if delay is None:
                return waiter.result, waiter.polls
            time.sleep(delay)

    # whole calls -----------------------------------------------------------------------------

    def transcribe(self, audio: AudioLike, *, progress: bool = True,
                   on_stage: OnStage | None = None, resume: Checkpoint | None = None,
                   **options: Any) -> Transcript:
        """Upload, submit and wait; raise :class:`TranscriptionError` if the service fails it.

        ``resume`` skips what an earlier attempt did (the upload, or the submitted transcript,
        which is waited for rather than paid for twice); ``on_stage`` hears each stage (see
        :mod:`voicenb.stt.base`). A clip the Sync API takes (up to 120 s, see
        :mod:`voicenb.stt.sync`) goes there instead: one request, no upload, no polling.
        """
        audio = as_audio(audio)
        if self.takes_sync(audio, options, resume):
            if on_stage:
                on_stage("started", None)
            try:
                transcript = self.transcribe_sync(audio, **options)
            except ServiceError as exc:  # a clip it does not take after all: the async API
                if exc.status_code not in sync.REFUSALS or self.settings.assemblyai_api == "sync":
                    raise
            else:
                if on_stage:
                    on_stage("done", transcript)
                return transcript
        job = self._start(audio, options, progress=progress, resume=resume, on_stage=on_stage)
        data, polls = self.wait(job.id, audio_s=job.audio_s, since=job.submitted)
        try:
            transcript = job.finish(data, polls)
        except TranscriptionError as exc:
            if on_stage:
                on_stage("done", job.failed(exc, polls))
            raise
        if on_stage:
            on_stage("done", transcript)
        return transcript

    def transcribe_many(
        self,
        items: Iterable[AudioLike],
        *,
        concurrency: int = 32,
        progress: bool = True,
        on_stage: OnItemStage | None = None,
        resume: Sequence[Checkpoint | None] | None = None,
        **options: Any,
    ) -> list[Transcript]:
        """Transcribe many clips at once; results in input order, failures as error items.

        Up to ``concurrency`` uploads run at once; every submitted transcript is then polled
        on its own schedule from one loop, so a slow job never holds up a slot.
        ``resume[i]`` and ``on_stage(i, stage, value)`` are :meth:`transcribe`'s, per item.
        """
        if concurrency < 1:
            raise ConfigError(f"concurrency must be at least 1, not {concurrency}.")
        items = list(items)
        if not items:
            return []
        return _Batch(self, items, options, concurrency, progress, on_stage, resume).run()

    def _start(self, audio: AudioLike, options: dict[str, Any], *, progress: bool = False,
               resume: Checkpoint | None = None, on_stage: OnStage | None = None) -> _Job:
        """Validate, upload and submit one clip, skipping what ``resume`` says is done."""
        t0 = time.monotonic()
        if on_stage:
            on_stage("started", None)
        audio = as_audio(audio)
        audio_s = audio.duration
        upload_url, transcript_id = self._usable(resume, options)
        uploaded = None
        if transcript_id is None:
            if upload_url is None:
                upload_url = self.upload(audio, progress=progress)
                uploaded = time.monotonic()
                if on_stage:
                    on_stage("uploaded", upload_url)
            created = self.submit(upload_url, **options)
            transcript_id = field(created, "id", self.http.service)
        if on_stage and transcript_id != (resume and resume.transcript_id):
            on_stage("submitted", transcript_id)  # new, or found among the account's
        return _Job(self, audio, audio_s, transcript_id, t0, uploaded, time.monotonic())

    def _usable(self, resume: Checkpoint | None,
                options: dict[str, Any]) -> tuple[str | None, str | None]:
        """What of an earlier attempt to reuse: a transcript still running or done is waited
        for, not paid for twice, even one whose creation's answer was lost (it is looked for
        among the account's newest) or is still in flight in this process (:meth:`submit`
        waits for it); one the service failed is submitted again from its upload. Without an
        upload URL the clip is uploaded again (see the module's docstring)."""
        if resume is None:
            return None, None
        if resume.transcript_id is None:
            if resume.upload_url is None:
                return None, None
            # A POST whose answer was lost may have created one (its upload URL is unique).
            # One this process sent (Ctrl-C may have left it in flight) is noted before the
            # list is read: if it is answered while the list is read, it is not missed.
            key = _submit_key(self.http, resume.upload_url, options)
            with _SUBMITS_LOCK:
                earlier = _claim(key)
            found = self._created(resume.upload_url)
            if earlier is not None and found is None:
                found = self._take(key, earlier, resume.upload_url)
            elif earlier is not None and earlier.abandoned:  # the list gave its transcript
                with _SUBMITS_LOCK:
                    _forget(key, earlier)
            return resume.upload_url, None if found is None else field(
                found, "id", self.http.service)
        try:
            status = self.get(resume.transcript_id).get("status")
        except AuthenticationError:
            raise
        except ServiceError:
            status = None  # can't tell now: waiting on it will (and fails if it errored)
        if status == "error":
            return resume.upload_url, None
        return resume.upload_url, resume.transcript_id


def _refused(exc: ServiceError, name: str) -> VoicenbError:
    """A Sync API 400: the clip (bad_audio, audio_too_short) fails like a failed job; the
    request itself (bad_request: the model, an option) is a setting to fix."""
    detail = exc.detail or ""
    if exc.code == "bad_request":
        return ConfigError(
            f"AssemblyAI's Sync API refused the request ({detail}). Check VOICENB_SYNC_MODEL "
            "(Settings.sync_model) and the options passed, or set VOICENB_ASSEMBLYAI_API="
            "async to use the async API.")
    return TranscriptionError(f"AssemblyAI could not transcribe {name!r}: {detail}",
                              detail=detail, service="AssemblyAI", status_code=400)


class _Batch:
    """One :meth:`AssemblyAI.transcribe_many`: uploads on a pool, then every transcript
    checked on its own schedule from one loop."""

    def __init__(self, client: AssemblyAI, items: list[AudioLike], options: dict[str, Any],
                 concurrency: int, progress: bool, on_stage: OnItemStage | None,
                 resume: Sequence[Checkpoint | None] | None) -> None:
        from tqdm.auto import tqdm

        self.client, self.items, self.options = client, items, options
        self.on_stage, self.resume = on_stage, resume
        self.results: list[Transcript | None] = [None] * len(items)
        workers = min(concurrency, len(items))
        self.bar = tqdm(total=len(items), desc="transcribing", unit="clip", disable=not progress)
        self.starts = ThreadPoolExecutor(workers, thread_name_prefix="voicenb-up")
        self.checks = ThreadPoolExecutor(workers, thread_name_prefix="voicenb-poll")
        self.jobs: dict[int, _Job] = {}
        self.waiters: dict[int, _Waiter] = {}
        self.started: dict[Future, int] = {}
        self.checking: dict[Future, int] = {}
        self.due: list[tuple[float, int]] = []  # (monotonic time of the next check, index)

    def run(self) -> list[Transcript]:
        self.started = {self.starts.submit(self._start, i): i for i in range(len(self.items))}
        try:
            while self.started or self.checking or self.due:
                wake = self.due[0][0] - time.monotonic() if self.due else None
                finished, _ = wait_futures([*self.started, *self.checking], timeout=wake,
                                           return_when=FIRST_COMPLETED)
                for future in finished:
                    if future in self.started:
                        self._submitted(self.started.pop(future), future)
                    else:
                        self._checked(self.checking.pop(future), future)
                now = time.monotonic()
                while self.due and self.due[0][0] <= now:
                    _, i = heapq.heappop(self.due)
                    self.checking[self.checks.submit(self.client.get, self.jobs[i].id)] = i
        finally:
            self.starts.shutdown(wait=False, cancel_futures=True)
            self.checks.shutdown(wait=False, cancel_futures=True)
            self.bar.close()
        return [r for r in self.results if r is not None]

    def _start(self, i: int) -> _Job:
        on_stage = self.on_stage
        return self.client._start(
            self.items[i], self.options, resume=self.resume[i] if self.resume else None,
            on_stage=(lambda stage, value: on_stage(i, stage, value)) if on_stage else None)

    def _done(self, i: int, transcript: Transcript) -> None:
        self.results[i] = transcript
        self.bar.update(1)
        if self.on_stage:
            self.on_stage(i, "done", transcript)

    def _submitted(self, i: int, future: Future) -> None:
        try:
            job = self.jobs[i] = future.result()
        except VoicenbError as exc:
            self._done(i, Transcript.failed(str(exc), backend=self.client.backend,
                                            source=source_name(self.items[i])))
            return
        self.waiters[i] = _Waiter(self.client, job.id, job.audio_s, None, job.submitted,
                                  scout=len(self.waiters) < self.client.poll.scouts)
        heapq.heappush(self.due, (time.monotonic() + self.waiters[i].first_delay(), i))

    def _checked(self, i: int, future: Future) -> None:
        waiter, job = self.waiters[i], self.jobs[i]
        try:
            try:
                delay = waiter.observe(future.result())
            except ServiceError as exc:
                delay = waiter.failed(exc)
        except VoicenbError as exc:
            self._done(i, job.failed(exc))
            return
        if delay is not None:
            heapq.heappush(self.due, (time.monotonic() + delay, i))
            return
        try:
            self._done(i, job.finish(waiter.result, waiter.polls))
        except TranscriptionError as exc:
            self._done(i, job.failed(exc, waiter.polls))
        self.due = self._reschedule()

    def _reschedule(self) -> list[tuple[float, int]]:
        """A job just finished, so the estimate may have improved: bring forward the checks
        of jobs now predicted to finish sooner (jobs submitted together finish together), and
        presume that the longest-queued job took the slot it freed."""
        now = time.monotonic()
        waiters = self.waiters
        pending = {i for _, i in self.due}
        # The service starts queued jobs first come, first served: the oldest submission.
        queued = [i for i in pending if waiters[i].status == "queued"]
        presumed = min(queued, key=lambda i: waiters[i].submitted) if queued else None
        out = []
        for when, i in self.due:
            hint = waiters[i].presume_started() if i == presumed else waiters[i].hint()
            out.append((min(when, now + hint) if hint is not None else when, i))
        heapq.heapify(out)
        return out


@dataclass
class _Job:
    """A submitted transcript and the timings so far."""

    client: AssemblyAI
    audio: Audio
    audio_s: float
    id: str
    started: float
    uploaded: float | None  # None when an earlier run had uploaded it
    submitted: float

    @property
    def upload_s(self) -> float | None:
        return self.uploaded - self.started if self.uploaded is not None else None

    def finish(self, data: dict[str, Any], polls: int) -> Transcript:
        end = time.monotonic()
        transcript = Transcript.from_response(
            data, backend=self.client.backend, audio_s=self.audio_s, upload_s=self.upload_s,
            transcribe_s=end - (self.uploaded or self.started), polls=polls,
            stt_s=end - self.started, source=self.audio.name)
        if not transcript.ok:
            raise TranscriptionError(
                f"AssemblyAI could not transcribe {self.audio.name!r} (transcript "
                f"{transcript.id}): {transcript.error}",
                transcript_id=transcript.id, detail=transcript.error, service="AssemblyAI")
        return transcript

    def failed(self, exc: VoicenbError, polls: int = 0) -> Transcript:
        detail = exc.detail if isinstance(exc, TranscriptionError) else None
        return Transcript.failed(
            detail or str(exc), id=self.id, backend=self.client.backend, audio_s=self.audio_s,
            upload_s=self.upload_s, polls=polls, stt_s=time.monotonic() - self.started,
            source=self.audio.name)


class _Waiter:
    """The polling state of one transcript: when to check next, and when to give up."""

    def __init__(self, client: AssemblyAI, transcript_id: str, audio_s: float | None,
                 timeout: float | None, since: float | None, *, scout: bool | None = None
                 ) -> None:
        self.client, self.id, self.audio_s, self.scout = client, transcript_id, audio_s, scout
        self.timeout = timeout if timeout is not None else (
            client.settings.poll_timeout or 300.0 + (audio_s or 0.0))
        now = time.monotonic()
        self.deadline = now + self.timeout
        # Processing began after the last time we saw the job queued (or after submit).
        self.submitted = self.queued_seen = since if since is not None else now
        self.predicted = client._estimator.predict(audio_s)
        self.polls = self.dense_polls = self.failures = 0
        self.last_check: float | None = None
        self.status: str | None = None
        self.result: dict[str, Any] | None = None

    def first_delay(self) -> float:
        return 0.0

    def hint(self) -> float | None:
        """Seconds until this job's dense checks should start, by the latest estimate."""
        if self.predicted is None:
            self.predicted = self.client._estimator.predict(self.audio_s)
        if self.predicted is None or self.status == "queued":
            return None
        return max(0.0, self.predicted * self.client.poll.lead
                   - (time.monotonic() - self.queued_seen))

    def presume_started(self) -> float:
        """A slot just freed up and this job was next in line: assume it started now.
        Returns seconds until it is worth checking (a wrong guess costs one check)."""
        now = time.monotonic()
        self.status, self.queued_seen = "processing", now
        if self.predicted is None:
            self.predicted = self.client._estimator.predict(self.audio_s)
        if self.predicted is None:
            return self.client.poll.first
        return self.predicted * self.client.poll.lead

    def observe(self, data: dict[str, Any]) -> float | None:
        """Take one status answer; seconds until the next check, or None when finished."""
        self.failures = 0
        self.polls += 1
        now = time.monotonic()
        status = data.get("status")
        if status in TERMINAL_STATUSES:
            if status == "completed":
                # It finished somewhere since the previous check: take the middle.
                finished = (now + self.last_check) / 2 if self.last_check else now
                self.client._estimator.record(self.audio_s, finished - self.queued_seen)
            self.result = data
            return None
        self.last_check, self.status = now, status
        if self.predicted is None:
            self.predicted = self.client._estimator.predict(self.audio_s)
        if status == "queued":
            self.queued_seen = now
        elapsed = now - self.queued_seen
        policy = self.client.poll
        predicted = self.predicted if status != "queued" else None
        if predicted is not None and elapsed >= predicted * policy.lead:
            self.dense_polls += 1
        return self._bounded(policy.delay(self.polls, elapsed, predicted, self.dense_polls,
                                          scout=self.scout, queued=status == "queued"), status)

    def failed(self, exc: ServiceError) -> float:
        """A status check failed: ride out a garbled or failed answer or two (the HTTP layer
        has already retried 429/5xx/connection errors); re-raise anything else."""
        if isinstance(exc, (AuthenticationError, ServiceTimeoutError)):
            raise exc
        self.failures += 1
        if self.failures > MAX_POLL_FAILURES:
            raise exc
        return self._bounded(self.client.poll.ceiling, "unknown")

    def _bounded(self, delay: float, status: str | None) -> float:
        now = time.monotonic()
        if now >= self.deadline:
            raise ServiceTimeoutError(
                f"Transcript {self.id} was still {status!r} after {self.timeout:.0f} s. "
                f"It may finish later: call voicenb.AssemblyAI().wait({self.id!r}) "
                "or raise Settings.poll_timeout.",
                transcript_id=self.id, service="AssemblyAI")
        return min(delay, self.deadline - now)
