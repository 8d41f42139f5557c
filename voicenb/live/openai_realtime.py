"""The ``"openai-realtime"`` live backend: OpenAI's Realtime API, speech in and speech out on
one WebSocket, through the official SDK's ``client.realtime.connect`` (private module).

>>> conv = OpenAIRealtime(listener, system="Answer in one sentence.")   # doctest: +SKIP
>>> conv.start(); conv.send(pcm16k); ...; conv.close()                   # doctest: +SKIP

The session is configured once (``session.update``): the instructions, the voice, input
transcription (:data:`TRANSCRIBE_MODEL`) and server VAD that answers and is interrupted on
its own. The microphone's 16 kHz PCM is resampled to the API's 24 kHz and sent by a thread of
its own, so ``send`` never blocks; another thread reads the events and tells the listener.

Errors are :class:`VoicenbError`\\ s that say what to do: a refused key is an
:class:`AuthenticationError`, a rate limit a :class:`RateLimitError`, an unknown model or voice
a :class:`ConfigError`, anything else a :class:`ServiceError`. An ``error`` event during a turn
ends that turn's :class:`Reply` with ``error`` set, and the conversation goes on; a socket that
breaks mid-answer ends the answer's Reply with an error, then ``listener.failed``.
"""

from __future__ import annotations

import base64
import json
import logging
import queue
import threading
import time
from typing import Any

from .._config import Settings, resolve
from .._errors import (AuthenticationError, ConfigError, RateLimitError, ServiceError,
                       ServiceTimeoutError, VoicenbError)
from .base import INPUT_RATE, Base, Heard, Listener, Reply, Upsampler

log = logging.getLogger("voicenb.live")

SERVICE = "OpenAI's Realtime API"
OUTPUT_RATE = 24_000
#: the model that writes the person's words (the Realtime model hears the audio itself)
TRANSCRIBE_MODEL = "gpt-4o-transcribe"
#: the voices the API lists (VoiceIdsShared); unset, the service's default speaks
VOICES = ("alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin",
          "cedar")
_STOP = object()


def error_from(error: dict[str, Any], *, model: str | None, voice: str | None
               ) -> VoicenbError:
    """The :class:`VoicenbError` an ``error`` event (or a failed response's error) means."""
    kind, code = str(error.get("type") or ""), str(error.get("code") or "")
    message = str(error.get("message") or code or kind or "no detail")
    param = str(error.get("param") or "")
    kw = dict(service=SERVICE, detail=message, code=code or None)
    if code in ("invalid_api_key", "missing_api_key") or kind == "authentication_error":
        return AuthenticationError(
            f"{SERVICE} refused the API key ({message}). Check OPENAI_API_KEY (or "
            "Settings(openai_api_key=...)); it may be wrong, revoked, or lack access to the "
            "Realtime API.", status_code=401, **kw)
    if code in ("rate_limit_exceeded", "insufficient_quota") or kind in (
            "tokens", "requests", "rate_limit_exceeded"):
        if code == "insufficient_quota":
            return RateLimitError(f"The OpenAI account behind this key has no credit left "
                                  f"({message}). Add credit, or use another key.", **kw)
        return RateLimitError(f"{SERVICE} is rate limiting this account ({message}). Wait a "
                              "moment and speak again, or lower the request rate.", **kw)
    if code == "model_not_found" or param.endswith("model") and "transcription" not in param:
        return ConfigError(
            f"{SERVICE} has no model {model!r} for this key ({message}). Choose another with "
            "model=..., Settings(realtime_model=...) or VOICENB_REALTIME_MODEL (e.g. "
            "gpt-realtime-2).")
    if "voice" in param:
        return ConfigError(
            f"{SERVICE} refused the voice {voice!r} ({message}). Choose one of "
            f"{', '.join(VOICES)} with voice=..., Settings(live_voice=...) or "
            "VOICENB_LIVE_VOICE, or leave it unset for the service's default.")
    return ServiceError(f"{SERVICE} reported an error ({kind}/{code or '-'}: {message}). "
                        "Speak again; if it keeps happening, start a new conversation.", **kw)


class OpenAIRealtime(Base):
    """A live conversation with OpenAI's Realtime API (:class:`~voicenb.live.Conversation`).

    ``model`` and ``voice`` come from the arguments, else the settings (``realtime_model``,
    default ``gpt-realtime-2``; ``live_voice``, default: the service's), the key and base URL
    from the OpenAI settings, as for the chat model.
    """

    backend = "openai-realtime"
    output_rate = OUTPUT_RATE

    def __init__(self, listener: Listener, *, settings: Settings | None = None,
                 system: str | None = None, model: str | None = None,
                 voice: str | None = None) -> None:
        super().__init__(listener)
        self.settings = resolve(settings)
        self.model: str | None = model or self.settings.realtime_model
        self.voice: str | None = voice or self.settings.live_voice
        self.system = system
        self.session_id: str | None = None
        self._conn: Any = None
        self._outbox: queue.Queue[Any] = queue.Queue()
        self._lock = threading.Lock()       # Base's buffers: send() and the reader share them
        self._upsample = Upsampler()
        self._closing = False
        self._threads: list[threading.Thread] = []
        # the turn in progress, as the events tell it (touched by the reader thread only)
        self._stopped_at: float | None = None
        self._partial = ""
        self._response: dict[str, Any] | None = None   # the active response's figures
        self._last_item: tuple[str, float] | None = None  # (assistant item, its audio ms)
        self._awaiting = False             # a turn ended and its answer has not
        self._error: VoicenbError | None = None  # an error event during the turn

    def __repr__(self) -> str:
        return f"OpenAIRealtime(model={self.model!r}, voice={self.voice!r})"

    # -- the Conversation protocol -------------------------------------------------------------

    def start(self) -> None:
        """Connect, configure the session and return once the service has taken it."""
        from websockets.exceptions import ConnectionClosed, InvalidStatus

        from .._openai import client

        sdk = client(self.settings)
        try:
            self._conn = sdk.realtime.connect(model=self.model).enter()
        except InvalidStatus as exc:
            raise self._refused(exc.response.status_code,
                                exc.response.body.decode("utf-8", "replace")) from None
        except OSError as exc:
            raise ServiceError(f"Cannot reach {SERVICE} at {self._where()} ({exc}). Check the "
                               "network and OPENAI_BASE_URL; for offline use start `python "
                               "-m voicenb.sim`.", service=SERVICE) from None
        try:
            self._await_ready()
        except ConnectionClosed as exc:
            self._conn.close()
            raise ServiceError(f"{SERVICE} closed the connection while the session was set "
                               f"up ({exc}).", service=SERVICE) from None
        except BaseException:
            self._conn.close()
            raise
        for target, name in ((self._read, "reader"), (self._write, "writer")):
            thread = threading.Thread(target=target, name=f"voicenb-realtime-{name}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)

    def send(self, pcm: bytes) -> None:
        """Queue 16 kHz mono PCM16 from the microphone (never blocks)."""
        with self._lock:
            self._keep(pcm)
        self._outbox.put(pcm)

    def interrupt(self, played_ms: float | None) -> None:
        """Stop the answer and tell the service how much of it the person heard."""
        if self._response is not None and self._response.get("id"):
            self._outbox.put({"type": "response.cancel"})
        if self._last_item is not None and played_ms is not None:
            item, audio_ms = self._last_item
            self._outbox.put({"type": "conversation.item.truncate", "item_id": item,
                              "content_index": 0,
                              "audio_end_ms": int(max(0, min(played_ms, audio_ms)))})

    def close(self) -> None:
        """End the session after the answer in progress (idempotent)."""
        if self._closing or self._conn is None:
            return
        deadline = time.monotonic() + self.settings.read_timeout
        while self._response is not None and time.monotonic() < deadline \
                and self._threads[0].is_alive():
            time.sleep(0.05)
        self._closing = True
        self._outbox.put(_STOP)
        for thread in self._threads[1:]:
            thread.join(5)
        self._conn.close()
        self._threads[0].join(5)

    # -- setting up ------------------------------------------------------------------------------

    def _where(self) -> str:
        return self.settings.openai_base_url or "https://api.openai.com/v1"

    def _session(self) -> dict[str, Any]:
        session: dict[str, Any] = {
            "type": "realtime", "output_modalities": ["audio"],
            "audio": {"input": {"format": {"type": "audio/pcm", "rate": OUTPUT_RATE},
                                "transcription": {"model": TRANSCRIBE_MODEL},
                                "turn_detection": {"type": "server_vad",
                                                   "create_response": True,
                                                   "interrupt_response": True}},
                      "output": {"format": {"type": "audio/pcm", "rate": OUTPUT_RATE}}}}
        if self.system:
            session["instructions"] = self.system
        if self.voice:
            session["audio"]["output"]["voice"] = self.voice
        return session

    def _refused(self, status: int, body: str) -> VoicenbError:
        detail = body[:300]
        try:
            error = json.loads(body).get("error") or {}
        except (ValueError, AttributeError):
            error = {}
        if status in (401, 403):
            return error_from({"code": "invalid_api_key", "message": error.get("message")
                               or f"HTTP {status}"}, model=self.model, voice=self.voice)
        if status == 429:
            return error_from({"code": "rate_limit_exceeded", "message": detail},
                              model=self.model, voice=self.voice)
        if error:
            return error_from(error, model=self.model, voice=self.voice)
        return ServiceError(f"{SERVICE} refused the connection with HTTP {status} ({detail}).",
                            service=SERVICE, status_code=status, detail=detail)

    def _await_ready(self) -> None:
        from websockets.exceptions import ConnectionClosed

        timed_out = threading.Event()

        def give_up() -> None:  # the SDK's recv has no timeout: closing ends the wait
            timed_out.set()
            self._conn.close()

        timer = threading.Timer(self.settings.read_timeout, give_up)
        timer.daemon = True
        timer.start()
        refusal: VoicenbError | None = None
        try:
            while True:
                try:
                    event = self._recv()
                except ConnectionClosed:
                    if refusal is not None:  # the service said why, then closed
                        raise refusal from None
                    if timed_out.is_set():
                        raise ServiceTimeoutError(
                            f"{SERVICE} did not confirm the session within "
                            f"{self.settings.read_timeout:.0f} s. Try again, or raise "
                            "Settings(read_timeout=...).", service=SERVICE) from None
                    raise
                kind = (event or {}).get("type")
                if kind == "session.created":  # the key and model were taken: configure
                    self.session_id = (event.get("session") or {}).get("id")
                    self._conn.send({"type": "session.update", "session": self._session()})
                elif kind == "session.updated":
                    output = ((event.get("session") or {}).get("audio") or {}).get("output")
                    self.voice = (output or {}).get("voice", self.voice)
                    return
                elif kind == "error":
                    refusal = error_from(event.get("error") or {}, model=self.model,
                                         voice=self.voice)
                    if not isinstance(refusal, (AuthenticationError, ConfigError)):
                        raise refusal
                    param = str((event.get("error") or {}).get("param") or "")
                    if param.startswith("session."):  # a refused session.update: still open
                        raise refusal
        finally:
            timer.cancel()

    def _recv(self) -> dict[str, Any] | None:
        try:
            event = json.loads(self._conn.recv_bytes())
        except ValueError:
            log.warning("%s sent a frame that is not JSON; ignored", SERVICE)
            return None
        return event if isinstance(event, dict) else None

    # -- the threads -----------------------------------------------------------------------------

    def _write(self) -> None:
        """Send what is queued, in order: audio as ``input_audio_buffer.append``."""
        while True:
            item = self._outbox.get()
            if item is _STOP:
                return
            try:
                if isinstance(item, bytes):
                    audio = self._upsample.feed(item)
                    if not audio:
                        continue
                    item = {"type": "input_audio_buffer.append",
                            "audio": base64.b64encode(audio).decode()}
                self._conn.send(item)
            except Exception:  # closed or broken: the reader tells the listener
                return

    def _read(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            while True:
                event = self._recv()
                if event is not None:
                    self._dispatch(event)
        except ConnectionClosed as exc:
            if self._closing:
                return
            self._broken(ServiceError(
                f"The connection to {SERVICE} broke ({exc}). Start the conversation again.",
                service=SERVICE))
        except Exception as exc:  # a bug in a listener must not leave the owner waiting
            log.exception("the realtime reader failed")
            if not self._closing:
                self._broken(ServiceError(f"The {SERVICE} conversation failed: "
                                          f"{type(exc).__name__}: {exc}", service=SERVICE))

    def _broken(self, error: VoicenbError) -> None:
        if self._response is not None or self._awaiting:
            self._reply(status="failed", error=error)
        self._outbox.put(_STOP)
        self.listener.failed(error)

    # -- events -> listener --------------------------------------------------------------------

    def _since_stop(self, at: float | None) -> float | None:
        if at is None or self._stopped_at is None:
            return None
        return round(at - self._stopped_at, 3)

    def _dispatch(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        now = time.monotonic()
        if kind == "input_audio_buffer.speech_started":
            with self._lock:
                self._speech_began()
            self._partial = ""
            self.listener.speech_started()
        elif kind == "input_audio_buffer.speech_stopped":
            with self._lock:
                self._speech_ended()
            self._stopped_at, self._awaiting, self._error = now, True, None
        elif kind == "conversation.item.input_audio_transcription.delta":
            self._partial += str(event.get("delta") or "")
            self.listener.partial(self._partial)
        elif kind == "conversation.item.input_audio_transcription.completed":
            with self._lock:
                said = self._take_said()
            stopped = self._stopped_at
            self.listener.heard(Heard(
                text=str(event.get("transcript") or "").strip(), audio=said,
                ended_at=stopped or now, stt_s=self._since_stop(now),
                id=f"{self.session_id}:{event.get('item_id')}", speech_model=TRANSCRIBE_MODEL))
        elif kind == "response.created":
            self._response = {"id": (event.get("response") or {}).get("id"), "text": "",
                              "bytes": 0, "first_token": None, "first_audio": None,
                              "created": now, "stopped": self._stopped_at}
        elif kind == "response.output_item.added":
            if self._response is not None:
                self._response["item"] = (event.get("item") or {}).get("id")
        elif kind == "response.output_audio_transcript.delta":
            if self._response is not None:
                self._response["first_token"] = self._response["first_token"] or now
                self._response["text"] += str(event.get("delta") or "")
            self.listener.answer_text(str(event.get("delta") or ""))
        elif kind == "response.output_audio.delta":
            pcm = base64.b64decode(event.get("delta") or "")
            if self._response is not None:
                self._response["first_audio"] = self._response["first_audio"] or now
                self._response["bytes"] += len(pcm)
                item = event.get("item_id") or self._response.get("item")
                self._last_item = (item, self._response["bytes"] / 2 / OUTPUT_RATE * 1000)
            self.listener.answer_audio(pcm)
        elif kind == "response.done":
            self._done(event.get("response") or {}, now)
        elif kind == "error":
            error = error_from(event.get("error") or {}, model=self.model, voice=self.voice)
            if (event.get("error") or {}).get("code") == "response_cancel_not_active":
                return  # the answer had ended already: nothing to stop
            log.warning("%s", error)
            if self._response is not None:
                self._error = error          # response.done ends the turn
            elif self._awaiting:
                self._reply(status="failed", error=error)

    def _done(self, response: dict[str, Any], now: float) -> None:
        status = response.get("status")
        details = response.get("status_details") or {}
        error = self._error
        if status == "failed" and error is None:
            error = error_from(details.get("error") or {"message": "the response failed"},
                               model=self.model, voice=self.voice)
        self._reply(status=str(status), error=error, usage=response.get("usage") or {},
                    voice=((response.get("audio") or {}).get("output") or {}).get("voice"),
                    at=now, reason=details.get("reason"))

    def _reply(self, *, status: str, error: VoicenbError | None = None,
               usage: dict[str, Any] | None = None, voice: str | None = None,
               at: float | None = None, reason: str | None = None) -> None:
        figures = self._response or {"text": "", "bytes": 0, "first_token": None,
                                     "first_audio": None, "created": None,
                                     "stopped": self._stopped_at}
        self._response, self._awaiting, self._error = None, False, None
        usage = usage or {}
        details_in = usage.get("input_token_details") or {}
        details_out = usage.get("output_token_details") or {}
        extra: dict[str, object] = {"status": status}
        if reason:
            extra["reason"] = reason
        if details_in.get("cached_tokens") is not None:
            extra["cached_tokens"] = details_in.get("cached_tokens")
        stopped = figures["stopped"]

        def since(t: float | None) -> float | None:  # the end of the speech it answers
            return None if t is None or stopped is None else round(t - stopped, 3)

        self.listener.replied(Reply(
            text=figures["text"], model=self.model, started_s=since(figures["created"]),
            ended_at=stopped or 0.0, first_token_s=since(figures["first_token"]),
            first_audio_s=since(figures["first_audio"]),
            llm_s=since(at) if status == "completed" else None,
            prompt_tokens=usage.get("input_tokens"),
            completion_tokens=usage.get("output_tokens"),
            audio_in_tokens=details_in.get("audio_tokens"),
            audio_out_tokens=details_out.get("audio_tokens"),
            audio_ms=figures["bytes"] / 2 / OUTPUT_RATE * 1000, voice=voice or self.voice,
            interrupted=status == "cancelled", error=error, id=figures.get("id"),
            extra=extra))


__all__ = ["OpenAIRealtime", "error_from", "TRANSCRIBE_MODEL", "OUTPUT_RATE", "INPUT_RATE"]
