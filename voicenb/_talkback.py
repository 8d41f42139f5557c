"""Talk back: speak an answer while it streams, sentence by sentence, and stop on barge-in.

::

    LLM thread      feed(piece) ... finish()  -> sentences() cuts the text -> queue
    worker thread   tts.speak_wav(sentence) -> send(seq, wav)     one at a time, in order
    widget thread   playing(seq), ended(), hushed({seq: seconds played})
    any thread      cancel()                                       barge-in: nothing more is sent
    caller          result(timeout) -> Spoken                      how much of it was heard

>>> speaker = Speaker(widget_send, backend="espeak")               # doctest: +SKIP
>>> answer = chat.ask(question, on_token=speaker.feed)             # doctest: +SKIP
>>> speaker.finish()                                               # doctest: +SKIP
>>> speaker.result(timeout=120).spoken_chars                       # doctest: +SKIP
87

Each sentence counts the characters of the answer it covers, the whitespace after it
included, so a playback heard to the end counts ``len(text)``.

A synthesis stream that breaks mid-answer is taken up again without a word said twice: a
sentence whose HTTP body was cut is asked for again (it is sent to the player only once all
of it is in); a streamed voice's session that dropped is opened again and carries on from the
first word not yet received (:class:`StreamSpeaker`).
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from . import tts
from ._config import Settings, resolve
from ._errors import ServiceError, VoicenbError
from .audio import pcm_to_wav

__all__ = ["Speaker", "StreamSpeaker", "Spoken", "sentences"]

log = logging.getLogger("voicenb")

#: shorter pieces ("1.", "Dr.", "Yes.") are joined to the next: a clip that short sounds
#: clipped, and costs a request of its own
MIN_SENTENCE_CHARS = 12
#: a sentence running longer is cut at a comma (or a space): the first audio should not wait
#: for a run-on sentence, and OpenAI refuses inputs over 4096 characters
MAX_SENTENCE_CHARS = 300
#: a sentence played to within this of its end was heard whole (players report the time
#: they stopped, which can fall a frame short of the end)
FULLY_PLAYED_SLACK_S = 0.05
#: the worker thread exits after this long with nothing to say; a later sentence starts a new one
IDLE_EXIT_S = 30.0
#: a sentence whose synthesis broke (its body cut: no status to say why) is asked for this
#: many times in all
SENTENCE_TRIES = 3
#: a session that drops mid-answer (no close frame, 1011, a restart) is opened again, at most
#: this many tries a drop, the first after RESUME_BACKOFF_S, then twice as long each time...
RESUME_TRIES = 4
RESUME_BACKOFF_S = 0.1
#: ...and at most this many drops an answer: past it, speaking stops with the error
MAX_RESUMES = 3
#: words ending in "." that do not end a sentence (lower case, inner dots kept)
ABBREVIATIONS = frozenset({"mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "cf",
                           "approx", "fig", "vol", "ca", "mt", "e.g", "i.e", "eg", "ie"})

# an end: . ! ? … (closing quotes, brackets or markdown emphasis may follow) then whitespace,
# which the sentence takes with it; or a line break
_END = re.compile(r"[.!?…]+[\"'”’)\]»*_`]*\s+|\n\s*")
_INITIALS = re.compile(r"(?:[A-Za-z]\.)+[A-Za-z]|[A-HJ-Z]")  # U.S, e.g, J (not "I")
_CLAUSE = re.compile(r"[,;:]\s+")
# markdown a voice should not read out: emphasis, code ticks, rules, headings, quotes, bullets
_MARKUP = re.compile(r"[*`]+|^\s*[-_=]{3,}\s*$|^\s*(?:#+|>|[-•])\s+", re.MULTILINE)


def sentences(text: str, *, final: bool) -> tuple[list[str], str]:
    """Cut streamed text into complete sentences: returns (complete sentences, the rest).

    >>> sentences("Dr. Smith paid 3.5 euros. Then he left. And", final=False)
    (['Dr. Smith paid 3.5 euros.', 'Then he left.'], 'And')
    >>> sentences("1. Open the box\\n2. Take it out", final=True)
    (['1. Open the box', '2. Take it out'], '')

    A sentence ends at . ! ? (or …) followed by whitespace, or at a newline; pieces shorter
    than ``MIN_SENTENCE_CHARS`` ("1.", "Yes.") and abbreviations ("Dr.", "e.g.", initials) are
    joined to what follows; one running past ``MAX_SENTENCE_CHARS`` is cut at a comma. With
    ``final=True`` the rest is the last sentence, if it has a letter or digit to say.
    """
    found, start = _cut(text, final)
    return [sentence for sentence, _ in found], text[start:]


def _cut(text: str, final: bool) -> tuple[list[tuple[str, int]], int]:
    """(sentence, characters of ``text`` it covers) pairs, and where the rest starts."""
    found: list[tuple[str, int]] = []
    start = 0
    for end in _ends(text):
        piece = text[start:end]
        if len(piece.strip()) >= MIN_SENTENCE_CHARS and _sayable(piece):
            found.append((piece.strip(), end - start))
            start = end
    while len(text) - start > MAX_SENTENCE_CHARS:
        end = _clause_end(text, start)
        if _sayable(text[start:end]):
            found.append((text[start:end].strip(), end - start))
        start = end
    if final and _sayable(text[start:]):
        found.append((text[start:].strip(), len(text) - start))
        start = len(text)
    return found, start


def _ends(text: str) -> list[int]:
    ends = []
    for match in _END.finditer(text):
        if match.group()[0] == "." and not match.group().startswith(".."):
            word = text[max(0, match.start() - 12):match.start()].split()
            if word and (word[-1].lstrip("(\"'“‘").lower() in ABBREVIATIONS
                         or _INITIALS.fullmatch(word[-1].lstrip("(\"'“‘"))):
                continue
        ends.append(match.end())
    return ends


def _clause_end(text: str, start: int) -> int:
    """Where to cut a run-on sentence: after its last comma (or space) within the limit."""
    window = text[start:start + MAX_SENTENCE_CHARS]
    commas = [m.end() for m in _CLAUSE.finditer(window) if m.end() >= MIN_SENTENCE_CHARS]
    spaces = [m.end() for m in re.finditer(r"\s+", window) if m.end() >= MIN_SENTENCE_CHARS]
    return start + (commas or spaces or [len(window)])[-1]


def _sayable(piece: str) -> bool:
    return any(ch.isalnum() for ch in piece)  # "---" or "```" alone would be silence


def _for_voice(sentence: str) -> str:
    return " ".join(_MARKUP.sub("", sentence).split()) or sentence


@dataclass
class Spoken:
    """What was said of one answer.

    >>> spoken = speaker.result(timeout=60)                           # doctest: +SKIP
    >>> spoken.interrupted, spoken.spoken_chars, len(spoken.text)     # doctest: +SKIP
    (True, 41, 230)
    """

    text: str  # the answer text handed to the speaker (all of it)
    spoken_chars: int  # characters of it played (a cut-off sentence by the seconds it played)
    interrupted: bool  # stopped by the person (barge-in)
    tts_model: str | None  # "espeak", "gpt-4o-mini-tts"...; None: nothing was synthesised
    tts_ttfb_s: float | None  # first sentence: synthesis request -> first audio byte
    first_audio_at: float | None  # time.monotonic() when the player said audio started
    sentences: int  # synthesised and sent (clips of audio, on a streamed voice)
    error: str | None  # a synthesis failure (the text answer stands; speaking stopped)
    backend: str | None = None  # "assemblyai", "openai", "espeak"
    voice: str | None = None  # the voice that read it ("aai-jane", "alloy", espeak's default)
    #: words of the answer heard, by the service's word timings (None: no timings)
    words_heard: int | None = None
    #: synthesis streams that dropped mid-answer and were taken up again (a new session, or a
    #: sentence asked for again), without a word said twice
    reconnects: int = 0


@dataclass
class _Sent:
    chars: int  # of the answer text, the whitespace after the sentence included
    seconds: float


def _seconds_by_seq(played: Mapping[Any, Any]) -> dict[int, float]:
    """The player's report, which crosses JSON (so its keys may be strings), made safe."""
    out: dict[int, float] = {}
    for seq, seconds in (played or {}).items():
        try:
            seq, seconds = int(seq), float(seconds)
        except (TypeError, ValueError):
            continue
        if math.isfinite(seconds) and seconds > 0:
            out[seq] = seconds
    return out


class Speaker:
    """Speaks one answer as it streams: each complete sentence is synthesised on a
    background thread and handed to ``send(seq, wav_bytes)`` for the browser to play.

    >>> speaker = Speaker(lambda seq, wav: player.send_clip(seq, wav))   # doctest: +SKIP
    >>> chat.ask("Tell me about Paris.", on_token=speaker.feed)          # doctest: +SKIP
    >>> speaker.finish(); speaker.result(timeout=120)                    # doctest: +SKIP

    ``backend`` is as for :func:`voicenb.speak` (``None``: ``Settings.tts``); an unknown one
    raises :class:`~voicenb.ConfigError` here. Every other failure (no key, a service error,
    an unknown voice) stops the speaking and is reported in :attr:`Spoken.error`: the
    methods never raise. Always end an answer with :meth:`finish` or :meth:`cancel`.

    ``on_all_sent(count)``, if given, is called once when no further sentence will be sent
    (all were, or speaking stopped), with how many were: the player can only report
    :meth:`ended` once it knows the count. It is called from whichever thread ended the
    sending (the synthesis thread, or that of finish, cancel or hushed), with no lock held.
    """

    def __init__(self, send: Callable[[int, bytes], None], *, backend: str | None = None,
                 voice: str | None = None, model: str | None = None,
                 settings: Settings | None = None,
                 on_all_sent: Callable[[int], None] | None = None) -> None:
        self._cfg = resolve(settings, tts=backend)
        self._backend = tts.backend_for(self._cfg)
        self._model_name = {"espeak": "espeak", "assemblyai": tts.assemblyai.MODEL}.get(
            self._backend, model or tts.DEFAULT_MODEL)
        if self._backend == "openai":  # a model past its shutdown is refused before a word
            tts.check_model(self._model_name)
        self._voice, self._model = voice or self._cfg.tts_voice, model
        self._voice_name = self._voice or {"openai": tts.DEFAULT_VOICE,
                                           "assemblyai": tts.assemblyai.DEFAULT_VOICE,
                                           "espeak": "en"}.get(self._backend)
        self._init_state(send, on_all_sent)

    def _init_state(self, send: Callable[[int, bytes], None],
                    on_all_sent: Callable[[int], None] | None) -> None:
        self._send, self._on_all_sent = send, on_all_sent
        self._cond = threading.Condition()
        # held while a sentence is sent: cancel() waits it out, so that once cancel()
        # returns nothing more reaches the player (re-entrant: send may call cancel)
        self._send_lock = threading.RLock()
        self._text: list[str] = []
        self._rest = ""  # text not yet cut into sentences
        self._queue: deque[tuple[str, int]] = deque()
        self._sent: list[_Sent] = []
        self._worker: threading.Thread | None = None
        self._busy = self._finished = self._cancelled = self._barged = self._tried = False
        self._whole = False  # every sentence had been sent when the speaking was stopped
        self._told = False  # on_all_sent was called
        self._error: str | None = None
        self._reconnects = 0  # streams that dropped and were taken up again
        self._ttfb: float | None = None
        self._first_audio_at: float | None = None
        self._last_playing: int | None = None
        self._progress_at = time.monotonic()  # the last sentence sent or player report
        self._ended_upto = 0  # sentences the player said it finished playing
        self._played: dict[int, float] | None = None  # the hushed() report

    def __repr__(self) -> str:
        return (f"Speaker(backend={self._backend!r}, sent={len(self._sent)}, "
                f"queued={len(self._queue)}, finished={self._finished})")

    # -- the answer, from the LLM thread ----------------------------------------------------

    def feed(self, piece: str) -> None:
        """One piece of the answer (``Chat.ask``'s ``on_token``); never waits for synthesis."""
        if not isinstance(piece, str) or not piece:
            return
        with self._cond:
            self._text.append(piece)
            if not (self._finished or self._stopped):
                self._rest += piece
                self._take(final=False)

    def finish(self) -> None:
        """The answer is complete: what is left becomes the last sentence."""
        with self._cond:
            if self._finished:
                return
            self._finished = True
            if not self._stopped:
                self._take(final=True)
            self._cond.notify_all()
            count = self._claim_all_sent()
        self._tell_all_sent(count)

    def _take(self, *, final: bool) -> None:
        """Queue the complete sentences (the lock is held). The worker is started, or
        restarted after idling, under the same lock it exits under: no sentence is lost."""
        found, start = _cut(self._rest, final)
        self._rest = self._rest[start:]
        if not found:
            return
        self._queue.extend(found)
        self._cond.notify_all()
        if self._worker is None:
            self._worker = threading.Thread(target=self._run, name="voicenb-talkback",
                                            daemon=True)
            self._worker.start()

    @property
    def _stopped(self) -> bool:
        return self._cancelled or self._error is not None

    # -- the worker -------------------------------------------------------------------------

    def _run(self) -> None:
        while (job := self._next()) is not None:
            sentence, chars = job
            try:
                speech: tts.Speech | None = self._synthesise(_for_voice(sentence))
                error = None
            except VoicenbError as exc:
                speech, error = None, str(exc)
            except Exception as exc:  # a bug: say so rather than leave result() waiting
                log.exception("voicenb: speaking a sentence failed")
                speech, error = None, f"{type(exc).__name__}: {exc} (a bug in voicenb)"
            self._deliver(chars, speech, error)

    def _synthesise(self, sentence: str) -> tts.Speech:
        """One sentence's speech. A sentence is sent to the player only once all of it is
        in, so one whose stream broke (its body cut) is asked for again, whole, with nothing
        of it said twice; a refusal (a key, a voice, a rate limit, a 5xx the client already
        retried) is not."""
        for attempt in range(SENTENCE_TRIES):
            try:
                return tts.speak_wav(sentence, backend=self._backend, voice=self._voice,
                                     model=self._model, settings=self._cfg)
            except ServiceError as exc:
                # a status (5xx, 429...) was retried by the client already; no status: the
                # stream broke, or the service could not be reached
                if type(exc) is not ServiceError or exc.status_code is not None or \
                        attempt == SENTENCE_TRIES - 1:
                    raise
                with self._cond:
                    if self._stopped:
                        raise
                    self._reconnects += 1
                log.info("voicenb: speaking a sentence failed (%s); asking again", exc)
                time.sleep(min(RESUME_BACKOFF_S * 2 ** attempt, 2.0))
        raise AssertionError("unreachable")  # pragma: no cover

    def _next(self) -> tuple[str, int] | None:
        with self._cond:
            while not (self._queue or self._stopped or self._finished):
                if not self._cond.wait(IDLE_EXIT_S):
                    break
            if self._queue and not self._stopped:
                self._busy = self._tried = True
                return self._queue.popleft()
            self._worker = None
            self._cond.notify_all()
            count = self._claim_all_sent()
        self._tell_all_sent(count)
        return None

    def _deliver(self, chars: int, speech: tts.Speech | None, error: str | None) -> None:
        with self._send_lock:
            with self._cond:
                self._busy = False
                self._cond.notify_all()
                if self._stopped:  # cancelled while it was synthesised: discard it
                    return
                seq = len(self._sent)
                if speech is None:
                    self._fail(seq, error or "no audio")
                    return
                self._sent.append(_Sent(chars, speech.seconds))
                self._progress_at = time.monotonic()
                if seq == 0:
                    self._ttfb = speech.ttfb_s
            try:
                self._send(seq, speech.wav)
            except Exception as exc:  # noqa: BLE001 - whatever the widget's send raises
                with self._cond:
                    self._sent.pop()
                    self._ttfb = self._ttfb if self._sent else None
                    self._fail(seq, f"the player could not be sent it ({type(exc).__name__}: "
                                    f"{exc})")

    def _fail(self, seq: int, message: str) -> None:
        self._error = f"Speaking stopped at sentence {seq + 1}: {message}"
        self._queue.clear()
        self._cond.notify_all()
        log.warning("voicenb: %s (the text answer stands).", self._error)

    # -- the player, from the widget's thread ----------------------------------------------

    def playing(self, seq: int) -> None:
        """The player started sentence ``seq`` (now)."""
        with self._cond:
            self._progress_at = time.monotonic()
            if self._first_audio_at is None:
                self._first_audio_at = time.monotonic()
            if isinstance(seq, int) and 0 <= seq < len(self._sent):
                self._last_playing = max(seq, self._last_playing or 0)

    def ended(self) -> None:
        """The player finished everything it was sent. Once all were sent that is all of
        them (sentences it could not decode included); a player that ran dry while the
        answer still streams covers only the sentences it said it played."""
        with self._cond:
            covered = (len(self._sent) if self._told or self._last_playing is None
                       else self._last_playing + 1)
            self._ended_upto = max(self._ended_upto, min(covered, len(self._sent)))
            self._cond.notify_all()

    def hushed(self, played: Mapping[int, float]) -> None:
        """The person spoke and the player stopped, after ``played`` seconds of each seq;
        nothing more is synthesised."""
        seconds = _seconds_by_seq(played)
        with self._cond:
            if self._played_through() or self._played is not None:
                return  # all of it was heard already: nothing was cut off
            self._played = seconds
            self._stop()
        self._stopped_sending()

    def cancel(self) -> None:
        """Barge-in: stop synthesising; once this returns nothing more is sent. Idempotent."""
        with self._cond:
            if not self._played_through():
                self._stop()
        self._stopped_sending()

    def _stopped_sending(self) -> None:
        with self._send_lock:
            pass  # wait out a sentence being sent right now: after this, nothing more is
        with self._cond:
            count = self._claim_all_sent()
        self._tell_all_sent(count)

    def _claim_all_sent(self) -> int | None:
        """The count to tell on_all_sent, once, when sending is over (the lock is held)."""
        if self._told or not (self._stopped or self._synthesised_all()):
            return None
        self._told = True
        return len(self._sent)

    def _tell_all_sent(self, count: int | None) -> None:
        if count is None or self._on_all_sent is None:
            return
        try:
            self._on_all_sent(count)
        except Exception:
            log.exception("voicenb: on_all_sent failed")

    def _stop(self) -> None:
        if not self._cancelled:
            self._whole = self._synthesised_all()  # then the player may yet finish it all
        self._barged = self._cancelled = True
        self._queue.clear()
        self._cond.notify_all()

    # -- the outcome ------------------------------------------------------------------------

    def _synthesised_all(self) -> bool:
        return self._finished and not self._stopped and not self._queue and not self._busy

    def _played_through(self) -> bool:
        return ((self._whole or self._synthesised_all())
                and self._ended_upto >= len(self._sent))

    def _done(self) -> bool:
        if self._played is not None:
            return True
        synthesis_over = self._stopped or self._synthesised_all()
        return synthesis_over and self._ended_upto >= len(self._sent)

    def result(self, timeout: float | None = None, *, idle: float | None = None) -> Spoken:
        """Wait until playback ended or was hushed (or, with nothing to play, synthesis is
        done), then say what was said. Give up after ``timeout`` seconds, or once the player
        has been silent ``idle`` seconds longer than the audio it still had to play (a page
        closed, or a kernel too busy to hear it); then only the sentences it reported
        starting count as spoken."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._done():
                ends = [d for d in (deadline, self._quiet_deadline(idle)) if d is not None]
                left = min(ends) - time.monotonic() if ends else None
                if left is not None and left <= 0:
                    break
                self._cond.wait(min(left, 0.5) if left is not None else None)
            return self._spoken()

    def _quiet_deadline(self, idle: float | None) -> float | None:
        """When the player's silence stops being explained by audio still playing."""
        if idle is None:
            return None
        first = self._last_playing or 0
        pending = sum(sent.seconds for sent in self._sent[first:])
        return self._progress_at + pending + idle

    def _spoken(self) -> Spoken:
        text = "".join(self._text)
        if self._played is not None:
            chars = sum(self._heard(seq, sent) for seq, sent in enumerate(self._sent))
        elif self._played_through() and self._sent:
            chars = len(text)  # trailing blanks and markup included: all of it was heard
        else:  # the player went quiet: what it said it started
            started = 0 if self._last_playing is None else self._last_playing + 1
            chars = sum(sent.chars for sent in self._sent[:started])
        return Spoken(text=text, spoken_chars=min(chars, len(text)),
                      interrupted=self._barged and not self._played_through(),
                      tts_model=self._model_name if self._tried else None,
                      tts_ttfb_s=self._ttfb, first_audio_at=self._first_audio_at,
                      sentences=len(self._sent), error=self._error,
                      backend=self._backend, voice=self._voice_name,
                      reconnects=self._reconnects)

    def _heard(self, seq: int, sent: _Sent) -> int:
        seconds = (self._played or {}).get(seq, 0.0)
        if seconds <= 0:
            return 0
        if seconds >= sent.seconds - FULLY_PLAYED_SLACK_S or sent.seconds <= 0:
            return sent.chars
        return int(sent.chars * seconds / sent.seconds)  # the sentence cut off, pro rata


# -- a streamed voice: AssemblyAI's WebSocket session -------------------------------------------

#: the first clip of an answer goes to the page as soon as this much audio is in (the sooner
#: it plays, the sooner the person hears the answer); later clips gather this much (fewer
#: messages; the page schedules them back to back, so their size makes no gap)
FIRST_CLIP_MS = 60
CLIP_MS = 240
#: how long result() waits for the word timings of a request whose audio was heard (the
#: service sends them just after the request's FlushDone, best effort)
WORDS_WAIT_S = 1.0
_PCM_BYTES_PER_MS = tts.assemblyai.SAMPLE_RATE * 2 // 1000
# markup a voice should not read out, blanked to spaces so that every character keeps its
# place: the service's words are the request text's whitespace tokens, found back in the answer
_BLANKED = str.maketrans({c: " " for c in "*`#"})


@dataclass
class _Request:
    """One request of an answer on the session: a flush id and the answer text it covers."""

    flush_id: int
    start: int  # answer characters [start, end)
    end: int
    offset_ms: float | None = None  # where its audio starts in the answer's audio
    audio_bytes: int = 0
    done: bool = False  # its FlushDone came
    #: (answer characters up to the end of the word, the word's end in the answer's audio ms)
    words: list[tuple[int, float]] | None = None
    #: said again on a new session after the one saying ``heard`` dropped mid-way: the
    #: first ``skip_ms`` of its audio had been received already, so its audio is held
    #: (``held``) until its word timings say where the first word not yet heard starts
    heard: _Request | None = None
    skip_ms: float = 0.0
    held: bytearray | None = None
    flushed: bool = False  # its FlushDone came while its audio was held

    @property
    def audio_ms(self) -> float:
        return self.audio_bytes / _PCM_BYTES_PER_MS


class StreamSpeaker(Speaker):
    """Speaks one answer through a conversation's AssemblyAI session
    (:class:`voicenb.tts.assemblyai.Voice`): every piece of the answer goes into the session
    as it streams (``Generate``), each complete sentence ends a request (``Flush``), audio is
    handed to ``send(seq, wav)`` in short clips as it arrives, and a barge-in sends
    ``Cancel`` on the same session. The same methods and outcome as :class:`Speaker`; what
    was heard comes from the service's word timings: ``spoken_chars`` ends at the last word
    whose end played before the stop, and :attr:`Spoken.words_heard` counts those words.

    A session that drops mid-answer (no close frame, close 1011, a restart: the errors the
    service marks retryable) is opened again (:data:`RESUME_TRIES` tries with backoff, at
    most :data:`MAX_RESUMES` drops an answer), and what had not been received goes on it
    again: requests whose audio had not begun, whole; the one cut mid-way, whole too, but
    its audio is held until its word timings say where the first word not wholly received
    starts, and played from there. A word cut in two is heard again whole; no other word
    is heard twice, and none is lost. :attr:`Spoken.reconnects` counts the new sessions.

    >>> voice = tts.assemblyai.Voice(settings)                       # doctest: +SKIP
    >>> speaker = StreamSpeaker(send, voice)                         # doctest: +SKIP
    >>> chat.ask(question, on_token=speaker.feed); speaker.finish()  # doctest: +SKIP
    """

    def __init__(self, send: Callable[[int, bytes], None], voice: Any, *,
                 settings: Settings | None = None,
                 on_all_sent: Callable[[int], None] | None = None) -> None:
        super().__init__(send, backend="assemblyai", voice=voice.voice, settings=settings,
                         on_all_sent=on_all_sent)
        self._model_name = voice.model
        self._session = voice
        self._requests: list[_Request] = []
        self._by_id: dict[int, _Request] = {}
        self._sent_upto = 0  # answer characters generated into the session
        self._request_start = 0  # where the request being written starts
        self._pcm = bytearray()  # audio not yet sent to the page
        self._audio_ms = 0.0  # of the answer, received
        self._clip_starts: list[float] = []  # each clip's start in the answer's audio, ms
        self._generated_at: float | None = None
        self._resuming = False  # the session dropped: a new one is being opened
        self._cutting: _Request | None = None  # a resumed request whose audio is held
        self._later: list[tuple[str, tuple[Any, ...]]] = []  # the session's events, queued
        self._draining = False  # a thread is handling them
        voice.listen(self)

    def __repr__(self) -> str:
        return (f"StreamSpeaker(voice={self._voice!r}, requests={len(self._requests)}, "
                f"clips={len(self._sent)}, finished={self._finished})")

    # -- the answer in (the lock is held) ---------------------------------------------------

    def _take(self, *, final: bool) -> None:
        if self._resuming:
            return  # the new session is sent everything not yet spoken once it is open
        text = "".join(self._text)
        try:
            found, start = _cut(text[self._request_start:], final)
            if found:  # one or more sentences are complete: they end a request
                end = self._request_start + start
                self._generate(text[self._sent_upto:end])
                self._flush(end)
            if self._sent_upto < len(text):
                self._generate(text[self._sent_upto:])  # the next request, at once
            if final and self._sent_upto > self._request_start:
                self._flush(self._sent_upto)  # a tail with nothing to say: say nothing
        except VoicenbError as exc:
            if type(exc) is ServiceError:  # the session was lost: carry on on a new one
                self._lost(str(exc))
            else:
                self._fail(len(self._sent), str(exc))

    def _generate(self, text: str) -> None:
        if not text:
            return
        first = self._generated_at is None
        if first:
            self._generated_at = time.monotonic()
        self._session.generate(text.translate(_BLANKED), first=first)
        self._sent_upto += len(text)

    def _flush(self, end: int) -> None:
        request = _Request(self._session.flush(), self._request_start, end)
        self._requests.append(request)
        self._by_id[request.flush_id] = request
        self._request_start = end

    def _synthesised_all(self) -> bool:
        return (self._finished and not self._stopped and not self._resuming
                and self._sent_upto == self._request_start
                and all(r.done for r in self._requests))

    def _stop(self) -> None:
        if not self._cancelled and not self._synthesised_all():
            self._session.cancel()  # the request in flight, queued ones, unflushed text
        super()._stop()

    # -- the session's events, on its reader thread -----------------------------------------
    # Each goes through one queue, handled in order: after a dropped session, the audio of
    # the request said again is held until its word timings say where to cut it, and the
    # events of the requests after it wait for that.

    def on_audio(self, flush_id: int, pcm: bytes) -> None:
        self._event("audio", flush_id, pcm)

    def on_flush_done(self, flush_id: int, audio_ms: int) -> None:
        self._event("flush_done", flush_id, audio_ms)

    def on_words(self, flush_id: int, audio_start_ms: int,
                 words: list[tuple[str, int, int]]) -> None:
        self._event("words", flush_id, audio_start_ms, words)

    def _event(self, name: str, flush_id: int, *args: Any) -> None:
        with self._cond:
            if flush_id not in self._by_id:
                return  # a request of the answer before, or one said again
            self._later.append((name, (flush_id, *args)))
        self._drain()

    def _drain(self) -> None:
        """Handle the queued events in order, one thread at a time, until one must wait."""
        with self._cond:
            if self._draining:
                return
            self._draining = True
        while True:
            with self._cond:
                head = self._later[0] if self._later else None
                if head is None or (self._cutting is not None and
                                    self._by_id.get(head[1][0]) is not self._cutting):
                    self._draining = False
                    return
                self._later.pop(0)
            try:
                getattr(self, f"_on_{head[0]}")(*head[1])
            except Exception:  # a bug: the next events are still handled
                log.exception("voicenb: handling a speech event failed")

    def _on_audio(self, flush_id: int, pcm: bytes) -> None:
        with self._cond:
            request = self._by_id.get(flush_id)
            if request is None or self._stopped or not pcm:
                return
            if request.held is not None:  # said again: where to cut it is not known yet
                request.held += pcm
                return
            clip = self._audio_in(request, pcm)
        if clip is not None:
            self._deliver_clip(*clip)

    def _audio_in(self, request: _Request, pcm: bytes) -> tuple[bytes, float] | None:
        """Take ``pcm`` of ``request`` into the answer's audio; a clip for the page when
        enough is in (the lock is held)."""
        if request.offset_ms is None:
            request.offset_ms = self._audio_ms
        request.audio_bytes += len(pcm)
        self._audio_ms += len(pcm) / _PCM_BYTES_PER_MS
        if self._ttfb is None and self._generated_at is not None:
            self._ttfb = time.monotonic() - self._generated_at
        self._pcm += pcm
        enough = (FIRST_CLIP_MS if not self._sent else CLIP_MS) * _PCM_BYTES_PER_MS
        return self._take_clip() if len(self._pcm) >= enough else None

    def _on_flush_done(self, flush_id: int, audio_ms: int) -> None:
        with self._cond:
            request = self._by_id.get(flush_id)
            if request is None:
                return
            if request.held is not None:  # its word timings come next (best effort)
                timer = threading.Timer(WORDS_WAIT_S, self._cut_late, (request,))
                timer.daemon = True
                timer.start()
                return
            request.done = True
            clip = self._take_clip() if self._pcm and not self._stopped else None
            self._cond.notify_all()
        if clip is not None:
            self._deliver_clip(*clip)
        with self._cond:
            count = self._claim_all_sent()
        self._tell_all_sent(count)

    def _on_words(self, flush_id: int, audio_start_ms: int,
                  words: list[tuple[str, int, int]]) -> None:
        with self._cond:
            request = self._by_id.get(flush_id)
            if request is None:
                return
            if request.held is None:
                if request.offset_ms is not None:
                    request.words = [(end, request.offset_ms + end_ms - audio_start_ms)
                                     for _, end, _, end_ms in self._timed(request, words)]
                    self._cond.notify_all()
                return
            clip = self._cut_in(request, audio_start_ms, words)
        self._after_cut(clip)

    def _timed(self, request: _Request, words: list[tuple[str, int, int]]
               ) -> list[tuple[int, int, int, int]]:
        """The service's words of ``request`` found in the answer: (where the word starts
        and ends in the answer's characters, and in ms on the session's timeline)."""
        text = "".join(self._text)[request.start:request.end].translate(_BLANKED)
        tokens = [(m.group(), request.start + m.start(), request.start + m.end())
                  for m in re.finditer(r"\S+", text)]
        timed: list[tuple[int, int, int, int]] = []
        at = 0
        for word, start_ms, end_ms in words:
            # the service's words are the request's whitespace tokens, verbatim
            j = next((k for k in range(at, len(tokens)) if tokens[k][0] == word), None)
            if j is None:
                continue
            at = j + 1
            timed.append((tokens[j][1], tokens[j][2], start_ms, end_ms))
        return timed

    def on_error(self, message: str, retryable: bool = False) -> None:
        with self._cond:
            if self._stopped or self._synthesised_all():
                return
            if retryable:
                self._lost(message)  # failed, past MAX_RESUMES drops
            else:
                self._fail(len(self._sent), message)
            count = self._claim_all_sent()
        self._tell_all_sent(count)

    # -- a dropped session: a new one says what was not yet heard ---------------------------

    def _lost(self, message: str) -> None:
        """The session dropped mid-answer (the lock is held): open a new one off the
        reader's thread, and say on it what was not yet received."""
        if self._resuming or self._stopped:
            return
        if self._reconnects >= MAX_RESUMES:
            self._fail(len(self._sent), f"{message} (the session dropped "
                                        f"{self._reconnects + 1} times during this answer)")
            return
        self._resuming = True
        threading.Thread(target=self._resume, args=(message,), name="voicenb-talkback-resume",
                         daemon=True).start()

    def _resume(self, message: str) -> None:
        error = message
        for attempt in range(RESUME_TRIES):
            time.sleep(min(RESUME_BACKOFF_S * 2 ** attempt, 2.0))
            with self._cond:
                if self._stopped:
                    break
            try:
                self._session.open()  # a new session: the old one is lost
                with self._cond:
                    if self._stopped:
                        break
                    self._reconnects += 1
                    self._replay()
                    self._resuming = False
                    self._take(final=self._finished)  # what came in meanwhile
                    self._cond.notify_all()
                log.info("voicenb: the speech session dropped (%s); carried on on a new one",
                         message)
                return
            except VoicenbError as exc:
                error = str(exc)
                if type(exc) is not ServiceError:  # a refusal: trying again will not help
                    break
        with self._cond:
            self._resuming = False
            if not self._stopped:
                self._fail(len(self._sent), error)
            self._cond.notify_all()
            count = self._claim_all_sent()
        self._tell_all_sent(count)

    def _replay(self) -> None:
        """On the new session, say again each request whose FlushDone had not come, and the
        text not yet flushed (the lock is held). A request whose audio had begun is said
        whole, its audio held until its word timings say where to cut it; one said again
        already and still held keeps its cut."""
        old, self._by_id, self._later = self._requests, {}, []
        self._requests = [r for r in old if r.done]
        self._cutting = None
        text = "".join(self._text)
        for request in (r for r in old if not r.done):
            if request.held is not None:
                heard, skip = request.heard, request.skip_ms
            elif request.audio_bytes:  # what was received of it stands
                heard, skip = request, request.audio_ms
                request.done = True
                self._requests.append(request)
            else:
                heard, skip = None, 0.0
            self._session.generate(text[request.start:request.end].translate(_BLANKED))
            again = _Request(self._session.flush(), request.start, request.end, heard=heard,
                             skip_ms=skip, held=bytearray() if heard is not None else None)
            self._requests.append(again)
            self._by_id[again.flush_id] = again
            if heard is not None and self._cutting is None:
                self._cutting = again
        if self._sent_upto > self._request_start:  # the request being written
            self._session.generate(
                text[self._request_start:self._sent_upto].translate(_BLANKED))

    def _cut_late(self, request: _Request) -> None:
        """The word timings of a request said again did not come: cut it by time."""
        with self._cond:
            if request.held is None or request is not self._cutting:
                return
            clip = self._cut_in(request, None, [])
        self._after_cut(clip)

    def _cut_in(self, request: _Request, audio_start_ms: int | None,
                words: list[tuple[str, int, int]]) -> tuple[bytes, float] | None:
        """A request said again, its audio all in: cut it where the first word not yet
        received starts (a word received in part is said again whole) and take the rest
        into the answer's audio (the lock is held). Without word timings, cut it where the
        audio received before the drop ended."""
        assert request.held is not None
        heard, held = request.heard, bytes(request.held)
        request.held, self._cutting = None, None
        cut_ms, rest = request.skip_ms, []
        if audio_start_ms is not None:
            timed = self._timed(request, words)
            rest = [t for t in timed if t[3] - audio_start_ms > request.skip_ms + 1e-6]
            cut_ms = rest[0][2] - audio_start_ms if rest else len(held) / _PCM_BYTES_PER_MS
            if heard is not None and heard.offset_ms is not None:
                heard.words = [(end, heard.offset_ms + end_ms - audio_start_ms)
                               for _, end, _, end_ms in timed[:len(timed) - len(rest)]]
                if rest:
                    heard.end = request.start = rest[0][0]
        cut = min(len(held), max(0, int(cut_ms * _PCM_BYTES_PER_MS)) // 2 * 2)
        request.done = True
        if self._stopped:  # spoken over meanwhile: none of it is played
            self._cond.notify_all()
            return None
        clip = self._audio_in(request, held[cut:]) if len(held) > cut else None
        if request.offset_ms is None:
            request.offset_ms = self._audio_ms
        if audio_start_ms is not None:
            request.words = [(end, request.offset_ms + end_ms - audio_start_ms - cut_ms)
                             for _, end, _, end_ms in rest]
        if self._pcm and not self._stopped:
            clip = self._take_clip()  # all of it: its FlushDone came
        self._cond.notify_all()
        return clip

    def _after_cut(self, clip: tuple[bytes, float] | None) -> None:
        if clip is not None:
            self._deliver_clip(*clip)
        with self._cond:
            count = self._claim_all_sent()
        self._tell_all_sent(count)
        self._drain()  # the events that waited for the cut

    def _take_clip(self) -> tuple[bytes, float]:
        """The audio gathered for the page, and where it starts (the lock is held)."""
        pcm = bytes(self._pcm)
        self._pcm.clear()
        return pcm, self._audio_ms - len(pcm) / _PCM_BYTES_PER_MS

    def _deliver_clip(self, pcm: bytes, start_ms: float) -> None:
        with self._send_lock:
            with self._cond:
                if self._stopped:
                    return
                seq = len(self._sent)
                self._sent.append(_Sent(0, len(pcm) / (_PCM_BYTES_PER_MS * 1000)))
                self._clip_starts.append(start_ms)
                self._progress_at = time.monotonic()
                self._tried = True
            try:
                self._send(seq, pcm_to_wav(pcm, rate=tts.assemblyai.SAMPLE_RATE))
            except Exception as exc:  # noqa: BLE001 - whatever the widget's send raises
                with self._cond:
                    self._sent.pop()
                    self._clip_starts.pop()
                    self._fail(seq, f"the player could not be sent it ({type(exc).__name__}: "
                                    f"{exc})")

    # -- the outcome ------------------------------------------------------------------------

    def result(self, timeout: float | None = None, *, idle: float | None = None) -> Spoken:
        super().result(timeout, idle=idle)
        deadline = time.monotonic() + WORDS_WAIT_S
        with self._cond:
            # word timings of requests whose audio was heard come just after their FlushDone
            while (left := deadline - time.monotonic()) > 0 and any(
                    r.done and r.words is None and r.audio_bytes for r in self._heard_requests()):
                self._cond.wait(left)
            return self._spoken()

    def _heard_ms(self) -> float:
        """How far into the answer's audio the person heard it."""
        if self._played is not None:
            return max((self._clip_starts[seq] + seconds * 1000
                        for seq, seconds in self._played.items() if seq < len(self._sent)),
                       default=0.0)
        if self._played_through():
            return self._audio_ms
        started = 0 if self._last_playing is None else self._last_playing + 1
        return sum(sent.seconds for sent in self._sent[:started]) * 1000

    def _heard_requests(self) -> list[_Request]:
        heard = self._heard_ms()
        return [r for r in self._requests if r.offset_ms is not None and r.offset_ms < heard]

    def _spoken(self) -> Spoken:
        spoken = super()._spoken()
        if not self._requests:
            return spoken
        text = spoken.text
        heard_ms, chars, words, exact = self._heard_ms(), 0, 0, True
        for request in self._requests:
            if request.offset_ms is None or request.offset_ms >= heard_ms:
                break
            if request.words is None:  # no timings (cancelled mid-way): by its audio played
                exact = False
                part = (heard_ms - request.offset_ms) / max(request.audio_ms, 1e-9)
                if part >= 1.0:
                    chars = request.end
                    continue
                head = text[request.start:request.start + int((request.end - request.start)
                                                              * part)]
                whole = head[:len(head) - len(re.split(r"\s", head)[-1])].rstrip()
                chars = request.start + len(whole) if whole else chars
                break
            heard = [end for end, end_ms in request.words if end_ms <= heard_ms + 1e-6]
            words += len(heard)
            chars = heard[-1] if heard else chars
            if len(heard) < len(request.words):
                break
        if self._played_through() and self._sent:
            chars = len(text)  # all of it, trailing blanks and markup included
        spoken.spoken_chars = min(chars, len(text))
        spoken.words_heard = words if exact else None
        return spoken


# -- speech the service made: a speech-to-speech live backend ------------------------------------


class AudioSpeaker(StreamSpeaker):
    """Plays one answer whose speech comes ready-made from a speech-to-speech service
    (:mod:`voicenb.live`): :meth:`audio` takes its PCM (24 kHz) as it arrives and hands it to
    ``send(seq, wav)`` in short clips, :meth:`feed` its transcript. The same outcome as
    :class:`Speaker`; what was heard is the audio played before a barge-in
    (:meth:`heard_ms`, which the service is told), and the characters heard are that share
    of the transcript, cut back to a whole word (the services give no word timings).

    >>> speaker = AudioSpeaker(send, backend="openai-realtime", model="gpt-realtime-2",
    ...                        voice="marin")                     # doctest: +SKIP
    >>> speaker.audio(pcm); speaker.feed("Paris is"); speaker.finish()  # doctest: +SKIP
    """

    def __init__(self, send: Callable[[int, bytes], None], *, backend: str,
                 model: str | None, voice: str | None,
                 on_all_sent: Callable[[int], None] | None = None) -> None:
        self._cfg = None
        self._backend, self._model_name, self._model = backend, model, model
        self._voice = self._voice_name = voice
        self._init_state(send, on_all_sent)
        self._requests: list[_Request] = []
        self._pcm = bytearray()
        self._audio_ms = 0.0
        self._clip_starts: list[float] = []
        self._generated_at: float | None = None

    def __repr__(self) -> str:
        return (f"AudioSpeaker(backend={self._backend!r}, clips={len(self._sent)}, "
                f"audio_ms={self._audio_ms:.0f}, finished={self._finished})")

    def _take(self, *, final: bool) -> None:
        pass  # the service speaks: the transcript is only kept

    def _stop(self) -> None:
        Speaker._stop(self)  # the owner tells the service (Conversation.interrupt)

    def audio(self, pcm: bytes) -> None:
        """The next piece of the answer's speech (16-bit mono PCM, 24 kHz)."""
        with self._cond:
            if self._stopped or self._finished or not pcm:
                return
            self._audio_ms += len(pcm) / _PCM_BYTES_PER_MS
            self._pcm += pcm
            enough = (FIRST_CLIP_MS if not self._sent else CLIP_MS) * _PCM_BYTES_PER_MS
            clip = self._take_clip() if len(self._pcm) >= enough else None
        if clip is not None:
            self._deliver_clip(*clip)

    def finish(self) -> None:
        """The answer is complete (its audio and transcript are all in)."""
        with self._cond:
            clip = self._take_clip() if self._pcm and not self._stopped else None
        if clip is not None:
            self._deliver_clip(*clip)
        with self._cond:
            self._tried = self._tried or bool(self._sent)
        super().finish()

    def _synthesised_all(self) -> bool:
        return self._finished and not self._stopped and not self._pcm

    def heard_ms(self) -> float:
        """Milliseconds of the answer's audio the person heard (so far)."""
        with self._cond:
            return self._heard_ms()

    def result(self, timeout: float | None = None, *, idle: float | None = None) -> Spoken:
        return Speaker.result(self, timeout, idle=idle)

    def _spoken(self) -> Spoken:
        spoken = Speaker._spoken(self)
        text = spoken.text
        if self._played_through() and self._sent:
            chars = len(text)
        elif self._audio_ms <= 0:
            chars = 0
        else:  # the share of the audio heard, cut back to the last whole word
            head = text[:int(len(text) * min(1.0, self._heard_ms() / self._audio_ms))]
            chars = len(head) if len(head) == len(text) or text[len(head):][:1].isspace() \
                else len(head) - len(re.split(r"\s", head)[-1])
            chars = len(text[:chars].rstrip())
        spoken.spoken_chars = min(chars, len(text))
        spoken.words_heard = None
        spoken.tts_ttfb_s = None
        return spoken
