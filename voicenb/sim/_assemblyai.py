"""AssemblyAI's REST API, simulated: /v2/upload, /v2/transcript, /v2/transcript/{id}.

A test can stop a request at a known point of its route with :meth:`AssemblyAIService.hold`
(see :class:`Hold`), to kill or interrupt the client exactly there.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import random
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._errors import AudioError
from ..audio import Audio
from ._registry import Registry
from ._server import App, Request, Response, error

#: The pre-recorded models the API accepts in ``speech_models`` (November 2026):
#: universal-3-5-pro is deprecated but served; universal-3-pro, best, nano, slam-1 are refused.
SPEECH_MODELS = ("assemblyai-stt-3-7", "universal-3-5-pro", "universal-2")
#: What a request without ``speech_models`` runs on an account created since 2026-11-17.
ACCOUNT_DEFAULT_MODEL = "assemblyai-stt-3-7"
AUTH_ERROR = "Authentication error, API token missing/invalid"
RANDOM_ERROR = ("Transcoding failed (simulated: error_rate). The simulator was told to fail "
                "this fraction of transcripts.")
#: Where :meth:`AssemblyAIService.hold` can stop a request, and what has happened by then.
HOLD_POINTS = {
    "upload": "POST /v2/upload: the first after_bytes of the body read, the rest not",
    "uploaded": "POST /v2/upload: the upload stored and counted, its answer not sent",
    "submit": "POST /v2/transcript: the request read, no transcript created",
    "created": "POST /v2/transcript: the transcript created and counted, its answer not sent",
    "list": "GET /v2/transcript: the request read, the list not made",
}


class Hold:
    """Requests stopped at one point of the simulated AssemblyAI API until released, so that a
    test can kill or interrupt its client at that point and nowhere else.

    >>> hold = sim.assemblyai.hold("uploaded")      # doctest: +SKIP
    >>> # ...start the client...
    >>> hold.wait_arrived(60)                        # doctest: +SKIP
    >>> # ...the upload is stored, its answer not sent: kill the client now...
    >>> hold.release()                               # doctest: +SKIP
    >>> hold.wait_finished(60)                       # doctest: +SKIP

    It catches the next ``times`` requests to reach ``point`` (one of :data:`HOLD_POINTS`);
    later ones pass. Each caught request waits until :meth:`release` (or the simulator
    stops), then goes on as it would have: a client that has gone is not noticed until its
    answer is written, as by a real server. Thread-safe; ``with hold:`` releases on exit.
    """

    def __init__(self, point: str, times: int = 1, after_bytes: int = 4096) -> None:
        if point not in HOLD_POINTS:
            raise ValueError(f"Unknown hold point {point!r}: choose one of "
                             f"{', '.join(HOLD_POINTS)}.")
        if times < 1 or after_bytes < 1:
            raise ValueError("times and after_bytes must be at least 1.")
        self.point, self.times, self.after_bytes = point, times, after_bytes
        #: requests caught so far, and those of them that have left the route since
        self.arrived = self.finished = 0
        self._released = False
        self._cond = threading.Condition()

    def __repr__(self) -> str:
        return (f"Hold({self.point!r}, arrived={self.arrived}/{self.times}, "
                f"released={self._released}, finished={self.finished})")

    def __enter__(self) -> Hold:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def wait_arrived(self, timeout: float = 60.0, count: int = 1) -> None:
        """Return once ``count`` requests are caught; TimeoutError after ``timeout`` s."""
        self._wait(lambda: self.arrived >= count, timeout, f"{count} request(s) to arrive")

    def release(self) -> None:
        """Let the caught requests go on (and any caught later pass at once)."""
        with self._cond:
            self._released = True
            self._cond.notify_all()

    def wait_finished(self, timeout: float = 60.0, count: int = 1) -> None:
        """Return once ``count`` caught requests have left the route (answered, refused,
        or broken off by a client that went away); TimeoutError after ``timeout`` s."""
        self._wait(lambda: self.finished >= count, timeout, f"{count} request(s) to finish")

    @property
    def spent(self) -> bool:
        with self._cond:
            return self._released and self.arrived >= self.times

    def _wait(self, done: Callable[[], bool], timeout: float, what: str) -> None:
        with self._cond:
            if not self._cond.wait_for(done, timeout):
                raise TimeoutError(f"{self!r}: waited {timeout:g} s for {what}.")

    # the route's side

    def _catch(self) -> bool:
        """Take this request if the hold has room for it, and wait until released."""
        with self._cond:
            if self.arrived >= self.times:
                return False
            self.arrived += 1
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._released)
            return True

    def _leave(self) -> None:
        with self._cond:
            self.finished += 1
            self._cond.notify_all()


@dataclass
class Job:
    id: str
    audio_url: str
    options: dict[str, Any]
    created: float
    processing_s: float
    audio_s: float | None
    text: str | None
    error: str | None
    started: float | None = None
    finished: float | None = None
    polls: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    created_at: float = field(default_factory=time.time)  # wall clock, for the list

    def status(self, now: float) -> str:
        if self.started is None:
            return "queued"
        if now < self.finished:
            return "processing"
        return "error" if self.error else "completed"


class AssemblyAIService:
    """The state behind the simulated AssemblyAI endpoints.

    Processing takes ``processing_fixed + processing_factor * audio_s`` seconds; at most
    ``concurrency`` jobs process at once (``None``: no limit) and the rest stay ``queued``.

    ``error_rate`` (0 to 1, default 0; set it as ``sim.assemblyai.error_rate = 0.1``) makes
    that fraction of new transcripts end with status ``error``, chosen by a random generator
    seeded with the simulator's ``seed``, and counted as ``fault:transcript_error``.

    :meth:`hold` stops requests at a known point (mid-upload, upload stored, before or after
    a transcript is created) until the test releases them.
    """

    def __init__(self, app: App, registry: Registry, *, key: str, processing_fixed: float,
                 processing_factor: float, concurrency: int | None,
                 upload_bandwidth: float | None) -> None:
        self.app = app
        self.registry = registry
        self.key = key
        self.processing_fixed = processing_fixed
        self.processing_factor = processing_factor
        self.concurrency = concurrency
        self.upload_bandwidth = upload_bandwidth
        self.base_url = ""
        self.error_rate = 0.0
        #: the model a request that names none runs on (an older account: universal-3-5-pro)
        self.account_default = ACCOUNT_DEFAULT_MODEL
        self._error_rng = random.Random(getattr(app, "seed", 0))
        self.jobs: dict[str, Job] = {}
        self._queue: list[Job] = []
        self._slots: list[float] = []  # finish times of jobs holding a processing slot
        self._uploads: dict[str, tuple[Path, str]] = {}  # id -> (file, sha256)
        self._holds: list[Hold] = []
        self._dir = tempfile.TemporaryDirectory(prefix="voicenb-sim-")
        app.route("POST", "/v2/upload", self.upload)
        app.route("POST", "/v2/transcript", self.create)
        app.route("GET", "/v2/transcript/?", self.list)
        app.route("GET", "/v2/transcript/(?P<tid>[^/]+)", self.get)
        app.route("GET", "/cdn/upload/(?P<uid>[^/]+)", self.download)
        app.route("GET", "/sim/jobs", self.job_log)

    def close(self) -> None:
        with self.app.lock:
            holds, self._holds = self._holds, []
        for hold in holds:  # nothing waits for a test that has gone
            hold.release()
        self._dir.cleanup()

    def hold(self, point: str, *, times: int = 1, after_bytes: int = 4096) -> Hold:
        """Stop the next ``times`` requests that reach ``point`` (see :data:`HOLD_POINTS`)
        until the returned :class:`Hold` is released. ``after_bytes``: how much of the body
        an ``"upload"`` hold reads first.

        >>> hold = sim.assemblyai.hold("submit")    # doctest: +SKIP
        """
        hold = Hold(point, times, after_bytes)
        with self.app.lock:
            self._holds = [h for h in self._holds if not h.spent] + [hold]
        return hold

    def _armed(self, point: str) -> list[Hold]:
        with self.app.lock:
            return [h for h in self._holds if h.point == point and h.arrived < h.times]

    @contextmanager
    def _holding(self) -> Iterator[Callable[[str], None]]:
        """A route's ``stop(point)``: wait there if a hold takes this request; each hold
        that did hears when the request leaves the route, however it leaves."""
        caught: list[Hold] = []

        def stop(point: str) -> None:
            for hold in self._armed(point):
                if hold._catch():
                    caught.append(hold)
                    return

        try:
            yield stop
        finally:
            for hold in caught:
                hold._leave()

    def ledger(self) -> dict[str, Counter[str]]:
        """What the service did for each clip (by the sha256 of its audio), to check that a
        client never paid twice for work it knew had succeeded.

        Counters: ``uploads`` and ``transcripts`` (created); ``uploads_heard`` and
        ``transcripts_heard``, those whose answer reached the client (not lost to a ``cut``
        fault); ``transcripts_heard_ok``, heard ones that did not end with status ``error``;
        ``transcripts_ok``, every one that did not end with status ``error``, heard or not.
        A client that never repeats what it knew had succeeded has, per clip, at most one
        upload heard and at most one transcript heard ok.
        """
        unheard_urls, unheard_ids = set(), set()
        with self.app.lock:
            hits = [h for h in self.app.fault_log if h.kind == "cut" and h.body]
            jobs = list(self.jobs.values())
            uploads = dict(self._uploads)
        for hit in hits:
            try:
                body = json.loads(hit.body)
            except ValueError:
                continue
            if hit.path == "/v2/upload" and isinstance(body, dict):
                unheard_urls.add(body.get("upload_url"))
            elif hit.path == "/v2/transcript" and isinstance(body, dict):
                unheard_ids.add(body.get("id"))
        out: dict[str, Counter[str]] = {}
        prefix = f"{self.base_url}/cdn/upload/"
        for uid, (_, sha) in uploads.items():
            counts = out.setdefault(sha, Counter())
            counts["uploads"] += 1
            counts["uploads_heard"] += f"{prefix}{uid}" not in unheard_urls
        for job in jobs:
            entry = uploads.get(job.audio_url[len(prefix):]) \
                if job.audio_url.startswith(prefix) else None
            counts = out.setdefault(entry[1] if entry else job.audio_url, Counter())
            heard = job.id not in unheard_ids
            counts["transcripts"] += 1
            counts["transcripts_heard"] += heard
            counts["transcripts_heard_ok"] += heard and job.error is None
            counts["transcripts_ok"] += job.error is None
        return out

    # -- routes ------------------------------------------------------------------------------

    def _authorized(self, request: Request) -> bool:
        token = request.headers.get("Authorization", "")
        return token.removeprefix("Bearer ").strip() == self.key

    def upload(self, request: Request) -> Response:
        if not self._authorized(request):
            return error(401, AUTH_ERROR)
        with self._holding() as stop:
            return self._upload(request, stop)

    def _upload(self, request: Request, stop: Callable[[str], None]) -> Response:
        uid = str(uuid.uuid4())
        path = Path(self._dir.name) / uid
        digest = hashlib.sha256()
        size, t0 = 0, time.monotonic()
        # a mid-body hold needs the body read in pieces no bigger than its after_bytes
        held_at = min((h.after_bytes for h in self._armed("upload")), default=None)
        chunk = min(held_at, 1 << 16) if held_at else 1 << 16
        try:
            with open(path, "wb") as fh:
                for block in request.iter_body(chunk):
                    digest.update(block)
                    fh.write(block)
                    size += len(block)
                    if held_at and size >= held_at:
                        held_at = None
                        stop("upload")
                    if self.upload_bandwidth:  # pace the upload like a real link would
                        ahead = size / self.upload_bandwidth - (time.monotonic() - t0)
                        if ahead > 0:
                            time.sleep(ahead)
        except BaseException:  # the client went away mid-body: no upload
            path.unlink(missing_ok=True)
            raise
        if size == 0:
            path.unlink()
            return error(400, "Upload failed: the request body is empty")
        self._uploads[uid] = (path, digest.hexdigest())
        self.app.count("uploads")
        self.app.count("upload_bytes", size)
        stop("uploaded")
        return Response(200, {"upload_url": f"{self.base_url}/cdn/upload/{uid}"})

    def download(self, request: Request, uid: str) -> Response:
        entry = self._uploads.get(uid)
        if entry is None:
            return error(404, "Not found")
        return Response(200, entry[0].read_bytes(), content_type="application/octet-stream")

    def job_log(self, request: Request) -> Response:
        """The simulator's own record of every job (times on this host's monotonic clock),
        for benchmarks that run the simulator in another process."""
        with self.app.lock:
            jobs = {j.id: {"created": j.created, "started": j.started, "finished": j.finished,
                           "processing_s": j.processing_s, "polls": j.polls,
                           "audio_s": j.audio_s} for j in self.jobs.values()}
        return Response(200, {"jobs": jobs, "stats": dict(self.app.stats)})

    def create(self, request: Request) -> Response:
        if not self._authorized(request):
            return error(401, AUTH_ERROR)
        with self._holding() as stop:
            return self._create(request, stop)

    def _create(self, request: Request, stop: Callable[[str], None]) -> Response:
        body = request.json()
        stop("submit")
        if not isinstance(body, dict):
            return error(400, "Request body must be a JSON object")
        audio_url = body.get("audio_url")
        if not isinstance(audio_url, str) or not audio_url:
            return error(400, "audio_url is required")
        refused = _refused_models(body)
        if refused:
            return error(400, refused)
        now = time.monotonic()
        text, err, audio_s = self._hear(audio_url)
        if err is None and self._random_error():
            text, err = None, RANDOM_ERROR
            self.app.record_fault("transcript_error", "POST", "/v2/transcript")
        processing = self.processing_fixed + self.processing_factor * (audio_s or 0.0)
        job = Job(id=str(uuid.uuid4()), audio_url=audio_url, options=body, created=now,
                  processing_s=processing, audio_s=audio_s, text=text, error=err)
        with self.app.lock:
            self._advance(now)
            self.jobs[job.id] = job
            self._queue.append(job)
            self._advance(now)
            self.app.stats["transcripts"] += 1
        stop("created")
        return Response(200, self._json(job, time.monotonic()))

    def list(self, request: Request) -> Response:
        """``GET /v2/transcript``: the newest transcripts first, as TranscriptListItems."""
        if not self._authorized(request):
            return error(401, AUTH_ERROR)
        try:
            limit = int(request.query.get("limit", "10"))
        except ValueError:
            return error(400, "limit must be an integer")
        if not 1 <= limit <= 200:
            return error(400, "limit must be between 1 and 200")
        status = request.query.get("status")
        with self._holding() as stop:  # finished once the list is made
            stop("list")
            now = time.monotonic()
            with self.app.lock:
                self._advance(now)
                jobs = sorted(self.jobs.values(), key=lambda j: j.created_at, reverse=True)
                items = [self._item(job, now) for job in jobs
                         if status is None or job.status(now) == status][:limit]
        url = f"{self.base_url}/v2/transcript?limit={limit}"
        return Response(200, {"page_details": {"limit": limit, "result_count": len(items),
                                               "current_url": url, "prev_url": None,
                                               "next_url": None},
                              "transcripts": items})

    def _item(self, job: Job, now: float) -> dict[str, Any]:
        status = job.status(now)
        done = job.finished is not None and status in ("completed", "error")
        return {"id": job.id, "resource_url": f"{self.base_url}/v2/transcript/{job.id}",
                "status": status, "created": _iso(job.created_at),
                "completed": _iso(job.created_at + (job.finished - job.created)) if done
                else None,
                "audio_url": job.audio_url, "error": job.error if status == "error" else None}

    def get(self, request: Request, tid: str) -> Response:
        if not self._authorized(request):
            return error(401, AUTH_ERROR)
        now = time.monotonic()
        with self.app.lock:
            self._advance(now)
            job = self.jobs.get(tid)
            if job is None:
                return error(404, "Transcript not found")
            job.polls += 1
            self.app.stats["polls"] += 1
        return Response(200, self._json(job, now))

    # -- the simulated service ---------------------------------------------------------------

    def _random_error(self) -> bool:
        with self.app.lock:
            return bool(self.error_rate) and self._error_rng.random() < self.error_rate

    def _hear(self, audio_url: str) -> tuple[str | None, str | None, float | None]:
        """(text, error, audio seconds) for the audio behind ``audio_url``."""
        prefix = f"{self.base_url}/cdn/upload/"
        entry = self._uploads.get(audio_url[len(prefix):]) if audio_url.startswith(prefix) else None
        if entry is None:
            return None, (f"Download error, unable to download {audio_url}. Please make sure the "
                          "file exists and is accessible from the internet."), None
        path, sha = entry
        try:
            audio_s = Audio(path).duration
        except AudioError:
            return None, ("Transcoding failed. File does not appear to contain audio. File type "
                          "is application/octet-stream (data)."), None
        failure = self.registry.error(sha)
        if failure:
            return None, failure, audio_s
        return self.registry.hear(sha, audio_s, path, service="assemblyai"), None, audio_s

    def _advance(self, now: float) -> None:
        """Move queued jobs into free processing slots, in order, at the moment slots free up."""
        limit = self.concurrency
        while self._queue:
            job = self._queue[0]
            if limit is None or len(self._slots) < limit:
                start = job.created
            elif self._slots[0] <= now:
                start = max(heapq.heappop(self._slots), job.created)
            else:
                return
            self._queue.pop(0)
            job.started, job.finished = start, start + job.processing_s
            heapq.heappush(self._slots, job.finished)
            # Drop slots that are long free so the heap stays small without a limit.
            while limit is None and self._slots and self._slots[0] <= now:
                heapq.heappop(self._slots)

    def _json(self, job: Job, now: float) -> dict[str, Any]:
        status = job.status(now)
        done = status == "completed"
        words = _words(job.text, job.audio_s) if done else None
        body = {
            "id": job.id,
            "status": status,
            "audio_url": job.audio_url,
            "text": job.text if done else None,
            "words": words,
            "utterances": None,
            "confidence": 0.93 if done else None,
            "audio_duration": round(job.audio_s) if done and job.audio_s else None,
            "language_code": job.options.get("language_code", "en_us"),
            "punctuate": job.options.get("punctuate", True),
            "format_text": job.options.get("format_text", True),
            "speech_models": job.options.get("speech_models"),
            "speech_model": None,
            "language_model": "assemblyai_default",
            "acoustic_model": "assemblyai_default",
            "webhook_auth": False,
            "auto_highlights": False,
            "redact_pii": False,
            "summarization": False,
            "language_confidence_threshold": None,
            "language_confidence": None,
        }
        # The schema types these as strings (no null) and allows no other properties.
        if status == "error":
            body["error"] = job.error
        if done:
            body["speech_model_used"] = (job.options.get("speech_models")
                                         or [self.account_default])[0]
        return body


def _refused_models(body: dict[str, Any]) -> str | None:
    """The 400 message for a request naming a model the API no longer takes, else None."""
    if body.get("speech_model") is not None:
        return ('The "speech_model" parameter is no longer supported. Use "speech_models", a '
                "list of models in priority order, e.g. [\"assemblyai-stt-3-7\", "
                "\"universal-2\"].")
    models = body.get("speech_models")
    if models is None:
        return None
    if (not isinstance(models, list) or not models
            or any(m not in SPEECH_MODELS for m in models)):
        allowed = ", ".join(f'"{m}"' for m in SPEECH_MODELS)
        return f'"speech_models" must be a non-empty list containing one or more of: {allowed}'
    return None


def _iso(wall: float) -> str:
    """A time as the API writes it: ISO 8601 in UTC, without a zone suffix."""
    from datetime import datetime, timezone

    return datetime.fromtimestamp(wall, timezone.utc).replace(tzinfo=None).isoformat()


def _words(text: str | None, audio_s: float | None) -> list[dict[str, Any]]:
    tokens = (text or "").split()
    if not tokens:
        return []
    span = int((audio_s or len(tokens) * 0.4) * 1000) // len(tokens)
    return [{"text": t, "start": i * span, "end": (i + 1) * span, "confidence": 0.93,
             "speaker": None, "channel": None} for i, t in enumerate(tokens)]
