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
ends that turn's :class:`Reply` with ``error`` set, and the conversation goes on.

A dropped connection does not end the conversation. A Realtime session dies with its socket,
so the backend opens a new one (same model, voice, instructions and turn detection) and gives
it the conversation so far as ``conversation.item.create`` items: the person's turns as their
transcripts (``input_text``), the answers as text (``output_text``; an answer spoken over or
cut by the drop: only what the person heard of it, or what arrived). Then it sends again the
audio the old session had not made a turn of (everything since the last turn it confirmed by
a transcript or an answer, cut exactly at that turn's ``audio_end_ms``), then the audio queued
meanwhile, and carries on: the turn in progress is heard whole, once. What this decides:

- an answer cut by the drop is recorded as it was (an error, with the words that arrived and
  the audio played) and is not asked for again: the person heard part of it and may ask again;
- a question heard (its transcript told) whose answer had not begun is answered by the new
  session (``response.create``), once;
- a question the old session had not confirmed is heard again from its audio, so the
  listener hears ``speech_started`` and ``heard`` for it once.

Tries wait ``RETRY_FIRST_S``, doubling to ``RETRY_MAX_S``, at most ``RETRY_TRIES`` (all in
:mod:`voicenb.live.base`); a refused key or model is not tried again. Audio waiting to be
sent (while reconnecting) and audio kept to send again are each bounded by ``BACKLOG_S``.
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
                       ServiceTimeoutError, VoicenbError)
from .base import (BACKLOG_S, FINAL_CLOSE_CODES, INPUT_RATE, REPLAY_CHUNK, RETRY_TRIES, Base,
                   Heard, Listener, Outbox, Reply, SentAudio, Upsampler, retry_waits)

log = logging.getLogger("voicenb.live")

SERVICE = "OpenAI's Realtime API"
OUTPUT_RATE = 24_000
#: the model that writes the person's words (the Realtime model hears the audio itself)
TRANSCRIBE_MODEL = "gpt-4o-transcribe"
#: the voices the API lists (VoiceIdsShared); unset, the service's default speaks
VOICES = ("alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin",
          "cedar")
#: the answers and questions a new session is given, at most (the newest)
HISTORY_ITEMS = 200
_BYTES_PER_MS = INPUT_RATE * 2 // 1000
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


def heard_part(text: str, audio_ms: float, played_ms: float | None) -> str:
    """The words of an answer the person heard: in proportion to its audio played."""
    if played_ms is None or audio_ms <= 0 or played_ms >= audio_ms:
        return text
    words = text.split()
    return " ".join(words[:round(len(words) * max(0.0, played_ms) / audio_ms)])


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
        #: connections made after a drop
        self.reconnects = 0
        self._conn: Any = None
        backlog = int(BACKLOG_S * INPUT_RATE) * 2
        self._outbox = Outbox(backlog)
        # the writer and a reconnect share these: the connection, what it was sent, the
        # resampler's state; a reconnect swaps them all at once
        self._lock = threading.Lock()
        self._sent = SentAudio(backlog)
        self._upsample = Upsampler()
        self._generation = 0                # connections made; control events name theirs
        self._live = threading.Event()      # set while the connection takes audio
        self._stop = threading.Event()      # close(): no more waiting to reconnect
        self._closing = False
        self._threads: list[threading.Thread] = []
        # the turn in progress, as the events tell it (touched by the reader thread only)
        self._stopped_at: float | None = None
        self._partial = ""
        self._response: dict[str, Any] | None = None   # the active response's figures
        self._last_item: tuple[str, float] | None = None  # (assistant item, its audio ms)
        self._awaiting = False             # a turn ended and its answer has not
        self._error: VoicenbError | None = None  # an error event during the turn
        self._speech_from = 0              # stream offset where the service heard speech begin
        self._unconfirmed: int | None = None  # stream offset of a turn's end not yet confirmed
        self._turn_audio = b""             # that turn's audio, until its transcript
        self._committed: str | None = None  # the latest user item
        self._in_speech = False            # between speech_started and speech_stopped
        self._replaying = False            # the turn under way is being sent again
        # the conversation so far, to give a new session: {"role", "id", "text", ...}
        self._history: list[dict[str, Any]] = []
        self._played: dict[str, float] = {}  # assistant item -> ms of it the person heard

    def __repr__(self) -> str:
        return f"OpenAIRealtime(model={self.model!r}, voice={self.voice!r})"

    # -- the Conversation protocol -------------------------------------------------------------

    def start(self) -> None:
        """Connect, configure the session and return once the service has taken it."""
        self._conn = self._open()
        self._live.set()
        for target, name in ((self._read, "reader"), (self._write, "writer")):
            thread = threading.Thread(target=target, name=f"voicenb-realtime-{name}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)

    def send(self, pcm: bytes) -> None:
        """Queue 16 kHz mono PCM16 from the microphone (never blocks)."""
        if not self._closing:
            self._outbox.put(pcm)

    def interrupt(self, played_ms: float | None) -> None:
        """Stop the answer and tell the service how much of it the person heard."""
        made = self._generation
        if self._response is not None and self._response.get("id"):
            self._outbox.put((made, {"type": "response.cancel"}))
        if self._last_item is not None and played_ms is not None:
            item, audio_ms = self._last_item
            heard = int(max(0, min(played_ms, audio_ms)))
            self._played[item] = heard
            self._outbox.put((made, {"type": "conversation.item.truncate", "item_id": item,
                                     "content_index": 0, "audio_end_ms": heard}))

    def close(self) -> None:
        """End the session after the answer in progress (idempotent)."""
        if self._closing or self._conn is None:
            return
        deadline = time.monotonic() + self.settings.read_timeout
        while self._response is not None and time.monotonic() < deadline \
                and self._threads[0].is_alive() and self._live.is_set():
            time.sleep(0.05)
        self._closing = True
        self._stop.set()
        self._outbox.put(_STOP)
        for thread in self._threads[1:]:
            thread.join(5)
        with contextlib.suppress(Exception):
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

    def _open(self) -> Any:
        """A connection with its session configured, or a typed error."""
        from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

        from .._openai import client

        sdk = client(self.settings)
        try:
            conn = sdk.realtime.connect(model=self.model).enter()
        except InvalidStatus as exc:
            raise self._refused(exc.response.status_code,
                                exc.response.body.decode("utf-8", "replace")) from None
        except (OSError, WebSocketException) as exc:
            raise ServiceError(f"Cannot reach {SERVICE} at {self._where()} ({exc}). Check the "
                               "network and OPENAI_BASE_URL; for offline use start `python "
                               "-m voicenb.sim`.", service=SERVICE) from None
        try:
            self._await_ready(conn)
        except ConnectionClosed as exc:
            conn.close()
            raise ServiceError(f"{SERVICE} closed the connection while the session was set "
                               f"up ({exc}).", service=SERVICE) from None
        except BaseException:
            conn.close()
            raise
        return conn

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

    def _await_ready(self, conn: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        timed_out = threading.Event()

        def give_up() -> None:  # the SDK's recv has no timeout: closing ends the wait
            timed_out.set()
            conn.close()

        timer = threading.Timer(self.settings.read_timeout, give_up)
        timer.daemon = True
        timer.start()
        refusal: VoicenbError | None = None
        try:
            while True:
                try:
                    event = self._recv(conn)
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
                    conn.send({"type": "session.update", "session": self._session()})
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

    @staticmethod
    def _recv(conn: Any) -> dict[str, Any] | None:
        try:
            event = json.loads(conn.recv_bytes())
        except ValueError:
            log.warning("%s sent a frame that is not JSON; ignored", SERVICE)
            return None
        return event if isinstance(event, dict) else None

    # -- the threads -----------------------------------------------------------------------------

    def _write(self) -> None:
        """Send what is queued, in order: audio as ``input_audio_buffer.append``. While the
        connection is down, what is queued waits (bounded) for the new one."""
        while True:
            item = self._outbox.get()
            if item is _STOP:
                return
            while not self._live.wait(0.2):
                if self._closing:
                    return
            with self._lock:
                conn, made = self._conn, self._generation
                if isinstance(item, bytes):
                    self._sent.add(item)    # before sending: if it is lost, it goes again
                    audio = self._upsample.feed(item)
                    if not audio:
                        continue
                    event = {"type": "input_audio_buffer.append",
                             "audio": base64.b64encode(audio).decode()}
                else:
                    queued_for, event = item
                    if queued_for != made:  # about an item of a session that is gone
                        continue
                try:
                    conn.send(event)
                except Exception:  # closed or broken: the reader reconnects
                    self._live.clear()

    def _read(self) -> None:
        from websockets.exceptions import ConnectionClosed

        while True:
            conn = self._conn
            try:
                while True:
                    event = self._recv(conn)
                    if event is not None:
                        self._dispatch(event)
            except ConnectionClosed as exc:
                if self._closing:
                    return
                error = ServiceError(f"The connection to {SERVICE} broke ({exc}).",
                                     service=SERVICE)
                code = exc.rcvd.code if exc.rcvd is not None else None
                if code in FINAL_CLOSE_CODES:
                    self._broken(ServiceError(
                        f"{SERVICE} closed the conversation ({exc}). Start it again.",
                        service=SERVICE, code=str(code)))
                    return
                if not self._reconnect(error):
                    return
            except Exception as exc:  # a bug in a listener must not leave the owner waiting
                log.exception("the realtime reader failed")
                if not self._closing:
                    self._broken(ServiceError(f"The {SERVICE} conversation failed: "
                                              f"{type(exc).__name__}: {exc}", service=SERVICE))
                return

    def _broken(self, error: VoicenbError) -> None:
        if self._response is not None or self._awaiting:
            self._reply(status="failed", error=error)
        self._outbox.put(_STOP)
        self.listener.failed(error)

    # -- reconnecting ----------------------------------------------------------------------------

    def _reconnect(self, error: VoicenbError) -> bool:
        """The connection dropped: open a new session, give it the conversation so far and
        the audio it missed (see the module docstring). False when the conversation cannot
        go on (it has told the listener)."""
        dropped = time.monotonic()
        self._live.clear()
        cut = self._response                 # an answer under way ends with the drop
        if cut is not None and cut["text"]:
            self._remember_answer(cut, cut["text"])
        # a turn the old session had not confirmed is heard again from its audio
        self._replaying = self._unconfirmed is not None or self._in_speech
        if self._replaying:
            self._partial = ""  # its words come again
        answer = self._awaiting and cut is None and self._unconfirmed is None
        last: VoicenbError = error
        for attempt, wait in enumerate(retry_waits(), 1):
            if self._stop.wait(wait) or self._closing:
                return False
            self.listener.reconnecting(attempt, last)
            try:
                conn = self._open()
            except (AuthenticationError, ConfigError) as exc:
                last = exc
                break
            except VoicenbError as exc:  # refused for now, unreachable, rate limited
                last = exc
                continue
            try:
                self._restore(conn, answer)
            except Exception as exc:  # noqa: BLE001 - the new connection broke too
                with contextlib.suppress(Exception):
                    conn.close()
                last = ServiceError(f"The new connection to {SERVICE} broke while the "
                                    f"conversation was restored ({exc}).", service=SERVICE)
                continue
            self.reconnects += 1
            self.listener.reconnected(round(time.monotonic() - dropped, 3))
            if cut is not None:
                self._reply(status="failed", error=ServiceError(
                    f"The connection to {SERVICE} dropped in the middle of the answer; the "
                    "conversation goes on in a new session.", service=SERVICE))
            return True
        if self._closing:
            return False
        if isinstance(last, (AuthenticationError, ConfigError)):
            final = last
        else:
            final = ServiceError(f"The connection to {SERVICE} dropped and {RETRY_TRIES} "
                                 f"tries to reconnect failed (the last: {last}). Start the "
                                 "conversation again.", service=SERVICE)
        self._broken(final)
        return False

    def _restore(self, conn: Any, answer: bool) -> None:
        """Give the new session the conversation so far and the audio the old one missed,
        then make it the connection (the writer carries on with what queued meanwhile)."""
        with self._lock:
            for item in self._items():
                conn.send({"type": "conversation.item.create", "item": item})
            if answer:  # heard, not yet answered: answered now, once
                conn.send({"type": "response.create"})
            replay = self._sent.restart()
            self._upsample = Upsampler()
            for at in range(0, len(replay), REPLAY_CHUNK):
                audio = self._upsample.feed(replay[at:at + REPLAY_CHUNK])
                if audio:
                    conn.send({"type": "input_audio_buffer.append",
                               "audio": base64.b64encode(audio).decode()})
            old, self._conn = self._conn, conn
            self._generation += 1
            self._unconfirmed, self._speech_from = None, 0  # the new stream's turns come anew
            self._live.set()
        with contextlib.suppress(Exception):
            old.close()

    def _items(self) -> list[dict[str, Any]]:
        """The conversation so far as items for ``conversation.item.create``."""
        items = []
        for entry in self._history[-HISTORY_ITEMS:]:
            text = entry["text"]
            if entry["role"] == "assistant":
                text = heard_part(text, entry["audio_ms"], self._played.get(entry["id"]))
            if not text:
                continue
            kind = "input_text" if entry["role"] == "user" else "output_text"
            items.append({"type": "message", "role": entry["role"],
                          "content": [{"type": kind, "text": text}]})
        return items

    def _remember_answer(self, response: dict[str, Any], text: str) -> None:
        item = response.get("item") or response.get("id") or ""
        if any(e["id"] == item for e in self._history):
            return
        self._history.append({"role": "assistant", "id": item, "text": text,
                              "audio_ms": response["bytes"] / 2 / OUTPUT_RATE * 1000,
                              "answers": response.get("answers")})

    def _remember_question(self, item: str | None, text: str) -> None:
        entry = {"role": "user", "id": item, "text": text}
        # an answer may end before its question's transcript: the question goes before it
        for i, other in enumerate(self._history):
            if other["role"] == "assistant" and item and other.get("answers") == item:
                self._history.insert(i, entry)
                return
        self._history.append(entry)
        del self._history[:len(self._history) - 2 * HISTORY_ITEMS]  # bounded: a long talk

    def _confirm(self) -> None:
        """The turn that ended is the service's now: its audio is not sent again."""
        if self._unconfirmed is not None:
            with self._lock:
                self._sent.confirm(self._unconfirmed)
            self._unconfirmed = None

    # -- events -> listener --------------------------------------------------------------------

    def _since_stop(self, at: float | None) -> float | None:
        if at is None or self._stopped_at is None:
            return None
        return round(at - self._stopped_at, 3)

    def _dispatch(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        now = time.monotonic()
        if kind == "input_audio_buffer.speech_started":
            self._speech_from = int(event.get("audio_start_ms") or 0) * _BYTES_PER_MS
            self._in_speech = True
            if self._replaying:  # the turn the listener heard begin, sent again
                self._replaying = False
                return
            self._partial = ""
            self.listener.speech_started()
        elif kind == "input_audio_buffer.speech_stopped":
            self._speech_stopped(int(event.get("audio_end_ms") or 0), now)
        elif kind == "input_audio_buffer.committed":
            self._committed = event.get("item_id")
        elif kind == "conversation.item.input_audio_transcription.delta":
            self._partial += str(event.get("delta") or "")
            self.listener.partial(self._partial)
        elif kind in ("conversation.item.input_audio_transcription.completed",
                      "conversation.item.input_audio_transcription.failed"):
            self._transcribed(event, now)
        elif kind == "response.created":
            self._confirm()
            self._response = {"id": (event.get("response") or {}).get("id"), "text": "",
                              "bytes": 0, "first_token": None, "first_audio": None,
                              "created": now, "stopped": self._stopped_at,
                              "answers": self._committed}
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
            if self._response is not None and self._response["text"]:
                self._remember_answer(self._response, self._response["text"])
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

    def _speech_stopped(self, end_ms: int, now: float) -> None:
        self._in_speech = False
        end = end_ms * _BYTES_PER_MS
        with self._lock:  # the turn's audio (the service's start includes its padding)
            self._turn_audio = self._sent.slice(self._speech_from, end)
        self._unconfirmed = end
        self._stopped_at, self._awaiting, self._error = now, True, None

    def _transcribed(self, event: dict[str, Any], now: float) -> None:
        self._confirm()
        said, self._turn_audio = self._turn_audio, b""
        text = str(event.get("transcript") or "").strip()
        self._remember_question(event.get("item_id"), text)
        stopped = self._stopped_at
        self.listener.heard(Heard(
            text=text, audio=said, ended_at=stopped or now, stt_s=self._since_stop(now),
            id=f"{self.session_id}:{event.get('item_id')}", speech_model=TRANSCRIBE_MODEL))

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
