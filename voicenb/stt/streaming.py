"""Real-time transcription: AssemblyAI's Universal-Streaming v3 websocket.

:class:`RealtimeTranscriber` runs the websocket on a background thread with its own event
loop, so it works the same from a script, a CLI and a notebook (whose main thread already
runs an event loop). Feed it 16 kHz mono 16-bit PCM with :meth:`~RealtimeTranscriber.send`
in pieces of any size: it re-chunks them into frames of ``chunk_ms`` (50-1000 ms, as the
service requires) and never sends faster than real time. It always ends the session with
``{"type": "Terminate"}`` and waits for ``Termination`` (on errors and Ctrl-C too), since
an unterminated session is billed until its 3-hour cap.
"""

from __future__ import annotations

import asyncio
import json
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
)
from ..audio import AudioLike, as_audio

SERVICE = "AssemblyAI streaming"
DEFAULT_SPEECH_MODEL = "universal-streaming-english"
BACKEND = "assemblyai-streaming"


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


def _close_error(code: int | None, reason: str) -> VoicenbError:
    text = reason or "no reason given"
    kw = dict(service=SERVICE, status_code=code, detail=text)
    if code in (1008, 3009) and "too many" in text.lower() or code == 3009:
        return RateLimitError(f"{SERVICE} refused the session ({code}: {text}). Close other "
                              "streaming sessions or wait a minute.", **kw)
    if code in (1008, 4001, 4002, 4003):
        return AuthenticationError(f"{SERVICE} refused the key ({code}: {text}). Check "
                                   "ASSEMBLYAI_API_KEY.", **kw)
    if code == 3007:
        return ServiceError(f"{SERVICE} rejected the audio ({code}: {text}). Frames must hold "
                            "50-1000 ms and be sent no faster than real time.", **kw)
    if code == 3008:
        return ServiceTimeoutError(f"{SERVICE} session expired ({code}: {text}).", **kw)
    return ServiceError(f"{SERVICE} closed the session ({code}: {text}).", **kw)


class RealtimeTranscriber:
    """A Universal-Streaming v3 session.

    >>> with RealtimeTranscriber(on_turn=print) as rt:          # doctest: +SKIP
    ...     rt.send(pcm_bytes)

    ``on_begin(session_id)``, ``on_partial(TurnEvent)`` and ``on_turn(TurnEvent)`` are
    called on the transcriber's thread. With ``format_turns`` (default) only the formatted
    final turn is reported as final. ``params`` are more query parameters for the service
    (``end_of_turn_confidence_threshold``, ``keyterms_prompt``...).
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        url: str | None = None,
        settings: Settings | None = None,
        sample_rate: int = 16000,
        chunk_ms: int = 100,
        format_turns: bool = True,
        speech_model: str = DEFAULT_SPEECH_MODEL,
        on_begin: Callable[[str], None] | None = None,
        on_partial: Callable[[TurnEvent], None] | None = None,
        on_turn: Callable[[TurnEvent], None] | None = None,
        connect_timeout: float = 10.0,
        **params: Any,
    ) -> None:
        if not 50 <= chunk_ms <= 1000:
            raise ConfigError(f"chunk_ms must be between 50 and 1000 (the service's limits), "
                              f"not {chunk_ms}.")
        self.settings = resolve(settings, assemblyai_api_key=api_key,
                                assemblyai_streaming_url=url)
        self._key = self.settings.require("assemblyai_api_key")
        query = {"sample_rate": sample_rate, "encoding": "pcm_s16le",
                 "format_turns": str(format_turns).lower(), "speech_model": speech_model,
                 **{k: (json.dumps(v) if isinstance(v, (list, dict)) else v)
                    for k, v in params.items()}}
        self.url = f"{self.settings.assemblyai_streaming_url.rstrip('/')}/v3/ws?" \
                   f"{urlencode(query)}"
        self.sample_rate = sample_rate
        self.frame_bytes = sample_rate * 2 * chunk_ms // 1000
        self.format_turns = format_turns
        self.on_begin, self.on_partial, self.on_turn = on_begin, on_partial, on_turn
        self.connect_timeout = connect_timeout
        self.session_id: str | None = None
        self.turns: list[TurnEvent] = []
        self.error: VoicenbError | None = None
        self.terminated = False
        self.audio_sent_s = 0.0
        self._marks: list[tuple[float, float]] = []  # (stream seconds sent, monotonic time)
        # PCM sent since the last final turn (so each turn keeps its audio), and its start
        self._audio = bytearray()
        self._audio_from_s = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[bytes | None] | None = None
        self._thread: threading.Thread | None = None
        self._begun = threading.Event()
        self._done = threading.Event()

    def __repr__(self) -> str:
        return f"RealtimeTranscriber(url={self.url.split('?')[0]!r}, session={self.session_id!r})"

    # -- the public, thread-safe surface ------------------------------------------------------

    def start(self) -> RealtimeTranscriber:
        """Connect and wait for ``Begin``; raises the service's refusal as a typed error."""
        self._thread = threading.Thread(target=self._run, name="voicenb-streaming", daemon=True)
        self._thread.start()
        if not self._begun.wait(self.connect_timeout + 5):
            self.close()
            raise ServiceTimeoutError(f"{SERVICE} did not begin a session within "
                                      f"{self.connect_timeout:.0f} s.", service=SERVICE)
        if self.error is not None:
            self._thread.join(5)
            raise self.error
        return self

    def send(self, pcm: bytes) -> None:
        """Queue 16 kHz mono s16le PCM of any length (it is re-chunked and paced)."""
        if self.error is not None:
            raise self.error
        if self._loop is not None and pcm and not self._done.is_set():
            self._loop.call_soon_threadsafe(self._queue.put_nowait, bytes(pcm))

    def close(self, timeout: float = 30.0) -> None:
        """Send what is left, then ``Terminate``; wait for ``Termination``. Raises the error
        that ended the session, if one did."""
        if self._loop is not None and not self._done.is_set():
            self._loop.call_soon_threadsafe(self._queue.put_nowait, None)
        if self._thread is not None:
            self._thread.join(timeout)
        if self.error is not None:
            raise self.error

    def __enter__(self) -> RealtimeTranscriber:
        return self.start()

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        try:
            self.close()
        except VoicenbError:
            if exc_type is None:
                raise

    def stream_file(self, audio: AudioLike) -> None:
        """Send a whole file (any format PyAV reads) at real-time pace, then close."""
        self.send(as_audio(audio).pcm16k())
        self.close()

    # -- the background thread -----------------------------------------------------------------

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._queue = asyncio.Queue()
        try:
            self._loop.run_until_complete(self._session())
        except VoicenbError as exc:
            self.error = exc
        except Exception as exc:  # noqa: BLE001 - everything else becomes a ServiceError
            self.error = ServiceError(f"{SERVICE} failed: {type(exc).__name__}: {exc}",
                                      service=SERVICE)
        finally:
            self._done.set()
            self._begun.set()
            self._loop.close()

    async def _session(self) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

        try:
            ws = await connect(self.url, additional_headers={"Authorization": self._key},
                               open_timeout=self.connect_timeout, compression=None,
                               proxy=None, max_size=2**22)
        except InvalidStatus as exc:
            status = exc.response.status_code
            error = _close_error(1008 if status in (401, 403) else status,
                                 exc.response.body.decode("utf-8", "replace")[:200]
                                 if exc.response.body else f"HTTP {status}")
            raise error from None
        except (OSError, InvalidHandshake, asyncio.TimeoutError) as exc:
            raise ServiceError(
                f"Cannot reach {SERVICE} at {self.url.split('?')[0]} ({exc}). Check the "
                "network and ASSEMBLYAI_STREAMING_URL; offline, start `python -m voicenb.sim`.",
                service=SERVICE) from None
        error_text = ""
        async with ws:
            sender = asyncio.create_task(self._send_loop(ws))
            try:
                async for message in _messages(ws, ConnectionClosed):
                    if isinstance(message, bytes):
                        continue
                    data = json.loads(message)
                    kind = data.get("type")
                    if kind == "Begin":
                        self.session_id = data.get("id")
                        self._begun.set()
                        if self.on_begin:
                            self.on_begin(self.session_id)
                    elif kind == "Turn":
                        self._turn(data)
                    elif kind == "Termination":
                        self.terminated = True
                        break
                    elif kind == "Error":
                        error_text = str(data.get("error") or "")
            finally:
                if not sender.done():
                    # We are leaving early (an error, or Ctrl-C in the caller): still end
                    # the session properly so it is not billed for hours.
                    sender.cancel()
                    if not self.terminated and ws.close_code is None:
                        try:
                            await ws.send(json.dumps({"type": "Terminate"}))
                        except Exception:
                            pass
        code, reason = ws.close_code, error_text or ws.close_reason or ""
        if not self.terminated and code not in (1000, None):
            raise _close_error(code, reason)
        if not self.terminated and code is None:
            raise ServiceError(f"{SERVICE} connection dropped before Termination.",
                               service=SERVICE)

    async def _send_loop(self, ws: Any) -> None:
        buffer = bytearray()
        start = time.monotonic()
        closing = False
        while not closing:
            item = await self._queue.get()
            if item is None:
                closing = True
                if buffer:  # the last frame must hold at least 50 ms: pad it with silence
                    minimum = self.sample_rate * 2 * 50 // 1000
                    buffer += b"\0" * max(0, minimum - len(buffer))
            else:
                buffer += item
            while len(buffer) >= self.frame_bytes or (closing and buffer):
                frame = bytes(buffer[: self.frame_bytes])
                del buffer[: self.frame_bytes]
                # Never ahead of real time: this frame starts at audio_sent_s.
                wait = self.audio_sent_s - (time.monotonic() - start)
                if wait > 0:
                    await asyncio.sleep(wait)
                await ws.send(frame)
                self.audio_sent_s += len(frame) / 2 / self.sample_rate
                self._marks.append((self.audio_sent_s, time.monotonic()))
                self._audio += frame
        await ws.send(json.dumps({"type": "Terminate"}))

    def _take_audio(self, event: TurnEvent, margin: float = 0.25) -> bytes | None:
        """The turn's PCM (as WAV) from what was sent; what came before it is let go."""
        from ..audio import pcm_to_wav

        if event.start_s is None or event.end_s is None:
            return None
        def index(stream_s: float) -> int:
            return max(0, int((stream_s - self._audio_from_s) * self.sample_rate)) * 2

        a, b = index(event.start_s - margin), index(event.end_s + margin)
        pcm = bytes(self._audio[a:b])
        cut = min(index(event.end_s), len(self._audio))
        del self._audio[:cut]
        self._audio_from_s += cut / 2 / self.sample_rate
        return pcm_to_wav(pcm, self.sample_rate) if pcm else None

    def _sent_at(self, stream_s: float) -> float | None:
        for sent_s, when in self._marks:
            if sent_s >= stream_s:
                return when
        return None

    def _turn(self, data: dict[str, Any]) -> None:
        now = time.monotonic()
        words = data.get("words") or []
        event = TurnEvent(
            text=data.get("transcript") or "", turn_order=int(data.get("turn_order") or 0),
            end_of_turn=bool(data.get("end_of_turn")),
            formatted=bool(data.get("turn_is_formatted")),
            end_of_turn_confidence=data.get("end_of_turn_confidence"), words=words,
            received=now,
            start_s=words[0]["start"] / 1000 if words else None,
            end_s=words[-1]["end"] / 1000 if words else None)
        final = event.end_of_turn and (event.formatted or not self.format_turns)
        if final:
            sent = self._sent_at(event.end_s) if event.end_s is not None else None
            event.stt_s = now - sent if sent is not None else None
            event.audio = self._take_audio(event)
            self.turns.append(event)
            if self.on_turn:
                self.on_turn(event)
        elif not event.end_of_turn and self.on_partial:
            self.on_partial(event)


async def _messages(ws: Any, closed: type[Exception]) -> Any:
    """The server's messages until the socket closes, however it closes (the close code is
    read afterwards and turned into the matching error)."""
    try:
        async for message in ws:
            yield message
    except closed:
        return
