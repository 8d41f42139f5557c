"""AssemblyAI's Voice Agent API as a live backend (``"assemblyai-agent"``): speech in, speech
out, on one WebSocket (``<ASSEMBLYAI_AGENT_URL>/v1/ws``).

The assemblyai SDK (1.8.2) has no client for it, so this speaks the protocol itself with the
``websockets`` sync client, on threads of its own: one reads the service's events and tells
the :class:`~voicenb.live.base.Listener`, one sends the queued microphone audio (resampled
from 16 to 24 kHz), so :meth:`AssemblyAIAgent.send` never blocks.

>>> agent = AssemblyAIAgent(listener, system="Answer in one sentence.")  # doctest: +SKIP
>>> agent.start(); agent.send(pcm16k); agent.close()                    # doctest: +SKIP

The service detects speech, ends turns and stops its own answer when the person speaks over
it (``reply.done`` with ``status: "interrupted"``); :meth:`~AssemblyAIAgent.interrupt` only
stops passing on the rest of that answer's audio, as the docs tell a client to flush its
playback. The service bills the session's hours, so each :class:`Reply` carries the
session seconds since the previous one (``billed_s``).

A dropped connection does not end the conversation: the session is resumed
(``session.resume``, which keeps its history) within the service's 30 s grace
(:data:`GRACE_S`), trying at once, then after waits doubling from
:data:`~voicenb.live.base.RETRY_FIRST_S`, at most
:data:`~voicenb.live.base.RETRY_TRIES` times; a refused key, or a session the
service no longer has, is not tried again, and the listener hears ``failed``. The listener
hears ``reconnecting`` before each try and ``reconnected`` after. The audio sent since the
service last confirmed a turn (``transcript.user``) is sent again, then the audio queued
meanwhile (each bounded), so the question in progress is heard whole, once. An answer cut by
the drop is recorded as it was (an error, with the words that arrived) after the reconnect,
so the turn that met the drop counts it; it is not asked for again (the resumed session
remembers it). Not covered: a drop in the instant between the service ending a turn and the
client hearing so; the question is then heard twice (the API does not say what a resumed
session kept).
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import threading
import time
from typing import Any

from .._config import Settings, resolve
from .._errors import (AuthenticationError, ConfigError, RateLimitError, ServiceError,
                       VoicenbError)
from .base import INPUT_RATE, Base, Heard, Listener, Reply, Upsampler
from .base import BACKLOG_S, FINAL_CLOSE_CODES, Outbox, SentAudio, retry_waits

__all__ = ["AssemblyAIAgent", "OUTPUT_RATE", "GRACE_S", "DEFAULT_VOICE"]

log = logging.getLogger("voicenb")
#: websockets logs a client's handshake (the Authorization header) at DEBUG: not here
_WS_LOG = logging.getLogger("voicenb.live.assemblyai_agent.websocket")
_WS_LOG.setLevel(logging.INFO)

SERVICE = "AssemblyAI's Voice Agent API"
BACKEND = "assemblyai-agent"
MODEL = "voice-agent-api"
#: the service's audio, both ways: PCM16 mono 24 kHz
OUTPUT_RATE = 24000
DEFAULT_VOICE = "ivy"
#: how long the service keeps a session after its socket drops
GRACE_S = 30.0
READY_TIMEOUT_S = 15.0
_STOP = object()


class _Turn:
    """What is known of the current turn: times on the monotonic clock."""

    def __init__(self) -> None:
        self.stopped: float | None = None
        self.heard: float | None = None
        self.first_text: float | None = None
        self.first_audio: float | None = None
        self.reply_id: str | None = None
        self.started: float | None = None  # reply.started
        self.text = ""
        self.audio_bytes = 0
        self.muted = False      # interrupt(): the rest of this answer's audio is dropped

    def since(self, at: float | None) -> float | None:
        return None if at is None or self.stopped is None else round(at - self.stopped, 3)


class AssemblyAIAgent(Base):
    """One conversation with AssemblyAI's Voice Agent API (see the module docstring)."""

    backend = BACKEND
    output_rate = OUTPUT_RATE

    def __init__(self, listener: Listener, *, settings: Settings | None = None,
                 system: str | None = None, voice: str | None = None) -> None:
        super().__init__(listener)
        cfg = resolve(settings) if settings is not None else resolve()
        self._key = cfg.require("assemblyai_api_key")
        if not cfg.assemblyai_agent_url:
            raise ConfigError(
                "AssemblyAI's Voice Agent API has no host here: ASSEMBLYAI_BASE_URL points "
                "away from AssemblyAI (a simulator or a proxy), so set ASSEMBLYAI_AGENT_URL "
                "too (python -m voicenb.sim prints it), or use backend='cascade'.")
        self.url = cfg.assemblyai_agent_url.rstrip("/") + "/v1/ws"
        self.model: str | None = MODEL
        self.voice: str | None = (voice or cfg.live_voice or DEFAULT_VOICE).strip()
        self.system = system
        self.session_id: str | None = None
        #: connections made after a drop
        self.reconnects = 0
        self._ws: Any = None
        backlog = int(BACKLOG_S * INPUT_RATE) * 2
        self._outbox = Outbox(backlog)
        # the sender and a resume share these: the socket, what it was sent since the last
        # confirmed turn, the resampler's state; a resume swaps them all at once
        self._send_lock = threading.Lock()
        self._sent = SentAudio(backlog)
        self._upsampler = Upsampler()
        self._live = threading.Event()      # set while the socket takes audio
        self._stop = threading.Event()      # close(): no more waiting to resume
        self._replaying = False             # the turn under way is being sent again
        self._lock = threading.Lock()
        self._turn = _Turn()
        self._billed_from = 0.0
        self._closing = False
        self._closed = threading.Event()
        self._ended = threading.Event()
        self._reader: threading.Thread | None = None
        self._sender: threading.Thread | None = None

    def __repr__(self) -> str:
        return (f"AssemblyAIAgent(voice={self.voice!r}, session_id={self.session_id!r}, "
                f"url={self.url!r})")

    # -- the session -------------------------------------------------------------------------

    def _connect(self) -> Any:
        from websockets.exceptions import InvalidStatus, WebSocketException
        from websockets.sync.client import connect

        try:
            ws = connect(self.url, additional_headers={"Authorization": f"Bearer {self._key}"},
                         logger=_WS_LOG, open_timeout=READY_TIMEOUT_S, compression=None,
                         max_size=2**24)
        except InvalidStatus as exc:
            raise _refusal(exc.response) from None
        except (OSError, WebSocketException, TimeoutError) as exc:
            raise ServiceError(f"Could not reach {SERVICE} at {self.url} ({exc}). Check "
                               "ASSEMBLYAI_AGENT_URL and the network, then start again.",
                               service=SERVICE) from None
        # held for the whole conversation, not a with-block: close() closes it
        return ws.__enter__()

    def _session_update(self) -> dict[str, Any]:
        session: dict[str, Any] = {
            "input": {"format": {"encoding": "audio/pcm", "sample_rate": OUTPUT_RATE}},
            "output": {"voice": self.voice,
                       "format": {"encoding": "audio/pcm", "sample_rate": OUTPUT_RATE}}}
        if self.system:
            session["system_prompt"] = self.system
        return {"type": "session.update", "session": session}

    def _handshake(self, ws: Any, first: dict[str, Any]) -> str:
        """Send ``first`` (session.update or session.resume); the session id it gets."""
        from websockets.exceptions import ConnectionClosed

        ws.send(json.dumps(first))
        deadline = time.monotonic() + READY_TIMEOUT_S
        try:
            while True:
                event = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
                if event.get("type") == "session.ready":
                    return str(event["session_id"])
                if event.get("type") == "session.error":
                    ws.close()
                    raise self._session_error(event, before_ready=True)
        except TimeoutError:
            ws.close()
            raise ServiceError(f"{SERVICE} did not get ready in {READY_TIMEOUT_S:.0f} s. Try "
                               "again.", service=SERVICE) from None
        except ConnectionClosed as exc:
            raise ServiceError(f"{SERVICE} closed the connection before the session was ready"
                               f" ({exc}). Try again.", service=SERVICE) from None

    def start(self) -> None:
        """Connect, configure the session (system prompt, voice) and return once it is
        ready for audio."""
        ws = self._connect()
        self.session_id = self._handshake(ws, self._session_update())
        self._ws = ws
        self._live.set()
        self._billed_from = time.monotonic()
        self._reader = threading.Thread(target=self._read, name="voicenb-agent-read",
                                        daemon=True)
        self._sender = threading.Thread(target=self._send_loop, name="voicenb-agent-send",
                                        daemon=True)
        self._reader.start()
        self._sender.start()

    def send(self, pcm: bytes) -> None:
        """Queue 16 kHz PCM16 mono from the microphone (never blocks)."""
        if self._closing:
            return
        with self._lock:  # Base's buffers: the reader changes them too
            self._keep(pcm)
        self._outbox.put(pcm)

    def interrupt(self, played_ms: float | None) -> None:
        """The person spoke over the answer: the service stops it itself (its barge-in);
        here the rest of its audio is no longer passed on."""
        with self._lock:
            self._turn.muted = True

    def close(self) -> None:
        """End the session (``session.end``, then ``session.ended``); idempotent."""
        if self._closing:
            return
        self._closing = True
        self._stop.set()
        self._outbox.put(_STOP)
        if self._sender is not None:
            self._sender.join(5)
        ws = self._ws
        if ws is not None:
            try:
                ws.send(json.dumps({"type": "session.end"}))
                self._ended.wait(5)
            except Exception:  # already gone: nothing more to end
                pass
            ws.close()
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(5)
        self._closed.set()

    # -- sending -----------------------------------------------------------------------------

    def _send_loop(self) -> None:
        """Send what is queued (what queued up meanwhile goes in one event). While the socket
        is down, it waits (bounded) for the resumed one."""
        while True:
            pcm = self._outbox.get()
            if pcm is _STOP:
                return
            while not self._live.wait(0.2):
                if self._closing:
                    return
            with self._send_lock:
                self._sent.add(pcm)  # before sending: if it is lost, it goes again
                audio = self._upsampler.feed(pcm)
                if not audio:
                    continue
                try:
                    self._ws.send(json.dumps({"type": "input.audio",
                                              "audio": base64.b64encode(audio).decode()}))
                except Exception:  # dropped: the reader resumes the session
                    self._live.clear()

    # -- reading -----------------------------------------------------------------------------

    def _read(self) -> None:
        from websockets.exceptions import ConnectionClosed

        while True:
            ws = self._ws
            try:
                for message in ws:
                    self._event(json.loads(message))
                    if self._ended.is_set():
                        return
            except ConnectionClosed:
                pass
            except Exception as exc:  # an unreadable event: the conversation cannot go on
                if not self._closing:
                    self.listener.failed(ServiceError(
                        f"{SERVICE} sent something unreadable ({exc}). Start again.",
                        service=SERVICE))
                return
            if self._closing or self._ended.is_set():
                return
            if ws.close_code in FINAL_CLOSE_CODES:  # the client is at fault: no retry
                self._outbox.put(_STOP)
                self.listener.failed(ServiceError(
                    f"{SERVICE} closed the session ({ws.close_code} {ws.close_reason}). "
                    "Start a new conversation.", service=SERVICE, code=str(ws.close_code)))
                return
            if not self._recover():
                return

    def _recover(self) -> bool:
        """The socket dropped: resume the session within the grace window, send again what
        it had not confirmed, then end the answer the drop cut (see the module docstring).
        False when the conversation cannot go on (the listener has heard ``failed``)."""
        dropped = time.monotonic()
        self._live.clear()
        with self._lock:
            turn, self._turn = self._turn, _Turn()
            if self._said:  # a turn that ended but was not heard: it is heard again, whole
                self._speech, self._said = bytearray(self._said) + (self._speech or b""), b""
            self._replaying = self._speech is not None
        cut = turn if turn.reply_id is not None else None
        error: VoicenbError = ServiceError(f"The connection to {SERVICE} dropped.",
                                           service=SERVICE)
        deadline = dropped + GRACE_S
        for attempt, wait in enumerate(retry_waits(), 1):
            if isinstance(error, RateLimitError) and error.retry_after:
                wait = max(wait, error.retry_after)
            if time.monotonic() + wait >= deadline or self._stop.wait(wait):
                break
            self.listener.reconnecting(attempt, error)
            try:
                ws = self._connect()
                self._handshake(ws, {"type": "session.resume", "session_id": self.session_id})
            except (AuthenticationError, ConfigError) as exc:
                error = exc
                break
            except ServiceError as exc:
                error = exc
                if exc.code in ("session_not_found", "session_forbidden"):
                    break
                continue
            try:
                self._resume(ws)
            except Exception as exc:  # noqa: BLE001 - the new socket broke too
                with contextlib.suppress(Exception):
                    ws.close()
                error = ServiceError(f"The resumed connection to {SERVICE} broke ({exc}).",
                                     service=SERVICE)
                continue
            self.reconnects += 1
            self.listener.reconnected(round(time.monotonic() - dropped, 3))
            if cut is not None:
                self._reply(cut, error=ServiceError(
                    f"The connection to {SERVICE} dropped in the middle of the answer; the "
                    "conversation resumes where it was.", service=SERVICE))
            return True
        self._give_up(cut, error)
        return False

    def _give_up(self, cut: _Turn | None, error: VoicenbError) -> None:
        if cut is not None:
            self._reply(cut, error=ServiceError(
                f"The connection to {SERVICE} dropped in the middle of the answer.",
                service=SERVICE))
        self._outbox.put(_STOP)
        if self._closing:
            return
        if isinstance(error, (AuthenticationError, ConfigError)) or \
                getattr(error, "code", None) in ("session_not_found", "session_forbidden"):
            self.listener.failed(error)
            return
        self.listener.failed(ServiceError(
            f"The connection to {SERVICE} dropped and the session could not be resumed "
            f"within {GRACE_S:.0f} s (the last try: {error}). Start a new conversation.",
            service=SERVICE))

    def _resume(self, ws: Any) -> None:
        """Send the resumed socket what the old one had not confirmed, then make it the
        socket (the sender carries on with what queued meanwhile)."""
        with self._send_lock:
            replay = self._sent.restart()
            self._upsampler = Upsampler()  # a new socket: its audio starts afresh
            for at in range(0, len(replay), INPUT_RATE * 2):
                audio = self._upsampler.feed(replay[at:at + INPUT_RATE * 2])
                if audio:
                    ws.send(json.dumps({"type": "input.audio",
                                        "audio": base64.b64encode(audio).decode()}))
            old, self._ws = self._ws, ws
            self._live.set()
        with contextlib.suppress(Exception):
            old.close()

    def _event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        now = time.monotonic()
        turn = self._turn
        if kind == "input.speech.started":
            if self._replaying:  # the turn the listener heard begin, sent again
                self._replaying = False
                return
            with self._lock:
                self._speech_began()
            self.listener.speech_started()
        elif kind == "transcript.user.delta":
            self.listener.partial(str(event.get("text", "")))
        elif kind == "input.speech.stopped":
            with self._lock:
                self._speech_ended()
                self._turn = turn = _Turn()
            turn.stopped = now
        elif kind == "transcript.user":
            with self._send_lock:  # the service has the turn: its audio is not sent again
                self._sent.confirm()
            turn.heard = now
            with self._lock:
                said = self._take_said()
            self.listener.heard(Heard(
                text=str(event.get("text", "")), audio=said,
                ended_at=turn.stopped or now, stt_s=turn.since(now),
                id=f"{self.session_id}:{event.get('item_id')}", speech_model=MODEL))
        elif kind == "reply.started":
            turn.reply_id = str(event.get("reply_id"))
            turn.started = now
        elif kind == "reply.audio":
            pcm = base64.b64decode(event.get("data", ""))
            if turn.first_audio is None:
                turn.first_audio = now
            turn.audio_bytes += len(pcm)
            if not turn.muted:
                self.listener.answer_audio(pcm)
        elif kind in ("transcript.agent.delta", "transcript.agent"):
            self._agent_text(kind, event, turn, now)
        elif kind == "reply.done":
            self._reply(turn, interrupted=event.get("status") == "interrupted", done=now)
            with self._lock:
                if self._turn is turn:
                    self._turn = _Turn()
        elif kind == "session.error":
            error = self._session_error(event, before_ready=False)
            if turn.reply_id is not None:
                self._reply(turn, error=error)
                with self._lock:
                    if self._turn is turn:
                        self._turn = _Turn()
            else:
                log.warning("%s", error)
        elif kind == "session.ended":
            self._ended.set()

    def _agent_text(self, kind: str, event: dict[str, Any], turn: _Turn, now: float) -> None:
        text = str(event.get("delta" if kind.endswith("delta") else "text", ""))
        if kind == "transcript.agent" and turn.text and not event.get("interrupted"):
            text = ""  # the deltas told it already
        if turn.first_text is None:
            turn.first_text = now
        if kind == "transcript.agent" and event.get("interrupted"):
            turn.text = text  # only what was spoken
        elif text:
            turn.text += text
            self.listener.answer_text(text)

    def _reply(self, turn: _Turn, *, interrupted: bool = False, done: float | None = None,
               error: VoicenbError | None = None) -> None:
        now = time.monotonic()
        billed, self._billed_from = now - self._billed_from, now
        self.listener.replied(Reply(
            text=turn.text, model=MODEL, started_s=turn.since(turn.started),
            ended_at=turn.stopped or 0.0, first_token_s=turn.since(turn.first_text),
            first_audio_s=turn.since(turn.first_audio), llm_s=turn.since(done),
            billed_s=round(billed, 3), audio_ms=turn.audio_bytes / 2 / OUTPUT_RATE * 1000,
            voice=self.voice, interrupted=interrupted, error=error, id=turn.reply_id,
            extra={"session_id": self.session_id}))

    def _session_error(self, event: dict[str, Any], *, before_ready: bool) -> VoicenbError:
        code, message = str(event.get("code", "")), str(event.get("message", ""))
        if before_ready and "voice" in message.lower():
            return ConfigError(f"{SERVICE} has no voice {self.voice!r} ({message}). Pick "
                               "another with voice= or VOICENB_LIVE_VOICE.")
        if code in ("session_not_found", "session_forbidden"):
            return ServiceError(f"{SERVICE} could not resume the session ({message}). Start a "
                                "new conversation.", service=SERVICE, detail=message, code=code)
        return ServiceError(f"{SERVICE} reported an error: {code} ({message}). Try again; if "
                            "it keeps failing, use backend='cascade'.", service=SERVICE,
                            detail=message, code=code)


def _refusal(response: Any) -> VoicenbError:
    """The typed error for an upgrade the service refused (an HTTP status)."""
    status = getattr(response, "status_code", None)
    try:
        detail = json.loads(bytes(response.body or b"")).get("detail", "")
    except (ValueError, AttributeError):
        detail = bytes(getattr(response, "body", b"") or b"")[:200].decode("utf-8", "replace")
    kwargs: dict[str, Any] = dict(service=SERVICE, status_code=status, detail=str(detail))
    if status in (401, 403):
        return AuthenticationError(
            f"{SERVICE} refused the key ({status} {detail}). Check ASSEMBLYAI_API_KEY (the "
            "Voice Agent API needs a card on file in your AssemblyAI dashboard), or use "
            "backend='cascade'.", **kwargs)
    if status == 429:
        wait = response.headers.get("Retry-After") if getattr(response, "headers", None) \
            else None
        return RateLimitError(
            f"{SERVICE} is rate limited ({detail}). Wait{f' {wait} s' if wait else ''} and "
            "start again, or close another conversation.",
            retry_after=float(wait) if wait else None, **kwargs)
    return ServiceError(f"{SERVICE} refused the connection ({status} {detail}). Try again.",
                        **kwargs)
