"""Real-time transcription: AssemblyAI's Universal-Streaming v3 websocket.

:class:`RealtimeTranscriber` uses websockets' blocking client (``websockets.sync``, as the
official AssemblyAI SDK does): one thread sends, one reads, and no event loop of its own, so
it works the same from a script, a CLI and a notebook (whose main thread already runs an
event loop). Feed it 16 kHz mono 16-bit PCM with :meth:`~RealtimeTranscriber.send`
in pieces of any size: it re-chunks them into frames of ``chunk_ms`` (50-1000 ms, as the
service requires) and never sends faster than real time. It always ends the session with
``{"type": "Terminate"}`` and waits for ``Termination`` (on errors and Ctrl-C too), since
an unterminated session is billed until its 3-hour cap.

A dropped connection does not end the conversation. On an abnormal close (no close frame,
1006, 1011, 1012, 1013, 3005, 3008) or a network error, the transcriber connects again by
itself (backoff, :data:`RECONNECT_TRIES` tries) and opens a new session; it replays the
audio sent since the last final turn, from where speech begins in it, so the turn in
progress completes with every word, and no final turn is reported twice (turn orders and
word times carry on as one stream). Audio fed meanwhile waits in the queue and goes after.
It never reconnects on a wrong key or token (1008), a bad parameter (3006), audio it sent
wrongly (3007), or after :meth:`~RealtimeTranscriber.close`. The stream catches up after a
replay by not sending the part of long silences beyond what ends a turn. A session nearing
its maximum duration (its ``expires_at``) is rolled over to a new one during a silence
between turns. ``on_reconnecting(attempt, error)`` and ``on_reconnected(session_id,
downtime_s)`` say so; each final turn says how many reconnects it met (``reconnects``).

Two families of models take different parameters (AssemblyAI's two streaming specs):
``u3-rt-pro`` (the default, ``Settings.streaming_model``) formats every final turn itself, so
it takes no ``format_turns`` but takes a ``prompt``; the ``universal-streaming-*`` models
take ``format_turns`` and ``end_of_turn_confidence_threshold``. Both take
``min_turn_silence``, ``max_turn_silence`` and ``keyterms_prompt``.
:func:`create_temporary_token` gets a short-lived token (``GET /v3/token``) for a client
that must not hold the API key: ``RealtimeTranscriber(token=...)``.
"""

from __future__ import annotations

import bisect
import json
import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from .._config import Settings, resolve
from .._errors import (
    AuthenticationError,
    ConfigError,
    RateLimitError,
    ServiceError,
    ServiceTimeoutError,
    VoicenbError,
    remember_secret,
)
from .._http import HttpClient, clean_key
from .._http import field as response_field
from ..audio import AudioLike, as_audio

SERVICE = "AssemblyAI streaming"
#: websockets logs the handshake (the URL with a temporary token, the key header) at DEBUG:
#: its messages for our connections go to a logger that never shows DEBUG
_WS_LOG = logging.getLogger("voicenb.streaming.websocket")
_WS_LOG.setLevel(logging.INFO)
log = logging.getLogger("voicenb")
BACKEND = "assemblyai-streaming"
#: the longest stretch of sent audio kept for a turn that has not ended (seconds)
MAX_TURN_S = 300.0
#: How far the audio sent may run ahead of the session's clock (seconds since Begin). The
#: service refuses audio "faster than real time" (3007); the simulator allows 1 s ahead. Half
#: that lets a backlog queued while the session opened go at once, so the stream never trails.
AHEAD_S = 0.5
#: Reconnecting: tries per drop, and the backoff before each (doubling, capped)
RECONNECT_TRIES = 8
RECONNECT_BACKOFF_S = (0.05, 2.0)
#: close codes after which a new session is opened: no close frame (None, 1006), going
#: away, server errors and restarts (1001, 1011-1014), AssemblyAI's catch-all server error
#: (3005), the session's maximum duration (3008); a reconnect refused for too many sessions
#: (3009: the dropped one may still count) is tried again too
RETRYABLE = {None, 1001, 1006, 1011, 1012, 1013, 1014, 3005, 3008}
#: the most audio queued (fed, not yet sent) while reconnecting before send() refuses more:
#: what a reconnect's tries leave queued is far less (about 10 s)
MAX_BACKLOG_S = 60.0
#: a session is rolled over this long before it expires (capped at a tenth of its length)
ROLLOVER_S = 60.0
#: the stream catches up after a replay: while it trails the microphone by more than this,
#: silence beyond what ends a turn is not sent
CATCH_UP_S = 0.3
#: a 20 ms window louder than this (RMS of 16-bit samples) is speech, for the replay's start
#: and for catching up (below about -42 dBFS is silence)
SPEECH_RMS = 250.0
#: loud 20 ms windows in a row that begin speech (60 ms: a click or a word's tail is not)
ONSET_WINDOWS = 3
#: the turn silence each family of models waits for at most (ms), by default (their specs)
MAX_TURN_SILENCE_MS = {"u3": 1000, "universal": 1280}
#: What each family of models takes beyond the common parameters, from AssemblyAI's two
#: streaming specs (usm-streaming and usm-streaming-u3-pro): at connect time, and in an
#: ``UpdateConfiguration`` message.
U3_ONLY = ("prompt",)
UNIVERSAL_ONLY = ("format_turns", "end_of_turn_confidence_threshold")
UPDATABLE = {"u3": ("prompt", "keyterms_prompt", "min_turn_silence", "max_turn_silence"),
             "universal": ("end_of_turn_confidence_threshold", "min_turn_silence",
                           "max_turn_silence")}
#: the former name of ``min_turn_silence``, still accepted (the new name wins)
OLD_MIN_SILENCE = "min_end_of_turn_silence_when_confident"


def model_family(speech_model: str) -> str:
    """``"u3"`` for the Universal-3 Pro models (``u3-rt-pro``), else ``"universal"``."""
    return "u3" if speech_model.startswith("u3-") else "universal"


def create_temporary_token(
    expires_in_seconds: int = 60,
    *,
    max_session_duration_seconds: int | None = None,
    api_key: str | None = None,
    url: str | None = None,
    settings: Settings | None = None,
) -> str:
    """A single-use token for one streaming session, from ``GET /v3/token``.

    Give it to a client that must not hold the API key (a browser, another machine): it
    connects with ``RealtimeTranscriber(token=...)``. ``expires_in_seconds`` (1-600) is how
    long it may wait to connect; ``max_session_duration_seconds`` (60-10800, default the
    3-hour cap) how long that session may last.

    >>> token = create_temporary_token(60)                      # doctest: +SKIP
    >>> RealtimeTranscriber(token=token, on_turn=print)         # doctest: +SKIP
    """
    cfg = resolve(settings, assemblyai_api_key=api_key, assemblyai_streaming_url=url)
    key = clean_key(cfg.require("assemblyai_api_key"), "AssemblyAI", "ASSEMBLYAI_API_KEY")
    # The token endpoint lives on the streaming host, over https (http for a ws:// URL).
    base = cfg.assemblyai_streaming_url.rstrip("/")
    for ws_scheme, http_scheme in (("wss://", "https://"), ("ws://", "http://")):
        if base.startswith(ws_scheme):
            base = http_scheme + base[len(ws_scheme):]
    query: dict[str, int] = {"expires_in_seconds": expires_in_seconds}
    if max_session_duration_seconds is not None:
        query["max_session_duration_seconds"] = max_session_duration_seconds
    http = HttpClient(SERVICE, base, {"Authorization": key}, cfg, pool_size=1)
    try:
        token = str(response_field(http.request("GET", "/v3/token", params=query), "token",
                                    SERVICE))
    finally:
        http.close()
    remember_secret(token)
    return token


def _session_query(family: str, format_turns: bool | None, params: dict[str, Any]
                   ) -> dict[str, Any]:
    """``params`` checked against the model family's parameter set, the old name of
    ``min_turn_silence`` folded into the new one, ``format_turns`` only where it exists."""
    params = dict(params)
    old = params.pop(OLD_MIN_SILENCE, None)
    if params.get("min_turn_silence") is None:  # the new name wins
        params["min_turn_silence"] = old
    wrong = U3_ONLY if family == "universal" else UNIVERSAL_ONLY
    misplaced = [name for name in wrong if params.get(name) is not None]
    if family == "u3" and format_turns is False:  # True asks for what u3 does anyway
        misplaced.append("format_turns=False")
    if misplaced:
        other = "u3-rt-pro" if family == "universal" else "universal-streaming-english"
        raise ConfigError(
            f"{', '.join(misplaced)}: not a parameter of this streaming model (u3-rt-pro "
            "formats every final turn itself and takes prompt; the universal-streaming models "
            "take format_turns and end_of_turn_confidence_threshold). Drop it, or choose "
            f"speech_model={other!r}.")
    if family == "universal":
        params = {"format_turns": format_turns is not False, **params}
    return {k: _query_value(v) for k, v in params.items() if v is not None}


@dataclass
class TurnEvent:
    """A ``Turn`` message: partial (``end_of_turn`` False) or final.

    ``stt_s`` (final turns) is the time from the end of the speech, as sent, to this message.
    """

    text: str
    turn_order: int
    end_of_turn: bool
    formatted: bool
    end_of_turn_confidence: float | None = None
    words: list[dict[str, Any]] = field(default_factory=list, repr=False)
    received: float = 0.0
    stt_s: float | None = None
    #: stream time (seconds) where the turn's speech starts and ends
    start_s: float | None = None
    end_s: float | None = None
    #: final turns: the turn's audio as sent (a WAV file's bytes, with a little margin)
    audio: bytes | None = field(default=None, repr=False)
    #: the streaming session the turn belongs to
    session_id: str | None = None
    #: times the connection was made again while this turn was in progress
    reconnects: int = 0


def _close_error(code: int | None, reason: str, *, token: bool = False) -> VoicenbError:
    text = reason or "no reason given"
    kw = dict(service=SERVICE, status_code=code, detail=text)
    if code in (1008, 3009) and "too many" in text.lower() or code == 3009:
        return RateLimitError(f"{SERVICE} refused the session ({code}: {text}). Close other "
                              "streaming sessions or wait a minute.", **kw)
    if code in (1008, 4001, 4002, 4003) and token:
        return AuthenticationError(
            f"{SERVICE} refused the temporary token ({code}: {text}). A token opens one "
            "session and expires after its expires_in_seconds: get a new one with "
            "create_temporary_token().", **kw)
    if code in (1008, 4001, 4002, 4003):
        return AuthenticationError(f"{SERVICE} refused the key ({code}: {text}). Check "
                                   "ASSEMBLYAI_API_KEY.", **kw)
    if code == 3007:
        return ServiceError(f"{SERVICE} rejected the audio ({code}: {text}). Frames must hold "
                            "50-1000 ms and be sent no faster than real time.", **kw)
    if code == 1006:
        return ServiceError(f"The connection to {SERVICE} dropped (1006: no close frame).",
                            **kw)
    if code == 3008:
        return ServiceTimeoutError(f"{SERVICE} session expired ({code}: {text}).", **kw)
    if code == 3006:
        return ServiceError(f"{SERVICE} refused the session's parameters or a message "
                            f"({code}: {text}). Check speech_model (VOICENB_STREAMING_MODEL) "
                            "and the parameters passed.", **kw)
    return ServiceError(f"{SERVICE} closed the session ({code}: {text}).", **kw)


def _query_value(value: Any) -> Any:
    """A parameter as the streaming spec writes it: booleans ``true``/``false`` (not
    Python's ``True``), lists and objects as JSON."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value) if isinstance(value, (list, dict)) else value


class _SentAudio:
    """The PCM sent so far and when each frame went, kept only as far back as a turn can
    reach: what a final turn covers is let go, and so is anything older than ``keep_s``
    (an hour of silence holds ``keep_s`` of audio, not an hour)."""

    def __init__(self, rate: int, keep_s: float = MAX_TURN_S) -> None:
        self.rate, self.keep_s = rate, keep_s
        self.pcm = bytearray()
        self.from_s = 0.0  # stream time of pcm[0]
        self.sent_s = 0.0
        self.mark_s: list[float] = []  # stream seconds sent after each frame...
        self.mark_t: list[float] = []  # ...and the monotonic time it went
        #: pcm starts where a final turn's words ended (their sound may run on a little)
        self.after_turn = False

    @property
    def nbytes(self) -> int:
        return len(self.pcm) + 16 * len(self.mark_s)

    def add(self, frame: bytes, when: float) -> None:
        self.pcm += frame
        self.sent_s += len(frame) / 2 / self.rate
        self.mark_s.append(self.sent_s)
        self.mark_t.append(when)
        if self.sent_s - self.from_s > self.keep_s * 1.25:  # trim in steps, not every frame
            self.drop_before(self.sent_s - self.keep_s)
            self.after_turn = False

    def sent_at(self, stream_s: float) -> float | None:
        """When the audio up to ``stream_s`` had been sent."""
        i = bisect.bisect_left(self.mark_s, stream_s)
        return self.mark_t[i] if i < len(self.mark_t) else None

    def take(self, start_s: float, end_s: float, margin: float = 0.25) -> bytes | None:
        """The PCM of ``start_s``..``end_s`` (with ``margin``) as a WAV file; what came
        before ``end_s`` is let go."""
        from ..audio import pcm_to_wav

        pcm = bytes(self.pcm[self._index(start_s - margin):self._index(end_s + margin)])
        self.drop_before(end_s)
        self.after_turn = True
        return pcm_to_wav(pcm, self.rate) if pcm else None

    def drop_before(self, stream_s: float) -> None:
        cut = min(self._index(stream_s), len(self.pcm))
        del self.pcm[:cut]
        self.from_s += cut / 2 / self.rate
        k = bisect.bisect_left(self.mark_s, self.from_s)
        del self.mark_s[:k], self.mark_t[:k]

    def _index(self, stream_s: float) -> int:
        return max(0, int((stream_s - self.from_s) * self.rate)) * 2

    def unheard(self, lead_s: float = 0.3) -> tuple[bytes, float]:
        """What a new session must hear again: the audio kept (sent since the last final
        turn), from ``lead_s`` before its speech begins; and its stream time. Speech begins
        at the first :data:`ONSET_WINDOWS` loud 20 ms windows in a row (a click is not
        speech). Silence alone is not replayed, nor the sound of the last turn's final word
        running on past the end its timing gave (a new turn never touches the last: a
        silence ended it)."""
        import numpy as np

        window = self.rate // 50  # samples in 20 ms
        x = np.frombuffer(self.pcm[: len(self.pcm) // (2 * window) * 2 * window], dtype="<i2")
        rms = np.sqrt(np.mean(x.reshape(-1, window).astype(np.float32) ** 2, axis=1)) \
            if x.size else np.zeros(0)
        is_loud = rms > SPEECH_RMS
        first = 0
        if self.after_turn:  # the loud run that continues the last turn is its own
            quiet = np.flatnonzero(~is_loud)
            first = int(quiet[0]) if quiet.size else len(is_loud)
        runs = np.convolve(is_loud[first:].astype(int), np.ones(ONSET_WINDOWS, int), "valid")
        found = np.flatnonzero(runs == ONSET_WINDOWS)
        if not found.size:
            return b"", self.sent_s
        onset = (first + int(found[0])) * window * 2
        start = max(first * window * 2, onset - int(lead_s * self.rate) * 2)
        return bytes(self.pcm[start:]), self.from_s + start / 2 / self.rate


def loud(pcm: bytes | bytearray | memoryview) -> bool:
    """Whether 16-bit PCM holds speech (its RMS over :data:`SPEECH_RMS`)."""
    import numpy as np

    x = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float32)
    return bool(x.size) and float(np.sqrt(np.mean(x * x))) > SPEECH_RMS


class _SessionClock:
    """Where a session's stream times fall in the whole stream: a new session starts at 0
    with replayed audio, and silence skipped while catching up is in the whole stream but
    not in the session's."""

    def __init__(self) -> None:
        self.session_s: list[float] = []  # session seconds after each frame sent...
        self.stream_s: list[float] = []   # ...and the whole stream's seconds there
        self.sent = 0.0                   # audio sent in this session (seconds)

    def add(self, seconds: float, stream_end_s: float) -> None:
        self.sent += seconds
        self.session_s.append(self.sent)
        self.stream_s.append(stream_end_s)
        if len(self.session_s) > 40_000:  # over an hour of frames: keep the last half
            del self.session_s[:20_000], self.stream_s[:20_000]

    def to_stream(self, session_s: float) -> float:
        if not self.session_s:
            return session_s
        i = min(bisect.bisect_left(self.session_s, session_s), len(self.session_s) - 1)
        return self.stream_s[i] - (self.session_s[i] - session_s)


class RealtimeTranscriber:
    """A Universal-Streaming v3 conversation: one session, or several when the connection
    drops or a session nears its end (see the module's docstring).

    >>> with RealtimeTranscriber(on_turn=print) as rt:          # doctest: +SKIP
    ...     rt.send(pcm_bytes)

    ``on_begin(session_id)``, ``on_partial(TurnEvent)``, ``on_turn(TurnEvent)`` and
    ``on_speech_started(start_s)`` (u3-rt-pro: speech began at ``start_s`` seconds of the
    stream, before any words, e.g. to stop an answer being read aloud) are called on the
    transcriber's reading thread. ``speech_model`` defaults to ``Settings.streaming_model``
    (u3-rt-pro). A final turn is the one that ends the turn: on u3-rt-pro it is formatted;
    on the universal-streaming models with ``format_turns`` (their default) only the
    formatted one is reported as final. ``min_turn_silence``/``max_turn_silence`` (ms),
    ``prompt`` (u3-rt-pro) and ``keyterms_prompt`` tune the session; ``params`` are more
    query parameters for the service (``speaker_labels``, ``end_of_turn_confidence_threshold``
    on the universal-streaming models...). ``token`` (from :func:`create_temporary_token`)
    connects without the API key; a token opens one session, so give a function that gets
    a new one (``token=lambda: create_temporary_token(60)``) for the transcriber to
    reconnect and roll over. ``reconnect=False`` ends the conversation at the first drop.
    ``on_reconnecting(attempt, error)`` and ``on_reconnected(session_id, downtime_s)`` say
    when the connection dropped and when a new session took over. ``pace=False`` sends as
    fast as the socket takes it, for servers that allow that (the simulator with
    ``streaming_realtime_slack_s=None``); AssemblyAI closes such a session with 3007.
    """

    #: a connection that answers no ping for this long (twice) is dead: a new session
    keepalive_s = 5.0

    def __init__(
        self,
        *,
        api_key: str | None = None,
        url: str | None = None,
        settings: Settings | None = None,
        token: str | Callable[[], str] | None = None,
        sample_rate: int = 16000,
        chunk_ms: int = 100,
        speech_model: str | None = None,
        format_turns: bool | None = None,
        min_turn_silence: int | None = None,
        max_turn_silence: int | None = None,
        prompt: str | None = None,
        keyterms_prompt: list[str] | None = None,
        on_begin: Callable[[str], None] | None = None,
        on_partial: Callable[[TurnEvent], None] | None = None,
        on_turn: Callable[[TurnEvent], None] | None = None,
        on_speech_started: Callable[[float], None] | None = None,
        on_reconnecting: Callable[[int, VoicenbError], None] | None = None,
        on_reconnected: Callable[[str, float], None] | None = None,
        connect_timeout: float = 10.0,
        pace: bool = True,
        reconnect: bool = True,
        **params: Any,
    ) -> None:
        if not 50 <= chunk_ms <= 1000:
            raise ConfigError(f"chunk_ms must be between 50 and 1000 (the service's limits), "
                              f"not {chunk_ms}.")
        self.settings = resolve(settings, assemblyai_api_key=api_key,
                                assemblyai_streaming_url=url, streaming_model=speech_model)
        self.speech_model: str = self.settings.streaming_model
        self.family = model_family(self.speech_model)
        # A temporary token goes in the query (as the spec says) and the key is not needed.
        self._key = None if token else self.settings.require("assemblyai_api_key")
        self._token = token
        if isinstance(token, str):
            remember_secret(token)
        query = {"sample_rate": sample_rate, "encoding": "pcm_s16le",
                 "speech_model": self.speech_model, **_session_query(self.family, format_turns, {
                     "min_turn_silence": min_turn_silence, "max_turn_silence": max_turn_silence,
                     "prompt": prompt, "keyterms_prompt": keyterms_prompt, **params})}
        self._base_url = f"{self.settings.assemblyai_streaming_url.rstrip('/')}/v3/ws"
        self._query = query
        self.sample_rate = sample_rate
        self.frame_bytes = sample_rate * 2 * chunk_ms // 1000
        #: True when a formatted Turn follows the one that ends a turn (and is the final)
        self.format_turns = self.family == "universal" and format_turns is not False
        self.pace = pace
        self.reconnect = reconnect
        self.on_begin, self.on_partial, self.on_turn = on_begin, on_partial, on_turn
        self.on_speech_started = on_speech_started
        self.on_reconnecting, self.on_reconnected = on_reconnecting, on_reconnected
        self.connect_timeout = connect_timeout
        #: silence that always goes to the service (it ends a turn), however far behind
        self._keep_silence_s = (max_turn_silence or MAX_TURN_SILENCE_MS[self.family]) / 1000 \
            + 0.3
        self._init_state()

    def _init_state(self) -> None:
        self.session_id: str | None = None
        #: every session of the conversation, in order
        self.session_ids: list[str] = []
        self.turns: list[TurnEvent] = []
        self.error: VoicenbError | None = None
        self.terminated = False
        #: connections made again after a drop, and sessions rolled over before they expired
        self.reconnects = 0
        self.rollovers = 0
        #: seconds from each drop to the new session taking audio
        self.downtimes: list[float] = []
        self.sent = _SentAudio(self.sample_rate)
        self._ws: Any = None
        # audio (bytes), a control message (JSON text), or None: the end
        self._outbox: queue.Queue[bytes | str | None] = queue.Queue()
        self._flush = True  # False: a caller failed, Terminate without sending the rest
        self._threads: list[threading.Thread] = []
        self._done, self._begun = threading.Event(), 0.0  # _begun: when Begin came
        self._fed = 0                 # bytes given to send()
        self._lock = threading.Lock()
        self._link = threading.Condition(self._lock)
        self._generation = 0          # bumped at each new session
        self._clock = _SessionClock()
        self._turn_base = 0           # turn orders of earlier sessions
        self._in_turn = False         # speech heard since the last final turn
        self._silent_s = 0.0          # the silence just sent (stream seconds)
        self._expires_at: float | None = None  # the session's end (time.time())
        self._rolling = False         # a rollover asked the session to end
        self._closing = False         # close() was called
        self._unreported = 0          # reconnects not yet given to a final turn
        self._down = False            # the connection dropped and a new one is being made

    @property
    def url(self) -> str:
        """The session URL, without a temporary token."""
        return f"{self._base_url}?{urlencode(self._query)}"

    def __repr__(self) -> str:
        return f"RealtimeTranscriber(url={self._base_url!r}, session={self.session_id!r})"

    @property
    def audio_sent_s(self) -> float:
        """Seconds of audio sent so far."""
        return self.sent.sent_s

    # -- the public, thread-safe surface ------------------------------------------------------

    def start(self) -> RealtimeTranscriber:
        """Connect and wait for ``Begin``; raises the service's refusal as a typed error."""
        self._open()
        for target, name in ((self._read, "voicenb-streaming-read"),
                             (self._send, "voicenb-streaming-send")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def send(self, pcm: bytes) -> None:
        """Queue 16 kHz mono s16le PCM of any length (it is re-chunked and paced)."""
        if self.error is not None:
            raise self.error
        if self._ws is not None and pcm and not self._done.is_set():
            if self._down and (self._fed / 2 / self.sample_rate) - self.sent.sent_s \
                    > MAX_BACKLOG_S:
                raise ServiceError(
                    f"{SERVICE} has not taken audio for {MAX_BACKLOG_S:.0f} s (the connection "
                    "is down or the service stalls): the audio queued is kept, no more is "
                    "taken. Close the session and start a new one.", service=SERVICE)
            self._fed += len(pcm)
            self._outbox.put(bytes(pcm))

    def update_configuration(self, **params: Any) -> None:
        """Change the session's turn detection (or, on u3-rt-pro, its prompts) from now on,
        after the audio already queued: ``rt.update_configuration(max_turn_silence=2000)``.

        u3-rt-pro takes ``prompt``, ``keyterms_prompt``, ``min_turn_silence`` and
        ``max_turn_silence``; the universal-streaming models ``min_turn_silence``,
        ``max_turn_silence`` and ``end_of_turn_confidence_threshold``. A session opened
        after a drop is opened with them."""
        old = params.pop(OLD_MIN_SILENCE, None)
        if old is not None and params.get("min_turn_silence") is None:  # the new name wins
            params["min_turn_silence"] = old
        allowed = UPDATABLE[self.family]
        unknown = sorted(set(params) - set(allowed))
        if unknown:
            raise ConfigError(f"{', '.join(unknown)} cannot be updated on {self.speech_model}; "
                              f"it takes {', '.join(allowed)}.")
        self._control({"type": "UpdateConfiguration", **params})
        self._query.update({k: _query_value(v) for k, v in params.items() if v is not None})

    def force_endpoint(self) -> None:
        """End the current turn now, after the audio already queued: the service answers with
        the turn's final ``Turn`` (e.g. when the user pressed a button instead of pausing)."""
        self._control({"type": "ForceEndpoint"})

    def _control(self, message: dict[str, Any]) -> None:
        if self.error is not None:
            raise self.error
        if self._ws is None:
            raise ConfigError(f"{message['type']} needs an open session: call start() first, "
                              "or use the transcriber as a context manager.")
        if not self._done.is_set():
            self._outbox.put(json.dumps(message))

    def close(self, timeout: float = 30.0, *, flush: bool = True) -> None:
        """Send what is left (unless ``flush=False``), then ``Terminate``; wait for
        ``Termination``. Raises the error that ended the session, if one did."""
        if self._ws is None:
            return
        self._flush = flush
        self._outbox.put(None)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if any(thread.is_alive() for thread in self._threads):
            with self._lock:
                self._closing = True
            self._ws.close()  # the service never confirmed: stop waiting for it
        if self.error is not None:
            raise self.error

    def __enter__(self) -> RealtimeTranscriber:
        return self.start()

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        try:
            self.close(flush=exc_type is None)
        except VoicenbError:
            if exc_type is None:
                raise

    def stream_file(self, audio: AudioLike) -> None:
        """Send a whole file (any format PyAV reads) at real-time pace, then close."""
        self.send(as_audio(audio).pcm16k())
        self.close()

    # -- connecting ------------------------------------------------------------------------------

    def _open(self) -> None:
        """Connect and begin a session (a new one after a drop)."""
        ws = self._connect()
        try:
            self._begin(ws)
        except BaseException:
            ws.close()
            raise

    def _connect(self) -> Any:
        from websockets.exceptions import InvalidHandshake, InvalidStatus
        from websockets.sync.client import connect

        headers = {"Authorization": self._key} if self._key else {}
        url = self.url
        if self._token:
            token = self._token() if callable(self._token) else self._token
            remember_secret(token)
            url += "&" + urlencode({"token": token})
        try:
            # Entered by hand: on websockets 17 the bare call is the reconnecting iterator's
            # entry point; entering it gives the one connection on every version.
            return connect(url, additional_headers=headers,
                           open_timeout=self.connect_timeout, compression=None, proxy=None,
                           max_size=2**22, logger=_WS_LOG, ping_interval=self.keepalive_s,
                           ping_timeout=self.keepalive_s).__enter__()
        except InvalidStatus as exc:
            status = exc.response.status_code
            raise _close_error(1008 if status in (401, 403) else status,
                               exc.response.body.decode("utf-8", "replace")[:200].strip()
                               if exc.response.body else f"HTTP {status}",
                               token=self._key is None) from None
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            raise ServiceError(
                f"Cannot reach {SERVICE} at {self._base_url} ({exc}). Check the "
                "network and ASSEMBLYAI_STREAMING_URL; offline, start `python -m voicenb.sim`.",
                service=SERVICE) from None

    def _begin(self, ws: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            data = json.loads(ws.recv(timeout=self.connect_timeout + 5))
        except TimeoutError:
            raise ServiceTimeoutError(f"{SERVICE} did not begin a session within "
                                      f"{self.connect_timeout:.0f} s.", service=SERVICE) from None
        except ConnectionClosed:
            raise self._closed(ws, "") from None
        if data.get("type") != "Begin":
            error = str(data.get("error") or data)
            try:
                ws.recv(timeout=5)  # the close frame that follows carries the code
            except (ConnectionClosed, TimeoutError):
                pass
            raise self._closed(ws, error)
        with self._link:
            self._ws = ws
            self.session_id = data.get("id")
            self.session_ids.append(self.session_id or "")
            self._begun = time.monotonic()  # the session's clock, for pacing
            expires = data.get("expires_at")
            self._expires_at = float(expires) if isinstance(expires, (int, float)) else None
            self._rolling = False
            self._generation += 1
            self._link.notify_all()
        if self.on_begin:
            self.on_begin(self.session_id)

    def _closed(self, ws: Any, error_text: str) -> VoicenbError:
        code = ws.close_code
        reason = error_text or ws.close_reason or ""
        sent = getattr(getattr(ws, "protocol", None), "close_sent", None)
        if not error_text and sent is not None and "keepalive" in (sent.reason or ""):
            return ServiceTimeoutError(
                f"{SERVICE} stopped answering (no reply to a ping within "
                f"{self.keepalive_s:g} s): the connection is dead.", service=SERVICE)
        if code is None:
            return ServiceError(f"{SERVICE} connection dropped before Termination.",
                                service=SERVICE, status_code=None)
        return _close_error(code, reason, token=self._key is None)

    def _retryable(self, error: VoicenbError, code: int | None, *, reconnecting: bool) -> bool:
        if not self.reconnect or self._closing or self._done.is_set():
            return False
        if self._token and not callable(self._token):
            return False  # a token opens one session: nothing to reconnect with
        return code in RETRYABLE or (reconnecting and code in (3009, 429, 500, 502, 503, 504))

    def _reconnect(self, error: VoicenbError, *, planned: bool = False) -> bool:
        """Open a new session after ``error`` dropped the last (``planned``: a rollover,
        which nobody is told of); False when it cannot be."""
        dropped = time.monotonic()
        low, high = RECONNECT_BACKOFF_S
        self._down = True
        try:
            return self._reconnect_tries(error, dropped, planned, low, high)
        finally:
            self._down = False

    def _reconnect_tries(self, error: VoicenbError, dropped: float, planned: bool,
                         low: float, high: float) -> bool:
        for attempt in range(1, RECONNECT_TRIES + 1):
            if not planned or attempt > 1:
                if self.on_reconnecting:
                    self.on_reconnecting(attempt, error)
                log.info("voicenb: %s dropped (%s); reconnecting, try %d", SERVICE, error,
                         attempt)
                time.sleep(min(high, low * 2 ** (attempt - 1)) * (0.5 + random.random() / 2))
            if self._closing:
                return False
            try:
                self._open()
            except VoicenbError as exc:
                error = exc
                if not self._retryable(exc, exc.status_code, reconnecting=True):
                    break
                continue
            if planned:
                self.rollovers += 1
                return True
            self.reconnects += 1
            self._unreported += 1
            self.downtimes.append(time.monotonic() - dropped)
            if self.on_reconnected:
                self.on_reconnected(self.session_id or "", self.downtimes[-1])
            return True
        self.error = error
        return False

    # -- the two threads -------------------------------------------------------------------------

    def _read(self) -> None:
        """Read each session's messages until it closes; on a drop, open a new session (the
        sender replays); keep the error that ends the conversation, if any."""
        from websockets.exceptions import ConnectionClosed

        while True:
            ws, error_text = self._ws, ""
            try:
                for message in ws:
                    if isinstance(message, bytes):
                        continue
                    data = json.loads(message)
                    kind = data.get("type")
                    if kind == "Turn":
                        self._turn(data)
                    elif kind == "SpeechStarted":
                        self._in_turn = True
                        if self.on_speech_started:
                            self.on_speech_started(
                                self._clock.to_stream(int(data.get("timestamp") or 0) / 1000))
                    elif kind == "Termination":
                        if not self._rolling:
                            self.terminated = True
                    elif kind == "Error":
                        error_text = str(data.get("error") or "")
            except (ConnectionClosed, OSError):
                pass
            except Exception as exc:  # noqa: BLE001 - a callback failed, or a garbled message
                self.error = ServiceError(f"{SERVICE} failed: {type(exc).__name__}: {exc}",
                                          service=SERVICE)
                ws.close()
            if self.error is None and self._rolling:  # a rollover ended it: the next one
                if self._reconnect(ServiceError(f"{SERVICE} session rolled over.",
                                                service=SERVICE), planned=True):
                    continue
            elif self.error is None and not self.terminated and ws.close_code != 1000:
                error = self._closed(ws, error_text)
                if self._retryable(error, ws.close_code, reconnecting=False) and \
                        self._reconnect(error):
                    continue
                if isinstance(self._token, str) and self.reconnect and \
                        ws.close_code in RETRYABLE:
                    error = type(error)(
                        f"{error} The connection dropped, and a temporary token opens one "
                        "session only, so it cannot reconnect: pass token= a function that "
                        "returns a new one (token=lambda: create_temporary_token(60)).",
                        service=SERVICE, status_code=error.status_code)
                self.error = self.error or error
            break
        self._done.set()
        with self._link:
            self._link.notify_all()
        self._outbox.put(None)  # the sender stops waiting for audio

    def _send(self) -> None:
        """Re-chunk queued PCM into frames, never far ahead of real time; end with Terminate.
        After a new session began, first replay what the last one had not finished."""
        buffer = bytearray()
        ending = False
        generation = self._generation
        while not self._done.is_set():
            try:
                while not ending:
                    item = self._outbox.get()
                    if self._done.is_set():
                        return
                    if item is None:
                        ending = True
                        break
                    if not self._flush:
                        continue
                    if isinstance(item, str):
                        # A control message goes after the audio queued before it: the odd
                        # bytes short of a frame go first (padded to the 50 ms a frame needs).
                        self._send_rest(buffer, generation)
                        self._ws_send(item, generation)
                        continue
                    buffer += item
                    self._send_frames(buffer, generation, closing=False)
                if self._flush:
                    self._send_rest(buffer, generation)
                self._ws_send(json.dumps({"type": "Terminate"}), generation)
                return
            except _Dropped:
                while True:  # the next session, and the audio the last one left unfinished
                    generation = self._await_session(generation)
                    if generation is None:
                        return
                    try:
                        self._replay(generation)
                        break
                    except _Dropped:
                        continue

    def _ws_send(self, message: bytes | str, generation: int) -> None:
        from websockets.exceptions import ConnectionClosed

        if generation != self._generation:
            raise _Dropped
        try:
            self._ws.send(message)
        except (ConnectionClosed, OSError):
            raise _Dropped from None

    def _await_session(self, generation: int) -> int | None:
        """Wait for the reader to open the next session; None when the conversation ended."""
        with self._link:
            self._link.wait_for(lambda: self._generation != generation or self._done.is_set())
            return None if self._done.is_set() else self._generation

    def _replay(self, generation: int) -> None:
        """Send a new session the audio the last one had not finished a turn of."""
        with self._lock:
            self._clock = _SessionClock()
            self._turn_base = self.turns[-1].turn_order + 1 if self.turns else self._turn_base
            pcm, from_s = self.sent.unheard()
        at = from_s
        for i in range(0, len(pcm), self.frame_bytes):
            frame = pcm[i:i + self.frame_bytes]
            frame += b"\0" * max(0, self.sample_rate * 2 // 20 - len(frame))  # >= 50 ms
            at += len(frame) / 2 / self.sample_rate
            self._pace()
            self._ws_send(frame, generation)
            self._clock.add(len(frame) / 2 / self.sample_rate, min(at, self.sent.sent_s))

    def _pace(self) -> None:
        wait = self._clock.sent - AHEAD_S - (time.monotonic() - self._begun)
        if self.pace and wait > 0:
            time.sleep(wait)

    def _send_rest(self, buffer: bytearray, generation: int) -> None:
        if buffer:  # a frame must hold at least 50 ms: the last is padded
            self._send_frames(buffer, generation, closing=True)

    def _send_frames(self, buffer: bytearray, generation: int, *, closing: bool) -> None:
        """Send whole frames as soon as the service takes them: the audio sent may run at
        most :data:`AHEAD_S` ahead of the session's clock. A backlog (audio captured while
        the session was opening, or while the kernel was busy) is caught up at once instead
        of trailing the speaker for the rest of the session; one left by a replay, by not
        sending long silences."""
        while len(buffer) >= self.frame_bytes or (closing and buffer):
            if not self._flush:  # the caller failed: Terminate now, send nothing more
                buffer.clear()
                break
            frame = bytes(buffer[: self.frame_bytes])
            if len(frame) < self.frame_bytes:  # the last, short one: 50 ms at least
                frame += b"\0" * max(0, self.sample_rate * 2 // 20 - len(frame))
                buffer[:] = frame
            seconds = len(frame) / 2 / self.sample_rate
            quiet = not loud(frame)
            self._silent_s = self._silent_s + seconds if quiet else 0.0
            behind = (self._fed / 2 / self.sample_rate) - self.sent.sent_s
            if quiet and behind > CATCH_UP_S and self._silent_s > self._keep_silence_s \
                    and self._clock.sent >= CATCH_UP_S:  # a new session hears some first
                del buffer[: self.frame_bytes]
                with self._lock:
                    self.sent.add(frame, time.monotonic())  # in the stream, not the session
                continue
            if generation != self._generation:  # a new session: its replay goes first
                raise _Dropped
            if quiet and not self._in_turn and self._silent_s > 0.5 and self._expiring():
                self._roll_over(generation)
            self._pace()
            self._ws_send(frame, generation)  # raises _Dropped: the frame stays queued
            del buffer[: self.frame_bytes]
            with self._lock:
                self.sent.add(frame, time.monotonic())
                self._clock.add(seconds, self.sent.sent_s)

    def _expiring(self) -> bool:
        if self._expires_at is None or self._rolling or not self.reconnect or \
                (self._token and not callable(self._token)):
            return False
        now = time.time()
        length = self._expires_at - (now - (time.monotonic() - self._begun))
        return now > self._expires_at - min(ROLLOVER_S, max(0.0, length) / 10)

    def _roll_over(self, generation: int) -> None:
        """End this session before it expires (between turns); the reader opens the next."""
        self._rolling = True
        log.info("voicenb: %s session %s nears its end; rolling over", SERVICE,
                 self.session_id)
        self._ws_send(json.dumps({"type": "Terminate"}), generation)
        raise _Dropped

    def _turn(self, data: dict[str, Any]) -> None:
        now = time.monotonic()
        clock = self._clock
        words = [{**w, "start": round(clock.to_stream(w["start"] / 1000) * 1000),
                  "end": round(clock.to_stream(w["end"] / 1000) * 1000)}
                 if isinstance(w.get("start"), (int, float)) and
                 isinstance(w.get("end"), (int, float)) else w
                 for w in data.get("words") or []]
        event = TurnEvent(
            text=data.get("transcript") or "",
            turn_order=self._turn_base + int(data.get("turn_order") or 0),
            end_of_turn=bool(data.get("end_of_turn")),
            formatted=bool(data.get("turn_is_formatted")),
            end_of_turn_confidence=data.get("end_of_turn_confidence"), words=words,
            received=now, session_id=self.session_id,
            start_s=words[0]["start"] / 1000 if words else None,
            end_s=words[-1]["end"] / 1000 if words else None)
        final = event.end_of_turn and (event.formatted or not self.format_turns)
        if final:
            with self._lock:
                if event.end_s is not None:
                    sent = self.sent.sent_at(event.end_s)
                    event.stt_s = now - sent if sent is not None else None
                    event.audio = self.sent.take(event.start_s, event.end_s)
                event.reconnects, self._unreported = self._unreported, 0
                self._in_turn = False
                self.turns.append(event)
            if self.on_turn:
                self.on_turn(event)
        elif not event.end_of_turn:
            self._in_turn = self._in_turn or bool(event.text)
            if self.on_partial:
                self.on_partial(event)


class _Dropped(Exception):
    """The session went (dropped, or rolled over) under the sender."""
