"""Runs a speech-to-speech conversation for its owner (private): plays each answer, stops it
when the person speaks over it (telling the service how much was heard), and records every
turn in the session's history.

The owner is the live widget (answers play in the page) or a script or experiment (answers
"play" by the clock: :class:`ClockPlayer`). Events reach an optional ``view`` as
``on_<event>`` (the :class:`~voicenb.live.base.Listener` events, and ``on_recorded(turn)``).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._errors import ConfigError, VoicenbError
from .._talkback import AudioSpeaker
from .base import BACKENDS, Conversation, Heard, Reply

if TYPE_CHECKING:  # pragma: no cover
    from ..session import Session

log = logging.getLogger("voicenb")

#: how long a finished answer waits for the transcript of the speech it answers (OpenAI's
#: transcription runs beside the reply and may end after it)
HEARD_WAIT_S = 5.0
#: how long a turn waits for its answer to be heard out, beyond the audio left to play
PLAYER_IDLE_S = 10.0
#: after the conversation ends, the recorder waits this long for late replies, then stops
STOPPED_IDLE_S = 30.0
#: a reply and a transcript whose ends of speech are this close answer the same speech
SAME_SPEECH_S = 0.25


def conversation(backend: str, listener: Any, *, settings: Any = None,
                 system: str | None = None, voice: str | None = None) -> Conversation:
    """A :class:`~voicenb.live.base.Conversation` of ``backend`` (not started)."""
    if backend == "openai-realtime":
        from .openai_realtime import OpenAIRealtime

        return OpenAIRealtime(listener, settings=settings, system=system, voice=voice)
    if backend == "assemblyai-agent":
        from .assemblyai_agent import AssemblyAIAgent

        return AssemblyAIAgent(listener, settings=settings, system=system, voice=voice)
    raise ConfigError(f"Unknown live backend {backend!r}; choose one of "
                      f"{', '.join(BACKENDS)}.")


class ClockPlayer:
    """Plays answers nowhere, by the clock: what was heard at a barge-in is the audio that a
    player started at the first chunk would have played by then. For scripts and
    experiments (no page). ``pace`` > 1 plays faster than real time (tests)."""

    def __init__(self, pace: float = 1.0) -> None:
        self.pace = pace

    def new_answer(self, backend: str, model: str | None, voice: str | None) -> AudioSpeaker:
        return _ClockSpeaker(backend=backend, model=model, voice=voice, pace=self.pace)

    def hush(self, speaker: AudioSpeaker, then: Callable[[float], None]) -> None:
        speaker.cancel()
        then(speaker.heard_ms())


class _ClockSpeaker(AudioSpeaker):
    def __init__(self, *, pace: float = 1.0, **kw: Any) -> None:
        super().__init__(lambda seq, wav: None, **kw)
        self._start: float | None = None
        self._pace = pace

    def audio(self, pcm: bytes) -> None:
        if self._start is None and pcm:
            self._start = time.monotonic()
            self.playing(0)
        super().audio(pcm)

    def cancel(self) -> None:
        with self._cond:
            heard = self._clock_ms()
            if self._played is None and not self._played_through():
                self._played = {0: heard / 1000}
                self._clip_starts = [0.0] + self._clip_starts[1:]
        super().cancel()

    def _clock_ms(self) -> float:
        if self._start is None:
            return 0.0
        return min(self._audio_ms, (time.monotonic() - self._start) * 1000 * self._pace)

    def _heard_ms(self) -> float:
        if self._played is not None:
            return min(self._audio_ms, self._played.get(0, 0.0) * 1000)
        return self._clock_ms()

    def result(self, timeout: float | None = None, *, idle: float | None = None) -> Any:
        # heard out once the clock has played all of it
        if self._start is not None and self._played is None:
            left = (self._audio_ms / 1000 / self._pace) - (time.monotonic() - self._start)
            if left > 0:
                with self._cond:
                    self._cond.wait_for(lambda: self._played is not None, left)
        with self._cond:
            if self._played is None:
                self._ended_upto = len(self._sent)
        return super().result(0 if timeout is None else timeout, idle=idle)


class Driver:
    """One live conversation on a speech-to-speech ``backend`` for ``session``.

    >>> d = Driver(session, "openai-realtime").start()        # doctest: +SKIP
    >>> d.send(pcm16k); ...; d.stop(); d.wait(30)             # doctest: +SKIP
    """

    def __init__(self, session: Session | None, backend: str, *, view: Any = None,
                 player: Any = None, voice: str | None = None, settings: Any = None,
                 system: str | None = None, record: Callable[..., int] | None = None) -> None:
        """``record(heard=, reply=, spoken=, recorded_at=, reconnects=)`` writes a turn and
        returns its number (default: the session's next turn); ``settings`` and ``system``
        default to the session's."""
        self.session = session
        self.backend = backend
        self.view = view
        self.player = player or ClockPlayer()
        if session is not None:
            settings = settings or session.settings
            system = system if system is not None else session.system
            record = record or (lambda **kw: session._turns.live_turn(
                backend=backend, model=self.conversation.model, **kw))
        if record is None:
            raise ValueError("Driver needs a session or a record function")
        self._record = record
        self.conversation = conversation(backend, self, settings=settings, system=system,
                                         voice=voice)
        self.turns: list[int] = []  # recorded, in order
        #: when the speech each recorded turn answers ended (monotonic; 0: not known)
        self.ended: list[float] = []
        self.error: VoicenbError | None = None
        self._lock = threading.Lock()
        self._speaker: AudioSpeaker | None = None  # the answer playing now
        self._heard: deque[Heard] = deque()
        self._jobs: queue.Queue[Any] = queue.Queue()
        self._pending = 0  # replies not yet recorded
        self._reconnects = 0  # since the last reply
        self._stopped = False
        self._idle = threading.Condition(self._lock)
        self._recorder = threading.Thread(target=self._record_loop, name="voicenb-live-record",
                                          daemon=True)
        self._recorder.start()

    def __repr__(self) -> str:
        return f"Driver(backend={self.backend!r}, turns={len(self.turns)})"

    # -- the owner's side --------------------------------------------------------------------

    def start(self) -> Driver:
        self.conversation.start()
        return self

    def send(self, pcm: bytes) -> None:
        self.conversation.send(pcm)

    def stop(self) -> None:
        """End the conversation (after the answer in progress); turns still being recorded
        finish in the background (:meth:`wait`)."""
        try:
            self.conversation.close()
        finally:
            self._jobs.put(None)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every answer so far is recorded; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._idle:
            while self._pending:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._idle.wait(left)
        return True

    # -- the conversation's events (its thread) ----------------------------------------------

    def speech_started(self) -> None:
        speaker = self._speaker
        if speaker is not None and not speaker._played_through():
            self.player.hush(speaker, self._interrupt)
        self._tell("speech_started")

    def _interrupt(self, played_ms: float) -> None:
        try:
            self.conversation.interrupt(played_ms)
        except VoicenbError as exc:
            log.info("voicenb: telling the service of a barge-in failed: %s", exc)

    def partial(self, text: str) -> None:
        self._tell("partial", text)

    def heard(self, turn: Heard) -> None:
        with self._lock:
            self._heard.append(turn)
            self._idle.notify_all()
        self._tell("heard", turn)

    def _answer(self) -> AudioSpeaker:
        if self._speaker is None or self._speaker._finished or self._speaker._stopped:
            c = self.conversation
            self._speaker = self.player.new_answer(c.backend, c.model, c.voice)
        return self._speaker

    def answer_text(self, delta: str) -> None:
        self._answer().feed(delta)
        self._tell("answer_text", delta)

    def answer_audio(self, pcm: bytes) -> None:
        self._answer().audio(pcm)

    def replied(self, reply: Reply) -> None:
        speaker = self._speaker if self._speaker is not None else None
        self._speaker = None
        if speaker is not None and not reply.interrupted:
            speaker.finish()
        elif speaker is not None:
            speaker.cancel()
        with self._lock:
            self._pending += 1
            reconnects, self._reconnects = self._reconnects, 0
        self._jobs.put((reply, speaker, time.monotonic(), reconnects))
        self._tell("replied", reply)

    def reconnecting(self, attempt: int, error: VoicenbError) -> None:
        log.info("voicenb: the %s connection dropped (%s); reconnecting (try %d)",
                 self.backend, error, attempt)
        self._tell("reconnecting", attempt, error)

    def reconnected(self, downtime_s: float) -> None:
        with self._lock:
            self._reconnects += 1
        self._tell("reconnected", downtime_s)

    def failed(self, error: VoicenbError) -> None:
        self.error = error
        speaker, self._speaker = self._speaker, None
        if speaker is not None:
            speaker.cancel()
        self._jobs.put(None)
        self._tell("failed", error)

    def _tell(self, name: str, *args: Any) -> None:
        method = getattr(self.view, f"on_{name}", None)
        if method is None:
            return
        try:
            method(*args)
        except Exception:  # noqa: BLE001 - a view's bug must not break the conversation
            log.exception("voicenb: the live view failed on %s", name)

    # -- recording, on a thread of its own ---------------------------------------------------

    def _record_loop(self) -> None:
        while True:
            try:
                # after the end, the replies already queued are recorded, then the thread ends
                job = self._jobs.get(timeout=STOPPED_IDLE_S if self._stopped else None)
            except queue.Empty:
                return
            if job is None:
                self._record_unanswered()
                self._stopped = True
                continue
            reply, speaker, done_at, reconnects = job
            try:
                spoken = speaker.result(idle=PLAYER_IDLE_S) if speaker is not None else None
                heard = self._pair(reply)
                number = self._record(heard=heard, reply=reply, spoken=spoken,
                                      recorded_at=done_at, reconnects=reconnects)
                self.ended.append(heard.ended_at if heard is not None else reply.ended_at)
                self.turns.append(number)
                self._tell("recorded", number)
            except Exception:  # noqa: BLE001 - keep recording the next turns
                log.exception("voicenb: recording a live turn failed")
            finally:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()

    def _pair(self, reply: Reply) -> Heard | None:
        """The person's turn ``reply`` answers: by the end of their speech when both know
        it, else the oldest transcript not yet paired (waiting a little for it)."""
        deadline = time.monotonic() + HEARD_WAIT_S
        with self._idle:
            while True:
                if reply.ended_at:
                    for h in list(self._heard):
                        if h.ended_at and abs(h.ended_at - reply.ended_at) < SAME_SPEECH_S:
                            self._heard.remove(h)
                            # older ones were never answered: record them as such
                            return h
                elif self._heard:
                    return self._heard.popleft()
                left = deadline - time.monotonic()
                if left <= 0 or self.error is not None:
                    return None
                self._idle.wait(min(left, 0.2))

    def _record_unanswered(self) -> None:
        """Transcripts the conversation ended before answering become error turns."""
        with self._lock:
            left = list(self._heard)
            self._heard.clear()
        for heard in left:
            try:
                self.turns.append(self._record(heard=heard, reply=None, spoken=None,
                                               recorded_at=None))
            except Exception:  # noqa: BLE001
                log.exception("voicenb: recording an unanswered live turn failed")


#: the chunk a clip is said in (the page's capture sends about this much at a time)
CHUNK_S = 0.1


def talk(session: Session, backend: str, clips: list[Any], *, pace: float = 1.0,
         gap_s: float = 1.5, answer_timeout: float = 60.0, voice: str | None = None,
         driver: Driver | None = None) -> list[int]:
    """Say each clip into one live conversation on ``backend``, as a person would: its
    audio at real-time pace (``pace`` > 1 sends faster), then silence until its answer has
    been heard out (by the clock) and recorded, ``gap_s`` at least. Returns the turns
    recorded, in order (answers "play" at ``pace`` too). For scripts, experiments and
    benchmarks; a notebook uses
    ``session.live(backend=...)``.

    >>> turns = talk(session, "openai-realtime", vnb.sim.samples()[:2])   # doctest: +SKIP
    """
    from ..audio import as_audio

    own = driver is None
    driver = driver or Driver(session, backend, voice=voice,
                              player=ClockPlayer(pace)).start()
    step = int(CHUNK_S * 16_000) * 2
    silence = bytes(step)
    clock = time.monotonic()

    def say(pcm: bytes) -> None:
        nonlocal clock
        driver.send(pcm)
        clock += len(pcm) / 32_000 / pace
        time.sleep(max(0.0, clock - time.monotonic()))

    try:
        for clip in clips:
            pcm = as_audio(clip).pcm16k()
            clock = max(clock, time.monotonic())
            began = time.monotonic()
            for i in range(0, len(pcm), step):
                say(pcm[i:i + step])
            quiet_until = time.monotonic() + gap_s
            deadline = time.monotonic() + answer_timeout
            while time.monotonic() < deadline and driver.error is None:
                # its answer is recorded (heard out, or spoken over) and nothing is pending
                answered = any(t > began for t in driver.ended) and not driver._pending
                if answered and time.monotonic() >= quiet_until:
                    break
                say(silence)
            if driver.error is not None:
                raise driver.error
    finally:
        if own:
            driver.stop()
            driver.wait(answer_timeout)
    return list(driver.turns)
