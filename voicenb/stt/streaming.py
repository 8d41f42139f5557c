"""Real-time transcription: AssemblyAI's Universal-Streaming v3 websocket.

:class:`RealtimeTranscriber` uses websockets' blocking client (``websockets.sync``, as the
official AssemblyAI SDK does): one thread sends, one reads, and no event loop of its own, so
it works the same from a script, a CLI and a notebook (whose main thread already runs an
event loop). Feed it 16 kHz mono 16-bit PCM with :meth:`~RealtimeTranscriber.send`
in pieces of any size: it re-chunks them into frames of ``chunk_ms`` (50-1000 ms, as the
service requires) and never sends faster than real time. It always ends the session with
``{"type": "Terminate"}`` and waits for ``Termination`` (on errors and Ctrl-C too), since
an unterminated session is billed until its 3-hour cap.

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
BACKEND = "assemblyai-streaming"
#: the longest stretch of sent audio kept for a turn that has not ended (seconds)
MAX_TURN_S = 300.0
#: How far the audio sent may run ahead of the session's clock (seconds since Begin). The
#: service refuses audio "faster than real time" (3007); the simulator allows 1 s ahead. Half
#: that lets a backlog queued while the session opened go at once, so the stream never trails.
AHEAD_S = 0.5
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
        return pcm_to_wav(pcm, self.rate) if pcm else None

    def drop_before(self, stream_s: float) -> None:
        cut = min(self._index(stream_s), len(self.pcm))
        del self.pcm[:cut]
        self.from_s += cut / 2 / self.rate
        k = bisect.bisect_left(self.mark_s, self.from_s)
        del self.mark_s[:k], self.mark_t[:k]

    def _index(self, stream_s: float) -> int:
        return max(0, int((stream_s - self.from_s) * self.rate)) * 2


class RealtimeTranscriber:
    """A Universal-Streaming v3 session.

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
    connects without the API key. ``pace=False`` sends as fast as the socket takes it, for
    servers that allow that (the simulator with ``streaming_realtime_slack_s=None``);
    AssemblyAI closes such a session with 3007.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        url: str | None = None,
        settings: Settings | None = None,
        token: str | None = None,
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
        connect_timeout: float = 10.0,
        pace: bool = True,
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
        remember_secret(token)
        query = {"sample_rate": sample_rate, "encoding": "pcm_s16le",
                 "speech_model": self.speech_model, **_session_query(self.family, format_turns, {
                     "min_turn_silence": min_turn_silence, "max_turn_silence": max_turn_silence,
                     "prompt": prompt, "keyterms_prompt": keyterms_prompt, **params})}
        if token:
            query["token"] = token
        self.url = f"{self.settings.assemblyai_streaming_url.rstrip('/')}/v3/ws?" \
                   f"{urlencode(query)}"
        self.sample_rate = sample_rate
        self.frame_bytes = sample_rate * 2 * chunk_ms // 1000
        #: True when a formatted Turn follows the one that ends a turn (and is the final)
        self.format_turns = self.family == "universal" and format_turns is not False
        self.pace = pace
        self.on_begin, self.on_partial, self.on_turn = on_begin, on_partial, on_turn
        self.on_speech_started = on_speech_started
        self.connect_timeout = connect_timeout
        self.session_id: str | None = None
        self.turns: list[TurnEvent] = []
        self.error: VoicenbError | None = None
        self.terminated = False
        self.sent = _SentAudio(sample_rate)
        self._ws: Any = None
        # audio (bytes), a control message (JSON text), or None: the end
        self._outbox: queue.Queue[bytes | str | None] = queue.Queue()
        self._flush = True  # False: a caller failed, Terminate without sending the rest
        self._threads: list[threading.Thread] = []
        self._done, self._begun = threading.Event(), 0.0  # _begun: when Begin came

    def __repr__(self) -> str:
        return f"RealtimeTranscriber(url={self.url.split('?')[0]!r}, session={self.session_id!r})"

    @property
    def audio_sent_s(self) -> float:
        """Seconds of audio sent so far."""
        return self.sent.sent_s

    # -- the public, thread-safe surface ------------------------------------------------------

    def start(self) -> RealtimeTranscriber:
        """Connect and wait for ``Begin``; raises the service's refusal as a typed error."""
        self._ws = self._connect()
        try:
            self._begin()
        except BaseException:
            self._ws.close()
            raise
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
            self._outbox.put(bytes(pcm))

    def update_configuration(self, **params: Any) -> None:
        """Change the session's turn detection (or, on u3-rt-pro, its prompts) from now on,
        after the audio already queued: ``rt.update_configuration(max_turn_silence=2000)``.

        u3-rt-pro takes ``prompt``, ``keyterms_prompt``, ``min_turn_silence`` and
        ``max_turn_silence``; the universal-streaming models ``min_turn_silence``,
        ``max_turn_silence`` and ``end_of_turn_confidence_threshold``."""
        old = params.pop(OLD_MIN_SILENCE, None)
        if old is not None and params.get("min_turn_silence") is None:  # the new name wins
            params["min_turn_silence"] = old
        allowed = UPDATABLE[self.family]
        unknown = sorted(set(params) - set(allowed))
        if unknown:
            raise ConfigError(f"{', '.join(unknown)} cannot be updated on {self.speech_model}; "
                              f"it takes {', '.join(allowed)}.")
        self._control({"type": "UpdateConfiguration", **params})

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

    def _connect(self) -> Any:
        from websockets.exceptions import InvalidHandshake, InvalidStatus
        from websockets.sync.client import connect

        headers = {"Authorization": self._key} if self._key else {}
        try:
            # Entered by hand: on websockets 17 the bare call is the reconnecting iterator's
            # entry point; entering it gives the one connection on every version.
            return connect(self.url, additional_headers=headers,
                           open_timeout=self.connect_timeout, compression=None, proxy=None,
                           max_size=2**22, logger=_WS_LOG).__enter__()
        except InvalidStatus as exc:
            status = exc.response.status_code
            raise _close_error(1008 if status in (401, 403) else status,
                               exc.response.body.decode("utf-8", "replace")[:200]
                               if exc.response.body else f"HTTP {status}",
                               token=self._key is None) from None
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            raise ServiceError(
                f"Cannot reach {SERVICE} at {self.url.split('?')[0]} ({exc}). Check the "
                "network and ASSEMBLYAI_STREAMING_URL; offline, start `python -m voicenb.sim`.",
                service=SERVICE) from None

    def _begin(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            data = json.loads(self._ws.recv(timeout=self.connect_timeout + 5))
        except TimeoutError:
            raise ServiceTimeoutError(f"{SERVICE} did not begin a session within "
                                      f"{self.connect_timeout:.0f} s.", service=SERVICE) from None
        except ConnectionClosed:
            raise self._closed("") from None
        if data.get("type") != "Begin":
            error = str(data.get("error") or data)
            try:
                self._ws.recv(timeout=5)  # the close frame that follows carries the code
            except (ConnectionClosed, TimeoutError):
                pass
            raise self._closed(error)
        self.session_id = data.get("id")
        self._begun = time.monotonic()  # the session's clock, for pacing
        if self.on_begin:
            self.on_begin(self.session_id)

    def _closed(self, error_text: str) -> VoicenbError:
        code = self._ws.close_code
        reason = error_text or self._ws.close_reason or ""
        if code is None:
            return ServiceError(f"{SERVICE} connection dropped before Termination.",
                                service=SERVICE)
        return _close_error(code, reason, token=self._key is None)

    # -- the two threads -------------------------------------------------------------------------

    def _read(self) -> None:
        """Read the service's messages until the socket closes; keep the error, if any."""
        from websockets.exceptions import ConnectionClosed

        error_text = ""
        try:
            for message in self._ws:
                if isinstance(message, bytes):
                    continue
                data = json.loads(message)
                kind = data.get("type")
                if kind == "Turn":
                    self._turn(data)
                elif kind == "SpeechStarted" and self.on_speech_started:
                    self.on_speech_started(int(data.get("timestamp") or 0) / 1000)
                elif kind == "Termination":
                    self.terminated = True
                elif kind == "Error":
                    error_text = str(data.get("error") or "")
        except ConnectionClosed:
            pass
        except Exception as exc:  # noqa: BLE001 - a callback failed, or a garbled message
            self.error = ServiceError(f"{SERVICE} failed: {type(exc).__name__}: {exc}",
                                      service=SERVICE)
            self._ws.close()
        finally:
            if self.error is None and not self.terminated and self._ws.close_code != 1000:
                self.error = self._closed(error_text)
            self._done.set()
            self._outbox.put(None)  # the sender stops waiting for audio

    def _send(self) -> None:
        """Re-chunk queued PCM into frames, never far ahead of real time; end with Terminate."""
        from websockets.exceptions import ConnectionClosed

        buffer = bytearray()
        try:
            while True:
                item = self._outbox.get()
                if self._done.is_set():
                    return
                if item is None:
                    break
                if not self._flush:
                    continue
                if isinstance(item, str):
                    # A control message goes after the audio queued before it: the odd bytes
                    # short of a frame go first (padded to the 50 ms a frame needs).
                    self._send_rest(buffer)
                    self._ws.send(item)
                    continue
                buffer += item
                self._send_frames(buffer, closing=False)
            if self._flush:
                self._send_rest(buffer)
            self._ws.send(json.dumps({"type": "Terminate"}))
        except ConnectionClosed:
            pass  # the reader reports why

    def _send_rest(self, buffer: bytearray) -> None:
        if not buffer:
            return
        minimum = self.sample_rate * 2 * 50 // 1000  # a frame must hold at least 50 ms: pad it
        buffer += b"\0" * max(0, minimum - len(buffer))
        self._send_frames(buffer, closing=True)

    def _send_frames(self, buffer: bytearray, *, closing: bool) -> None:
        """Send whole frames as soon as the service takes them: the audio sent may run at
        most :data:`AHEAD_S` ahead of the session's clock. A backlog (audio captured while
        the session was opening, or while the kernel was busy) is caught up at once instead
        of trailing the speaker for the rest of the session."""
        while len(buffer) >= self.frame_bytes or (closing and buffer):
            if not self._flush:  # the caller failed: Terminate now, send nothing more
                buffer.clear()
                break
            frame = bytes(buffer[: self.frame_bytes])
            del buffer[: self.frame_bytes]
            wait = self.sent.sent_s - AHEAD_S - (time.monotonic() - self._begun)
            if self.pace and wait > 0:
                time.sleep(wait)
            self._ws.send(frame)
            self.sent.add(frame, time.monotonic())

    def _turn(self, data: dict[str, Any]) -> None:
        now = time.monotonic()
        words = data.get("words") or []
        event = TurnEvent(
            text=data.get("transcript") or "", turn_order=int(data.get("turn_order") or 0),
            end_of_turn=bool(data.get("end_of_turn")),
            formatted=bool(data.get("turn_is_formatted")),
            end_of_turn_confidence=data.get("end_of_turn_confidence"), words=words,
            received=now, session_id=self.session_id,
            start_s=words[0]["start"] / 1000 if words else None,
            end_s=words[-1]["end"] / 1000 if words else None)
        final = event.end_of_turn and (event.formatted or not self.format_turns)
        if final:
            if event.end_s is not None:
                sent = self.sent.sent_at(event.end_s)
                event.stt_s = now - sent if sent is not None else None
                event.audio = self.sent.take(event.start_s, event.end_s)
            self.turns.append(event)
            if self.on_turn:
                self.on_turn(event)
        elif not event.end_of_turn and self.on_partial:
            self.on_partial(event)
