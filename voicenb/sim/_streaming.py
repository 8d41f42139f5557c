"""AssemblyAI's Universal-Streaming v3 websocket, simulated (``/v3/ws``).

Messages as in AssemblyAI's AsyncAPI spec: ``Begin`` on connect; ``Turn`` messages with the
words heard so far (partials), an unformatted final turn at the end of a turn and, with
``format_turns=true``, a formatted one after it; ``Termination`` after the client's
``Terminate``. Errors come as an ``Error`` frame, then a close with the same code: 1008 for a
missing or wrong key, 3009 for too many sessions, 3007 for frames outside 50-1000 ms or audio
sent faster than real time, 3006 for a message it does not understand.

What it hears: a turn is speech followed by ``end_silence_ms`` of silence (a simple energy
detector). A turn whose samples occur in a registered clip gets that clip's text; anything
else gets the registry's text for unknown audio.
"""

from __future__ import annotations

import array
import asyncio
import json
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ._registry import Registry

FRAME_MS = 20          # the detector's resolution
SPEECH_LEVEL = 300     # peak amplitude (of 32767) that counts as speech
PARTIAL_EVERY_MS = 300


class StreamingService:
    def __init__(self, registry: Registry, *, key: str, end_silence_ms: int = 640,
                 max_sessions: int | None = None,
                 realtime_slack_s: float | None = 1.0) -> None:
        self.registry = registry
        self.key = key
        self.end_silence_ms = end_silence_ms
        self.max_sessions = max_sessions
        self.realtime_slack_s = realtime_slack_s
        self.sessions_open = 0
        self.stats: dict[str, int] = {"sessions": 0, "terminated": 0, "frames": 0, "turns": 0,
                                      "closed_with_error": 0}
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- life cycle (its own event loop on its own thread) ---------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        ready = threading.Event()

        def run() -> None:
            from websockets.asyncio.server import serve

            async def main() -> None:
                self._server = await serve(self._handle, host, port, compression=None,
                                           max_size=2**22)
                sock = next(iter(self._server.sockets))
                self.url = f"ws://{host}:{sock.getsockname()[1]}"
                ready.set()
                await self._server.wait_closed()

            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(main())
            self._loop.close()

        self._thread = threading.Thread(target=run, name="voicenb-sim-ws", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self.url

    def stop(self) -> None:
        if self._loop is not None and self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)
            if self._thread is not None:
                self._thread.join(10)
            self._server = None

    def count(self, name: str) -> None:
        with self._lock:
            self.stats[name] = self.stats.get(name, 0) + 1

    # -- one session ----------------------------------------------------------------------

    async def _handle(self, ws: Any) -> None:
        request = ws.request
        parts = urlsplit(request.path)
        params = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        if parts.path.rstrip("/") != "/v3/ws":
            return await _fail(ws, 1008, f"Unknown path {parts.path}")
        token = request.headers.get("Authorization", "") or params.get("token", "")
        if token.removeprefix("Bearer ").removeprefix("token ").strip() != self.key:
            return await _fail(ws, 1008, "Unauthorized Connection: Missing or invalid "
                                         "Authorization header")
        with self._lock:
            if self.max_sessions is not None and self.sessions_open >= self.max_sessions:
                busy = True
            else:
                busy = False
                self.sessions_open += 1
        if busy:
            return await _fail(ws, 3009, "Unauthorized Connection: Too many concurrent "
                                         "sessions")
        try:
            self.count("sessions")
            await _Session(self, ws, params).run()
        finally:
            with self._lock:
                self.sessions_open -= 1


async def _fail(ws: Any, code: int, message: str) -> None:
    try:
        await ws.send(json.dumps({"type": "Error", "error_code": code, "error": message}))
        await ws.close(code, message[:120])
    except Exception:
        pass


class _Session:
    def __init__(self, service: StreamingService, ws: Any, params: dict[str, str]) -> None:
        self.service, self.ws = service, ws
        self.rate = int(params.get("sample_rate", "16000"))
        self.format_turns = params.get("format_turns", "false").lower() == "true"
        self.end_silence_ms = int(params.get("min_end_of_turn_silence_when_confident",
                                             service.end_silence_ms))
        self.id = str(uuid.uuid4())
        self.started = time.monotonic()
        self.samples = 0            # audio received, in samples
        self.turn_order = 0
        self.speech: array.array | None = None   # samples of the turn in progress
        self.speech_start = 0       # sample index where it began
        self.silence_ms = 0
        self.last_partial_ms = 0
        self.pending = bytearray()  # samples not yet a whole detector frame

    async def run(self) -> None:
        expires = datetime.now(timezone.utc) + timedelta(hours=3)
        await self.ws.send(json.dumps({"type": "Begin", "id": self.id,
                                       "expires_at": int(expires.timestamp())}))
        async for message in self.ws:
            if isinstance(message, bytes):
                error = await self._audio(message)
                if error:
                    self.service.count("closed_with_error")
                    return await _fail(self.ws, *error)
                continue
            try:
                data = json.loads(message)
            except ValueError:
                return await _fail(self.ws, 3006, f"Invalid JSON: {message[:50]}")
            kind = data.get("type") if isinstance(data, dict) else None
            if kind == "Terminate":
                await self._end_turn()
                self.service.count("terminated")
                await self.ws.send(json.dumps({
                    "type": "Termination",
                    "audio_duration_seconds": round(self.samples / self.rate),
                    "session_duration_seconds": round(time.monotonic() - self.started)}))
                await self.ws.close(1000, "")
                return
            if kind == "ForceEndpoint":
                await self._end_turn()
            elif kind == "UpdateConfiguration":
                pass
            else:
                return await _fail(self.ws, 3006, f"Invalid Message Type: {kind}")

    async def _audio(self, chunk: bytes) -> tuple[int, str] | None:
        self.service.count("frames")
        ms = len(chunk) / 2 / self.rate * 1000
        if not 50 <= ms <= 1000:
            return 3007, f"Input duration violation: {ms:.0f} ms. Expected between 50 and 1000 ms"
        self.samples += len(chunk) // 2
        audio_s = self.samples / self.rate
        wall = time.monotonic() - self.started
        slack = self.service.realtime_slack_s
        if slack is not None and audio_s > wall + slack:
            return 3007, (f"Audio Transmission Rate Exceeded: Received {audio_s:.1f} sec. audio "
                          f"in {wall:.1f} sec")
        self.pending += chunk
        step = self.rate * FRAME_MS // 1000 * 2
        while len(self.pending) >= step:
            frame = array.array("h", bytes(self.pending[:step]))
            del self.pending[:step]
            await self._frame(frame)
        return None

    async def _frame(self, frame: array.array) -> None:
        loud = max(max(frame), -min(frame)) > SPEECH_LEVEL
        if self.speech is None:
            if loud:
                self.speech = array.array("h", frame)
                self.speech_start = self.samples - len(self.pending) // 2 - len(frame)
                self.silence_ms = self.last_partial_ms = 0
            return
        self.speech.extend(frame)
        self.silence_ms = 0 if loud else self.silence_ms + FRAME_MS
        spoken_ms = len(self.speech) * 1000 // self.rate
        if self.silence_ms >= self.end_silence_ms:
            await self._end_turn()
        elif spoken_ms - self.last_partial_ms >= PARTIAL_EVERY_MS:
            self.last_partial_ms = spoken_ms
            await self._send_turn(final=False)

    def _heard(self) -> str:
        assert self.speech is not None
        voiced = self.speech[: max(0, len(self.speech) - self.silence_ms * self.rate // 1000)]
        return self.service.registry.hear_pcm(voiced.tobytes(), len(voiced) / self.rate)

    async def _send_turn(self, *, final: bool) -> None:
        assert self.speech is not None
        text = self._heard()
        words = text.split()
        voiced = len(self.speech) - self.silence_ms * self.rate // 1000
        if not final:
            # reveal words as the speech goes on
            expected = max(1, len(words) * 0.35 * self.rate)  # ~0.35 s a word
            words = words[: max(1, int(len(words) * min(1.0, voiced / expected)))]
        start_ms = self.speech_start * 1000 // self.rate
        span = max(1, (voiced * 1000 // self.rate) // max(1, len(words)))
        plain = [w.strip(".,?!;:").lower() for w in words]
        payload = {
            "type": "Turn", "turn_order": self.turn_order, "turn_is_formatted": False,
            "end_of_turn": final, "end_of_turn_confidence": 0.9 if final else 0.1,
            "transcript": " ".join(plain),
            "words": [{"text": w, "start": start_ms + i * span, "end": start_ms + (i + 1) * span,
                       "confidence": 0.9, "word_is_final": final or i < len(plain) - 1}
                      for i, w in enumerate(plain)],
        }
        await self.ws.send(json.dumps(payload))
        if final and self.format_turns:
            payload.update(turn_is_formatted=True, transcript=" ".join(words))
            await self.ws.send(json.dumps(payload))

    async def _end_turn(self) -> None:
        if self.speech is None:
            return
        await self._send_turn(final=True)
        self.service.count("turns")
        self.turn_order += 1
        self.speech = None
