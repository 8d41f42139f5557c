"""A :class:`Session`: turns of audio -> transcript -> answer, each one a row of the history.

The audio is saved under ``<home>/audio/`` before any request; the row is written when the
turn starts and updated at every stage (with the upload URL and transcript id as soon as they
are known), so ``resume()`` after a crash re-polls the transcript instead of paying again.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from typing import Any

import pandas as pd

from ._config import Settings, resolve
from ._errors import (
    AudioError,
    AuthenticationError,
    ConfigError,
    ServiceError,
    TranscriptionError,
    VoicenbError,
)
from .audio import ASSEMBLYAI_MAX_BYTES, Audio, AudioLike, as_audio
from .history import NAMES, HistoryStore
from .llm import Chat
from .stt import _client as stt_client
from .stt.assemblyai import AssemblyAI
from .stt.base import Transcript, source_name
from .stt.local import auto_backend
from .stt.openai import MAX_BYTES as OPENAI_MAX_BYTES

NO_SPEECH = ("No speech detected: {why}. Check that the microphone is on and not muted, then "
             "record again. Nothing was sent to the model.")

#: the largest clip each service takes: checked before the audio is copied or sent
SIZE_LIMITS = {"assemblyai": (ASSEMBLYAI_MAX_BYTES, "AssemblyAI uploads"),
               "openai": (OPENAI_MAX_BYTES, "OpenAI transcription, 25 MB")}

#: status callback: (turn number, status) with status one of the history's stages
OnStatus = Callable[[int, str], None]


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

    @property
    def ok(self) -> bool:
        return self.status == "ok"

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


class _Stopped(Exception):
    """Raised in the transcription thread once its turns were interrupted, to end it."""


@dataclass
class _Work:
    """A turn to (re)run and what is already known about it."""

    turn: int
    audio: Audio | None
    upload_url: str | None = None
    transcript_id: str | None = None
    transcript: Transcript | None = None  # set when only the answer is missing
    t0: float = 0.0


class Session:
    """A named conversation whose every turn lands in the durable history.

    >>> s = vnb.Session("demo")                     # doctest: +SKIP
    >>> turn = s.ask_audio("question.wav")          # doctest: +SKIP
    >>> s.history                                   # doctest: +SKIP

    Data lives in ``./voicenb-data`` unless ``home=`` or ``VOICENB_HOME`` says otherwise.
    ``prompt_template`` turns the transcript into the prompt (``"{transcript}"``).
    ``stt="auto"`` picks the speech-to-text backend from the keys and engines available, and
    the history records the one used. ``speak=True`` (or a speech backend such as
    ``"espeak"``) reads each ``ask_audio`` answer aloud (see :func:`voicenb.speak`).
    """

    def __init__(
        self,
        name: str = "default",
        home: str | None = None,
        stt: str | None = None,
        model: str | None = None,
        system: str | None = None,
        prompt_template: str = "{transcript}",
        *,
        settings: Settings | None = None,
        max_history: int = 20,
        stt_options: dict[str, Any] | None = None,
        speak: bool | str = False,
    ) -> None:
        if not name or not isinstance(name, str):
            raise ConfigError("A session needs a name, e.g. Session('demo').")
        if "{transcript}" not in prompt_template:
            raise ConfigError("prompt_template must contain {transcript}, e.g. "
                              "'Answer briefly: {transcript}'.")
        try:
            prompt_template.format(transcript="a question")
        except (KeyError, IndexError, ValueError, AttributeError) as exc:
            raise ConfigError(
                f"prompt_template {prompt_template!r} has a placeholder other than "
                f"{{transcript}} ({type(exc).__name__}: {exc}). Write a literal brace twice: "
                "'Reply as JSON {{\"answer\": ...}}: {transcript}'.") from None
        self.name = name
        self.settings = resolve(settings, home=home, stt=stt, model=model)
        self.system = system
        self.prompt_template = prompt_template
        self.max_history = max_history
        self.stt_options = dict(stt_options or {})
        self.speak = speak
        self.store = HistoryStore(self.settings.home)
        self._chat: Chat | None = None
        self._lock = threading.RLock()  # one turn's answer at a time keeps memory in order

    def __repr__(self) -> str:
        return f"Session({self.name!r}, home={str(self.store.home)!r})"

    # -- the conversation ---------------------------------------------------------------------

    @property
    def chat(self) -> Chat:
        """The model conversation, its memory rebuilt from this session's answered turns."""
        if self._chat is None:
            chat = Chat(self.settings.model, self.system, max_history=self.max_history,
                        settings=self.settings)
            done = self.store.rows(self.name, statuses=["ok"])
            chat.history = [(r["prompt"], r["answer"]) for r in done if r["prompt"] and
                            r["answer"] is not None][-max(self.max_history, 1):]
            self._chat = chat
        return self._chat

    @property
    def history(self) -> pd.DataFrame:
        """This session's turns as a DataFrame (the history schema)."""
        return self.store.dataframe(self.name)

    def recorder(self, *, show_turns: int = 5) -> Any:
        """The notebook widget: each recording becomes a turn, the answer streams in.

        >>> s.recorder()                       # doctest: +SKIP
        """
        from .widgets import Recorder

        return Recorder(self, show_turns=show_turns)

    def live(self) -> Any:
        """The real-time widget: the transcript forms as you speak, and each end of turn is
        answered (streamed in) and recorded.

        >>> s.live()                           # doctest: +SKIP
        """
        from .widgets import LiveRecorder

        return LiveRecorder(self)

    def turn(self, number: int) -> Turn:
        row = self.store.get(self.name, number)
        if row is None:
            raise ConfigError(f"Session {self.name!r} has no turn {number}.")
        return Turn.from_row(row)

    # -- running turns ------------------------------------------------------------------------

    def ask_audio(self, audio: AudioLike, *, stream: bool = False,
                  on_token: Callable[[str], None] | None = None,
                  on_status: OnStatus | None = None) -> Turn:
        """Transcribe ``audio``, ask the model, record the turn; return it.

        Raises a :class:`VoicenbError` if the turn failed, after recording it with status
        ``error`` (``retry_failed()`` finishes it later).
        """
        work, error = self._new_turn(audio)
        if on_status:
            on_status(work.turn if work else error[0], "started")
        if work is None:
            raise error[1]
        try:
            transcript = self._transcribe_one(work, on_status)
            self._answer(work, transcript, stream=stream, on_token=on_token,
                         on_status=on_status)
        except BaseException as exc:
            self._fail(work.turn, exc, on_status)
            raise
        turn = self.turn(work.turn)
        if self.speak and turn.answer:
            self._say(turn.answer)
        return turn

    def ask_text(self, text: str, *, audio: AudioLike | None = None, stt_backend: str = "text",
                 stt_s: float | None = None, transcript_id: str | None = None,
                 confidence: float | None = None, stream: bool = False,
                 on_token: Callable[[str], None] | None = None,
                 on_status: OnStatus | None = None) -> Turn:
        """Ask with a transcript you already have (typed, or heard by real-time streaming)
        and record the turn, with its audio when given.

        >>> s.ask_text("What is the capital of France?")      # doctest: +SKIP
        """
        t0 = time.monotonic()
        fields: dict[str, Any] = dict(stt_backend=stt_backend, llm_model=self.settings.model,
                                      status="answering")
        if audio is not None:
            clip = as_audio(audio)
            saved = clip.save(self.store.audio_dir)
            fields.update(audio_path=str(saved.relative_to(self.store.home)),
                          audio_s=clip.duration, audio_sha256=clip.sha256)
        number = self.store.start_turn(self.name, **fields)
        work = _Work(number, None, t0=t0)
        transcript = Transcript(text=text or "", id=transcript_id, backend=stt_backend,
                                audio_s=fields.get("audio_s"), confidence=confidence,
                                stt_s=stt_s, transcribe_s=stt_s)
        if on_status:
            on_status(number, "started")
        try:
            self._answer(work, transcript, stream=stream, on_token=on_token,
                         on_status=on_status)
        except BaseException as exc:
            self._fail(number, exc, on_status)
            raise
        return self.turn(number)

    def ask_many(self, items: Iterable[AudioLike], *, concurrency: int = 32,
                 progress: bool = True) -> list[Turn]:
        """Run a turn for each clip: transcription concurrent, answers in input order.

        Never raises for a bad clip or a failed request: that turn is recorded with status
        ``error`` and the others go on.
        """
        works: list[_Work] = []
        turns: list[int] = []
        try:
            for item in items:
                work, error = self._new_turn(item)
                turns.append(work.turn if work else error[0])
                if work is not None:
                    works.append(work)
        except BaseException as exc:  # Ctrl-C while saving the clips: none is left mid-stage
            for work in works:
                self._fail(work.turn, exc)
            raise
        self._run(works, concurrency=concurrency, progress=progress)
        return [self.turn(n) for n in turns]

    def retry_failed(self, *, concurrency: int = 32, progress: bool = True) -> list[Turn]:
        """Re-run this session's turns with status ``error``, from the stage that failed
        (an uploaded clip is not uploaded again). Returns those turns as they are now."""
        return self._rerun(["error"], concurrency=concurrency, progress=progress)

    def resume(self, *, concurrency: int = 32, progress: bool = True) -> list[Turn]:
        """Finish turns left ``interrupted`` or mid-stage by a process that stopped (a crash,
        a kill, Ctrl-C), re-polling transcripts that were already submitted."""
        self.store.mark_interrupted()
        return self._rerun(["interrupted"], concurrency=concurrency, progress=progress)

    # -- internals ----------------------------------------------------------------------------

    def _new_turn(self, item: AudioLike) -> tuple[_Work | None, tuple[int, VoicenbError] | None]:
        """Save the audio and insert the turn's row, before any request."""
        t0 = time.monotonic()
        base = dict(stt_backend=self._backend(), llm_model=self.settings.model)
        try:
            audio = as_audio(item)
            if base["stt_backend"] in SIZE_LIMITS:
                audio.check_size(*SIZE_LIMITS[base["stt_backend"]])
            audio_s = audio.duration
            saved = audio.save(self.store.audio_dir)
        except AudioError as exc:
            number = self.store.start_turn(self.name, status="error", error=str(exc),
                                           audio_path=source_name(item), **base)
            return None, (number, exc)
        number = self.store.start_turn(
            self.name, status="uploading" if base["stt_backend"] == "assemblyai" else
            "transcribing", audio_path=str(saved.relative_to(self.store.home)),
            audio_s=audio_s, audio_sha256=audio.sha256, **base)
        return _Work(number, Audio(saved, name=audio.name), t0=t0), None

    def _backend(self) -> str:
        if self.settings.stt == "auto":  # decided once, so the history names the real one
            try:
                self.settings = self.settings.replace(stt=auto_backend(self.settings))
            except ConfigError:
                return "auto"  # the turn fails at transcription, with the options listed
        return self.settings.stt or "assemblyai"

    def _stt(self) -> Any:
        return stt_client(self._backend(), self.settings, None)

    def _say(self, text: str) -> None:
        from .tts import play, speak

        backend = self.speak if isinstance(self.speak, str) else None
        try:
            play(speak(text, backend=backend, settings=self.settings))
        except VoicenbError as exc:
            warnings.warn(f"The answer is recorded but could not be spoken: {exc}",
                          RuntimeWarning, stacklevel=3)

    def _update(self, turn: int, **fields: Any) -> None:
        self.store.update(self.name, turn, **fields)

    def _fail(self, turn: int, exc: BaseException, on_status: OnStatus | None = None) -> None:
        if isinstance(exc, VoicenbError):
            self._update(turn, status="error", error=str(exc))
            status = "error"
        else:  # KeyboardInterrupt, or a bug: the turn can be resumed
            self._update(turn, status="interrupted",
                         error=f"Interrupted ({type(exc).__name__}); Session.resume() "
                               "finishes it.")
            status = "interrupted"
        if on_status:
            on_status(turn, status)

    def _stage_callback(self, work: _Work, on_status: OnStatus | None) -> Callable[[str, Any],
                                                                                   None]:
        def on_stage(stage: str, value: Any) -> None:
            if stage == "uploaded":
                work.upload_url = value
                self.store.update(self.name, work.turn, upload_url=value, status="transcribing",
                                  upload_s=time.monotonic() - work.t0)
                if on_status:
                    on_status(work.turn, "transcribing")
            elif stage == "submitted":
                work.transcript_id = value
                self._update(work.turn, transcript_id=value, status="transcribing")
        return on_stage

    def _silence_check(self, work: _Work) -> None:
        if work.upload_url is None and work.transcript_id is None and work.audio.is_silent():
            raise AudioError(NO_SPEECH.format(why="the recording is silent"),
                             source=work.audio.name)

    def _transcribe_one(self, work: _Work, on_status: OnStatus | None) -> Transcript:
        if work.transcript is not None:
            return work.transcript
        self._silence_check(work)
        client = self._stt()
        if on_status:
            on_status(work.turn, "uploading" if isinstance(client, AssemblyAI) and
                      work.upload_url is None else "transcribing")
        if not isinstance(client, AssemblyAI):
            transcript = client.transcribe(work.audio, progress=False, **self.stt_options)
        else:
            self._check_existing(client, work)
            job = client._start(work.audio, self.stt_options, upload_url=work.upload_url,
                                transcript_id=work.transcript_id,
                                on_stage=self._stage_callback(work, on_status))
            data, polls = client.wait(job.id, audio_s=job.audio_s, since=job.submitted)
            try:
                transcript = job.finish(data, polls)
            except TranscriptionError:
                self._update(work.turn, transcript_id=job.id, polls=polls)
                raise
        return transcript

    def _check_existing(self, client: AssemblyAI, work: _Work) -> None:
        """A transcript submitted earlier that the service failed is submitted again (from
        the same upload); one still running or done is waited for, not paid for twice."""
        if work.transcript_id is None:
            return
        try:
            status = client.get(work.transcript_id).get("status")
        except AuthenticationError:
            raise
        except ServiceError:
            return  # can't tell now: waiting on it will (and fails the turn if it errored)
        if status == "error":
            work.transcript_id = None

    def _record_transcript(self, work: _Work, transcript: Transcript) -> None:
        row = transcript.to_row()
        if row.get("upload_s") is None:
            row.pop("upload_s")  # keep the time measured when it was uploaded
        self._update(work.turn, **row)

    def _answer(self, work: _Work, transcript: Transcript, *, stream: bool = False,
                on_token: Callable[[str], None] | None = None,
                on_status: OnStatus | None = None) -> None:
        self._record_transcript(work, transcript)
        if not transcript.text.strip():
            raise TranscriptionError(NO_SPEECH.format(why="the transcript is empty"),
                                     transcript_id=transcript.id)
        prompt = self.prompt_template.format(transcript=transcript.text.strip())
        self._update(work.turn, status="answering", prompt=prompt, llm_model=self.settings.model)
        if on_status:
            on_status(work.turn, "answering")
        with self._lock:
            answer = self.chat.ask(prompt, stream=stream, on_token=on_token)
        self._update(work.turn, status="ok", error=None, total_s=time.monotonic() - work.t0,
                     **answer.to_row())
        if on_status:
            on_status(work.turn, "ok")

    def _rerun(self, statuses: list[str], *, concurrency: int, progress: bool) -> list[Turn]:
        works: list[_Work] = []
        numbers: list[int] = []
        try:
            for row in self.store.rows(self.name, statuses=statuses):
                numbers.append(row["turn"])
                work = self._work_from_row(row)
                if work is not None:
                    works.append(work)
        except BaseException as exc:
            for work in works:
                self._fail(work.turn, exc)
            raise
        self._run(works, concurrency=concurrency, progress=progress)
        return [self.turn(n) for n in numbers]

    def _work_from_row(self, row: dict[str, Any]) -> _Work | None:
        path = self.store.home / (row["audio_path"] or "")
        if not row["audio_path"] or not path.is_file():
            return None  # the audio never arrived (a missing file): nothing to retry with
        work = _Work(row["turn"], Audio(path), upload_url=row.get("upload_url"),
                     transcript_id=row["transcript_id"], t0=time.monotonic())
        if (row["transcript"] or "").strip() and row["stt_s"] is not None:
            # Transcription finished before: only the answer is missing.
            work.transcript = Transcript(
                text=row["transcript"], id=row["transcript_id"], backend=row["stt_backend"],
                audio_s=row["audio_s"], confidence=row["confidence"],
                upload_s=row["upload_s"], transcribe_s=row["transcribe_s"],
                polls=row["polls"] or 0, stt_s=row["stt_s"])
        self._update(work.turn, status="transcribing" if work.transcript is None else
                     "answering")
        return work

    def _run(self, works: list[_Work], *, concurrency: int, progress: bool) -> None:
        """Transcribe concurrently; answer each in order as soon as its transcript is in."""
        if not works:
            return
        ready: dict[int, Transcript | BaseException] = {}
        delivered: set[int] = set()
        cond = threading.Condition()

        def deliver(i: int, value: Transcript | BaseException) -> None:
            with cond:
                if i not in delivered:  # the first word on a turn is the one that counts
                    delivered.add(i)
                    ready[i] = value
                    cond.notify_all()

        # Once the answering loop stops (Ctrl-C, a bug), the transcription thread records no
        # further stage: it keeps an upload URL or transcript id it learns, then ends.
        stop = threading.Event()
        guard = threading.Lock()
        answered = 0
        try:
            todo = []
            for i, work in enumerate(works):
                if work.transcript is not None:
                    deliver(i, work.transcript)
                else:
                    try:
                        self._silence_check(work)
                        todo.append(i)
                    except AudioError as exc:
                        deliver(i, exc)
            thread = threading.Thread(
                target=self._transcribe_all, name="voicenb-stt", daemon=True,
                args=(works, todo, deliver, concurrency, progress, stop, guard))
            thread.start()
            from tqdm.auto import tqdm

            for i in tqdm(range(len(works)), desc="answering", unit="turn",
                          disable=not progress):
                with cond:
                    while i not in ready:
                        cond.wait()
                    value = ready.pop(i)
                work = works[i]
                try:
                    if isinstance(value, BaseException):
                        raise value
                    self._answer(work, value)
                except VoicenbError as exc:
                    self._fail(work.turn, exc)
                answered = i + 1
        except BaseException as exc:
            with guard:
                stop.set()
                for rest in works[answered:]:
                    self._fail(rest.turn, exc)
            raise
        thread.join()

    def _transcribe_all(self, works: list[_Work], todo: list[int],
                        deliver: Callable[[int, Any], None], concurrency: int,
                        progress: bool, stop: threading.Event, guard: threading.Lock) -> None:
        client = self._stt()
        try:
            if isinstance(client, AssemblyAI):
                for i in todo:
                    self._check_existing(client, works[i])
                subset = [works[i] for i in todo]

                def on_stage(k: int, stage: str, value: Any) -> None:
                    with guard:
                        if stop.is_set():  # interrupted: keep what resume() can reuse, end
                            if stage == "uploaded":
                                self.store.update(self.name, subset[k].turn, upload_url=value)
                            elif stage == "submitted":
                                self._update(subset[k].turn, transcript_id=value)
                            raise _Stopped
                        stage_seen(k, stage, value)

                def stage_seen(k: int, stage: str, value: Any) -> None:
                    if stage == "done":
                        if value.ok:
                            deliver(todo[k], value)
                        elif value.id:  # the service failed the transcript
                            self._update(subset[k].turn, transcript_id=value.id,
                                         polls=value.polls)
                            deliver(todo[k], TranscriptionError(value.error or "failed",
                                                                transcript_id=value.id))
                        else:  # the upload or the submit failed
                            deliver(todo[k], ServiceError(value.error or "failed"))
                    else:
                        self._stage_callback(subset[k], None)(stage, value)

                client._batch([w.audio for w in subset], self.stt_options,
                              concurrency=concurrency, progress=progress,
                              resume=[(w.upload_url, w.transcript_id) for w in subset],
                              on_stage=on_stage)
            else:
                def one(i: int) -> None:
                    if stop.is_set():
                        return
                    try:
                        deliver(i, client.transcribe(works[i].audio, progress=False,
                                                     **self.stt_options))
                    except BaseException as exc:  # handed to the answering loop
                        deliver(i, exc)

                with ThreadPoolExecutor(max(1, min(concurrency, len(todo) or 1))) as pool:
                    list(pool.map(one, todo))
        except BaseException as exc:
            for i in todo:
                deliver(i, exc)
