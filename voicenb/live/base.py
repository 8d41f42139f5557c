"""The live-conversation protocol: what every live backend does and tells (private module).

A live backend holds one conversation with a service over a socket. Its owner (the live
widget, a script, an experiment) feeds it the microphone and hears back, through a
:class:`Listener`, what the service heard and said. Three backends implement it:

- ``"cascade"``: AssemblyAI's streaming speech to text, then the chat model, then a voice
  (voicenb's own pipeline; the live widget runs it);
- ``"openai-realtime"``: OpenAI's Realtime API, speech in and speech out on one socket
  (:mod:`voicenb.live.openai_realtime`);
- ``"assemblyai-agent"``: AssemblyAI's Voice Agent API, the same on one socket
  (:mod:`voicenb.live.assemblyai_agent`).

The order of a turn, on the owner's side::

    speech_started()          the person began speaking (over an answer: a barge-in)
    partial(text)*            their words so far, when the service says them
    heard(Heard)              their turn ended: the final transcript and its audio
    answer_text(delta)*       the answer's transcript as it comes
    answer_audio(pcm)*        the answer's speech (16-bit mono PCM at ``output_rate``)
    replied(Reply)            the answer ended: done, spoken over, or failed

``failed(error)`` says the conversation itself broke (it cannot go on). A dropped connection
is not that: the backend says ``reconnecting(attempt, error)``, connects again (the same
session within the service's grace, else a new one given the conversation so far), sends the
audio queued meanwhile, and says ``reconnected(downtime_s)``; the owner counts reconnects per
turn (the history's ``reconnects``). Every callback comes from the backend's own thread and
must return quickly.

Times are on :func:`time.monotonic`, from the end of the person's speech as the service saw
it (``input.speech.stopped``, ``input_audio_buffer.speech_stopped``), so the figures of the
three backends compare.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from .._errors import VoicenbError

log = logging.getLogger("voicenb.live")

#: the live backends, in the order the README compares them
BACKENDS = ("cascade", "openai-realtime", "assemblyai-agent")
#: the microphone's format every backend takes in ``send`` (each converts for its service)
INPUT_RATE = 16_000


@dataclass
class Heard:
    """The person's turn as the service heard it."""

    text: str
    #: their speech, 16-bit mono PCM at ``rate`` (what was sent from speech start to stop,
    #: with a little before): saved with the turn before anything else is recorded
    audio: bytes
    rate: int = INPUT_RATE
    #: when their speech ended (monotonic), as the service saw it
    ended_at: float = 0.0
    #: end of speech -> this final transcript (None: not known)
    stt_s: float | None = None
    #: the service's id of the user's item or turn ("<session>:<item>")
    id: str | None = None
    #: the model that heard it (``gpt-4o-transcribe``, ``u3-rt-pro``...)
    speech_model: str | None = None


@dataclass
class Reply:
    """An answer as it ended. Seconds are from the end of the person's speech."""

    text: str                               # the whole answer's transcript, as generated
    model: str | None = None                # the model that answered
    started_s: float | None = None          # -> the service began its reply
    first_token_s: float | None = None      # -> first piece of the answer's transcript
    first_audio_s: float | None = None      # -> first audio of the answer received
    llm_s: float | None = None              # -> the answer done (response.done, reply.done)
    prompt_tokens: int | None = None        # tokens billed in (text + audio), when told
    completion_tokens: int | None = None    # tokens billed out (text + audio), when told
    audio_in_tokens: int | None = None      # of which audio
    audio_out_tokens: int | None = None     # of which audio
    #: seconds of the session billed for this turn (a service billed by the hour)
    billed_s: float | None = None
    audio_ms: float = 0.0                   # milliseconds of answer audio received
    voice: str | None = None
    #: the person spoke over it: the service stopped it (``interrupt``)
    interrupted: bool = False
    #: what ended it, when it did not end well
    error: VoicenbError | None = None
    #: the service's id of the answer
    id: str | None = None
    #: the end of the person's speech it answers (monotonic; 0: not known), which pairs it
    #: with its :class:`Heard` (a transcript may come after the reply)
    ended_at: float = 0.0
    extra: dict[str, object] = field(default_factory=dict)


class Listener(Protocol):
    """What a conversation tells its owner (each from the backend's thread)."""

    def speech_started(self) -> None: ...

    def partial(self, text: str) -> None: ...

    def heard(self, turn: Heard) -> None: ...

    def answer_text(self, delta: str) -> None: ...

    def answer_audio(self, pcm: bytes) -> None: ...

    def replied(self, reply: Reply) -> None: ...

    def failed(self, error: VoicenbError) -> None: ...

    def reconnecting(self, attempt: int, error: VoicenbError) -> None: ...

    def reconnected(self, downtime_s: float) -> None: ...


@runtime_checkable
class Conversation(Protocol):
    """One live conversation with a speech-to-speech service."""

    #: its name in the history's ``live_backend`` (one of :data:`BACKENDS`)
    backend: str
    #: the model (or agent) that answers, and the voice that speaks
    model: str | None
    voice: str | None
    #: the sample rate of the PCM given to ``Listener.answer_audio``
    output_rate: int

    def start(self) -> None:
        """Connect and configure (system prompt, model, voice); return once the service is
        ready for audio. Raises a :class:`VoicenbError` (a wrong key, an unknown voice...)."""
        ...

    def send(self, pcm: bytes) -> None:
        """Queue 16-bit mono PCM at :data:`INPUT_RATE` from the microphone; never blocks."""
        ...

    def interrupt(self, played_ms: float | None) -> None:
        """The person spoke over the answer: stop it. ``played_ms``: how much of its audio
        the person heard (the service is told, so its memory holds only that)."""
        ...

    def close(self) -> None:
        """End the session cleanly, after the answer in progress (idempotent)."""
        ...


class Upsampler:
    """16 kHz -> 24 kHz PCM16 by linear interpolation, chunk after chunk as if one stream
    (each output sample falls where it would in the whole, whatever the chunks' sizes): the
    microphone's audio for a speech-to-speech service."""

    def __init__(self) -> None:
        self._last: Any = None   # the previous chunk's last sample
        self._next_in = 0        # index of the next input sample
        self._next_out = 0       # index of the next output sample

    def feed(self, pcm: bytes) -> bytes:
        import numpy as np

        x = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float32)
        if x.size == 0:
            return b""
        base = self._next_in
        if self._last is not None:
            x, base = np.concatenate([self._last, x]), base - 1
        last = base + x.size - 1
        end = last * 3 // 2 + 1                     # outputs up to the last input's time
        t = np.arange(self._next_out, end) * (2 / 3) - base
        y = np.interp(t, np.arange(x.size), x)
        self._next_out, self._next_in, self._last = end, last + 1, x[-1:]
        return np.clip(np.round(y), -32768, 32767).astype("<i2").tobytes()


class Base:
    """What the speech-to-speech backends share: the listener, and the person's audio kept
    from a little before their speech started to when it stopped (for :class:`Heard`)."""

    #: audio kept from before the service said speech started (its detector lags the onset)
    LEAD_S = 0.5

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self._recent = bytearray()   # the last LEAD_S of audio sent, while nobody speaks
        self._speech: bytearray | None = None  # the current turn's audio, while speaking
        self._said: bytes = b""      # the last finished turn's audio, until heard()

    def _keep(self, pcm: bytes) -> None:
        """Remember audio as it is sent (call from ``send``)."""
        if self._speech is not None:
            self._speech += pcm
            return
        self._recent += pcm
        excess = len(self._recent) - int(self.LEAD_S * INPUT_RATE) * 2
        if excess > 0:
            del self._recent[:excess + (excess & 1)]

    def _speech_began(self) -> None:
        self._speech = bytearray(self._recent)
        self._recent.clear()

    def _speech_ended(self) -> None:
        if self._speech is not None:
            self._said, self._speech = bytes(self._speech), None

    def _take_said(self) -> bytes:
        said, self._said = self._said, b""
        return said


# -- reconnecting: what the speech-to-speech backends share ----------------------------------

#: reconnecting: the first wait between tries (the first try is at once), doubling to the
#: most, and how many tries before the conversation fails
RETRY_FIRST_S, RETRY_MAX_S, RETRY_TRIES = 0.2, 4.0, 8
#: seconds of microphone audio kept to send again after a drop, and queued while
#: reconnecting (each; beyond it the oldest goes)
BACKLOG_S = 60.0
#: close codes that say the client is at fault (a refused key, a malformed event): not
#: retried. Every other close (1006 without a frame, 1011, 1012, 1001...) is.
FINAL_CLOSE_CODES = (1002, 1003, 1007, 1008, 1009, 1010)
REPLAY_CHUNK = INPUT_RATE * 2  # a second of audio an event when sending again


class Outbox:
    """What a writer thread sends, in order: microphone audio (``bytes``) and other items.
    ``put`` never blocks; audio waiting beyond ``max_bytes`` (a long reconnect) loses its
    oldest, logged. ``get`` joins audio that queued up into one piece."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.dropped = 0              # bytes of audio let go
        self._items: deque[Any] = deque()
        self._bytes = 0
        self._cond = threading.Condition()

    def put(self, item: Any) -> None:
        with self._cond:
            self._items.append(item)
            if isinstance(item, bytes):
                self._bytes += len(item)
                while self._bytes > self.max_bytes:
                    oldest = next(i for i in self._items if isinstance(i, bytes))
                    self._items.remove(oldest)
                    self._bytes -= len(oldest)
                    if not self.dropped:
                        log.warning("voicenb: the live connection is down and more than "
                                    "%.0f s of audio waits; the oldest is let go",
                                    self.max_bytes / 2 / INPUT_RATE)
                    self.dropped += len(oldest)
            self._cond.notify()

    def get(self, most: int = REPLAY_CHUNK) -> Any:
        with self._cond:
            self._cond.wait_for(lambda: self._items)
            item = self._items.popleft()
            if isinstance(item, bytes):
                self._bytes -= len(item)
                while self._items and isinstance(self._items[0], bytes) \
                        and len(item) + len(self._items[0]) <= most:
                    more = self._items.popleft()
                    self._bytes -= len(more)
                    item += more
            return item


class SentAudio:
    """The microphone audio sent on the current connection that the service has not yet
    made a confirmed turn of, by its byte offset in that connection's stream: what a new
    connection is sent again. Holds at most ``max_bytes`` (the newest)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.pcm = bytearray()
        self.start = 0                # stream offset of pcm[0]

    @property
    def end(self) -> int:
        return self.start + len(self.pcm)

    def add(self, pcm: bytes) -> None:
        self.pcm += pcm
        excess = len(self.pcm) - self.max_bytes
        if excess > INPUT_RATE:       # trim in steps, not at every chunk
            self.confirm(self.start + excess)

    def slice(self, start: int, end: int) -> bytes:
        start, end = max(start, self.start), min(end, self.end)
        return bytes(self.pcm[start - self.start:end - self.start]) if end > start else b""

    def confirm(self, upto: int | None = None) -> None:
        """The service has made turns of the audio up to stream offset ``upto`` (None: all
        sent so far): it is not sent again."""
        upto = self.end if upto is None else min(max(upto, self.start), self.end)
        upto -= upto & 1
        del self.pcm[:upto - self.start]
        self.start = upto

    def restart(self) -> bytes:
        """What a new connection is sent first; its stream starts with it."""
        self.start = 0
        return bytes(self.pcm)


def retry_waits() -> Any:
    """The wait before each reconnect try: none before the first, then doubling."""
    wait = 0.0
    for _ in range(RETRY_TRIES):
        yield wait
        wait = min(RETRY_MAX_S, max(RETRY_FIRST_S, wait * 2))
