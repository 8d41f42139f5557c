"""OpenAI's Realtime API (GA, speech to speech over a WebSocket), simulated: ``/v1/realtime``
on the simulator's HTTP port, so the official SDK's ``client.realtime.connect(model=...)``
works unchanged against ``base_url=sim.url + "/v1"``.

Events as OpenAI's OpenAPI spec defines them (``RealtimeClientEvent*``,
``RealtimeServerEvent*``, the GA session ``RealtimeSessionCreateResponseGA``);
tests/test_sim_realtime.py validates every frame both ways against the facts encoded in
tests/_realtime_spec.py. What a session does:

- On connect ``session.created`` with the defaults (voice ``alloy``, the spec's default;
  ``audio/pcm`` at 24 kHz both ways; ``server_vad`` with threshold 0.5, 300 ms prefix padding,
  500 ms silence, ``create_response`` and ``interrupt_response`` on; no input transcription).
  ``session.update`` merges into it and answers ``session.updated``; an unknown voice,
  transcription model, format or turn detection is an ``error`` event (``invalid_value``) and
  the session is unchanged. The voice cannot change once the model has spoken.
- ``input_audio_buffer.append`` (base64 PCM16 at 24 kHz) feeds the buffer. Server VAD (an
  energy detector on 20 ms frames; the threshold scales its level) says
  ``input_audio_buffer.speech_started`` (``audio_start_ms`` includes the prefix padding) and,
  after ``silence_duration_ms`` of quiet, ``speech_stopped`` (``audio_end_ms`` includes the
  silence), then ``input_audio_buffer.committed`` and the user item's
  ``conversation.item.added`` / ``.done``. ``semantic_vad`` behaves like ``server_vad`` here.
  With ``turn_detection: null`` the client commits (``input_audio_buffer.commit``).
- The turn is heard as :mod:`voicenb.sim._streaming` hears it (registered clips by their
  sound, else the local engine), on a worker thread, never in the loop. With transcription
  on, ``conversation.item.input_audio_transcription.delta`` (word by word) then
  ``.completed`` (usage in tokens) follow.
- The answer (``create_response``, or ``response.create``) is the chat simulator's
  deterministic "(simulated answer) ..." for the conversation so far: ``response.created``,
  ``rate_limits.updated``, ``response.output_item.added``, ``conversation.item.added``,
  ``response.content_part.added``, then per sentence ``response.output_audio_transcript.delta``
  (word by word) and ``response.output_audio.delta`` (espeak-ng speech at 24 kHz, the TTS
  simulator's words, 100 ms a frame), then ``response.output_audio.done``,
  ``response.output_audio_transcript.done``, ``response.content_part.done``,
  ``response.output_item.done``, ``conversation.item.done`` and ``response.done`` with
  ``usage``. Speech starting while it plays cancels it when ``interrupt_response`` is on:
  ``response.done`` with status ``cancelled`` (reason ``turn_detected``); ``response.cancel``
  does the same (reason ``client_cancelled``), and with no response active is an ``error``.
- ``conversation.item.create`` adds a message: a user's ``input_text`` (or ``input_audio``,
  heard as a turn is), an assistant's ``output_text`` (the spec: it "cannot populate assistant
  audio messages"), a system's ``input_text``; appended, or after ``previous_item_id``
  (``root``: first). It answers ``conversation.item.added`` and ``.done``, and later answers
  take it into account as they do the spoken turns (how a client gives a new session the
  conversation so far).
- ``conversation.item.truncate`` cuts an assistant item's audio (and its transcript, in the
  words' proportion) and answers ``conversation.item.truncated``; an unknown item or an
  ``audio_end_ms`` past its audio is an ``error``. ``input_audio_buffer.clear`` ->
  ``input_audio_buffer.cleared``.
- A message that is not JSON, has an unknown ``type`` or a missing or mistyped field: an
  ``error`` event (``invalid_request_error``) naming the client's ``event_id``; the session
  stays open, as the spec says most errors leave it.

Usage: audio tokens are proportional to audio length, at the rates OpenAI's Realtime cost
guide gives (user audio 1 token per 100 ms, assistant audio 1 token per 50 ms:
:data:`INPUT_AUDIO_TOKENS_PER_S`, :data:`OUTPUT_AUDIO_TOKENS_PER_S`); text at the chat
simulator's four characters a token. Each response's input is the whole conversation so far
(the instructions as text, every earlier turn's audio), and what an earlier response already
read counts as cached once over 1,024 tokens (whole 64-token blocks).

Faults (:meth:`RealtimeService.inject`): ``"drop"`` breaks the socket after the next
answer's first audio (no close frame), ``"error"`` fails the next response with a
``server_error`` event, ``"rate_limit"`` fails it with a rate-limit error in the shape of the
chat API's 429 (type ``tokens``, code ``rate_limit_exceeded``); both end with ``response.done``
status ``failed``. :meth:`RealtimeService.drop_sessions` breaks every open socket.
:attr:`RealtimeService.socket_faults` (:class:`~voicenb.sim._sockets.SocketFaults`) fails sockets on
demand: asked at each client event and at each server event, so a fault may strike while an
answer is being sent.
``stats`` counts sessions, refused, responses, cancels, truncates, errors, turns,
items_created, faults (socket faults acted out), audio_in_s and audio_out_s.

Assumptions, where nothing was found to say: a wrong or missing key is accepted at the upgrade
and answered by an ``error`` event (``invalid_api_key``) and close 1008 (a 2024 report on
openai/openai-realtime-api-beta#2: a random key "gets a successful connection and a different
error message as a websocket message"); an unknown model is ``model_not_found`` the same way;
the time to first audio (:data:`TTFA_S`, from the end of speech) and the generation speed
(:data:`SPEED`); the error codes and wording of refused client events.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import math
import secrets
import threading
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ._openai import answer_for, count_tokens, tokens_of
from ._registry import Registry
from ._server import App
from ._sockets import SessionFaults, SocketFaults, SocketServer
from ._tts import SpeechOptions, frames, resample, sentences, speak_tokens

log = logging.getLogger("voicenb.sim")
#: websockets logs each handshake (with its Authorization header) at DEBUG: not here
_WS_LOG = logging.getLogger("voicenb.sim.realtime.websocket")
_WS_LOG.setLevel(logging.INFO)

PATH = "/v1/realtime"
RATE = 24_000
#: RealtimeSessionCreateRequestGA.model's enum
MODELS = ("gpt-realtime", "gpt-realtime-1.5", "gpt-realtime-2", "gpt-realtime-2.1",
          "gpt-realtime-2.1-mini", "gpt-realtime-2025-08-28", "gpt-4o-realtime-preview",
          "gpt-4o-realtime-preview-2024-10-01", "gpt-4o-realtime-preview-2024-12-17",
          "gpt-4o-realtime-preview-2025-06-03", "gpt-4o-mini-realtime-preview",
          "gpt-4o-mini-realtime-preview-2024-12-17", "gpt-realtime-mini",
          "gpt-realtime-mini-2025-10-06", "gpt-realtime-mini-2025-12-15", "gpt-audio-1.5",
          "gpt-audio-mini", "gpt-audio-mini-2025-10-06", "gpt-audio-mini-2025-12-15")
#: VoiceIdsShared's enum; the session's default is the spec's
VOICES = ("alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin",
          "cedar")
DEFAULT_VOICE = "alloy"
#: each voice spoken by one of the TTS simulator's espeak-ng variants (arbitrary, but apart)
_ESPEAK = {"alloy": "aai-jane", "ash": "aai-charles", "ballad": "aai-george",
           "coral": "aai-alba", "echo": "aai-jean", "sage": "aai-anna", "shimmer": "aai-eve",
           "verse": "aai-michael", "marin": "aai-mary", "cedar": "aai-paul"}
#: AudioTranscription.model's enum
TRANSCRIBE_MODELS = ("whisper-1", "gpt-transcribe", "gpt-live-transcribe",
                     "gpt-4o-mini-transcribe", "gpt-4o-mini-transcribe-2025-12-15",
                     "gpt-4o-transcribe", "gpt-4o-transcribe-diarize", "gpt-realtime-whisper")
#: RealtimeTurnDetection's server_vad defaults (its descriptions)
VAD_DEFAULTS = {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                "silence_duration_ms": 500, "create_response": True,
                "interrupt_response": True}
#: user audio 1 token per 100 ms, assistant audio 1 token per 50 ms (the cost guide)
INPUT_AUDIO_TOKENS_PER_S = 10
OUTPUT_AUDIO_TOKENS_PER_S = 20
#: prompt caching starts at 1,024 tokens, in 64-token blocks
CACHE_MIN, CACHE_BLOCK = 1024, 64
#: Assumption: seconds from the end of speech (or a response.create) to the first audio
TTFA_S = 0.5
#: Assumption: audio seconds generated per wall-clock second ("faster than real time")
SPEED = 2.0
FRAME_MS = 20           # the detector's resolution
AUDIO_DELTA_MS = 100    # audio in one response.output_audio.delta
SPEECH_LEVEL = 300      # peak amplitude at threshold 0.5 (the streaming simulator's level)
SESSION_S = 60 * 60     # a session's life (expires_at)
CLOSE_POLICY = 1008
DEFAULT_INSTRUCTIONS = ("You are a helpful, witty, and friendly AI, simulated by voicenb: "
                        "your answers are deterministic and say so.")
FAULTS = ("drop", "error", "rate_limit")
#: rate_limits.updated: (name, limit) as the spec's example shows them
RATE_LIMITS = (("requests", 1000), ("tokens", 50_000))
BAD_KEY = ("Incorrect API key provided. You can find your API key at "
           "https://platform.openai.com/account/api-keys.")
NO_KEY = ("You didn't provide an API key. You need to provide your API key in an "
          "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).")

#: the client events a session reads: required fields and their types (the spec's)
CLIENT_EVENTS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "session.update": {"session": dict},
    "input_audio_buffer.append": {"audio": str},
    "input_audio_buffer.commit": {},
    "input_audio_buffer.clear": {},
    "output_audio_buffer.clear": {},
    "conversation.item.create": {"item": dict},
    "conversation.item.retrieve": {"item_id": str},
    "conversation.item.truncate": {"item_id": str, "content_index": int,
                                   "audio_end_ms": int},
    "conversation.item.delete": {"item_id": str},
    "response.create": {},
    "response.cancel": {},
}


def _id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(15).replace('-', 'x').replace('_', 'y')[:20]}"


def _ms(samples: int) -> int:
    return samples * 1000 // RATE


class _Refused(Exception):
    """A client event the session refuses: the ``error`` event's fields."""

    def __init__(self, message: str, code: str, param: str | None = None,
                 type_: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.error = {"type": type_, "code": code, "message": message, "param": param}


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "format" \
                and key != "turn_detection":
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def default_session(model: str) -> dict[str, Any]:
    """The session as ``session.created`` shows it (fields the spec types as objects are
    left out rather than sent as null)."""
    return {"type": "realtime", "object": "realtime.session", "id": _id("sess"),
            "model": model, "output_modalities": ["audio"],
            "instructions": DEFAULT_INSTRUCTIONS, "tools": [], "tool_choice": "auto",
            "max_output_tokens": "inf", "expires_at": int(time.time()) + SESSION_S,
            "audio": {"input": {"format": {"type": "audio/pcm", "rate": RATE},
                                "turn_detection": {**VAD_DEFAULTS, "idle_timeout_ms": None}},
                      "output": {"format": {"type": "audio/pcm", "rate": RATE},
                                 "voice": DEFAULT_VOICE, "speed": 1.0}}}


def check_session(session: dict[str, Any], voice_locked: str | None) -> None:
    """Refuse what the simulator (or the service) does not take in a ``session.update``."""
    if session.get("type", "realtime") != "realtime":
        raise _Refused(f"Invalid value: {session.get('type')!r}. Supported values are: "
                       "'realtime'.", "invalid_value", "session.type")
    model = session.get("model")
    if model is not None and model not in MODELS:
        raise _Refused(f"The model `{model}` does not exist or you do not have access to it.",
                       "model_not_found", "session.model")
    audio = session.get("audio") or {}
    voice = (audio.get("output") or {}).get("voice")
    if voice is not None:
        if not isinstance(voice, str) or voice not in VOICES:
            raise _Refused(f"Invalid value: {voice!r}. Supported values are: "
                           f"{', '.join(repr(v) for v in VOICES)}.", "invalid_value",
                           "session.audio.output.voice")
        if voice_locked is not None and voice != voice_locked:
            raise _Refused("Cannot update a conversation's voice if assistant audio is "
                           "present.", "cannot_update_voice", "session.audio.output.voice")
    for side in ("input", "output"):
        fmt = (audio.get(side) or {}).get("format")
        if fmt is not None and (not isinstance(fmt, dict) or fmt.get("type") != "audio/pcm"
                                or fmt.get("rate", RATE) != RATE):
            raise _Refused(f"The simulator takes audio/pcm at {RATE} Hz only, not {fmt!r}.",
                           "invalid_value", f"session.audio.{side}.format")
    entry = audio.get("input") or {}
    transcription = entry.get("transcription")
    if isinstance(transcription, dict) and transcription.get("model") not in TRANSCRIBE_MODELS:
        raise _Refused(f"Invalid value: {transcription.get('model')!r}. Supported values "
                       f"are: {', '.join(repr(m) for m in TRANSCRIBE_MODELS)}.",
                       "invalid_value", "session.audio.input.transcription.model")
    detection = entry.get("turn_detection", {})
    if detection is not None and (not isinstance(detection, dict) or detection.get(
            "type", "server_vad") not in ("server_vad", "semantic_vad")):
        raise _Refused(f"Invalid value: {detection!r}. Supported values are: 'server_vad', "
                       "'semantic_vad' or null.", "invalid_value",
                       "session.audio.input.turn_detection")


def _content(role: str, content: Any, kinds: tuple[str, ...]
             ) -> tuple[list[str], bytes, list[dict[str, Any]]]:
    """A created message's texts, audio, and content as the item shows it."""
    if not isinstance(content, list) or not content:
        raise _Refused("Missing required parameter: 'item.content'.",
                       "missing_required_parameter", "item.content")
    texts, audio, shown = [], b"", []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in kinds:
            raise _Refused(f"Invalid value: {kind!r}. Supported values for a {role} message "
                           f"are: {', '.join(repr(k) for k in kinds)}.", "invalid_value",
                           "item.content.type")
        if kind == "input_audio":
            try:
                pcm = base64.b64decode(part.get("audio") or "", validate=True)
            except (binascii.Error, ValueError):
                raise _Refused("Invalid 'audio': expected base64-encoded PCM16 audio.",
                               "invalid_value", "item.content.audio") from None
            audio += pcm[: len(pcm) // 2 * 2]
            continue
        if not isinstance(part.get("text"), str):
            raise _Refused("Invalid type for 'item.content.text': expected a string.",
                           "invalid_type", "item.content.text")
        texts.append(part["text"])
        shown.append({"type": kind, "text": part["text"]})
    return texts, audio, shown


def read_event(message: str | bytes) -> dict[str, Any]:
    """A client event, checked against :data:`CLIENT_EVENTS`; :class:`_Refused` if not."""
    if isinstance(message, bytes):
        raise _Refused("Binary frames are not supported: send JSON text events.",
                       "invalid_event")
    try:
        data = json.loads(message)
    except ValueError:
        raise _Refused("The event is not valid JSON.", "invalid_json") from None
    if not isinstance(data, dict):
        raise _Refused("The event must be a JSON object.", "invalid_event")
    kind = data.get("type")
    if kind is None:
        raise _Refused("The 'type' field is missing.", "invalid_event", "type")
    if kind not in CLIENT_EVENTS:
        raise _Refused(f"Invalid value: {kind!r}. Supported values are: "
                       f"{', '.join(repr(k) for k in CLIENT_EVENTS)}.", "invalid_value",
                       "type")
    for name, kind_of in CLIENT_EVENTS[kind].items():
        if name not in data:
            raise _Refused(f"Missing required parameter: '{name}'.",
                           "missing_required_parameter", name)
        value = data[name]
        if not isinstance(value, kind_of) or isinstance(value, bool):
            expected = {str: "a string", int: "an integer", dict: "an object"}[kind_of]
            raise _Refused(f"Invalid type for '{name}': expected {expected}, but got "
                           f"{type(value).__name__} instead.", "invalid_type", name)
    return data


# -- the service -------------------------------------------------------------------------------

class RealtimeService:
    """The simulated Realtime API: a websockets server the app's port hands upgrades under
    ``/v1/realtime`` to. ``ttfa`` (seconds from the end of speech to the first audio) and
    ``speed`` (audio seconds made per second; None: as fast as espeak-ng makes it) pace
    answers and may change on a running simulator."""

    def __init__(self, app: App, registry: Registry, *, key: str | None,
                 ttfa: float = TTFA_S, speed: float | None = SPEED) -> None:
        self.app = app
        self.registry = registry
        self.key = key
        self.ttfa = ttfa
        self.speed = speed
        self.stats: Counter[str] = Counter()
        #: faults to act out, in order (see :meth:`inject`)
        self.faults: deque[str] = deque()
        self._lock = threading.Lock()
        #: espeak-ng runs (a process a word) and the turns' hearing: never in the loop
        self.voices = ThreadPoolExecutor(4, thread_name_prefix="voicenb-sim-rt-espeak")
        self.work = ThreadPoolExecutor(2, thread_name_prefix="voicenb-sim-rt")
        self._ws = SocketServer("voicenb-sim-realtime", "the simulated Realtime API")
        self._open: set[Any] = set()  # the sessions' sockets (touched in the loop only)
        #: the latest client events of every session, as sent (for tests to check)
        self.received: deque[Any] = deque(maxlen=2000)
        #: (monotonic time, type) of every event sent, latest last (for benchmarks)
        self.sent: deque[tuple[float, str]] = deque(maxlen=20_000)

    def count(self, name: str, n: float = 1) -> None:
        with self._lock:
            self.stats[name] += n

    @property
    def socket_faults(self) -> SocketFaults:
        """Socket failures on demand (:class:`~voicenb.sim._sockets.SocketFaults`); not
        :attr:`faults`, the answers' failures."""
        return self._ws.faults

    def inject(self, kind: str, times: int = 1) -> None:
        """Act out ``kind`` (one of :data:`FAULTS`) on the next ``times`` responses."""
        if kind not in FAULTS:
            raise ValueError(f"unknown fault {kind!r}; choose from {FAULTS}")
        with self._lock:
            self.faults.extend([kind] * times)

    def _fault(self) -> str | None:
        with self._lock:
            return self.faults.popleft() if self.faults else None

    def hear(self, pcm24k: bytes) -> str:
        """What a committed turn says (CPU work: runs on :attr:`work`, never in the loop)."""
        pcm = resample(pcm24k, RATE, 16_000)
        return self.registry.hear_pcm(pcm, len(pcm) / 32_000, service="realtime",
                                      remember=False, resampled=True)

    def speak(self, tokens: list[str], voice: str, *, lead: bool) -> bytes:
        """Speech for ``tokens`` at 24 kHz (CPU work: never in the loop)."""
        options = SpeechOptions(voice_id=_ESPEAK.get(voice, "aai-jane"), sample_rate=RATE)
        return speak_tokens(tokens, options, self.voices, lead=lead).pcm

    # -- life cycle ----------------------------------------------------------------------------

    def start(self, host: str = "127.0.0.1") -> tuple[str, int]:
        """Start the session server and have the app's port hand it upgrades."""
        # no size limit of its own: the spec allows 15 MiB of audio an event
        address = self._ws.start(self._session, host, compression=None, max_size=None,
                                 logger=_WS_LOG)
        self.app.websocket_routes[PATH] = address
        return address

    def stop(self) -> None:
        self.app.websocket_routes.pop(PATH, None)
        self._ws.stop()
        self.work.shutdown(wait=False, cancel_futures=True)
        self.voices.shutdown(wait=False, cancel_futures=True)

    def drop_sessions(self, timeout: float = 10.0) -> int:
        """Break every open session's socket, as a network failure does (no close frame);
        the number broken."""
        return self._ws.abort(lambda: self._open, timeout)

    # -- a connection ----------------------------------------------------------------------------

    async def _session(self, ws: Any) -> None:
        parts = urlsplit(ws.request.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        header = ws.request.headers.get("Authorization") or ""
        refusal = None
        if self.key is not None and not header.strip():
            refusal = _Refused(NO_KEY, "missing_api_key")
        elif self.key is not None and header != f"Bearer {self.key}":
            refusal = _Refused(BAD_KEY, "invalid_api_key")
        elif "model" not in query:
            refusal = _Refused("Missing required parameter: 'model'.",
                               "missing_required_parameter", "model")
        elif query["model"] not in MODELS:
            refusal = _Refused(f"The model `{query['model']}` does not exist or you do not "
                               "have access to it.", "model_not_found", "model")
        if refusal is not None:
            self.count("refused")
            with contextlib.suppress(Exception):
                await ws.send(json.dumps({"type": "error", "event_id": _id("event"),
                                          "error": {**refusal.error, "event_id": None}}))
                await ws.close(CLOSE_POLICY, refusal.error["code"])
            return
        self.count("sessions")
        self._open.add(ws)
        try:
            await _Session(self, ws, query["model"]).run()
        finally:
            self._open.discard(ws)


@dataclass
class _Item:
    id: str
    role: str
    text: str = ""                  # the transcript (user) or the answer's transcript
    samples: int = 0                # its audio, in samples at 24 kHz
    audio_tokens: int = 0
    typed: bool = False             # given as text (conversation.item.create)


@dataclass
class _Response:
    id: str
    item: _Item
    started: float
    task: asyncio.Task[None] | None = None
    said: str = ""                  # transcript sent so far
    output_text_tokens: int = 0
    usage_in: dict[str, Any] = field(default_factory=dict)
    error: dict[str, Any] | None = None
    failed: bool = False


class _Session:
    def __init__(self, service: RealtimeService, ws: Any, model: str) -> None:
        self.service, self.ws = service, ws
        self.session = default_session(model)
        self.conversation_id = _id("conv")
        self.items: list[_Item] = []
        self.response: _Response | None = None
        self.voice_locked: str | None = None
        self.samples = 0                    # all audio appended, in samples
        self.buffer = bytearray()           # the uncommitted input audio
        self.buffer_start = 0               # its first sample's index
        self.pending = bytearray()          # samples not yet a whole detector frame
        self.speech_at: int | None = None   # where the turn's speech began (with padding)
        self.silence_ms = 0
        self.next_user_item = _id("item")
        self.last_input_tokens = 0
        self.tasks: set[asyncio.Task[Any]] = set()
        self.send_lock = asyncio.Lock()
        self.faults: SessionFaults | None = None   # the socket faults planned for it

    # -- plumbing ------------------------------------------------------------------------------

    async def send(self, event: dict[str, Any]) -> None:
        async with self.send_lock:
            await self.strike(sending=True)
            await self.ws.send(json.dumps({"event_id": _id("event"), **event}))
            self.service.sent.append((time.monotonic(), event["type"]))

    async def strike(self, *, sending: bool = False) -> None:
        """Act out a socket fault that is due; ConnectionClosed when it ended the socket. At
        a server event (``sending``) only a fault due by time strikes: frames count the
        client's events."""
        from websockets.exceptions import ConnectionClosedError

        faults = self.faults
        if faults is None:
            return
        if await faults.strike(self.ws, sending=sending):
            self.service.count("faults")
            raise ConnectionClosedError(None, None)

    async def error(self, error: dict[str, Any], event_id: str | None = None) -> None:
        self.service.count("errors")
        await self.send({"type": "error", "error": {**error, "event_id": event_id}})

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    @property
    def detection(self) -> dict[str, Any] | None:
        return self.session["audio"]["input"].get("turn_detection")

    @property
    def voice(self) -> str:
        return self.session["audio"]["output"]["voice"]

    @property
    def transcription(self) -> dict[str, Any] | None:
        return self.session["audio"]["input"].get("transcription")

    async def run(self) -> None:
        from websockets.exceptions import ConnectionClosed

        self.faults = self.service.socket_faults.session()
        try:
            await self.send({"type": "session.created", "session": self.session})
            async for message in self.ws:
                await self.strike()
                with contextlib.suppress(ValueError):
                    self.service.received.append(json.loads(message))
                try:
                    event = read_event(message)
                    await self.handle(event)
                except _Refused as refused:
                    event_id = None
                    with contextlib.suppress(Exception):
                        event_id = json.loads(message).get("event_id")
                    await self.error(refused.error, event_id if isinstance(event_id, str)
                                     else None)
        except ConnectionClosed:
            pass
        finally:
            for task in list(self.tasks):
                task.cancel()

    # -- client events -----------------------------------------------------------------------

    async def handle(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "session.update":
            check_session(event["session"], self.voice_locked)
            update = {k: v for k, v in event["session"].items() if k not in ("id", "object")}
            self.session = _merge(self.session, update)
            entry = self.session["audio"]["input"]
            if isinstance(entry.get("turn_detection"), dict):  # the service fills defaults in
                given = entry["turn_detection"]
                defaults = {**VAD_DEFAULTS, "idle_timeout_ms": None} \
                    if given.get("type", "server_vad") == "server_vad" else {
                        "type": "semantic_vad", "eagerness": "auto", "create_response": True,
                        "interrupt_response": True}
                entry["turn_detection"] = {**defaults, **given}
            await self.send({"type": "session.updated", "session": self.session})
        elif kind == "input_audio_buffer.append":
            try:
                pcm = base64.b64decode(event["audio"], validate=True)
            except (binascii.Error, ValueError):
                raise _Refused("Invalid 'audio': expected base64-encoded PCM16 audio.",
                               "invalid_value", "audio") from None
            await self.append(pcm[: len(pcm) // 2 * 2])
        elif kind == "input_audio_buffer.commit":
            if len(self.buffer) < RATE // 10 * 2:
                raise _Refused(f"Error committing input audio buffer: buffer too small. "
                               f"Expected at least 100ms of audio, but buffer only has "
                               f"{_ms(len(self.buffer) // 2)}ms of audio.",
                               "input_audio_buffer_commit_empty")
            await self.commit(None)
        elif kind == "input_audio_buffer.clear":
            self.buffer.clear()
            self.buffer_start, self.speech_at = self.samples, None
            await self.send({"type": "input_audio_buffer.cleared"})
        elif kind == "response.create":
            if self.response is not None:
                raise _Refused("Conversation already has an active response in progress: "
                               f"{self.response.id}. Wait until the response is finished "
                               "before creating a new one.",
                               "conversation_already_has_active_response")
            self.start_response(time.monotonic())
        elif kind == "response.cancel":
            wanted = event.get("response_id")
            if self.response is None or (wanted is not None and wanted != self.response.id):
                raise _Refused("Cancellation failed: no active response found.",
                               "response_cancel_not_active")
            await self.cancel("client_cancelled")
        elif kind == "conversation.item.truncate":
            await self.truncate(event)
        elif kind == "conversation.item.create":
            await self.create_item(event)
        else:  # the rest of the spec's client events: known, not simulated
            raise _Refused(f"The simulator does not implement {kind!r}.", "not_implemented",
                           "type")

    # -- input audio and turn detection --------------------------------------------------------

    async def append(self, pcm: bytes) -> None:
        import array

        self.service.count("audio_in_s", len(pcm) / 2 / RATE)
        self.buffer += pcm
        self.samples += len(pcm) // 2
        detection = self.detection
        if detection is None:
            return
        self.pending += pcm
        step = RATE * FRAME_MS // 1000 * 2
        level = SPEECH_LEVEL * float(detection.get("threshold", 0.5)) / 0.5
        silence = int(detection.get("silence_duration_ms", VAD_DEFAULTS["silence_duration_ms"]))
        while len(self.pending) >= step:
            frame = array.array("h", bytes(self.pending[:step]))
            del self.pending[:step]
            end = self.samples - len(self.pending) // 2   # the sample after this frame
            loud = max(max(frame), -min(frame)) > level
            if self.speech_at is None:
                if loud:
                    padding = int(detection.get("prefix_padding_ms", 300)) * RATE // 1000
                    self.speech_at = max(self.buffer_start, end - len(frame) - padding)
                    self.silence_ms = 0
                    await self.send({"type": "input_audio_buffer.speech_started",
                                     "audio_start_ms": _ms(self.speech_at),
                                     "item_id": self.next_user_item})
                    if self.response is not None and detection.get("interrupt_response",
                                                                   True):
                        await self.cancel("turn_detected")
                continue
            self.silence_ms = 0 if loud else self.silence_ms + FRAME_MS
            if self.silence_ms >= silence:
                await self.send({"type": "input_audio_buffer.speech_stopped",
                                 "audio_end_ms": _ms(end), "item_id": self.next_user_item})
                await self.commit(end, speech=True)

    async def commit(self, end: int | None, *, speech: bool = False) -> None:
        """Make the buffer (up to ``end``) a user item, and hear it; then answer if the turn
        detection says so."""
        stopped = time.monotonic()
        end = self.samples if end is None else end
        start = self.speech_at if speech and self.speech_at is not None else self.buffer_start
        cut = (end - self.buffer_start) * 2
        pcm = bytes(self.buffer[(start - self.buffer_start) * 2:cut])
        del self.buffer[:cut]
        self.buffer_start, self.speech_at = end, None
        item = _Item(self.next_user_item, "user", samples=len(pcm) // 2,
                     audio_tokens=math.ceil(len(pcm) / 2 / RATE * INPUT_AUDIO_TOKENS_PER_S))
        self.next_user_item = _id("item")
        previous = self.items[-1].id if self.items else None
        self.items.append(item)
        self.service.count("turns")
        await self.send({"type": "input_audio_buffer.committed", "previous_item_id": previous,
                         "item_id": item.id})
        user = {"id": item.id, "object": "realtime.item", "type": "message",
                "status": "completed", "role": "user", "content": [{"type": "input_audio"}]}
        await self.send({"type": "conversation.item.added", "previous_item_id": previous,
                         "item": user})
        await self.send({"type": "conversation.item.done", "previous_item_id": previous,
                         "item": user})
        heard = asyncio.get_running_loop().run_in_executor(self.service.work,
                                                           self.service.hear, pcm)
        detection = self.detection
        answer = speech and detection is not None and detection.get("create_response", True)
        self.spawn(self._heard(item, heard, stopped, answer))

    async def _heard(self, item: _Item, heard: Any, stopped: float, answer: bool) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            item.text = await heard
        except Exception:  # a recognizer's failure is heard as nothing, not a dead session
            log.exception("hearing a realtime turn failed")
            item.text = ""
        with contextlib.suppress(ConnectionClosed):  # a fault may cut it meanwhile
            await self._transcribed(item, stopped, answer)

    async def _transcribed(self, item: _Item, stopped: float, answer: bool) -> None:
        transcription = self.transcription
        if transcription:
            for piece in tokens_of(item.text):
                await self.send({"type": "conversation.item.input_audio_transcription.delta",
                                 "item_id": item.id, "content_index": 0, "delta": piece})
            out = count_tokens(item.text) if item.text else 0
            await self.send({
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": item.id, "content_index": 0, "transcript": item.text,
                "usage": {"type": "tokens", "input_tokens": item.audio_tokens,
                          "input_token_details": {"text_tokens": 0,
                                                  "audio_tokens": item.audio_tokens},
                          "output_tokens": out, "total_tokens": item.audio_tokens + out}})
        if answer and self.response is None:
            self.start_response(stopped)

    # -- responses -------------------------------------------------------------------------------

    def start_response(self, started: float) -> None:
        item = _Item(_id("item"), "assistant")
        response = _Response(_id("resp"), item, started)
        self.response = response
        self.service.count("responses")
        response.task = self.spawn(self._respond(response))

    def _response_json(self, response: _Response, status: str, *, details: dict[str, Any]
                       | None = None, usage: dict[str, Any] | None = None,
                       output: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "object": "realtime.response", "id": response.id, "status": status,
            "output": output or [], "conversation_id": self.conversation_id,
            "output_modalities": ["audio"], "max_output_tokens": "inf",
            "audio": {"output": {"format": {"type": "audio/pcm", "rate": RATE},
                                 "voice": self.voice}}}
        if details is not None:
            out["status_details"] = details
        if usage is not None:
            out["usage"] = usage
        return out

    def _item_json(self, item: _Item, status: str) -> dict[str, Any]:
        content = [{"type": "output_audio", "transcript": item.text}] if status != \
            "in_progress" else []
        return {"id": item.id, "object": "realtime.item", "type": "message",
                "status": status, "role": "assistant", "content": content}

    def _input_usage(self) -> dict[str, Any]:
        """The conversation so far, as this response's input."""
        text = count_tokens(self.session.get("instructions") or "")
        text += sum(count_tokens(i.text) for i in self.items if i.role != "user" or i.typed)
        audio = sum(i.audio_tokens for i in self.items)
        total = text + audio
        cached = self.last_input_tokens // CACHE_BLOCK * CACHE_BLOCK \
            if self.last_input_tokens >= CACHE_MIN else 0
        cached = min(cached, total)
        cached_text = min(cached, text)
        self.last_input_tokens = total
        return {"input_tokens": total, "input_token_details": {
            "cached_tokens": cached, "text_tokens": text, "image_tokens": 0,
            "audio_tokens": audio, "cached_tokens_details": {
                "text_tokens": cached_text, "image_tokens": 0,
                "audio_tokens": cached - cached_text}}}

    def _usage(self, response: _Response) -> dict[str, Any]:
        audio = response.item.audio_tokens
        text = response.output_text_tokens
        usage = {**response.usage_in, "output_tokens": text + audio,
                 "output_token_details": {"text_tokens": text, "audio_tokens": audio}}
        usage["total_tokens"] = usage["input_tokens"] + usage["output_tokens"]
        return usage

    async def _respond(self, response: _Response) -> None:
        from websockets.exceptions import ConnectionClosed

        item, loop = response.item, asyncio.get_running_loop()
        previous = self.items[-1].id if self.items else None
        messages = [{"role": i.role, "content": i.text} for i in self.items]
        response.usage_in = self._input_usage()
        fault = self.service._fault()
        try:
            await self.send({"type": "response.created",
                             "response": self._response_json(response, "in_progress")})
            remaining = 0 if fault == "rate_limit" else None
            await self.send({"type": "rate_limits.updated", "rate_limits": [
                {"name": name, "limit": limit,
                 "remaining": limit - 1 if remaining is None else remaining,
                 "reset_seconds": 60 if name == "requests" else 1.2}
                for name, limit in RATE_LIMITS]})
            if fault in ("error", "rate_limit"):
                return await self._fail(response, fault)
            self.items.append(item)
            where = {"response_id": response.id, "item_id": item.id, "output_index": 0,
                     "content_index": 0}
            await self.send({"type": "response.output_item.added", "response_id": response.id,
                             "output_index": 0, "item": self._item_json(item, "in_progress")})
            await self.send({"type": "conversation.item.added", "previous_item_id": previous,
                             "item": self._item_json(item, "in_progress")})
            await self.send({"type": "response.content_part.added", **where,
                             "part": {"type": "audio", "transcript": ""}})
            if not await self._speak(response, answer_for(messages), where, fault, loop):
                return  # the socket was dropped (a fault)
            item.text = response.said
            item.audio_tokens = math.ceil(item.samples / RATE * OUTPUT_AUDIO_TOKENS_PER_S)
            response.output_text_tokens = count_tokens(item.text)
            await self.send({"type": "response.output_audio.done", **where})
            await self.send({"type": "response.output_audio_transcript.done", **where,
                             "transcript": item.text})
            await self.send({"type": "response.content_part.done", **where,
                             "part": {"type": "audio", "transcript": item.text}})
            await self._close_item(response, previous, "completed")
            self.response = None
            await self.send({"type": "response.done", "response": self._response_json(
                response, "completed", usage=self._usage(response),
                output=[self._item_json(item, "completed")])})
        except ConnectionClosed:
            pass

    async def _speak(self, response: _Response, text: str, where: dict[str, Any],
                     fault: str | None, loop: asyncio.AbstractEventLoop) -> bool:
        """Say ``text``: each sentence's transcript deltas, then its audio, paced; False
        when a ``drop`` fault cut the socket."""
        item = response.item
        sent_at = response.started + self.service.ttfa
        for i, tokens in enumerate(sentences(text)):
            pcm = await loop.run_in_executor(
                self.service.work, lambda t=tokens, lead=i == 0:
                self.service.speak(t, self.voice, lead=lead))
            sentence = " ".join(tokens) + " "
            for piece in tokens_of(sentence if i < len(sentences(text)) - 1
                                   else sentence.rstrip()):
                response.said += piece
                await self.send({"type": "response.output_audio_transcript.delta",
                                 **where, "delta": piece})
            for chunk in frames(pcm, RATE, AUDIO_DELTA_MS):
                if (wait := sent_at - time.monotonic()) > 0:
                    await asyncio.sleep(wait)
                speed = self.service.speed
                sent_at = max(sent_at, time.monotonic()) + (
                    len(chunk) / 2 / RATE / speed if speed else 0)
                self.voice_locked = self.voice
                await self.send({"type": "response.output_audio.delta", **where,
                                 "delta": base64.b64encode(chunk).decode()})
                item.samples += len(chunk) // 2
                self.service.count("audio_out_s", len(chunk) / 2 / RATE)
                if fault == "drop":
                    self.ws.transport.abort()
                    return False
        return True

    async def _close_item(self, response: _Response, previous: str | None, status: str
                          ) -> None:
        item_json = self._item_json(response.item, status)
        await self.send({"type": "response.output_item.done", "response_id": response.id,
                         "output_index": 0, "item": item_json})
        await self.send({"type": "conversation.item.done", "previous_item_id": previous,
                         "item": item_json})

    async def _fail(self, response: _Response, fault: str) -> None:
        if fault == "rate_limit":
            error = {"type": "tokens", "code": "rate_limit_exceeded", "param": None,
                     "message": "Rate limit reached for gpt-realtime in organization "
                                "org-voicenb-sim on tokens per min (TPM): Limit 50000, Used "
                                "50000, Requested 1200. Please try again in 1.2s. Visit "
                                "https://platform.openai.com/account/rate-limits to learn "
                                "more."}
        else:
            error = {"type": "server_error", "code": "server_error", "param": None,
                     "message": "The server had an error while processing your request. "
                                "Sorry about that! (simulated)"}
        await self.error(error)
        self.response = None
        await self.send({"type": "response.done", "response": self._response_json(
            response, "failed", details={"type": "failed", "error": {
                "type": error["type"], "code": error["code"]}},
            usage=self._usage(response))})

    async def cancel(self, reason: str) -> None:
        """Stop the active response where it is: ``response.done`` status ``cancelled``."""
        response = self.response
        if response is None:
            return
        self.response = None
        self.service.count("cancels")
        if response.task is not None:
            response.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await response.task
        item = response.item
        output = []
        if item in self.items:
            item.text = response.said
            item.audio_tokens = math.ceil(item.samples / RATE * OUTPUT_AUDIO_TOKENS_PER_S)
            response.output_text_tokens = count_tokens(item.text) if item.text else 0
            at = self.items.index(item)
            await self._close_item(response, self.items[at - 1].id if at else None,
                                   "incomplete")
            output = [self._item_json(item, "incomplete")]
        await self.send({"type": "response.done", "response": self._response_json(
            response, "cancelled", details={"type": "cancelled", "reason": reason},
            usage=self._usage(response), output=output)})

    async def create_item(self, event: dict[str, Any]) -> None:
        """``conversation.item.create``: a message given as text (or a user's audio)."""
        given = event["item"]
        if given.get("type", "message") != "message":
            raise _Refused(f"The simulator takes message items only, not "
                           f"{given.get('type')!r}.", "not_implemented", "item.type")
        role = given.get("role")
        kinds = {"user": ("input_text", "input_audio"), "assistant": ("output_text",),
                 "system": ("input_text",)}
        if role not in kinds:
            raise _Refused(f"Invalid value: {role!r}. Supported values are: 'user', "
                           "'assistant' and 'system'.", "invalid_value", "item.role")
        texts, audio, shown = _content(role, given.get("content"), kinds[role])
        item_id = given.get("id") or _id("item")
        if any(i.id == item_id for i in self.items):
            raise _Refused(f"Item with id {item_id!r} already exists.", "invalid_value",
                           "item.id")
        previous = event.get("previous_item_id")
        if previous is None:
            at = len(self.items)
        elif previous == "root":
            at = 0
        else:
            at = next((n + 1 for n, i in enumerate(self.items) if i.id == previous), None)
            if at is None:
                raise _Refused(f"Previous item with id {previous!r} not found.",
                               "invalid_value", "previous_item_id")
        item = _Item(item_id, role, text=" ".join(t.strip() for t in texts if t.strip()),
                     samples=len(audio) // 2, typed=bool(texts),
                     audio_tokens=math.ceil(len(audio) / 2 / RATE * INPUT_AUDIO_TOKENS_PER_S))
        if audio:
            heard = await asyncio.get_running_loop().run_in_executor(
                self.service.work, self.service.hear, audio)
            item.text = " ".join(x for x in (item.text, heard) if x)
            shown.append({"type": "input_audio", "transcript": heard})
        self.items.insert(at, item)
        self.service.count("items_created")
        before = self.items[at - 1].id if at else None
        made = {"id": item.id, "object": "realtime.item", "type": "message",
                "status": "completed", "role": role, "content": shown}
        await self.send({"type": "conversation.item.added", "previous_item_id": before,
                         "item": made})
        await self.send({"type": "conversation.item.done", "previous_item_id": before,
                         "item": made})

    async def truncate(self, event: dict[str, Any]) -> None:
        item = next((i for i in self.items if i.id == event["item_id"]), None)
        if item is None or item.role != "assistant":
            raise _Refused(f"Invalid 'item_id': no assistant message {event['item_id']!r} in "
                           "the conversation.", "invalid_value", "item_id")
        if event["content_index"] != 0:
            raise _Refused("Invalid 'content_index': the message has one content part (0).",
                           "invalid_value", "content_index")
        end, length = event["audio_end_ms"], _ms(item.samples)
        if not 0 <= end <= length:
            raise _Refused(f"Audio content of {length}ms is already shorter than {end}ms",
                           "invalid_value", "audio_end_ms")
        words = item.text.split()
        item.text = " ".join(words[: round(len(words) * end / length)]) if length else ""
        item.samples = end * RATE // 1000
        self.service.count("truncates")
        await self.send({"type": "conversation.item.truncated", "item_id": item.id,
                         "content_index": 0, "audio_end_ms": end})


__all__ = ["RealtimeService", "MODELS", "VOICES", "DEFAULT_VOICE", "TRANSCRIBE_MODELS",
           "FAULTS", "TTFA_S", "SPEED"]
