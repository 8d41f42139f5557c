"""AssemblyAI's Voice Agent API, simulated: the ``/v1/ws`` session on a port of its own (the
text-to-speech simulator owns ``/v1/ws`` on the main port), with ``GET /sim/about``.

What the docs say (the events reference, the WebSocket API reference and the message-sequence
page; tests/_agent_spec.py encodes every event's fields), and this does:

- Auth: ``Authorization: Bearer <key>`` on the upgrade (the Bearer prefix is required here).
- The first message is ``session.update`` (``session``: ``system_prompt``, ``greeting``,
  ``input`` {``format``, ``turn_detection``}, ``output`` {``voice``, ``format``},
  ``tools``); the answer is ``session.ready`` with a ``session_id``; a later
  ``session.update`` is acknowledged with ``session.updated``. ``input.audio`` (base64
  PCM16 mono 24 kHz) before ``session.ready`` is ``session.error`` ``invalid_format``.
- A ``greeting`` is spoken first. Per user turn: ``input.speech.started``,
  ``transcript.user.delta``, ``input.speech.stopped``, ``transcript.user`` (``text``,
  ``item_id``), then ``reply.started`` (``reply_id``), ``reply.audio`` (``data``),
  ``transcript.agent`` (``text``, ``reply_id``, ``item_id``, ``interrupted``) after the
  audio, and ``reply.done``. Speech over a reply (``interrupt_response``, on by default)
  stops it: ``transcript.agent`` holds only the words sent, ``interrupted: true``, and
  ``reply.done`` has ``status: "interrupted"``.
- Sessions are kept 30 s after every disconnection (billing goes on): ``session.resume``
  with the ``session_id`` continues it (same history); after that, or for an unknown id,
  ``session.error`` ``session_not_found`` (another key's: ``session_forbidden``).
  ``session.end`` -> ``session.ended`` -> close 1000, and billing stops.

Assumptions, where nothing was found to say: a wrong or missing key is refused at the
upgrade with HTTP 401 and the agents REST API's body (``{"detail": "Unauthorized"}``); a
rate limit or too many sessions is HTTP 429 with ``Retry-After``; an unknown voice is
``session.error`` ``invalid_format`` naming the voices, then close 1008; ``session.resume``
is answered with ``session.ready`` (same id); the resume refusal is followed by close 1008;
an injected service failure is ``session.error`` ``internal_error`` and the reply is
abandoned (no ``reply.done``); turn detection's defaults (``min_silence`` 400 ms,
``max_silence`` 1280 ms, as Universal-Streaming's); ``reply.done`` carries ``status:
"completed"`` when not interrupted; the time to first audio (:data:`TTFA_S`) and the
speaking speed (:data:`SPEED`). The voice list is the docs' catalogue (default ``ivy``).

Socket failures on demand: :attr:`AgentService.socket_faults`
(:class:`~voicenb.sim._sockets.SocketFaults`), asked when a socket opens (a resume is a new
socket), at each client event and at each server event, so a fault may strike while a reply
is being sent.

Speech is heard as the streaming simulator hears it (loud 20 ms frames; registered clips by
their loudness contour, since 24 kHz audio has been resampled, else the local engine), and the
answer is voicenb's deterministic simulated answer spoken by espeak-ng at 24 kHz. Hearing and
speaking never run in the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import threading
import time
import uuid
import zlib
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ._about import ABOUT_PATH, about
from ._openai import answer_for
from ._registry import Registry
from ._sockets import SessionFaults, SocketFaults, SocketServer
from ._tts import VOICES as ESPEAK_VOICES, SpeechOptions, frames, resample, sentences, \
    speak_tokens

log = logging.getLogger("voicenb.sim")
#: websockets logs each handshake (with its Authorization header) at DEBUG: not here
_WS_LOG = logging.getLogger("voicenb.sim.agent.websocket")
_WS_LOG.setLevel(logging.INFO)

RATE = 24000
FRAME_MS = 20           # the detector's resolution
SPEECH_LEVEL = 300      # peak amplitude (of 32767) that counts as speech
LEAD_MS = 200           # audio heard before the first loud frame
#: the catalogue of voices (English, then multilingual); ivy is the default
VOICES = ("ivy", "james", "tyler", "winter", "bella", "david", "kyle", "helen", "martha",
          "river", "emma", "victor", "eleanor", "arjun", "dmitri", "pierre", "giulia", "luca",
          "lucia", "mateo", "diego")
DEFAULT_VOICE = "ivy"
GRACE_S = 30.0
#: Assumptions (see the module docstring)
MIN_SILENCE_MS, MAX_SILENCE_MS = 400, 1280
TTFA_S = 0.3
SPEED = 4.0
AUDIO_FRAME_MS = 80
CLOSE_POLICY = 1008
FAULTS = ("drop", "error", "rate_limit")


@dataclass
class Fault:
    kind: str
    times: int = 1
    code: str = "internal_error"
    retry_after: int = 1


@dataclass
class _State:
    """One session, kept across connections until it ends or its grace runs out."""

    id: str
    key: str
    config: dict[str, Any]
    started: float
    history: list[dict[str, str]] = field(default_factory=list)
    connected: bool = True
    dropped_at: float | None = None
    ended: bool = False


def _finished(text: str) -> bool:
    return text.rstrip().endswith((".", "?", "!")) and len(text.split()) > 1


def _tts_voice(voice: str) -> str:
    """The text-to-speech simulator's voice (an espeak-ng variant) that says ``voice``'s
    replies, so that voices sound apart; which one is arbitrary."""
    names = sorted(ESPEAK_VOICES)
    return names[zlib.crc32(voice.encode()) % len(names)]


class AgentService:
    """The simulated Voice Agent API. Knobs: ``ttfa`` (seconds from the end of a turn to
    the first audio), ``speed`` (audio seconds spoken per second; None: as fast as made),
    ``grace_s``, ``max_sessions``. ``stats``: sessions, resumes, replies, interrupted,
    audio_in_s, audio_out_s, errors, refused, session_s_billed, turns (user turns heard),
    faults (socket faults acted out). Faults: :meth:`inject`, :meth:`drop_sessions`,
    :attr:`socket_faults`."""

    def __init__(self, registry: Registry, *, key: str, ttfa: float = TTFA_S,
                 speed: float | None = SPEED, grace_s: float = GRACE_S,
                 max_sessions: int | None = None) -> None:
        self.registry = registry
        self.key = key
        self.ttfa = ttfa
        self.speed = speed
        self.grace_s = grace_s
        self.max_sessions = max_sessions
        self.url = ""
        self.stats: Counter[str] = Counter()
        #: (monotonic time, type) of every event sent, latest last (for benchmarks)
        self.sent: deque[tuple[float, str]] = deque(maxlen=20_000)
        self.faults: list[Fault] = []
        self.sessions: dict[str, _State] = {}
        self._lock = threading.Lock()
        self._open: set[Any] = set()          # touched in the loop only
        self._ws = SocketServer("voicenb-sim-agent-ws", "the simulated Voice Agent server")
        #: hearing and speaking: CPU work, never in the event loop
        self.hearing = ThreadPoolExecutor(1, thread_name_prefix="voicenb-sim-agent-hear")
        self.synth = ThreadPoolExecutor(2, thread_name_prefix="voicenb-sim-agent-tts")
        self.voices = ThreadPoolExecutor(4, thread_name_prefix="voicenb-sim-agent-espeak")

    def count(self, name: str, n: float = 1) -> None:
        with self._lock:
            self.stats[name] += n

    @property
    def socket_faults(self) -> SocketFaults:
        """Socket failures on demand (:class:`~voicenb.sim._sockets.SocketFaults`); not
        :attr:`faults`, the replies' failures."""
        return self._ws.faults

    def inject(self, kind: str, *, times: int = 1, code: str = "internal_error",
               retry_after: int = 1) -> Fault:
        """The next ``times`` replies (``drop``: the socket is cut after the first audio;
        ``error``: ``session.error``) or connections (``rate_limit``: HTTP 429) fail."""
        if kind not in FAULTS:
            raise ValueError(f"unknown fault {kind!r}; choose from {FAULTS}")
        fault = Fault(kind, times, code, retry_after)
        with self._lock:
            self.faults.append(fault)
        return fault

    def _take(self, kind: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.kind == kind and fault.times > 0:
                    fault.times -= 1
                    return fault
        return None

    # -- life cycle ------------------------------------------------------------------------

    def start(self, host: str = "127.0.0.1") -> str:
        host, port = self._ws.start(self._session, host, beside=self._sweep, compression=None,
                                    logger=_WS_LOG, max_size=2**22,
                                    process_request=self._http)
        self.url = f"ws://{host}:{port}"
        return self.url

    def stop(self) -> None:
        self._ws.stop()
        for pool in (self.hearing, self.synth, self.voices):
            pool.shutdown(wait=False, cancel_futures=True)

    def drop_sessions(self, timeout: float = 10.0) -> int:
        """Cut every open socket without a close frame (a network drop or a restart): each
        session stays resumable for ``grace_s``; the number cut."""
        return self._ws.abort(lambda: self._open, timeout)

    async def _sweep(self) -> None:
        """End the sessions whose grace ran out (billed to the end of it)."""
        while True:
            await asyncio.sleep(0.25)
            now = time.monotonic()
            for state in list(self.sessions.values()):
                if (not state.ended and not state.connected and state.dropped_at is not None
                        and now - state.dropped_at >= self.grace_s):
                    self._end(state, state.dropped_at + self.grace_s)

    def _end(self, state: _State, at: float) -> None:
        if not state.ended:
            state.ended = True
            self.count("session_s_billed", round(at - state.started, 3))

    # -- the upgrade: key, limits, /sim/about ----------------------------------------------

    def _http(self, connection: Any, request: Any) -> Any:
        parts = urlsplit(request.path)
        if parts.path.rstrip("/") == ABOUT_PATH:
            return self._respond(connection, 200, about(self.registry.word_error_rate))
        if parts.path.rstrip("/") != "/v1/ws":
            return self._respond(connection, 404, {"detail": "Not Found"})
        header = request.headers.get("Authorization", "").strip()
        if not header:
            self.count("refused")
            return self._respond(connection, 401, {"detail": "Missing authorization header"})
        if header != f"Bearer {self.key}":
            self.count("refused")
            return self._respond(connection, 401, {"detail": "Unauthorized"})
        if (fault := self._take("rate_limit")) is not None:
            self.count("refused")
            return self._respond(connection, 429, {"detail": "Rate limit exceeded"},
                                 {"Retry-After": str(fault.retry_after)})
        if self.max_sessions is not None and len(self._open) >= self.max_sessions:
            self.count("refused")
            return self._respond(connection, 429, {"detail": "Too many concurrent sessions"},
                                 {"Retry-After": "1"})
        return None

    @staticmethod
    def _respond(connection: Any, status: int, body: dict[str, Any],
                 headers: dict[str, str] | None = None) -> Any:
        response = connection.respond(status, json.dumps(body))
        del response.headers["Content-Type"]
        response.headers["Content-Type"] = "application/json"
        for name, value in (headers or {}).items():
            response.headers[name] = value
        return response

    async def _session(self, ws: Any) -> None:
        self._open.add(ws)
        connection = _Connection(self, ws)
        try:
            await connection.run()
        finally:
            self._open.discard(ws)
            connection.left()


async def _send(ws: Any, event: dict[str, Any]) -> None:
    await ws.send(json.dumps(event))


class _Connection:
    """One socket: a new session or a resumed one."""

    async def _send(self, event: dict[str, Any]) -> None:
        await self._strike(sending=True)
        await _send(self.ws, event)
        self.service.sent.append((time.monotonic(), event["type"]))

    async def _strike(self, *, sending: bool = False) -> None:
        """Act out a socket fault that is due; ConnectionClosed when it ended the socket. At
        a server event (``sending``) only a fault due by time strikes: frames count the
        client's events."""
        from websockets.exceptions import ConnectionClosedError

        faults = self.faults
        if await faults.strike(self.ws, sending=sending):
            self.service.count("faults")
            raise ConnectionClosedError(None, None)

    def __init__(self, service: AgentService, ws: Any) -> None:
        self.service, self.ws = service, ws
        self.state: _State | None = None
        self.samples = 0                        # audio received on this socket
        self.pending = bytearray()
        self.before = bytearray()               # the last LEAD_MS before a turn
        self.speech: bytearray | None = None    # the turn in progress (24 kHz)
        self.voiced = 0                         # bytes of it up to its last loud frame
        self.silence_ms = 0
        self.heard: tuple[int, str] | None = None   # (voiced bytes, text) of the turn
        self.hearing: asyncio.Task[str] | None = None
        self.delta_sent = False
        self.reply: asyncio.Task[None] | None = None
        self.reply_info: dict[str, Any] = {}
        self.faults: SessionFaults = service.socket_faults.session()

    @property
    def turn(self) -> dict[str, Any]:
        assert self.state is not None
        return self.state.config.get("input", {}).get("turn_detection", {}) or {}

    async def run(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            async for message in self.ws:
                await self._strike()
                if not await self._handle(message):
                    return
        except ConnectionClosed:
            pass
        finally:
            if self.reply is not None:
                self.reply.cancel()
            if self.hearing is not None:
                self.hearing.cancel()

    def left(self) -> None:
        state = self.state
        if state is not None and not state.ended:
            state.connected = False
            state.dropped_at = time.monotonic()

    async def _error(self, code: str, message: str, *, close: bool = False) -> None:
        self.service.count("errors")
        with contextlib.suppress(Exception):
            await self._send({"type": "session.error", "code": code, "message": message})
            if close:
                await self.ws.close(CLOSE_POLICY, message[:120])

    async def _handle(self, message: str | bytes) -> bool:
        """Act on one client event; False when the socket is done."""
        try:
            event = json.loads(message)
            kind = event["type"]
        except (ValueError, TypeError, KeyError):
            await self._error("invalid_format", "Invalid message format: send JSON events "
                                                "with a type.")
            return True
        if self.state is None:
            if kind == "session.update":
                return await self._open(event.get("session"))
            if kind == "session.resume":
                return await self._resume(event.get("session_id"))
            await self._error("invalid_format", f"{kind} before session.ready: send "
                                                "session.update first.")
            return True
        if kind == "input.audio":
            try:
                pcm = base64.b64decode(event["audio"], validate=True)
            except (KeyError, TypeError, binascii.Error, ValueError):
                await self._error("invalid_format", "input.audio needs base64 PCM16 audio.")
                return True
            await self._audio(pcm)
        elif kind == "session.update":
            if isinstance(event.get("session"), dict):
                self._configure(event["session"])
                await self._send({"type": "session.updated"})
            else:
                await self._error("invalid_format", "session.update needs a session object.")
        elif kind == "session.end":
            if self.reply is not None:
                self.reply.cancel()
            self.service._end(self.state, time.monotonic())
            await self._send({"type": "session.ended"})
            await self.ws.close(1000, "")
            return False
        elif kind == "reply.create":
            self._start_reply(None, event.get("instructions"))
        elif kind != "tool.result":
            await self._error("invalid_format", f"Unknown event type {kind!r}.")
        return True

    def _configure(self, session: dict[str, Any]) -> None:
        assert self.state is not None
        config = self.state.config
        for name, value in session.items():
            if name in ("input", "output") and isinstance(value, dict):
                config[name] = {**config.get(name, {}), **value}
            else:
                config[name] = value

    async def _open(self, session: Any) -> bool:
        if not isinstance(session, dict):
            await self._error("invalid_format", "session.update needs a session object.")
            return True
        voice = (session.get("output") or {}).get("voice", DEFAULT_VOICE)
        if voice not in VOICES:
            await self._error("invalid_format", f"Unknown voice {voice!r}: voice ids are "
                                                f"exact; choose one of {', '.join(VOICES)}.",
                              close=True)
            return False
        self.state = _State(str(uuid.uuid4()), self.service.key, {}, time.monotonic())
        self._configure(session)
        self.service.sessions[self.state.id] = self.state
        self.service.count("sessions")
        await self._send({"type": "session.ready", "session_id": self.state.id})
        if greeting := session.get("greeting"):
            self._start_reply(None, None, text=greeting)
        return True

    async def _resume(self, session_id: Any) -> bool:
        state = self.service.sessions.get(session_id) if isinstance(session_id, str) else None
        if state is None or state.ended or state.connected:
            await self._error("session_not_found", "No session to resume by that id: it "
                                                   "ended, or its 30 s grace ran out. Start a "
                                                   "new session with session.update.",
                              close=True)
            return False
        if state.key != self.service.key:
            await self._error("session_forbidden", "That session belongs to another key.",
                              close=True)
            return False
        state.connected, state.dropped_at = True, None
        self.state = state
        self.service.count("resumes")
        await self._send({"type": "session.ready", "session_id": state.id})
        return True

    # -- hearing -----------------------------------------------------------------------------

    async def _audio(self, pcm: bytes) -> None:
        self.service.count("audio_in_s", len(pcm) / 2 / RATE)
        self.pending += pcm
        step = RATE * FRAME_MS // 1000 * 2
        while len(self.pending) >= step:
            frame = bytes(self.pending[:step])
            del self.pending[:step]
            self.samples += step // 2
            await self._frame(frame)

    async def _frame(self, frame: bytes) -> None:
        import array

        samples = array.array("h", frame)
        loud = max(max(samples), -min(samples)) > SPEECH_LEVEL
        if self.speech is None:
            if not loud:
                self.before += frame
                del self.before[: max(0, len(self.before) - RATE * LEAD_MS // 1000 * 2)]
                return
            self.speech = bytearray(self.before) + frame
            self.before.clear()
            self.voiced, self.silence_ms, self.heard, self.delta_sent = \
                len(self.speech), 0, None, False
            await self._send({"type": "input.speech.started"})
            if self.reply is not None and self.turn.get("interrupt_response", True):
                await self._interrupt()
            return
        self.speech += frame
        if loud:
            self.voiced, self.silence_ms = len(self.speech), 0
            return
        self.silence_ms += FRAME_MS
        await self._progress()

    async def _progress(self) -> None:
        min_silence = int(self.turn.get("min_silence", MIN_SILENCE_MS))
        max_silence = int(self.turn.get("max_silence", MAX_SILENCE_MS))
        if self.silence_ms >= max_silence:
            return await self._end_turn()
        if self.silence_ms < min_silence:
            return
        text = await self._hear()
        if self.speech is None:  # the turn ended while it was heard
            return
        if not self.delta_sent:
            self.delta_sent = True
            await self._send({"type": "transcript.user.delta", "text": text})
        if _finished(text):
            await self._end_turn()

    async def _hear(self) -> str:
        """What the voiced part of the turn says (heard on the worker, once per length)."""
        assert self.speech is not None
        voiced = self.voiced
        if self.heard is not None and self.heard[0] == voiced:
            return self.heard[1]
        pcm = bytes(self.speech[: voiced + RATE * LEAD_MS // 1000 * 2])
        service = self.service
        text = await asyncio.get_running_loop().run_in_executor(
            service.hearing, lambda: service.registry.hear_pcm(
                resample(pcm, RATE, 16000), len(pcm) / 2 / RATE, service="agent",
                remember=False, resampled=True))
        self.heard = (voiced, text)
        return text

    async def _end_turn(self) -> None:
        if self.speech is None:
            return
        text = await self._hear()
        self.speech = None
        assert self.state is not None
        item_id = f"item_{uuid.uuid4().hex[:12]}"
        await self._send({"type": "input.speech.stopped"})
        await self._send({"type": "transcript.user", "text": text, "item_id": item_id})
        if text.strip():
            self.service.count("turns")
            self._start_reply(text, None, item_id=item_id)

    # -- speaking ----------------------------------------------------------------------------

    def _start_reply(self, heard: str | None, instructions: str | None, *,
                     text: str | None = None, item_id: str | None = None) -> None:
        assert self.state is not None
        history = self.state.history
        if text is None:
            if heard is not None:
                history.append({"role": "user", "content": heard})
            text = answer_for(history or [{"role": "user", "content": instructions or ""}])
        history.append({"role": "assistant", "content": text})
        if self.reply is not None:
            self.reply.cancel()
        self.reply = asyncio.create_task(self._speak(text, item_id or
                                                     f"item_{uuid.uuid4().hex[:12]}"))

    async def _speak(self, text: str, item_id: str) -> None:
        from websockets.exceptions import ConnectionClosed

        service, ws = self.service, self.ws
        reply_id = f"reply_{uuid.uuid4().hex[:12]}"
        self.reply_info = {"id": reply_id, "item_id": item_id, "said": []}
        voice = (self.state.config.get("output") or {}).get("voice", DEFAULT_VOICE) \
            if self.state else DEFAULT_VOICE
        options = SpeechOptions(voice_id=_tts_voice(voice), sample_rate=RATE)
        ready = time.monotonic() + service.ttfa
        try:
            await self._send({"type": "reply.started", "reply_id": reply_id})
            if (fault := service._take("error")) is not None:
                await asyncio.sleep(service.ttfa)
                self.reply = None
                service.count("errors")
                await self._send({"type": "session.error", "code": fault.code,
                                 "message": "The agent failed to answer (simulated)."})
                return
            drop = service._take("drop")
            at = 0.0
            loop = asyncio.get_running_loop()
            for tokens in sentences(text):
                spoken = await loop.run_in_executor(
                    service.synth, lambda t=tokens: speak_tokens(t, options, service.voices,
                                                                 lead=True))
                words = list(spoken.words)
                sent = 0
                for piece in frames(spoken.pcm, RATE, AUDIO_FRAME_MS):
                    at = max(at, ready, time.monotonic())
                    await asyncio.sleep(max(0.0, at - time.monotonic()))
                    if service.speed:
                        at += len(piece) / 2 / RATE / service.speed
                    await self._send({"type": "reply.audio",
                                     "data": base64.b64encode(piece).decode()})
                    service.count("audio_out_s", len(piece) / 2 / RATE)
                    sent += len(piece) // 2
                    while words and words[0][2] <= sent:
                        self.reply_info["said"].append(words.pop(0)[0])
                    if drop is not None:
                        drop = None
                        ws.transport.abort()
                        return
                self.reply_info["said"] += [w for w, _, _ in words]
            await self._send({"type": "transcript.agent", "text": text, "reply_id": reply_id,
                             "item_id": item_id, "interrupted": False})
            self.reply = None
            service.count("replies")
            await self._send({"type": "reply.done", "status": "completed"})
        except ConnectionClosed:
            pass

    async def _interrupt(self) -> None:
        """The person spoke over the reply: stop it; say what was said of it."""
        task, info = self.reply, self.reply_info
        self.reply = None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        self.service.count("interrupted")
        await self._send({"type": "transcript.agent", "text": " ".join(info["said"]),
                              "reply_id": info["id"], "item_id": info["item_id"],
                              "interrupted": True})
        await self._send({"type": "reply.done", "status": "interrupted"})


__all__ = ["AgentService", "VOICES", "DEFAULT_VOICE", "GRACE_S", "FAULTS"]
