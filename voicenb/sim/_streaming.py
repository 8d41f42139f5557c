"""AssemblyAI's Universal-Streaming v3 websocket, simulated (``/v3/ws``), and its token
endpoint (``GET /v3/token``) on the same port, with the simulator's ``GET /sim/about``.

Messages as in AssemblyAI's two AsyncAPI specs, one per family of models (usm-streaming for
``universal-streaming-english``, ``universal-streaming-multilingual`` and ``whisper-rt``;
usm-streaming-u3-pro for ``u3-rt-pro``): ``Begin`` on connect; on u3-rt-pro a
``SpeechStarted`` when speech begins in a turn; ``Turn`` messages with the words heard so far
(partials), then the turn's final ``Turn``; ``Termination`` after the client's ``Terminate``.
On u3-rt-pro the final turn is formatted (``turn_is_formatted`` always equals
``end_of_turn``, and ``end_of_turn_confidence`` is 1.0 on it, 0.0 before, as its spec says).
On the universal-streaming models it is unformatted and, with ``format_turns=true``, a
formatted copy follows it. ``UpdateConfiguration`` changes the turn detection mid-session;
``ForceEndpoint`` ends the turn at once. Errors come as an ``Error`` frame, then a close with
the same code: 1008 for a missing or wrong key or token, 3009 for too many sessions, 3007 for
frames outside 50-1000 ms or audio sent faster than real time, 3006 for a message or a
``speech_model`` it does not understand, 3008 past the session's maximum duration.

What it hears: a simple energy detector finds speech; a turn whose samples occur in a
registered clip gets that clip's text, anything else is heard by the local engine (Whisper)
or gets the registry's text for unknown audio. Hearing never runs in the event loop: it runs
on one worker thread, so frames keep being read while a turn is heard. While someone speaks,
the turn so far (with :data:`LEAD_MS` of audio either side of its loud part) is heard
again for a partial at most as often as hearing it takes (so hearing
takes at most half the time, and a long turn costs time linear in its length); after
:data:`HEAR_AFTER_MS` of silence the voiced part is heard once more, and that text is both
the candidate final transcript and what the end of the turn is judged on. When a turn ends,
as the specs describe it: after ``min_turn_silence`` ms of silence if the turn sounds
finished (here: its text ends with ., ? or !; on the universal-streaming models, if that
makes ``end_of_turn_confidence`` reach ``end_of_turn_confidence_threshold``), and after
``max_turn_silence`` ms in any case; the final ``Turn`` follows the end of speech by that
silence or one hearing of the turn, whichever is longer.
"""

from __future__ import annotations

import array
import asyncio
import json
import logging
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.exceptions import ConnectionClosed

from ._about import ABOUT_PATH, about
from ._registry import Registry
from ._sockets import SocketFaults, SocketServer

FRAME_MS = 20          # the detector's resolution
SPEECH_LEVEL = 300     # peak amplitude (of 32767) that counts as speech
PARTIAL_EVERY_MS = 300
#: silence after which the words of the turn so far are heard as its candidate final text
HEAR_AFTER_MS = 100
#: audio heard before the first loud frame and after the last one: a detector finds a word's
#: loud part, and a recognizer given only that mishears its soft onset ("cup of" as "cut on")
LEAD_MS = 200
#: the ``speech_model`` values of the two specs' enums (usm-streaming, usm-streaming-u3-pro)
UNIVERSAL_MODELS = ("universal-streaming-english", "universal-streaming-multilingual",
                    "whisper-rt")
U3_MODELS = ("u3-rt-pro",)
#: Assumption: neither spec says which model a session without ``speech_model`` gets; the
#: service's original (and the SDK's documented) default is the English universal model.
DEFAULT_MODEL = "universal-streaming-english"
#: the specs' defaults: (min_turn_silence, max_turn_silence) in ms
TURN_SILENCE = {"u3": (100, 1000), "universal": (400, 1280)}
DEFAULT_EOT_THRESHOLD = 0.4
MAX_SESSION_S = 3 * 3600
#: GET /v3/token's limits (token spec): expires_in_seconds, max_session_duration_seconds
TOKEN_EXPIRES = (1, 600)
TOKEN_SESSION = (60, MAX_SESSION_S)
UNAUTHORIZED = "Unauthorized Connection: Missing or invalid Authorization header"
UNAUTHORIZED_TOKEN = "Unauthorized Connection: Invalid, used or expired temporary token"


@dataclass
class Received:
    """What one session was opened with and what the client sent it (audio aside)."""

    params: dict[str, str]
    #: how it authenticated: "key", "token" (query) or "token-header" (the official SDK)
    auth: str = ""
    messages: list[dict[str, Any]] = field(default_factory=list)
    #: when it opened, and when its first audio frame arrived (monotonic; None: none came)
    opened_at: float = 0.0
    first_audio_at: float | None = None


@dataclass
class _Token:
    expires: float          # on StreamingService.clock
    max_session_s: int


#: websockets logs each handshake (the key header, a token in the URL) at DEBUG: not here
_WS_LOG = logging.getLogger("voicenb.sim.websocket")
_WS_LOG.setLevel(logging.INFO)


class StreamingService:
    """The simulated v3 websocket: each session ends its turns after its own
    ``min_turn_silence``/``max_turn_silence`` (the specs' defaults unless the client sets
    them)."""

    def __init__(self, registry: Registry, *, key: str, max_sessions: int | None = None,
                 realtime_slack_s: float | None = 1.0) -> None:
        self.registry = registry
        self.key = key
        self.max_sessions = max_sessions
        self.realtime_slack_s = realtime_slack_s
        #: the longest a session opened with the key lasts (AssemblyAI: 3 hours); a test may
        #: shorten it to watch a client roll sessions over
        self.max_session_s = MAX_SESSION_S
        self.sessions_open = 0
        self.stats: dict[str, int] = {"sessions": 0, "terminated": 0, "frames": 0, "turns": 0,
                                      "closed_with_error": 0, "tokens": 0}
        #: every session's query parameters and messages, in the order they connected
        self.received: list[Received] = []
        #: the time temporary tokens expire by (a test may move it forward)
        self.clock: Callable[[], float] = time.monotonic
        self.url = ""
        self._tokens: dict[str, _Token] = {}
        self._open: set[Any] = set()  # the sockets of the sessions open now (loop only)
        self._ws = SocketServer("voicenb-sim-ws", "the simulated streaming server")
        self._lock = threading.Lock()
        #: where turns are heard: a recognizer is CPU-bound and must never run in the loop
        self.hearing = ThreadPoolExecutor(1, thread_name_prefix="voicenb-sim-hear")

    @property
    def faults(self) -> SocketFaults:
        """Socket failures on demand (:class:`~voicenb.sim._sockets.SocketFaults`)."""
        return self._ws.faults

    def hear(self, pcm: bytes) -> str:
        """What 16 kHz PCM of a turn says (runs on :attr:`hearing`, never in the loop)."""
        return self.registry.hear_pcm(pcm, len(pcm) / 32000, service="streaming",
                                      remember=False)

    # -- life cycle (its own event loop on its own thread) ---------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        host, port = self._ws.start(self._handle, host, port, compression=None,
                                    logger=_WS_LOG, max_size=2**22,
                                    process_request=self._http)
        self.url = f"ws://{host}:{port}"
        return self.url

    def stop(self) -> None:
        self._ws.stop()
        self.hearing.shutdown(wait=False, cancel_futures=True)

    def drop_sessions(self, timeout: float = 10.0) -> int:
        """Cut every open session's socket now, as a network failure does (no close frame);
        the number cut."""
        return self._ws.abort(lambda: self._open, timeout)

    def count(self, name: str) -> None:
        with self._lock:
            self.stats[name] = self.stats.get(name, 0) + 1

    # -- GET /v3/token and /sim/about: plain HTTP on the websocket's port ---------------------

    def _http(self, connection: Any, request: Any) -> Any:
        parts = urlsplit(request.path)
        path = parts.path.rstrip("/")
        if path == ABOUT_PATH:  # so voicenb.sim.serves() knows a ws:// URL too
            status, body = 200, about(self.registry.word_error_rate)
        elif path == "/v3/token":
            status, body = self._issue_token(
                request.headers.get("Authorization", ""),
                {k: v[-1] for k, v in parse_qs(parts.query).items()})
        else:
            return None  # a websocket handshake: go on
        response = connection.respond(status, json.dumps(body))
        del response.headers["Content-Type"]
        response.headers["Content-Type"] = "application/json"
        return response

    def _issue_token(self, authorization: str, query: dict[str, str]
                     ) -> tuple[int, dict[str, Any]]:
        if authorization.strip() != self.key:
            return 401, {"error": "Invalid API key", "code": "unauthorized"}
        try:
            expires = int(query["expires_in_seconds"])
            session = int(query.get("max_session_duration_seconds", TOKEN_SESSION[1]))
        except (KeyError, ValueError):
            return 400, {"error": "expires_in_seconds is required and must be an integer "
                                  f"({TOKEN_EXPIRES[0]}-{TOKEN_EXPIRES[1]})",
                         "code": "invalid_parameters"}
        for name, value, (low, high) in (("expires_in_seconds", expires, TOKEN_EXPIRES),
                                         ("max_session_duration_seconds", session,
                                          TOKEN_SESSION)):
            if not low <= value <= high:
                return 400, {"error": f"{name} must be between {low} and {high}, not {value}",
                             "code": "invalid_parameters"}
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[token] = _Token(self.clock() + expires, session)
        self.count("tokens")
        return 200, {"token": token, "expires_in_seconds": expires}

    def _redeem(self, token: str) -> _Token | None:
        """A token it issued, not yet used nor expired; used up by this call."""
        with self._lock:
            issued = self._tokens.pop(token, None)
        return issued if issued is not None and self.clock() <= issued.expires else None

    # -- one session ----------------------------------------------------------------------

    def _authorize(self, request: Any, params: dict[str, str]) -> tuple[str, int] | None:
        """How the session authenticated and its maximum duration; None: refused."""
        header = request.headers.get("Authorization", "").strip()
        if header and header.removeprefix("Bearer ").removeprefix("token ") == self.key:
            return "key", self.max_session_s
        # Temporary tokens: in the query, as the spec says, or in the Authorization header,
        # as the official SDK sends them.
        for where, value in (("token", params.get("token", "")), ("token-header", header)):
            issued = self._redeem(value) if value else None
            if issued is not None:
                return where, issued.max_session_s
        return None

    async def _handle(self, ws: Any) -> None:
        request = ws.request
        parts = urlsplit(request.path)
        params = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        if parts.path.rstrip("/") != "/v3/ws":
            return await _fail(ws, 1008, f"Unknown path {parts.path}")
        auth = self._authorize(request, params)
        if auth is None:
            # Assumption: a bad, used or expired token is refused like a wrong key (1008).
            return await _fail(ws, 1008, UNAUTHORIZED_TOKEN if params.get("token")
                               else UNAUTHORIZED)
        received = Received(params, auth[0], opened_at=time.monotonic())
        with self._lock:
            self.received.append(received)
            busy = self.max_sessions is not None and self.sessions_open >= self.max_sessions
            if not busy:
                self.sessions_open += 1
        if busy:
            return await _fail(ws, 3009, "Unauthorized Connection: Too many concurrent "
                                         "sessions")
        try:
            model = params.get("speech_model", DEFAULT_MODEL)
            if model not in UNIVERSAL_MODELS + U3_MODELS:
                # Assumption: the specs give no close code for an unknown model (the service
                # answers with an Error frame); 3006 is the SDK's "Input validation error".
                return await _fail(ws, 3006, f"Invalid speech_model {model!r}: choose one of "
                                             f"{', '.join(U3_MODELS + UNIVERSAL_MODELS)}")
            try:
                session = _Session(self, ws, params, received, max_session_s=auth[1])
            except (TypeError, ValueError) as exc:
                return await _fail(ws, 3006, f"Invalid query parameter: {exc}")
            self.count("sessions")
            self._open.add(ws)
            await session.run()
        finally:
            self._open.discard(ws)
            with self._lock:
                self.sessions_open -= 1


async def _fail(ws: Any, code: int, message: str) -> None:
    try:
        await ws.send(json.dumps({"type": "Error", "error_code": code, "error": message}))
        await ws.close(code, message[:120])
    except Exception:
        pass


def _int(value: Any, default: int) -> int:
    return default if value is None or value == "" else int(value)


def _finished(text: str) -> bool:
    """The simulator's stand-in for the model's judgement that a sentence is complete: it
    ends with . ? or ! and is more than one word (a recognizer punctuates whatever it hears,
    so "What?" before a stop consonant's pause would end a turn)."""
    return text.rstrip().endswith((".", "?", "!")) and len(text.split()) > 1


def _eot_confidence(finished: bool, silence_ms: int) -> float:
    """A universal-streaming ``end_of_turn_confidence``: it grows with the pause, and stays
    under the default threshold (0.4) while the sentence sounds unfinished."""
    if finished:
        return round(min(0.97, 0.55 + silence_ms / 2000), 3)
    return round(min(0.39, 0.05 + silence_ms / 4000), 3)


class _Session:
    def __init__(self, service: StreamingService, ws: Any, params: dict[str, str],
                 received: Received, *, max_session_s: int = MAX_SESSION_S) -> None:
        self.service, self.ws, self.received = service, ws, received
        self.rate = int(params.get("sample_rate", "16000"))
        self.model = params.get("speech_model", DEFAULT_MODEL)
        self.u3 = self.model in U3_MODELS
        # u3-rt-pro has no format_turns (its spec): every final turn comes formatted.
        self.format_turns = not self.u3 and params.get("format_turns", "false") == "true"
        self.min_silence, self.max_silence = TURN_SILENCE["u3" if self.u3 else "universal"]
        self.threshold = DEFAULT_EOT_THRESHOLD
        self.prompt: str | None = None
        self.keyterms: list[str] = []
        self._configure(params)
        self.speaker_labels = params.get("speaker_labels") == "true"
        self.language_detection = params.get("language_detection") == "true"
        self.max_session_s = max_session_s
        self.id = str(uuid.uuid4())
        self.started = time.monotonic()
        self.samples = 0            # audio received, in samples
        self.received_samples = 0   # audio received (the reader's count, for its checks)
        self.samples = 0            # audio processed, in samples
        self.turn_order = 0
        self.speech: array.array | None = None   # samples of the turn in progress
        self.speech_start = 0       # sample index where it began
        self.before = array.array("h")  # the last LEAD_MS of audio before a turn
        self.lead = b""             # what came just before the turn's first loud frame
        self.voiced = 0             # samples of it up to the end of its last loud frame
        self.silence_ms = 0
        self.checked = False        # this pause's end-of-turn check was done
        self.pending = bytearray()  # samples not yet a whole detector frame
        # Hearing, on the service's worker: what was heard of the turn (voiced samples,
        # text), the hearings under way by voiced length, and no partial hearing before
        # next_partial (so partials take at most half the time).
        self.heard: tuple[int, str] | None = None
        self.under_way: dict[int, asyncio.Task[str]] = {}
        self.next_partial = 0.0
        self.partial_sent = 0       # voiced samples of the last partial sent

    def _configure(self, values: dict[str, Any]) -> None:
        """Turn detection (and u3-rt-pro's prompts) from the query or UpdateConfiguration."""
        old = values.get("min_end_of_turn_silence_when_confident")  # the former name
        self.min_silence = _int(values.get("min_turn_silence", old), self.min_silence)
        self.max_silence = _int(values.get("max_turn_silence"), self.max_silence)
        if not self.u3 and values.get("end_of_turn_confidence_threshold") not in (None, ""):
            self.threshold = float(values["end_of_turn_confidence_threshold"])
        if self.u3 and values.get("prompt") is not None:
            self.prompt = str(values["prompt"])
        if self.u3 and values.get("keyterms_prompt") is not None:
            terms = values["keyterms_prompt"]
            self.keyterms = list(json.loads(terms) if isinstance(terms, str) else terms)

    async def run(self) -> None:
        """Read the client's messages as they come (audio is checked on arrival) and hand
        them, in order, to :meth:`_process`, which may wait for a turn to be heard without
        holding up the reading or the loop."""
        expires = datetime.now(timezone.utc) + timedelta(seconds=self.max_session_s)
        await self.ws.send(json.dumps({"type": "Begin", "id": self.id,
                                       "expires_at": int(expires.timestamp())}))
        inbox: asyncio.Queue[Any] = asyncio.Queue()
        processor = asyncio.get_running_loop().create_task(self._process(inbox))
        faults = self.service.faults.session()
        try:
            async for message in self.ws:
                if await faults.strike(self.ws):
                    self.service.count("faults")
                    return
                if isinstance(message, bytes):
                    if self.received.first_audio_at is None:
                        self.received.first_audio_at = time.monotonic()
                    error = self._admit(message)
                    if error:
                        self.service.count("closed_with_error")
                        return await _fail(self.ws, *error)
                    inbox.put_nowait(message)
                    continue
                try:
                    data = json.loads(message)
                except ValueError:
                    return await _fail(self.ws, 3006, f"Invalid JSON: {message[:50]}")
                kind = data.get("type") if isinstance(data, dict) else None
                if kind is not None:
                    self.received.messages.append(data)
                inbox.put_nowait(data if isinstance(data, dict) else {"type": None})
                if kind == "Terminate":
                    return await processor
        except ConnectionClosed:
            pass  # the client went without a close frame (a cut, a crash): the session ends
        finally:
            processor.cancel()
            for task in self.under_way.values():
                task.cancel()

    def _admit(self, chunk: bytes) -> tuple[int, str] | None:
        """The checks the service makes as audio arrives: frame length, session length and
        real-time pace."""
        self.service.count("frames")
        ms = len(chunk) / 2 / self.rate * 1000
        if not 50 <= ms <= 1000:
            return 3007, f"Input duration violation: {ms:.0f} ms. Expected between 50 and 1000 ms"
        self.received_samples += len(chunk) // 2
        audio_s = self.received_samples / self.rate
        wall = time.monotonic() - self.started
        if wall > self.max_session_s:
            return 3008, "Session Expired: Maximum session duration exceeded"
        slack = self.service.realtime_slack_s
        if slack is not None and audio_s > wall + slack:
            return 3007, (f"Audio Transmission Rate Exceeded: Received {audio_s:.1f} sec. audio "
                          f"in {wall:.1f} sec")
        return None

    async def _process(self, inbox: asyncio.Queue[Any]) -> None:
        try:
            await self._work(inbox)
        except ConnectionClosed:  # the client went away: nothing more to tell it
            pass

    async def _work(self, inbox: asyncio.Queue[Any]) -> None:
        while True:
            item = await inbox.get()
            if isinstance(item, bytes):
                await self._audio(item)
                continue
            kind = item.get("type")
            if kind == "Terminate":
                return await self._terminate()
            error = await self._control(kind, item)
            if error:
                return await _fail(self.ws, 3006, error)

    async def _control(self, kind: Any, data: dict[str, Any]) -> str | None:
        if kind == "ForceEndpoint":
            await self._end_turn()
        elif kind == "UpdateConfiguration":
            try:
                self._configure(data)
            except (TypeError, ValueError):
                return f"Invalid UpdateConfiguration: {json.dumps(data)[:80]}"
        elif kind != "KeepAlive":  # the official SDK's keep_alive()
            return f"Invalid Message Type: {kind}"
        return None

    async def _terminate(self) -> None:
        await self._end_turn()
        self.service.count("terminated")
        await self.ws.send(json.dumps({
            "type": "Termination",
            "audio_duration_seconds": round(self.received_samples / self.rate),
            "session_duration_seconds": round(time.monotonic() - self.started)}))
        await self.ws.close(1000, "")

    async def _audio(self, chunk: bytes) -> None:
        self.samples += len(chunk) // 2
        self.pending += chunk
        step = self.rate * FRAME_MS // 1000 * 2
        while len(self.pending) >= step:
            frame = array.array("h", bytes(self.pending[:step]))
            del self.pending[:step]
            await self._frame(frame)

    async def _frame(self, frame: array.array) -> None:
        peak = max(max(frame), -min(frame))
        loud = peak > SPEECH_LEVEL
        if self.speech is None:
            if not loud:
                self.before.extend(frame)
                del self.before[: max(0, len(self.before) - self.rate * LEAD_MS // 1000)]
            else:
                self.lead, self.before = self.before.tobytes(), array.array("h")
                self.speech = array.array("h", frame)
                self.speech_start = self.samples - len(self.pending) // 2 - len(frame)
                self.voiced = len(frame)
                self.silence_ms = self.partial_sent = 0
                self.checked = False
                self.heard = None
                if self.u3:  # only the u3-rt-pro spec has SpeechStarted
                    await self.ws.send(json.dumps({
                        "type": "SpeechStarted",
                        "timestamp": self.speech_start * 1000 // self.rate,
                        "confidence": round(min(0.99, 0.6 + peak / 32767), 3)}))
            return
        self.speech.extend(frame)
        if loud:
            self.silence_ms, self.checked = 0, False
            self.voiced = len(self.speech)
        else:
            self.silence_ms += FRAME_MS
        await self._progress()

    async def _progress(self) -> None:
        """What the turn needs after a frame, decided from the silence and the words already
        heard: end it, say where it stands, or have more of it heard."""
        if self.silence_ms >= self.max_silence:
            return await self._end_turn()
        if self.silence_ms >= min(HEAR_AFTER_MS, self.min_silence):
            self._hear(self.voiced)  # the candidate final text, heard once per pause
            if self.silence_ms < self.min_silence or self.checked:
                return
            text = await self._text()  # waits only when hearing is slower than the pause
            finished = _finished(text)
            if self.u3:
                self.checked = True
                if finished:
                    return await self._end_turn()
                # the pause did not end the turn: a partial says where it stands
                return await self._send_turn(final=False)
            if _eot_confidence(finished, self.silence_ms) >= self.threshold:
                return await self._end_turn()
            return
        news_ms = (self.voiced - self.partial_sent) * 1000 // self.rate
        if (not self.under_way and news_ms >= PARTIAL_EVERY_MS
                and time.monotonic() >= self.next_partial):
            self._hear(self.voiced, partial=True)

    def _hear(self, voiced: int, *, partial: bool = False) -> asyncio.Task[str]:
        """The hearing of the turn's first ``voiced`` samples, started on the service's
        worker unless it is under way or done."""
        task = self.under_way.get(voiced)
        if task is None and self.heard is not None and self.heard[0] == voiced:
            task = asyncio.get_running_loop().create_future()  # type: ignore[assignment]
            task.set_result(self.heard[1])
        if task is None:
            assert self.speech is not None
            tail = voiced + self.rate * LEAD_MS // 1000
            task = asyncio.get_running_loop().create_task(
                self._hearing(self.turn_order, voiced,
                              self.lead + self.speech[:tail].tobytes(), partial))
            self.under_way[voiced] = task
        return task

    async def _hearing(self, turn: int, voiced: int, pcm: bytes, partial: bool) -> str:
        t0 = time.monotonic()
        try:
            text = await asyncio.get_running_loop().run_in_executor(
                self.service.hearing, self.service.hear, pcm)
        except Exception:  # a recognizer's failure is heard as nothing, not a dead session
            logging.getLogger("voicenb.sim").exception("hearing a streamed turn failed")
            text = ""
        if turn != self.turn_order or self.speech is None:
            return text  # for a turn that has ended meanwhile
        self.under_way.pop(voiced, None)
        self.next_partial = time.monotonic() + (time.monotonic() - t0)
        if self.heard is None or voiced >= self.heard[0]:
            self.heard = (voiced, text)
        if partial and self.silence_ms < min(HEAR_AFTER_MS, self.min_silence):
            try:
                await self._send_turn(final=False)
            except ConnectionClosed:  # the client went away: the session's reader ends it
                pass
        return text

    async def _text(self) -> str:
        """What the voiced part of the turn says, heard (or waited for) now."""
        return await asyncio.shield(self._hear(self.voiced))

    def _words(self, words: list[str], start_ms: int, span: int, final: bool
               ) -> list[dict[str, Any]]:
        return [{"text": w, "start": start_ms + i * span, "end": start_ms + (i + 1) * span,
                 "confidence": round(0.86 + 0.1 * ((i * 7) % 10) / 10, 3),
                 "word_is_final": final or i < len(words) - 1} for i, w in enumerate(words)]

    async def _send_turn(self, *, final: bool) -> None:
        assert self.speech is not None and self.heard is not None
        voiced, text = self.heard
        self.partial_sent = voiced
        words = text.split()
        if not final:
            # reveal words as the speech goes on
            expected = max(1, len(words) * 0.35 * self.rate)  # ~0.35 s a word
            words = words[: max(1, int(len(words) * min(1.0, voiced / expected)))]
        start_ms = self.speech_start * 1000 // self.rate
        span = max(1, (voiced * 1000 // self.rate) // max(1, len(words)))
        plain = [w.strip(".,?!;:").lower() for w in words]
        payload: dict[str, Any] = {
            "type": "Turn", "turn_order": self.turn_order, "turn_is_formatted": False,
            "end_of_turn": final, "end_of_turn_confidence": 0.0,
            "transcript": " ".join(plain), "words": self._words(plain, start_ms, span, final),
            "utterance": ""}
        if self.speaker_labels:
            payload["speaker_label"] = "A" if voiced >= self.rate else "UNKNOWN"
        if final and self.language_detection:
            payload.update(language_code="en", language_confidence=0.98)
        messages = [payload]
        if self.u3:
            if final:  # formatted at once, and certain (the u3-rt-pro spec)
                payload.update(turn_is_formatted=True, end_of_turn_confidence=1.0,
                               transcript=text, utterance=text,
                               words=self._words(words, start_ms, span, final))
        else:
            finished = _finished(text) and len(words) == len(text.split())
            payload["end_of_turn_confidence"] = _eot_confidence(finished, self.silence_ms)
            if final:
                payload["utterance"] = payload["transcript"]
                if self.format_turns:
                    messages.append({**payload, "turn_is_formatted": True,
                                     "transcript": text, "utterance": text})
        if final:  # the turn is over before anything is awaited
            self.service.count("turns")
            self.turn_order += 1
            self.speech, self.heard = None, None
            self.under_way = {}
        for message in messages:
            await self.ws.send(json.dumps(message))

    async def _end_turn(self) -> None:
        """Send the turn's final transcript, once its voiced part is heard."""
        if self.speech is None:
            return
        await self._text()
        await self._send_turn(final=True)
