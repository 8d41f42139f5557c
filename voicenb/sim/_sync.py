"""AssemblyAI's Sync API, simulated: ``POST /v1/transcribe`` (a whole clip),
``POST /v1/transcribe/live`` (the clip uploaded while it is recorded) and ``GET /v1/warm``.

Requests are ``multipart/form-data`` with an optional JSON ``config`` part and an ``audio``
part (``audio/wav``, or ``audio/pcm`` S16LE with ``sample_rate`` and ``channels`` in the
config); the model is the ``X-AAI-Model`` header. The documented limits and errors: 80 ms to
120 s, 40 MB, 16-bit, 8-48 kHz; 400 ``bad_audio`` / ``audio_too_short`` / ``bad_request``,
413 ``audio_too_large``, 415 ``unsupported_media_type``; ``{"error_code", "message"}``
bodies, and ``{"detail"}`` for auth and rate limits. On the live endpoint the ``config`` part
must come before the audio. The answer comes ``processing_s`` after the last byte arrived:
speech segments are transcribed while the upload runs, so only the last one is waited for.
"""

from __future__ import annotations

import json
import time
import uuid
import wave
from dataclasses import dataclass
from io import BytesIO
from typing import Any

from ..audio import Audio, pcm_to_wav
from ._registry import Registry
from ._server import App, Request, Response

#: models the Sync API routes to (the official SDK 1.8.2's SyncSpeechModel)
SYNC_MODELS = ("universal-3-5-pro",)
MODEL_HEADER = "X-AAI-Model"
MIN_MS, MAX_MS = 80, 120_000
MAX_BYTES = 40 * 1000 * 1000
RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)
#: ``config`` part fields (SyncTranscriptionConfig without ``model``, which is a header)
CONFIG_FIELDS = ("prompt", "keyterms_prompt", "conversation_context", "language_codes",
                 "sample_rate", "channels", "timestamps")
#: AssemblyAI's published processing time for a short clip
PROCESSING_S = 0.134


class _Refused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


def sync_error(status: int, message: str, headers: dict[str, str] | None = None,
               code: str | None = None) -> Response:
    """An error as the Sync API writes it: ``detail`` for auth and rate limits, else
    ``error_code`` and ``message``."""
    if status in (401, 429) or code is None and status not in (400, 413, 415, 500, 503, 504):
        return Response(status, {"detail": message}, headers=headers)
    code = code or {400: "bad_request", 413: "audio_too_large", 415: "unsupported_media_type",
                    500: "inference_error", 503: "capacity_exceeded",
                    504: "inference_timeout"}[status]
    return Response(status, {"error_code": code, "message": message}, headers=headers)


@dataclass
class SyncRequest:
    """What the simulator served, for tests: the model, the config and the audio's length."""

    path: str
    model: str
    config: dict[str, Any]
    content_type: str
    audio_ms: int
    session_id: str
    #: the service's time from the last byte to the answer (``request_time_ms``)
    request_ms: float = 0.0
    #: TCP_NODELAY of the simulator's end of the connection (bench.sync_api prints it)
    tcp_nodelay: int = 0


class SyncService:
    """The state behind the simulated Sync API: ``processing_s`` after the last byte (the
    published ~134 ms), and a log of :class:`SyncRequest`."""

    def __init__(self, app: App, registry: Registry, *, key: str,
                 processing_s: float = PROCESSING_S) -> None:
        self.app, self.registry, self.key = app, registry, key
        self.processing_s = processing_s
        self.served: list[SyncRequest] = []
        app.error_shape("/v1/transcribe", lambda status, msg, headers: sync_error(
            status, msg, headers))
        app.error_shape("/v1/warm", lambda status, msg, headers: sync_error(status, msg, headers))
        # the /v1 paths, and the unprefixed ones still served for older clients
        app.route("POST", "(?:/v1)?/transcribe", self.transcribe)
        app.route("POST", "(?:/v1)?/transcribe/(?:live|stream)", self.transcribe_live)
        app.route("GET", "(?:/v1)?/warm", self.warm)
        app.route("GET", "/sim/sync", self.log)

    def log(self, request: Request) -> Response:
        """What was served, for benchmarks that run the simulator in another process."""
        with self.app.lock:
            served = [vars(r) for r in self.served]
        return Response(200, {"served": served})

    def warm(self, request: Request) -> Response:
        self.app.count("sync_warm")
        return Response(200, {"status": "warm"})

    def transcribe(self, request: Request) -> Response:
        return self._serve(request, live=False)

    def transcribe_live(self, request: Request) -> Response:
        return self._serve(request, live=True)

    def _serve(self, request: Request, *, live: bool) -> Response:
        if request.headers.get("Authorization", "").removeprefix("Bearer ").strip() != self.key:
            return sync_error(401, "Invalid API key")
        model = request.headers.get(MODEL_HEADER, "")
        if model not in SYNC_MODELS:
            return sync_error(400, f"{MODEL_HEADER} must name a sync model: "
                                   f"{', '.join(SYNC_MODELS)} (got {model!r})", code="bad_request")
        try:
            parts = _parts(request, live=live)
            config = _config(parts)
            audio, content_type = _audio_part(parts)
            pcm, rate, channels = _decode(audio, content_type, config)
        except _Refused as exc:
            return sync_error(exc.status, str(exc), code=exc.code)
        received = time.monotonic()
        audio_ms = len(pcm) * 1000 // (2 * channels * rate)
        if audio_ms < MIN_MS:
            return sync_error(400, f"audio duration {audio_ms} ms is below {MIN_MS} ms",
                              code="audio_too_short")
        if audio_ms > MAX_MS:
            return sync_error(413, f"audio duration {audio_ms} ms exceeds limit {MAX_MS} ms",
                              code="audio_too_large")
        sha = Audio(audio).sha256 if content_type == "audio/wav" else None
        failure = self.registry.error(sha) if sha else None
        if failure:  # sim.fail_audio(): the service cannot make sense of this clip
            return sync_error(400, failure, code="bad_audio")
        text = self._hear(sha, pcm, rate, channels, audio_ms)
        session = str(uuid.uuid4())
        time.sleep(max(0.0, received + self.processing_s - time.monotonic()))
        request_ms = (time.monotonic() - received) * 1000
        with self.app.lock:
            self.served.append(SyncRequest(request.path, model, config, content_type, audio_ms,
                                           session, request_ms, request.tcp_nodelay))
            self.app.stats["sync_transcripts"] += 1
        return Response(200, _body(text, config, audio_ms, session, request_ms))

    def _hear(self, sha: str | None, pcm: bytes, rate: int, channels: int,
              audio_ms: int) -> str:
        """The registered text of a WAV sent whole (by its sha256), else the clip heard by
        its samples."""
        seconds = audio_ms / 1000
        if sha is not None and self.registry.text(sha) is not None:
            return self.registry.hear(sha, seconds, service="sync")
        wav = pcm_to_wav(pcm, rate, channels)
        return self.registry.hear_pcm(Audio(wav).pcm16k(), seconds, service="sync")


def _parts(request: Request, *, live: bool) -> list[tuple[dict[str, str], bytes]]:
    """The multipart body's parts, in order, as (headers, content)."""
    ctype = request.headers.get("Content-Type", "")
    boundary = next((p.split("=", 1)[1].strip('"') for p in ctype.split(";")
                     if p.strip().startswith("boundary=")), None)
    if not ctype.startswith("multipart/form-data") or not boundary:
        raise _Refused(400, "bad_request", "the body must be multipart/form-data with an "
                                           "audio part")
    body = bytearray()
    for block in request.iter_body():
        body += block
        if len(body) > MAX_BYTES + (1 << 16):
            raise _Refused(413, "audio_too_large", f"file exceeds {MAX_BYTES} bytes")
    parts = []
    # RFC 2046: a delimiter is CRLF "--" boundary, then "--" (the end) or CRLF (a part).
    for raw in (b"\r\n" + bytes(body)).split(b"\r\n--" + boundary.encode())[1:]:
        if raw.startswith(b"--"):
            break
        if not raw.startswith(b"\r\n"):
            raise _Refused(400, "bad_request", "malformed multipart body")
        head, _, content = raw[2:].partition(b"\r\n\r\n")
        headers = {}
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        parts.append((headers, content))
    names = [_name(h) for h, _ in parts]
    if live and "audio" in names and "config" not in names[: names.index("audio")]:
        raise _Refused(400, "bad_request", "the live endpoint needs the config part before "
                                           "the audio part")
    return parts


def _name(headers: dict[str, str]) -> str:
    for item in headers.get("content-disposition", "").split(";"):
        key, _, value = item.strip().partition("=")
        if key == "name":
            return value.strip('"')
    return ""


def _config(parts: list[tuple[dict[str, str], bytes]]) -> dict[str, Any]:
    raw = next((c for h, c in parts if _name(h) == "config"), None)
    if raw is None or not raw.strip():
        return {}
    try:
        config = json.loads(raw)
    except ValueError:
        raise _Refused(400, "bad_request", "config is not valid JSON") from None
    if not isinstance(config, dict):
        raise _Refused(400, "bad_request", "config must be a JSON object")
    unknown = sorted(set(config) - set(CONFIG_FIELDS))
    if unknown:
        raise _Refused(400, "bad_request", f"unknown config fields: {', '.join(unknown)}")
    if len(config.get("prompt") or "") > 6000:
        raise _Refused(400, "bad_request", "prompt exceeds 6000 characters")
    return config


def _audio_part(parts: list[tuple[dict[str, str], bytes]]) -> tuple[bytes, str]:
    for headers, content in parts:
        if _name(headers) == "audio":
            ctype = headers.get("content-type", "audio/wav").split(";")[0].strip().lower()
            if ctype not in ("audio/wav", "audio/x-wav", "audio/wave", "audio/pcm"):
                raise _Refused(415, "unsupported_media_type",
                               f"unsupported audio format {ctype}: send audio/wav or audio/pcm")
            if len(content) > MAX_BYTES:
                raise _Refused(413, "audio_too_large", f"file exceeds {MAX_BYTES} bytes")
            return content, "audio/pcm" if ctype == "audio/pcm" else "audio/wav"
    raise _Refused(400, "bad_request", "missing audio part")


def _decode(audio: bytes, content_type: str, config: dict[str, Any]) -> tuple[bytes, int, int]:
    """(PCM, sample rate, channels), or the documented refusal."""
    if content_type == "audio/pcm":
        rate, channels = config.get("sample_rate"), config.get("channels")
        if not isinstance(rate, int) or not isinstance(channels, int):
            raise _Refused(400, "bad_audio", "raw PCM needs sample_rate and channels in config")
        if len(audio) % (2 * max(channels, 1)):
            raise _Refused(400, "bad_audio", "PCM length is not a whole number of frames")
        pcm, width = audio, 2
    else:
        try:
            with wave.open(BytesIO(audio), "rb") as w:
                rate, channels, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
                pcm = w.readframes(w.getnframes())
        except (wave.Error, EOFError, ValueError) as exc:
            raise _Refused(400, "bad_audio", f"malformed WAV: {exc}") from None
    if width != 2:
        raise _Refused(415, "unsupported_media_type", f"{8 * width}-bit audio: send 16-bit")
    if rate not in RATES:
        raise _Refused(415, "unsupported_media_type", f"unsupported sample rate {rate}")
    if channels not in (1, 2):
        raise _Refused(400, "bad_audio", f"{channels} channels: send mono or stereo")
    return pcm, rate, channels


def _body(text: str, config: dict[str, Any], audio_ms: int, session: str,
          request_ms: float) -> dict[str, Any]:
    """A SyncTranscriptResponse: words carry start/end only when timestamps were asked."""
    tokens = text.split()
    span = audio_ms // max(len(tokens), 1)
    words = []
    for i, token in enumerate(tokens):
        word: dict[str, Any] = {"text": token, "confidence": 0.93}
        if config.get("timestamps"):
            word.update(start=i * span, end=(i + 1) * span)
        words.append(word)
    return {"text": text, "words": words, "confidence": 0.93, "audio_duration_ms": audio_ms,
            "session_id": session, "request_time_ms": round(request_ms, 1)}


__all__ = ["SyncService", "SyncRequest", "SYNC_MODELS"]
