"""The turn pipeline that :class:`~voicenb.Session` drives (private).

A turn goes: save the audio and insert its row (before any request) -> transcribe, recording
every stage a backend reports (the upload URL and transcript id as soon as they are known)
-> answer -> ``ok``. Any failure leaves the row ``error`` (a :class:`VoicenbError`) or
``interrupted`` (Ctrl-C, a bug), and :meth:`Pipeline.works_from_rows` picks a turn up again
from the stage it reached. Speech-to-text is reached only through the public backend protocol
of :mod:`voicenb.stt.base`.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

import pandas as pd

from ._config import Settings
from ._errors import AudioError, ConfigError, ServiceError, TranscriptionError, VoicenbError
from .audio import Audio, AudioLike, as_audio, pcm_to_wav
from .history import ANSWERED, NAMES, HistoryStore
from .llm import Chat
from .stt import get_backend
from .stt.base import Backend, Checkpoint, Transcript, check_size, source_name
from .stt.local import auto_backend

NO_SPEECH = ("No speech detected: {why}. Check that the microphone is on and not muted, then "
             "record again. Nothing was sent to the model.")

#: status callback: (turn number, status) with status one of the history's stages
OnStatus = Callable[[int, str], None]
OnToken = Callable[[str], None]


def check_template(template: str) -> None:
    if "{transcript}" not in template:
        raise ConfigError("prompt_template must contain {transcript}, e.g. "
                          "'Answer briefly: {transcript}'.")
    try:
        template.format(transcript="a question")
    except (KeyError, IndexError, ValueError, AttributeError) as exc:
        raise ConfigError(
            f"prompt_template {template!r} has a placeholder other than "
            f"{{transcript}} ({type(exc).__name__}: {exc}). Write a literal brace twice: "
            "'Reply as JSON {{\"answer\": ...}}: {transcript}'.") from None


@dataclass
class Turn:
    """One row of the history: what was heard, what was answered, how long each took."""

    session: str
    turn: int
    started_at: pd.Timestamp | None = None
    status: str = "started"
    error: str | None = None
    audio_path: str | None = None
    audio_s: float | None = None
    audio_sha256: str | None = None
    stt_backend: str | None = None
    transcript_id: str | None = None
    transcript: str | None = None
    confidence: float | None = None
    upload_s: float | None = None
    transcribe_s: float | None = None
    polls: int | None = None
    stt_s: float | None = None
    llm_model: str | None = None
    prompt: str | None = None
    answer: str | None = None
    ttft_s: float | None = None
    llm_s: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_s: float | None = None
    setup_s: float | None = None
    wait_s: float | None = None
    overhead_s: float | None = None
    speech_model: str | None = None
    experiment: str | None = None
    variant: str | None = None
    reference: str | None = None
    wer: float | None = None
    cost_usd: float | None = None
    simulated: str | None = None
    first_token_s: float | None = None
    first_audio_s: float | None = None
    tts_model: str | None = None
    tts_ttfb_s: float | None = None
    spoken_chars: int | None = None
    tts_backend: str | None = None
    tts_voice: str | None = None
    words_heard: int | None = None

    @property
    def ok(self) -> bool:
        """Answered (also when the person spoke over the answer read aloud: ``barged_in``)."""
        return self.status in ANSWERED

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Turn:
        values = {f.name: row.get(f.name) for f in fields(cls)}
        if values["started_at"] is not None and not isinstance(values["started_at"],
                                                               pd.Timestamp):
            values["started_at"] = pd.Timestamp(values["started_at"], unit="s", tz="UTC")
        return cls(**values)

    def to_row(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in NAMES}

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __repr__(self) -> str:
        said = (self.transcript or "")[:40]
        extra = f"error={self.error!r}" if self.status == "error" else f"transcript={said!r}"
        return f"Turn({self.session!r} #{self.turn}, status={self.status!r}, {extra})"


def heard(row: dict[str, Any]) -> str:
    """The answer as the person heard it: all of it, unless they spoke over it."""
    answer = row["answer"] or ""
    if row["status"] == "barged_in" and row.get("spoken_chars") is not None:
        return answer[:row["spoken_chars"]]
    return answer


class _Stopped(Exception):
    """Raised in the transcription thread once its turns were interrupted, to end it."""


@dataclass
class Work:
    """A turn to (re)run and what is already known about it."""

    turn: int
    audio: Audio | None
    checkpoint: Checkpoint = Checkpoint()
    transcript: Transcript | None = None  # set when only the answer is missing
    #: monotonic times: the turn's start (earlier by the stt_s of a transcript heard before
    #: this call), and when its row was written
    t0: float = 0.0
    ready: float = 0.0
    #: first-call set-up (clients, the chat's memory) and waiting on other turns, seconds
    setup_s: float = 0.0
    wait_s: float = 0.0
    #: the clip's upload made while it was recorded (the Sync API), when there was one
    live: Any = None


class Pipeline:
    """Runs and records the turns of one session."""

    def __init__(self, name: str, settings: Settings, *, system: str | None,
                 prompt_template: str, max_history: int, stt_options: dict[str, Any]) -> None:
        self.name = name
        self.settings = settings
        self.system = system
        self.prompt_template = prompt_template
        self.max_history = max_history
        self.stt_options = stt_options
        self.store = HistoryStore(settings.home, settings=settings)
        self._chat: Chat | None = None
        from .pricing import Prices

        #: loaded now, so that a bad price file is said before any turn is paid for
        self.prices = Prices.load(settings)
        # One answer at a time keeps the memory in order; creating the chat takes it too.
        self._lock = threading.RLock()

    # -- the conversation and the backend -------------------------------------------------

    @property
    def chat(self) -> Chat:
        """The model conversation, its memory rebuilt from this session's answered turns."""
        with self._lock:
            if self._chat is None:
                chat = Chat(self.settings.model, self.system, max_history=self.max_history,
                            settings=self.settings)
                done = self.store.rows(self.name, statuses=list(ANSWERED))
                chat.history = [(r["prompt"], heard(r)) for r in done if r["prompt"] and
                                r["answer"] is not None][-max(self.max_history, 1):]
                self._chat = chat
            return self._chat

    def backend_name(self) -> str:
        if self.settings.stt == "auto":  # decided once, so the history names the real one
            try:
                self.settings = self.settings.replace(stt=auto_backend(self.settings))
            except ConfigError:
                return "auto"  # the turn fails at transcription, with the options listed
        return self.settings.stt or "assemblyai"

    def backend(self) -> Backend:
        return get_backend(self.backend_name(), self.settings)

    def _backend_if_ready(self) -> Backend | None:
        """The backend, or None when it cannot be set up (no key, unknown name): the turn
        is recorded all the same and fails at transcription, saying what to do."""
        try:
            return self.backend()
        except ConfigError:
            return None

    # -- starting turns -------------------------------------------------------------------

    def new_turn(self, item: AudioLike) -> tuple[Work | None, tuple[int, VoicenbError] | None]:
        """Save the audio and insert the turn's row, before any request."""
        t0 = time.monotonic()
        name = self.backend_name()
        base = dict(stt_backend=name, llm_model=self.settings.model)
        try:
            audio = as_audio(item)
            t = time.monotonic()
            backend = self._backend_if_ready()  # a client is made once, at the first turn
            setup_s = time.monotonic() - t
            if backend is not None:
                check_size(backend, audio)
            audio_s = audio.duration
            saved = self.store.save_audio(audio)
        except AudioError as exc:
            number = self.store.start_turn(self.name, status="error", error=str(exc),
                                           audio_path=source_name(item), **base)
            return None, (number, exc)
        uploads = backend is not None and backend.uploads_clip(audio, self.stt_options)
        number = self.store.start_turn(
            self.name, status="uploading" if uploads else "transcribing",
            audio_path=str(saved.relative_to(self.store.home)), audio_s=audio_s,
            audio_sha256=audio.sha256, **base)
        return Work(number, Audio(saved, name=audio.name), t0=t0, ready=time.monotonic(),
                    setup_s=setup_s), None

    def text_turn(self, text: str, audio: AudioLike | None, stt_backend: str,
                  live_backend: str | None = None, reconnects: int | None = None,
                  **heard: Any) -> tuple[Work, Transcript]:
        """Start a turn whose transcript is known already (typed, or streamed: then the turn
        began ``stt_s`` ago, when the speech ended)."""
        t0 = time.monotonic() - (heard.get("stt_s") or 0.0)
        row: dict[str, Any] = dict(stt_backend=stt_backend, llm_model=self.settings.model,
                                   status="answering", live_backend=live_backend,
                                   reconnects=reconnects)
        if audio is not None:
            clip = as_audio(audio)
            saved = self.store.save_audio(clip)
            row.update(audio_path=str(saved.relative_to(self.store.home)),
                       audio_s=clip.duration, audio_sha256=clip.sha256)
        number = self.store.start_turn(self.name, **row)
        stt_s = heard.pop("stt_s", None)
        transcript = Transcript(text=text or "", backend=stt_backend, audio_s=row.get("audio_s"),
                                stt_s=stt_s, transcribe_s=stt_s, **heard)
        return Work(number, None, t0=t0, ready=time.monotonic()), transcript

    def works_from_rows(self, statuses: list[str]) -> tuple[list[int], list[Work]]:
        """The session's turns with ``statuses``, and the work to finish each (none for a
        turn whose audio never arrived)."""
        works: list[Work] = []
        numbers: list[int] = []
        try:
            for row in self.store.rows(self.name, statuses=statuses):
                numbers.append(row["turn"])
                work = self._work_from_row(row)
                if work is not None:
                    works.append(work)
        except BaseException as exc:
            for work in works:
                self.fail(work.turn, exc)
            raise
        return numbers, works

    def _work_from_row(self, row: dict[str, Any]) -> Work | None:
        path = self.store.audio_file(row["audio_path"])  # or fetched from a shared store
        if path is None:
            return None  # the audio never arrived (a missing file): nothing to retry with
        now = time.monotonic()
        work = Work(row["turn"], Audio(path),
                    Checkpoint(row.get("upload_url"), row["transcript_id"]), t0=now, ready=now)
        if (row["transcript"] or "").strip() and row["stt_s"] is not None:
            work.transcript = Transcript.from_row(row)  # only the answer is missing
            work.t0 -= row["stt_s"]  # the transcription it took counts in this turn's total
        # an earlier attempt's upload time is not part of this attempt's stt_s
        self.update(work.turn, **({"status": "transcribing", "upload_s": None}
                                  if work.transcript is None else {"status": "answering"}))
        return work

    # -- running one turn -----------------------------------------------------------------

    def ask(self, item: AudioLike, *, stream: bool = False, on_token: OnToken | None = None,
            on_status: OnStatus | None = None, live: Any = None) -> int:
        """Run one turn of ``item``; return its number, or raise (after recording it).
        ``live``: the upload made while ``item`` was recorded, whose transcript is used."""
        work, error = self.new_turn(item)
        if on_status:
            on_status(work.turn if work else error[0], "started")
        if work is None:
            if live is not None:
                live.abort()
            raise error[1]
        work.live = live
        self.run(work, stream=stream, on_token=on_token, on_status=on_status)
        return work.turn

    def run(self, work: Work, transcript: Transcript | None = None, *, stream: bool = False,
            on_token: OnToken | None = None, on_status: OnStatus | None = None) -> None:
        """Transcribe (unless ``transcript`` is given) and answer; a failure is recorded,
        then raised."""
        try:
            if transcript is None:
                transcript = self.transcribe(work, on_status)
            self.answer(work, transcript, stream=stream, on_token=on_token,
                        on_status=on_status)
        except BaseException as exc:
            self.fail(work.turn, exc, on_status)
            raise

    def transcribe(self, work: Work, on_status: OnStatus | None = None) -> Transcript:
        if work.transcript is not None:
            return work.transcript
        lost = 0.0  # seconds spent on a live upload that failed
        if work.live is not None:
            if on_status:
                on_status(work.turn, "transcribing")
            t = time.monotonic()
            try:
                return work.live.result()
            except ServiceError:  # refused (over 120 s, say) or broken: send the saved clip
                work.live.abort()
                lost = time.monotonic() - t
        self.silence_check(work)
        backend = self.backend()
        if on_status:
            uploads = (work.checkpoint.upload_url is None
                       and backend.uploads_clip(work.audio, self.stt_options))
            on_status(work.turn, "uploading" if uploads else "transcribing")
        transcript = backend.transcribe(
            work.audio, progress=False, resume=work.checkpoint,
            on_stage=lambda stage, value: self.record_stage(work, stage, value, on_status),
            **self.stt_options)
        if lost:
            transcript.stt_s = (transcript.stt_s or 0.0) + lost
        return transcript

    def silence_check(self, work: Work) -> None:
        if work.checkpoint == Checkpoint() and work.audio.is_silent():
            raise AudioError(NO_SPEECH.format(why="the recording is silent"),
                             source=work.audio.name)

    def record_stage(self, work: Work, stage: str, value: Any,
                     on_status: OnStatus | None = None) -> None:
        """Write down what a backend just did, so a rerun reuses it."""
        if stage == "uploaded":
            work.checkpoint = dataclasses.replace(work.checkpoint, upload_url=value)
            self.store.update(self.name, work.turn, upload_url=value, status="transcribing",
                              upload_s=time.monotonic() - work.t0)
            if on_status:
                on_status(work.turn, "transcribing")
        elif stage == "submitted":
            work.checkpoint = dataclasses.replace(work.checkpoint, transcript_id=value)
            self.update(work.turn, transcript_id=value, status="transcribing")
        elif stage == "done" and not value.ok and value.id:
            self.update(work.turn, transcript_id=value.id, polls=value.polls)

    def keep(self, work: Work, stage: str, value: Any) -> None:
        """After an interruption: keep only what a resume can reuse, leaving the status."""
        if stage == "uploaded":
            self.store.update(self.name, work.turn, upload_url=value)
        elif stage == "submitted":
            self.update(work.turn, transcript_id=value)

    def answer(self, work: Work, transcript: Transcript, *, stream: bool = False,
               on_token: OnToken | None = None, on_status: OnStatus | None = None) -> None:
        row = transcript.to_row()
        if row.get("upload_s") is None:
            row.pop("upload_s")  # keep the time measured when it was uploaded
        self.update(work.turn, **row)
        if not transcript.text.strip():
            raise TranscriptionError(NO_SPEECH.format(why="the transcript is empty"),
                                     transcript_id=transcript.id)
        prompt = self.prompt_template.format(transcript=transcript.text.strip())
        self.update(work.turn, status="answering", prompt=prompt, llm_model=self.settings.model)
        if on_status:
            on_status(work.turn, "answering")
        with self._lock:
            t = time.monotonic()
            chat = self.chat
            work.setup_s += time.monotonic() - t
            asked = time.monotonic()
            answer = chat.ask(prompt, stream=stream, on_token=on_token)
        first = asked - work.t0 + answer.ttft_s if answer.ttft_s is not None else None
        self.update(work.turn, status="ok", error=None, **self._timings(work, transcript, answer),
                    first_token_s=first, **answer.to_row())
        self.cost(work.turn)
        if on_status:
            on_status(work.turn, "ok")

    @staticmethod
    def _timings(work: Work, transcript: Transcript, answer: Any) -> dict[str, float]:
        """total_s and the columns that, with stt_s and llm_s, add up to it: set-up, waiting
        on other turns, and voicenb's own work (saving audio, writing the history...)."""
        total = time.monotonic() - work.t0
        named = (transcript.stt_s or 0.0) + (answer.llm_s or 0.0) + work.setup_s + work.wait_s
        return dict(total_s=total, setup_s=work.setup_s, wait_s=work.wait_s,
                    overhead_s=max(0.0, total - named))

    # -- speech-to-speech live turns (voicenb.live) ----------------------------------------

    def live_turn(self, *, backend: str, model: str | None, heard: Any = None,
                  reply: Any = None, spoken: Any = None, recorded_at: float | None = None,
                  reconnects: int = 0) -> int:
        """Record one turn of a speech-to-speech conversation (see :func:`live_fields`):
        the person's audio first, then one row. Returns its number."""
        row = live_started(self.store, backend=backend, model=model, heard=heard,
                           reconnects=reconnects)
        number = self.store.start_turn(self.name, **row)
        self.update(number, **live_fields(backend=backend, model=model, heard=heard,
                                          reply=reply, spoken=spoken, recorded_at=recorded_at))
        self.cost(number)
        return number

    # -- recording ------------------------------------------------------------------------

    def update(self, turn: int, **fields: Any) -> None:
        self.store.update(self.name, turn, **fields)

    def spoken(self, turn: int, *, spoken_chars: int, interrupted: bool,
               tts_model: str | None = None, tts_ttfb_s: float | None = None,
               first_audio_s: float | None = None, tts_backend: str | None = None,
               tts_voice: str | None = None, words_heard: int | None = None,
               reconnects: int = 0) -> None:
        """Record how an answered turn was read aloud; when the person spoke over it, the
        turn is ``barged_in`` and the conversation remembers only the part that was heard.
        ``reconnects``: speech streams that dropped and were taken up again, added to the
        turn's count."""
        row = self.store.get(self.name, turn)
        if row is None or row["status"] not in ANSWERED:
            return
        fields: dict[str, Any] = dict(spoken_chars=spoken_chars, tts_model=tts_model,
                                      tts_ttfb_s=tts_ttfb_s, first_audio_s=first_audio_s,
                                      tts_backend=tts_backend, tts_voice=tts_voice,
                                      words_heard=words_heard)
        if reconnects:
            fields["reconnects"] = (row.get("reconnects") or 0) + reconnects
        if interrupted:
            fields["status"] = "barged_in"
        self.update(turn, **fields)
        self.cost(turn)
        with self._lock:
            if interrupted and self._chat is not None and self._chat.history and \
                    self._chat.history[-1][0] == row["prompt"]:
                self._chat.history[-1] = (row["prompt"], (row["answer"] or "")[:spoken_chars])

    def cost(self, turn: int) -> None:
        """Price what the turn used (None where a price is unknown: see voicenb.pricing)."""
        row = self.store.get(self.name, turn)
        if row is not None:
            self.update(turn, cost_usd=self.prices.turn_cost(row))

    def fail(self, turn: int, exc: BaseException, on_status: OnStatus | None = None) -> None:
        if isinstance(exc, VoicenbError):
            self.update(turn, status="error", error=str(exc))
            self.cost(turn)  # the speech it was billed for before the answer failed, say
            status = "error"
        else:  # KeyboardInterrupt, or a bug: the turn can be resumed
            self.update(turn, status="interrupted",
                        error=f"Interrupted ({type(exc).__name__}); Session.resume() "
                              "finishes it.")
            status = "interrupted"
        if on_status:
            on_status(turn, status)

    # -- many turns -----------------------------------------------------------------------

    def run_many(self, works: list[Work], *, concurrency: int, progress: bool) -> None:
        """Transcribe concurrently; answer each in order as soon as its transcript is in.
        Never raises for one turn's failure (it is recorded)."""
        if works:
            _Batch(self, works).run(concurrency, progress)


def outcome(transcript: Transcript) -> Transcript | VoicenbError:
    """A finished transcript, or the error its failure stands for."""
    if transcript.ok:
        return transcript
    if transcript.id:  # the service failed the transcript
        return TranscriptionError(transcript.error or "failed", transcript_id=transcript.id)
    return ServiceError(transcript.error or "failed")


class _Batch:
    """One :meth:`Pipeline.run_many`: a thread transcribes every clip through the backend's
    ``transcribe_many``; the caller's thread answers turn after turn, in order."""

    def __init__(self, pipeline: Pipeline, works: list[Work]) -> None:
        self.pipeline, self.works = pipeline, works
        self.ready: dict[int, Transcript | BaseException] = {}
        self.delivered: dict[int, float] = {}  # index -> when its transcript arrived
        self.cond = threading.Condition()
        # Once the answering loop stops (Ctrl-C, a bug), the transcription thread records no
        # further stage: it keeps an upload URL or transcript id it learns, then ends.
        self.stop = threading.Event()
        self.guard = threading.Lock()

    def deliver(self, i: int, value: Transcript | BaseException) -> None:
        with self.cond:
            if i not in self.delivered:  # the first word on a turn is the one that counts
                self.delivered[i] = time.monotonic()
                self.ready[i] = value
                self.cond.notify_all()

    def run(self, concurrency: int, progress: bool) -> None:
        from tqdm.auto import tqdm

        answered = 0
        try:
            todo = self._prepare()
            thread = threading.Thread(target=self._transcribe, name="voicenb-stt", daemon=True,
                                      args=(todo, concurrency, progress))
            thread.start()
            for i in tqdm(range(len(self.works)), desc="answering", unit="turn",
                          disable=not progress):
                self._answer(i)
                answered = i + 1
        except BaseException as exc:
            with self.guard:
                self.stop.set()
                for rest in self.works[answered:]:
                    self.pipeline.fail(rest.turn, exc)
            raise
        thread.join()

    def _prepare(self) -> list[int]:
        """Deliver what is known already; return the indexes still to transcribe."""
        todo = []
        for i, work in enumerate(self.works):
            if work.transcript is not None:
                self.deliver(i, work.transcript)
                continue
            try:
                self.pipeline.silence_check(work)
                todo.append(i)
            except AudioError as exc:
                self.deliver(i, exc)
        return todo

    def _answer(self, i: int) -> None:
        with self.cond:
            while i not in self.ready:
                self.cond.wait()
            value = self.ready.pop(i)
        work = self.works[i]
        work.wait_s += max(0.0, time.monotonic() - self.delivered[i])  # for earlier answers
        try:
            if isinstance(value, BaseException):
                raise value
            self.pipeline.answer(work, value)
        except VoicenbError as exc:
            self.pipeline.fail(work.turn, exc)

    def _transcribe(self, todo: list[int], concurrency: int, progress: bool) -> None:
        subset = [self.works[i] for i in todo]

        def on_stage(k: int, stage: str, value: Any) -> None:
            now = time.monotonic()  # before the lock: another turn's stage may hold it
            with self.guard:
                if self.stop.is_set():  # interrupted: keep what resume() can reuse, end
                    self.pipeline.keep(subset[k], stage, value)
                    raise _Stopped
                if stage == "started":  # it waited for a free slot until now
                    subset[k].wait_s += max(0.0, now - subset[k].ready)
                self.pipeline.record_stage(subset[k], stage, value)
                if stage == "done":
                    self.deliver(todo[k], outcome(value))

        try:
            self.pipeline.backend().transcribe_many(
                [w.audio for w in subset], concurrency=concurrency, progress=progress,
                on_stage=on_stage, resume=[w.checkpoint for w in subset],
                **self.pipeline.stt_options)
        except BaseException as exc:
            for i in todo:
                self.deliver(i, exc)


# -- speech-to-speech live turns: their rows --------------------------------------------------

def live_started(store: HistoryStore, *, backend: str, model: str | None, heard: Any = None,
                 reconnects: int = 0) -> dict[str, Any]:
    """The first fields of a speech-to-speech turn's row, its audio saved (a
    :class:`voicenb.live.Heard`, or None when the service never sent the transcript)."""
    row: dict[str, Any] = dict(status="answering", live_backend=backend, llm_model=model,
                               stt_backend=backend, reconnects=reconnects)
    if heard is not None:
        if heard.audio:
            clip = Audio(pcm_to_wav(heard.audio, rate=heard.rate), name="live.wav")
            saved = store.save_audio(clip)
            row.update(audio_path=str(saved.relative_to(store.home)),
                       audio_s=clip.duration, audio_sha256=clip.sha256)
        row.update(transcript=heard.text, prompt=heard.text, transcript_id=heard.id,
                   transcribe_s=heard.stt_s, speech_model=heard.speech_model)
    return row


def live_fields(*, backend: str, model: str | None, heard: Any = None, reply: Any = None,
                spoken: Any = None, recorded_at: float | None = None) -> dict[str, Any]:
    """The rest of a speech-to-speech turn's row, from its :class:`voicenb.live.Reply` and
    how it was played (a :class:`~voicenb._talkback.Spoken`).

    The stages that add up to ``total_s``, from the end of the person's speech: ``stt_s``
    (the service deciding the turn ended and starting its reply), ``llm_s`` (the reply, from
    its start to its end), ``overhead_s`` (voicenb recording it). ``transcribe_s`` is the
    service's transcript of the person, which runs beside the reply (it may end after it).
    ``first_audio_s`` is when the player (the page) said the answer started sounding, as for
    the cascade; without a player, when its first audio arrived."""
    if reply is None:
        return dict(status="error", error=(
            "The conversation ended before the service answered this turn; ask again."))
    started = reply.started_s if reply.started_s is not None else next(
        (t for t in (reply.first_token_s, reply.first_audio_s) if t is not None), None)
    done = reply.llm_s
    now = recorded_at if recorded_at is not None else time.monotonic()
    ended_at = heard.ended_at if heard is not None and heard.ended_at else None
    total = (now - ended_at) if ended_at is not None else done
    llm_s = (done - started) if done is not None and started is not None else done
    named = (started or 0.0) + (llm_s or 0.0)
    fields: dict[str, Any] = dict(
        status="ok" if reply.error is None else "error",
        error=None if reply.error is None else str(reply.error),
        answer=reply.text,
        ttft_s=(reply.first_token_s - started if reply.first_token_s is not None
                and started is not None else None),
        stt_s=started, llm_s=llm_s, first_token_s=reply.first_token_s,
        first_audio_s=reply.first_audio_s, total_s=total, setup_s=0.0, wait_s=0.0,
        overhead_s=None if total is None else max(0.0, total - named),
        prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens,
        audio_in_tokens=reply.audio_in_tokens, audio_out_tokens=reply.audio_out_tokens,
        billed_s=reply.billed_s, tts_backend=backend, tts_voice=reply.voice,
        llm_model=reply.model or model)
    if total is not None and total < named:  # recorded before the reply's end: no overhead
        fields["total_s"] = named
    if reply.interrupted and reply.error is None:
        fields["status"] = "barged_in"
    if spoken is not None:
        fields.update(spoken_chars=spoken.spoken_chars, tts_model=spoken.tts_model)
        spoke_at = ended_at or reply.ended_at
        if spoken.first_audio_at and spoke_at:  # the player's word: it started sounding
            fields["first_audio_s"] = spoken.first_audio_at - spoke_at
        if spoken.interrupted and fields["status"] == "ok":
            fields["status"] = "barged_in"
    return fields
