"""AssemblyAI's text to speech (``assemblyai-tts-1``), simulated: ``POST /v1/speech`` (the
audio), ``POST /v1/speech/events`` (server-sent events with word timings) and the ``/v1/ws``
session, all on the simulator's HTTP port.

The official SDK derives every URL from one ``tts_base_url`` (HTTP ``{base}/v1/speech``,
WebSocket ``ws://{host}{prefix}/v1/ws``), so both must answer on one port, and a websockets
server cannot answer a POST: the HTTP server hands each ``Upgrade: websocket`` request to
this module's websockets server (``App.websocket_routes``), which runs on its own event
loop thread.

The speech is real: espeak-ng says each whitespace token of the text on its own, and the
words are joined with pauses (longer after a comma or a sentence's end), so every word's
``start``/``end`` is exactly where its samples are, and the audio between two words is
silent. Each built-in voice is its own espeak-ng variant, each language its espeak-ng
language; the audio is resampled (PyAV) to the requested rate and encoded as asked (raw PCM,
G.711 mu-law or A-law, WAV, or MP3 by PyAV's libmp3lame). espeak-ng, resampling and encoding
never run in the event loop: a session hands them to a thread pool and keeps reading frames,
so a ``Cancel`` acts at once. Without espeak-ng each word is a tone.

What the SDK (assemblyai 1.8.2, ``tts/v1``) and AssemblyAI's TTS docs say, and this does:

- Voices (``voice_id``): the eleven built-in ones, ``aai-jane`` the default; another is ``404
  voice_not_found``. Languages by English name, case-insensitive, English by default. Sample
  rates 8000, 16000, 22050, 24000 (default), 44100, 48000. Encodings ``pcm_s16le``
  (default), ``pcm_mulaw``, ``pcm_alaw`` (aliases ``mulaw``, ``alaw``), ``mp3``; ``container``
  ``raw`` (default) or ``wav`` with PCM or G.711 only; ``bit_rate`` 32000-128000 (64000 by
  default, at most 64000 at 8 kHz) with ``mp3`` only; ``text`` 1 to 5,000 characters.
- Auth: the ``Authorization`` header, the raw key or ``Bearer <key>``; none is ``401
  missing_authorization``. Every refusal is the SDK's envelope: ``code``, ``message``,
  ``param``, ``request_id``, ``errors`` (every failing field of an ``invalid_parameter``),
  ``retryable``, ``retry_after_seconds``; injected faults (``Simulator.inject``) come in it
  too.
- ``/v1/speech`` streams by default: status and headers wait for the first audio, then a
  chunked body; ``"stream": false`` answers once the whole clip is ready, with
  ``Content-Length``, ``X-TTS-Audio-Duration-Ms``, exact WAV sizes and an MP3 that starts
  with its Xing frame (a streamed WAV's sizes are all ones). The headers the SDK reads:
  ``X-Request-Id``, ``X-TTS-Region``, ``-Model``, ``-Voice-Id``, ``-Language``,
  ``-Encoding``, ``-Sample-Rate``, ``-Container`` (not for MP3), ``-Bit-Rate`` (MP3 only),
  ``-Billed-Characters``; and ``Server-Timing: ttfa;dur=`` (the docs' time to first audio).
- ``/v1/speech/events``: ``event:`` + ``data:`` lines, ``Begin`` (with the first ``Audio``),
  ``Audio`` (base64), ``FlushDone``, ``WordBoundaries``, ``Termination``; raw audio only, so
  ``mp3``, ``container: "wav"``, ``bit_rate`` and ``stream`` are refused there.
- ``/v1/ws``: the key in ``Authorization`` (or the ``token`` query parameter); the query
  configures the session (``word_boundaries`` on unless ``false``, ``inactivity_timeout`` 5
  to 120 s); ``Begin`` echoes it with the documented ``limits``. ``Generate`` appends text (at
  most 2,000 characters a frame); a complete sentence may be spoken before ``Flush``, which
  concludes the request; ids count from 0 and a ``Cancel`` takes one too. Audio comes in
  ~80 ms ``Audio`` frames, then ``FlushDone``, then ``WordBoundaries`` with times on the
  session's whole audio timeline. ``Cancel`` stops the request in flight, drops what is
  queued and answers ``Cancelled``; nothing more comes of what it cancelled. ``Terminate``
  speaks unflushed text, then ``Termination`` (billed characters, audio seconds) and close
  1000. A binary frame, non-JSON, a missing or unknown ``type`` or a bad field: an ``Error``
  frame, close 3006; a message over 1 MiB: close 1009, no ``Error`` frame. No frame either
  way for ``inactivity_timeout`` seconds: ``Error`` ``inactivity_timeout``, close 3006 (the
  code as pipecat's AssemblyAI service reads it); an hour's session: close 3008.
- Faults on demand: ``sim.tts.faults`` (:class:`~voicenb.sim._sockets.SocketFaults`) drops,
  closes (1011...) or stalls a session after N seconds or N frames, where a session's frames
  are the client's messages and the ``Audio`` frames it sends (so ``after_frames`` can
  strike mid-answer); ``sim.inject("cut", "/v1/speech", after=N)`` cuts a streamed body
  after N chunks.

Assumptions, where nothing was found to say: the time to first audio (:data:`TTFB_S`) and the
generation speed (:data:`SPEED`); a wrong key is ``401 unauthorized`` (close 1008 on a
session); a text over 5,000 characters is ``400 text_too_long`` with ``limit``; the G.711
content types; a complete sentence, however short, starts speaking before ``Flush``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import logging
import re
import shutil
import struct
import subprocess
import threading
import time
import uuid
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import chain
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ._server import App, Request, Response
from ._sockets import SocketFaults, SocketServer

log = logging.getLogger("voicenb.sim")
#: websockets logs each handshake (with its Authorization header) at DEBUG: not here
_WS_LOG = logging.getLogger("voicenb.sim.tts.websocket")
_WS_LOG.setLevel(logging.INFO)

MODEL = "assemblyai-tts-1"
DEFAULT_VOICE = "aai-jane"
#: the eleven built-in voices, each an espeak-ng variant of its own (f: female, m: male) so
#: that they sound apart; which variant each gets is arbitrary
VOICES = {"aai-jane": "f3", "aai-alba": "f2", "aai-anna": "f4", "aai-eve": "f5",
          "aai-mary": "f1", "aai-vera": "Annie", "aai-charles": "m1", "aai-george": "m2",
          "aai-jean": "m3", "aai-michael": "m4", "aai-paul": "m5"}
#: the six languages by their English names, and the espeak-ng language that speaks each
LANGUAGES = {"english": "en-us", "spanish": "es", "german": "de", "french": "fr",
             "italian": "it", "portuguese": "pt"}
SAMPLE_RATES = (8000, 16000, 22050, 24000, 44100, 48000)
DEFAULT_SAMPLE_RATE = 24000
ENCODINGS = ("pcm_s16le", "pcm_mulaw", "pcm_alaw", "mp3")
ENCODING_ALIASES = {"mulaw": "pcm_mulaw", "alaw": "pcm_alaw"}
#: what a session streams: raw audio only
SESSION_ENCODINGS = ENCODINGS[:3]
CONTAINERS = ("raw", "wav")
BIT_RATES = (32000, 48000, 64000, 96000, 128000)
DEFAULT_BIT_RATE = 64000
MAX_BIT_RATE_8K = 64000
MAX_TEXT_CHARS = 5000
MAX_GENERATE_CHARS = 2000
INACTIVITY_S = (5, 120)
SESSION_TTL_S = 3600
MAX_MESSAGE_BYTES = 2**20
REGION = "us-east-1"
#: audio in one ``Audio`` frame (the docs: ~80 ms) and in one chunk of a streamed body
FRAME_MS = 80
#: Assumption: seconds from a request's text to its first audio. AssemblyAI publishes no
#: figure we found (its docs only say how to measure it: ``Server-Timing: ttfa``).
TTFB_S = 0.15
#: Assumption: audio seconds generated per wall-clock second ("faster than real time").
SPEED = 4.0
#: ``Begin.configuration.limits``, as the WebSocket API reference shows them
LIMITS = {"max_generate_text_length": MAX_GENERATE_CHARS, "max_control_frames_per_sec": 20,
          "max_egress_audio_buffer_ms": 300000, "text_throttle_enabled": True,
          "text_throttle_max_chars_per_sec": 100, "text_throttle_initial_grace_chars": 1500,
          "text_max_buffer_chars": 8000, "session_ttl_grace_sec": 60,
          "max_message_bytes": MAX_MESSAGE_BYTES, "max_queued_messages": 10000,
          "write_stall_timeout_sec": 30, "inactivity_timeout_min_sec": INACTIVITY_S[0],
          "inactivity_timeout_max_sec": INACTIVITY_S[1]}
#: the query parameters a session reads (the rest are echoed as ``unknown_params``)
SESSION_PARAMS = ("voice_id", "model_id", "language", "sample_rate", "encoding",
                  "word_boundaries", "inactivity_timeout", "token", "extend_biometric_consent",
                  "container", "bit_rate")
CLOSE_UNAUTHORIZED = 1008   # Assumption (pipecat's service reads 1008 as an auth failure)
CLOSE_INVALID = 3006
CLOSE_EXPIRED = 3008
CLOSE_RESTART = 1012        # "a server restart" (the SDK's retryable close codes)
UNAUTHORIZED = "Invalid API key: check the Authorization header."
MISSING_AUTH = "Missing Authorization header: send your API key in it."


# -- what a request asks for -------------------------------------------------------------------

@dataclass(frozen=True)
class SpeechOptions:
    """A request's (or a session's) voice and audio format, checked."""

    voice_id: str = DEFAULT_VOICE
    language: str = "english"
    sample_rate: int = DEFAULT_SAMPLE_RATE
    encoding: str = "pcm_s16le"
    container: str | None = "raw"       # None for mp3
    bit_rate: int | None = None         # mp3 only

    @property
    def espeak_voice(self) -> str:
        return f"{LANGUAGES[self.language]}+{VOICES[self.voice_id.lower()]}"


@dataclass(frozen=True)
class Refusal:
    """Why a request is refused: an HTTP status and the envelope's fields."""

    status: int
    code: str
    message: str
    param: str | None = None
    errors: list[dict[str, str]] | None = None
    retryable: bool = False
    retry_after: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _number(value: Any, default: int, query: bool) -> int | None:
    """An integer option: a JSON integer, or digits in a query string; None if neither."""
    if value is None:
        return default
    if query and isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _choice(value: Any, default: str, allowed: Mapping[str, Any] | tuple[str, ...]
            ) -> str | None:
    if value is None:
        return default
    return value.strip().lower() if isinstance(value, str) and \
        value.strip().lower() in allowed else None


def read_options(values: Mapping[str, Any], *, query: bool = False,
                 problems: list[tuple[str, str]] | None = None) -> SpeechOptions | Refusal:
    """The options in a request body (or a session's query), or the refusal they earn:
    ``400 invalid_parameter`` listing every bad field (``problems`` holds those found
    before), then ``404 voice_not_found``."""
    problems = list(problems or [])

    def bad(param: str, message: str) -> None:
        problems.append((param, message))

    if values.get("model_id") not in (None, MODEL):
        bad("model_id", f"Unknown model_id {values['model_id']!r}: use {MODEL!r}.")
    language = _choice(values.get("language"), "english", LANGUAGES)
    if language is None:
        bad("language", f"Unsupported language {values['language']!r}: use one of "
                        f"{', '.join(LANGUAGES)}.")
    rate = _number(values.get("sample_rate"), DEFAULT_SAMPLE_RATE, query)
    if rate not in SAMPLE_RATES:
        bad("sample_rate", f"Unsupported sample_rate {values.get('sample_rate')!r}: use one "
                           f"of {', '.join(map(str, SAMPLE_RATES))}.")
    raw_encoding = values.get("encoding")
    encoding = ENCODING_ALIASES.get(str(raw_encoding).lower(), raw_encoding)
    encoding = _choice(encoding, "pcm_s16le", ENCODINGS)
    if encoding is None:
        bad("encoding", f"Unsupported encoding {raw_encoding!r}: use one of "
                        f"{', '.join(ENCODINGS)}.")
    container, bit_rate = _format(values, encoding, rate, query, bad)
    voice = values.get("voice_id")
    if voice is not None and not isinstance(voice, str):
        bad("voice_id", "voice_id must be a string, such as 'aai-jane'.")
    consent = values.get("extend_biometric_consent", False)
    if query and isinstance(consent, str):
        consent = {"true": True, "false": False}.get(consent.lower(), consent)
    if not isinstance(consent, bool):
        bad("extend_biometric_consent", "extend_biometric_consent must be true or false.")
    if problems:
        return Refusal(400, "invalid_parameter", problems[0][1], problems[0][0],
                       errors=[{"message": m, "param": p} for p, m in problems])
    voice = voice or DEFAULT_VOICE
    if voice.lower() not in VOICES:
        return Refusal(404, "voice_not_found", f"No voice {voice!r}: the built-in voices are "
                                               f"{', '.join(VOICES)}.", "voice_id")
    if consent:  # only a cloned voice's owner may renew its consent; no library voice is one
        return Refusal(403, "not_owner", "extend_biometric_consent renews a cloned voice of "
                                         f"your own; {voice!r} is a library voice.",
                       "extend_biometric_consent")
    assert language is not None and rate is not None and encoding is not None
    return SpeechOptions(voice, language, rate, encoding, container, bit_rate)


def _format(values: Mapping[str, Any], encoding: str | None, rate: int | None, query: bool,
            bad: Callable[[str, str], None]) -> tuple[str | None, int | None]:
    """``container`` and ``bit_rate``, which each belong to some encodings only."""
    container: str | None = None
    bit_rate: int | None = None
    if encoding == "mp3":
        if values.get("container") is not None:
            bad("container", "container applies to PCM and G.711 encodings only: leave it "
                             "out with mp3.")
        bit_rate = _number(values.get("bit_rate"), DEFAULT_BIT_RATE, query)
        if bit_rate not in BIT_RATES:
            bad("bit_rate", f"Unsupported bit_rate {values.get('bit_rate')!r}: use one of "
                            f"{', '.join(map(str, BIT_RATES))}.")
        elif rate == 8000 and bit_rate > MAX_BIT_RATE_8K:
            bad("bit_rate", f"At 8000 Hz the bit_rate is at most {MAX_BIT_RATE_8K}.")
        return None, bit_rate
    container = _choice(values.get("container"), "raw", CONTAINERS)
    if container is None:
        bad("container", f"Unsupported container {values.get('container')!r}: use raw or "
                         "wav.")
    if values.get("bit_rate") is not None:
        bad("bit_rate", "bit_rate applies to mp3 only.")
    return container, None


# -- speech ------------------------------------------------------------------------------------

ESPEAK_RATE = 22050
#: peak amplitude (of 32767) under which espeak-ng's output counts as silence
QUIET = 200
#: silence kept either side of a word's loud part, so its soft edges are not cut
EDGE_MS = 8
LEAD_MS = 60
#: the pause after a word, by how the word ends
PAUSE_MS = {"sentence": 320, "clause": 160, "word": 45}
_SENTENCE_END = re.compile(r"[.!?\u2026]+[\"'\u201d\u2019)\]]*\s+")


@dataclass
class Spoken:
    """Speech for some of a request's words: mono s16le at ``rate``, and each word's place
    in it as (token, first sample, sample after its last)."""

    pcm: bytes
    rate: int
    words: list[tuple[str, int, int]]


def _pause_ms(token: str) -> int:
    end = token.rstrip("\"'\u201d\u2019)]")[-1:] or " "  # ("" is in every string)
    if end in ".!?\u2026":
        return PAUSE_MS["sentence"]
    return PAUSE_MS["clause"] if end in ",;:\u2014-" else PAUSE_MS["word"]


def _silence(ms: int, rate: int) -> bytes:
    return bytes(rate * ms // 1000 * 2)


# bounded: a word is ~20 KB of audio at 22,050 Hz, ~45 KB at 48 kHz
@lru_cache(maxsize=512)
def word_pcm(espeak_voice: str, token: str, rate: int) -> bytes:
    """One token said on its own, its silent edges cut, at ``rate``: the unit speech is
    built from (cached, as replies repeat their words)."""
    return resample(_said(espeak_voice, token), ESPEAK_RATE, rate)


@lru_cache(maxsize=1024)
def _said(espeak_voice: str, token: str) -> bytes:
    import numpy as np

    samples = np.frombuffer(_espeak(espeak_voice, token), dtype="<i2")
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > QUIET)
    if loud.size == 0:  # nothing to say (a dash, an emoji)
        return b""
    edge = ESPEAK_RATE * EDGE_MS // 1000
    return samples[max(0, loud[0] - edge):loud[-1] + edge].tobytes()


def _espeak(espeak_voice: str, text: str) -> bytes:
    """espeak-ng's 22,050 Hz mono PCM for ``text`` (a tone a word where it is missing)."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        return _tone(text)
    try:  # the text goes in on stdin, so a token such as "-v" is not read as an option
        done = subprocess.run([exe, "--stdout", "-b", "1", "-v", espeak_voice, "--stdin"],
                              input=text.encode("utf-8"), capture_output=True, timeout=30,
                              check=False)
    except (OSError, subprocess.TimeoutExpired):
        log.warning("espeak-ng failed to say %r; the simulator plays a tone", text[:40])
        return _tone(text)
    wav = done.stdout
    start = wav.find(b"data") + 8
    if done.returncode != 0 or start < 8:
        return _tone(text)
    data = wav[start:]
    return data[: len(data) // 2 * 2]


def _tone(text: str) -> bytes:
    import numpy as np

    n = int(ESPEAK_RATE * min(0.6, 0.08 + 0.05 * len(text)))
    t = np.arange(n) / ESPEAK_RATE
    envelope = np.minimum(1.0, np.minimum(np.arange(n), n - np.arange(n)) / 200)
    freq = 300 + 40 * min(len(text), 12)
    return (6000 * envelope * np.sin(2 * np.pi * freq * t)).astype("<i2").tobytes()


def resample(pcm: bytes, source: int, rate: int) -> bytes:
    """Mono s16le ``pcm`` from ``source`` Hz to ``rate`` Hz (PyAV)."""
    if source == rate or not pcm:
        return pcm
    import av
    import numpy as np

    frame = av.AudioFrame.from_ndarray(np.frombuffer(pcm, dtype="<i2").reshape(1, -1),
                                       format="s16", layout="mono")
    frame.sample_rate = source
    resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
    parts = [f.to_ndarray().reshape(-1) for f in [*resampler.resample(frame),
                                                  *resampler.resample(None)]]
    return np.concatenate(parts).astype("<i2").tobytes() if parts else b""


def speak_tokens(tokens: list[str], options: SpeechOptions, pool: ThreadPoolExecutor, *,
                 lead: bool) -> Spoken:
    """``tokens`` said one by one, with pauses between (and a short lead-in before the
    first words of a request): the words' places are where their samples are."""
    rate, voice = options.sample_rate, options.espeak_voice
    clips = list(pool.map(lambda token: word_pcm(voice, token, rate), tokens))
    out = bytearray(_silence(LEAD_MS, rate) if lead else b"")
    words: list[tuple[str, int, int]] = []
    for token, clip in zip(tokens, clips):
        if clip:
            start = len(out) // 2
            out += clip
            words.append((token, start, len(out) // 2))
        out += _silence(_pause_ms(token), rate)
    return Spoken(bytes(out), rate, words)


def sentences(text: str) -> list[list[str]]:
    """The tokens of ``text``, sentence by sentence (so the first audio need not wait for
    the whole text); none when it has nothing to speak (no letter nor digit)."""
    if not any(ch.isalnum() for ch in text):
        return []
    out: list[list[str]] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        if tokens := text[start:match.end()].split():
            out.append(tokens)
        start = match.end()
    if tokens := text[start:].split():
        out.append(tokens)
    return out


def frames(pcm: bytes, rate: int, ms: int = FRAME_MS) -> Iterator[bytes]:
    step = rate * ms // 1000 * 2
    for at in range(0, len(pcm), step):
        yield pcm[at:at + step]


def ms_of(samples: int, rate: int) -> int:
    return round(samples * 1000 / rate)


def _confidence(token: str) -> float:
    return round(0.85 + (zlib.crc32(token.encode()) % 15) / 100, 3)


def word_json(token: str, start: int, end: int, rate: int) -> dict[str, Any]:
    return {"word": token, "start": ms_of(start, rate), "end": ms_of(end, rate),
            "confidence": _confidence(token)}


# -- encodings ---------------------------------------------------------------------------------

_ULAW_ENDS = (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF)
_ALAW_ENDS = (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF)


def g711(pcm: bytes, encoding: str) -> bytes:
    """s16le ``pcm`` as ``encoding``: itself, or G.711 mu-law or A-law (ITU-T G.711)."""
    if encoding == "pcm_s16le":
        return pcm
    import numpy as np

    x = np.frombuffer(pcm, dtype="<i2").astype(np.int32)
    if encoding == "pcm_mulaw":
        mask = np.where(x < 0, 0x7F, 0xFF)
        v = np.minimum(np.abs(x >> 2), 8159) + (0x84 >> 2)
        seg = np.searchsorted(_ULAW_ENDS, v)
        code = (seg << 4) | ((v >> (seg + 1)) & 0xF)
    else:
        mask = np.where(x >= 0, 0xD5, 0x55)
        v = np.where(x >= 0, x >> 3, -(x >> 3) - 1)
        seg = np.searchsorted(_ALAW_ENDS, v)
        code = (seg << 4) | np.where(seg < 2, (v >> 1) & 0xF, (v >> np.maximum(seg, 1)) & 0xF)
    code = np.where(seg >= 8, 0x7F, code)
    return (code ^ mask).astype(np.uint8).tobytes()


def wav_header(rate: int, encoding: str, data_bytes: int | None) -> bytes:
    """A WAV header; ``data_bytes`` None (a stream, whose size is unknown) writes all ones."""
    tag, width = {"pcm_s16le": (1, 2), "pcm_mulaw": (7, 1), "pcm_alaw": (6, 1)}[encoding]
    data = 0xFFFFFFFF if data_bytes is None else data_bytes
    riff = 0xFFFFFFFF if data_bytes is None else 36 + data_bytes
    return (b"RIFF" + struct.pack("<I", riff) + b"WAVEfmt "
            + struct.pack("<IHHIIHH", 16, tag, 1, rate, rate * width, width, width * 8)
            + b"data" + struct.pack("<I", data))


class _Sink:
    """A file PyAV can write but not seek: an MP3 stream, whose bytes leave as they come."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> int:
        self.data += data
        return len(data)

    def seekable(self) -> bool:
        return False


class _Mp3:
    """A libmp3lame encoder fed PCM as it comes. Written to a seekable buffer (a whole clip)
    it starts with a Xing frame, as the docs say a buffered MP3 does."""

    def __init__(self, rate: int, bit_rate: int, *, whole: bool) -> None:
        import av

        self._file: io.BytesIO | _Sink = io.BytesIO() if whole else _Sink()
        self._out = av.open(self._file, "w", format="mp3", options={"id3v2_version": "0"})
        self._stream = self._out.add_stream("libmp3lame", rate=rate, layout="mono")
        self._stream.bit_rate = bit_rate
        self._rate = rate
        self._resampler = av.AudioResampler(format=self._stream.codec_context.format.name,
                                            layout="mono", rate=rate)
        self._sent = 0

    def _mux(self, frames: list[Any]) -> None:
        for frame in frames:
            for packet in self._stream.encode(frame):
                self._out.mux(packet)

    def feed(self, pcm: bytes) -> bytes:
        import av
        import numpy as np

        frame = av.AudioFrame.from_ndarray(np.frombuffer(pcm, "<i2").reshape(1, -1),
                                           format="s16", layout="mono")
        frame.sample_rate = self._rate
        self._mux(self._resampler.resample(frame))
        return self._new()

    def close(self) -> bytes:
        self._mux(self._resampler.resample(None))
        for packet in self._stream.encode(None):
            self._out.mux(packet)
        self._out.close()
        return self._new()

    def _new(self) -> bytes:
        data = self._file.getvalue() if isinstance(self._file, io.BytesIO) else self._file.data
        new, self._sent = bytes(data[self._sent:]), len(data)
        return new


class Encoder:
    """Raw speech in, the requested format out, piece by piece (a streamed body)."""

    def __init__(self, options: SpeechOptions) -> None:
        self.options = options
        self._mp3 = _Mp3(options.sample_rate, options.bit_rate or DEFAULT_BIT_RATE,
                         whole=False) if options.encoding == "mp3" else None
        self._header = wav_header(options.sample_rate, options.encoding, None) \
            if options.container == "wav" else b""

    def feed(self, pcm: bytes) -> bytes:
        if self._mp3 is not None:
            return self._mp3.feed(pcm)
        out, self._header = self._header + g711(pcm, self.options.encoding), b""
        return out

    def close(self) -> bytes:
        return self._mp3.close() if self._mp3 is not None else self._header


def encode_whole(pcm: bytes, options: SpeechOptions) -> bytes:
    """A whole clip in the requested format (a buffered answer: exact WAV sizes)."""
    if options.encoding == "mp3":
        if not pcm:
            return b""
        mp3 = _Mp3(options.sample_rate, options.bit_rate or DEFAULT_BIT_RATE, whole=True)
        return mp3.feed(pcm) + mp3.close()
    data = g711(pcm, options.encoding)
    if options.container == "wav":
        return wav_header(options.sample_rate, options.encoding, len(data)) + data
    return data


def content_type(options: SpeechOptions) -> str:
    if options.encoding == "mp3":
        return "audio/mpeg"
    if options.container == "wav":
        return "audio/wav"
    kind = {"pcm_s16le": "pcm", "pcm_mulaw": "pcmu", "pcm_alaw": "pcma"}[options.encoding]
    return f"audio/{kind};rate={options.sample_rate};channels=1"


class _Pace:
    """When audio may leave: the first at ``start``, the rest no faster than ``speed``
    times real time, and never before the text it says has arrived."""

    def __init__(self, speed: float | None) -> None:
        self.speed = speed
        self.at = 0.0

    def start(self, at: float) -> None:
        self.at = max(self.at, at)

    def next(self, ms: float) -> float:
        """Seconds to wait before sending ``ms`` more audio."""
        now = time.monotonic()
        wait = max(0.0, self.at - now)
        self.at = max(self.at, now)
        if self.speed:
            self.at += ms / 1000 / self.speed
        return wait


# -- errors ------------------------------------------------------------------------------------

def _request_id() -> str:
    return str(uuid.uuid4())


def refusal_response(refusal: Refusal, request_id: str,
                     headers: Mapping[str, str] | None = None) -> Response:
    """The SDK's error envelope (``api._error_from_response`` reads it)."""
    body = {"code": refusal.code, "message": refusal.message, "param": refusal.param,
            "request_id": request_id, "errors": refusal.errors,
            "retryable": refusal.retryable, "retry_after_seconds": refusal.retry_after,
            **refusal.extra}
    return Response(refusal.status, body, headers={**(headers or {}), "X-Request-Id":
                                                   request_id})


def fault_error(status: int, message: str, headers: dict[str, str]) -> Response:
    """An injected fault (or an unknown path) in the TTS envelope (``App.error_shape``)."""
    code, retryable = {400: ("invalid_request", False), 404: ("not_found", False),
                       429: ("rate_limited", True), 503: ("at_capacity", True)}.get(
        status, ("internal_error", status >= 500))
    wait = headers.get("Retry-After")
    return refusal_response(Refusal(status, code, message, retryable=retryable,
                                    retry_after=int(wait) if wait else None),
                            _request_id(), headers)


def sse(kind: str, data: Mapping[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode()


# -- the service -------------------------------------------------------------------------------

class TTSService:
    """The simulated text-to-speech API: HTTP routes on ``app``, sessions on a websockets
    server the app's port hands upgrades to. ``ttfb`` and ``speed`` pace the audio;
    ``stats`` counts requests, event_requests, refused, sessions, flushes, cancels,
    terminated, closed_with_error, faults (acted out) and characters_billed;
    :meth:`drop_sessions` acts out a restart of the service."""

    def __init__(self, app: App, *, key: str, ttfb: float = TTFB_S,
                 speed: float | None = SPEED, workers: int = 4) -> None:
        self.app = app
        self.key = key
        #: seconds from a request's text to its first audio
        self.ttfb = ttfb
        #: audio seconds generated per second (None: as fast as it is made)
        self.speed = speed
        #: the base URL (the simulator's HTTP port), set when the simulator starts
        self.url = ""
        self.stats: Counter[str] = Counter()
        self._lock = threading.Lock()
        #: espeak-ng runs, one a word (a process each, so a few at once)
        self.voices = ThreadPoolExecutor(workers, thread_name_prefix="voicenb-sim-espeak")
        #: where a session's speech is made: never in its event loop
        self.synth = ThreadPoolExecutor(2, thread_name_prefix="voicenb-sim-tts")
        self._ws = SocketServer("voicenb-sim-tts-ws", "the simulated TTS session server")
        self._open: set[Any] = set()  # the sessions' sockets (touched in the loop only)
        app.route("POST", "/v1/speech", self.speech)
        app.route("POST", "/v1/speech/events", self.events)
        app.route("GET", "/v1/ws", self.not_upgraded)
        for prefix in ("/v1/speech", "/v1/ws"):
            app.error_shape(prefix, fault_error)

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.stats[name] += n

    @property
    def faults(self) -> SocketFaults:
        """The sessions' failures on demand (see :mod:`voicenb.sim._sockets`); a session
        counts as frames the client's messages and the ``Audio`` frames it sends, so
        ``faults.plan("drop", after_frames=40)`` cuts a session mid-answer."""
        return self._ws.faults

    def speak(self, tokens: list[str], options: SpeechOptions, *, lead: bool) -> Spoken:
        """Speech for ``tokens`` (CPU work: call it from a thread, never an event loop)."""
        return speak_tokens(tokens, options, self.voices, lead=lead)

    # -- life cycle: the websockets server, on its own event loop thread ------------------------

    def start(self, host: str = "127.0.0.1") -> tuple[str, int]:
        """Start the session server and have the app's port hand it upgrades."""
        address = self._ws.start(self._session, host, compression=None,
                                 max_size=MAX_MESSAGE_BYTES, logger=_WS_LOG)
        self.app.websocket_routes["/v1/ws"] = address
        return address

    def stop(self) -> None:
        self.app.websocket_routes.pop("/v1/ws", None)
        self._ws.stop()
        self.synth.shutdown(wait=False, cancel_futures=True)
        self.voices.shutdown(wait=False, cancel_futures=True)

    def drop_sessions(self, timeout: float = 10.0) -> int:
        """End every open session as a service restart does (an ``Error``
        ``service_restart``, close 1012, retryable), so a test can watch a client reconnect;
        the number ended."""
        if self._ws.loop is None:
            return 0

        async def drop() -> int:
            sockets = list(self._open)
            for ws in sockets:
                await _fail(ws, CLOSE_RESTART, "service_restart", "The service is restarting: "
                            "connect again.", retryable=True)
            return len(sockets)

        return asyncio.run_coroutine_threadsafe(drop(), self._ws.loop).result(timeout)

    # -- HTTP --------------------------------------------------------------------------------

    def _key_refusal(self, header: str | None) -> Refusal | None:
        credential = (header or "").strip()
        if not credential:
            return Refusal(401, "missing_authorization", MISSING_AUTH)
        if credential.removeprefix("Bearer ").strip() != self.key:
            return Refusal(401, "unauthorized", UNAUTHORIZED)
        return None

    def _admit(self, request: Request, *, events: bool
               ) -> tuple[SpeechOptions, str, dict[str, Any]] | Refusal:
        """A request's options and text, or why it is refused (in the docs' order: the key,
        the body, every bad field, the text's length, the voice)."""
        if (refused := self._key_refusal(request.headers.get("Authorization"))) is not None:
            return refused
        body = request.json()
        if not isinstance(body, dict):
            return Refusal(400, "invalid_request", "The body must be a JSON object.")
        problems: list[tuple[str, str]] = []
        text = body.get("text")
        if not isinstance(text, str) or not text:
            problems.append(("text", "text is required: 1 to 5,000 characters."))
        if events:
            problems += _events_problems(body)
        elif not isinstance(body.get("stream", True), bool):
            problems.append(("stream", "stream must be true or false."))
        if body.get("speed", 1) != 1:
            problems.append(("speed", "Only speed 1 is supported."))
        options = read_options(body, problems=problems)
        if isinstance(options, Refusal) and options.status == 400:
            return options
        if len(text) > MAX_TEXT_CHARS:
            return Refusal(400, "text_too_long", f"text is {len(text)} characters, over the "
                                                 f"limit of {MAX_TEXT_CHARS}: split it.",
                           "text", extra={"limit": MAX_TEXT_CHARS})
        if isinstance(options, Refusal):
            return options
        return options, text, body

    def _headers(self, options: SpeechOptions, request_id: str, billed: int) -> dict[str, str]:
        headers = {"X-Request-Id": request_id, "X-TTS-Region": REGION, "X-TTS-Model": MODEL,
                   "X-TTS-Voice-Id": options.voice_id, "X-TTS-Language": options.language,
                   "X-TTS-Encoding": options.encoding,
                   "X-TTS-Sample-Rate": str(options.sample_rate),
                   "X-TTS-Billed-Characters": str(billed)}
        if options.container is not None:
            headers["X-TTS-Container"] = options.container
        if options.bit_rate is not None:
            headers["X-TTS-Bit-Rate"] = str(options.bit_rate)
        return headers

    def speech(self, request: Request) -> Response:
        """``POST /v1/speech``: the audio, streamed (the default) or whole."""
        request_id, started = _request_id(), time.monotonic()
        admitted = self._admit(request, events=False)
        if isinstance(admitted, Refusal):
            self.count("refused")
            return refusal_response(admitted, request_id)
        options, text, body = admitted
        parts = sentences(text)
        billed = len(text) if parts else 0
        self.count("requests")
        self.count("characters_billed", billed)
        headers = self._headers(options, request_id, billed)
        if not parts:  # nothing to speak: an empty clip (or a header-only WAV), billed 0
            return Response(200, encode_whole(b"", options), content_type=content_type(
                options), headers={**headers, "X-TTS-Audio-Duration-Ms": "0"})
        pace = _Pace(self.speed)
        pace.start(started + self.ttfb)
        if body.get("stream", True):
            chunks = self._audio_body(parts, options, pace)
            first = next(chunks)  # the status and headers wait for the first audio
            headers["Server-Timing"] = f"ttfa;dur={(time.monotonic() - started) * 1000:.0f}"
            return Response(200, headers=headers, content_type=content_type(options),
                            stream=chain([first], chunks))
        spoken = [self.speak(p, options, lead=i == 0) for i, p in enumerate(parts)]
        pcm = b"".join(s.pcm for s in spoken)
        time.sleep(pace.next(ms_of(len(pcm) // 2, options.sample_rate)))
        headers["Server-Timing"] = f"ttfa;dur={(time.monotonic() - started) * 1000:.0f}"
        time.sleep(pace.next(0))  # buffered: nothing until the last audio is made
        headers["X-TTS-Audio-Duration-Ms"] = str(ms_of(len(pcm) // 2, options.sample_rate))
        return Response(200, encode_whole(pcm, options), headers=headers,
                        content_type=content_type(options))

    def _audio_body(self, parts: list[list[str]], options: SpeechOptions, pace: _Pace
                    ) -> Iterator[bytes]:
        encoder = Encoder(options)
        for i, tokens in enumerate(parts):
            spoken = self.speak(tokens, options, lead=i == 0)
            for piece in frames(spoken.pcm, options.sample_rate):
                time.sleep(pace.next(ms_of(len(piece) // 2, options.sample_rate)))
                if data := encoder.feed(piece):
                    yield data
        if tail := encoder.close():
            yield tail

    def events(self, request: Request) -> Response:
        """``POST /v1/speech/events``: the audio and its word timings, as server-sent
        events."""
        request_id, started = _request_id(), time.monotonic()
        admitted = self._admit(request, events=True)
        if isinstance(admitted, Refusal):
            self.count("refused")
            return refusal_response(admitted, request_id)
        options, text, _ = admitted
        parts = sentences(text)
        billed = len(text) if parts else 0
        self.count("event_requests")
        self.count("characters_billed", billed)
        headers = {**self._headers(options, request_id, billed), "Cache-Control": "no-cache"}
        pace = _Pace(self.speed)
        pace.start(started + self.ttfb)
        events = self._event_body(parts, options, pace, request_id, billed, started)
        if not parts:  # Begin, FlushDone, Termination, in a body with Content-Length
            return Response(200, b"".join(events), headers=headers,
                            content_type="text/event-stream; charset=utf-8")
        first = next(events)  # Begin comes with the first Audio
        return Response(200, headers=headers, content_type="text/event-stream; charset=utf-8",
                        stream=chain([first], events))

    def _event_body(self, parts: list[list[str]], options: SpeechOptions, pace: _Pace,
                    request_id: str, billed: int, started: float) -> Iterator[bytes]:
        rate = options.sample_rate
        begin = sse("Begin", {"id": request_id, "request_id": request_id,
                              "expires_at": int(time.time()) + 600,
                              "configuration": _configuration(options, True, None, [])})
        samples, words = 0, []
        for i, tokens in enumerate(parts):
            spoken = self.speak(tokens, options, lead=i == 0)
            words += [word_json(w, samples + s, samples + e, rate) for w, s, e in spoken.words]
            for piece in frames(spoken.pcm, rate):
                time.sleep(pace.next(ms_of(len(piece) // 2, rate)))
                audio = base64.b64encode(g711(piece, options.encoding)).decode()
                yield begin + sse("Audio", {"audio": audio, "flush_id": 0})
                begin, samples = b"", samples + len(piece) // 2
        yield begin + sse("FlushDone", {"flush_id": 0, "audio_duration_ms": ms_of(samples,
                                                                                  rate)})
        if words:
            yield sse("WordBoundaries", {"flush_id": 0, "audio_start_ms": 0, "words": words})
        yield sse("Termination", {
            "session_duration_seconds": round(time.monotonic() - started),
            "total_input_char_length": billed, "audio_duration_seconds": round(
                samples / rate, 3), "voice_expires_at": None,
            "word_boundaries_status": "complete" if words else "none"})

    def not_upgraded(self, request: Request) -> Response:
        return refusal_response(Refusal(426, "upgrade_required", "/v1/ws is a WebSocket: "
                                                                 "connect with a WebSocket "
                                                                 "client."), _request_id())

    # -- the WebSocket session ---------------------------------------------------------------

    async def _session(self, ws: Any) -> None:
        parts = urlsplit(ws.request.path)
        params = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        if not parts.path.rstrip("/").endswith("/v1/ws"):
            return await _fail(ws, CLOSE_INVALID, "invalid_request",
                               f"Unknown path {parts.path}: connect to /v1/ws.")
        header = ws.request.headers.get("Authorization")
        refused = self._key_refusal(header if header else params.get("token"))
        if refused is not None:
            self.count("closed_with_error")
            return await _fail(ws, CLOSE_UNAUTHORIZED, "unauthorized", refused.message)
        config = _SessionConfig.read(params)
        if isinstance(config, Refusal):
            self.count("closed_with_error")
            return await _fail(ws, CLOSE_INVALID, config.code, config.message, config.param)
        self.count("sessions")
        self._open.add(ws)
        try:
            await _Session(self, ws, config).run()
        finally:
            self._open.discard(ws)


def _events_problems(body: Mapping[str, Any]) -> list[tuple[str, str]]:
    """What ``/v1/speech/events`` refuses: its audio is raw, on the words' timeline."""
    why = "word timings need raw audio on their timeline"
    problems = []
    if str(body.get("encoding")).lower() == "mp3":
        problems.append(("encoding", f"mp3 is not available here: {why}."))
    if body.get("container") == "wav":
        problems.append(("container", f"A wav container is not available here: {why}."))
    if "bit_rate" in body:
        problems.append(("bit_rate", f"bit_rate is not available here: {why}."))
    if "stream" in body:
        problems.append(("stream", "stream does not apply: the events are always streamed."))
    return problems


def _configuration(options: SpeechOptions, word_boundaries: bool, inactivity: int | None,
                   unknown: list[str]) -> dict[str, Any]:
    """``Begin.configuration``: the session as created."""
    return {"language": options.language, "sample_rate": options.sample_rate,
            "encoding": options.encoding, "inactivity_timeout": inactivity,
            "word_boundaries": word_boundaries, "voice_id": options.voice_id,
            "extend_biometric_consent": False,
            "word_boundaries_requested": word_boundaries,
            "model": MODEL, "voice_expires_at": None, "session_ttl_sec": SESSION_TTL_S,
            "limits": LIMITS, "unknown_params": unknown}


async def _fail(ws: Any, code: int, error_type: str, message: str, param: str | None = None,
                *, retryable: bool = False) -> None:
    """An ``Error`` frame, then the close with the same code."""
    with contextlib.suppress(Exception):  # the client may be gone already
        await ws.send(json.dumps({"type": "Error", "error_code": code, "error_type": error_type,
                                  "error": message, "param": param, "retryable": retryable}))
        await ws.close(code, "See Error message for details")


@dataclass(frozen=True)
class _SessionConfig:
    options: SpeechOptions
    word_boundaries: bool
    inactivity: int
    unknown: list[str]

    @classmethod
    def read(cls, params: dict[str, str]) -> _SessionConfig | Refusal:
        problems = []
        flag = params.get("word_boundaries", "true").lower()
        if flag not in ("true", "false"):
            problems.append(("word_boundaries", "word_boundaries must be true or false."))
        inactivity = _number(params.get("inactivity_timeout"), INACTIVITY_S[1], True)
        if inactivity is None or not INACTIVITY_S[0] <= inactivity <= INACTIVITY_S[1]:
            problems.append(("inactivity_timeout", "inactivity_timeout must be "
                                                   f"{INACTIVITY_S[0]} to {INACTIVITY_S[1]}."))
        encoding = params.get("encoding")
        if encoding is not None and ENCODING_ALIASES.get(
                encoding.lower(), encoding.lower()) not in SESSION_ENCODINGS:
            problems.append(("encoding", "A session streams raw pcm_s16le, pcm_mulaw or "
                                         "pcm_alaw."))
        if params.get("container", "raw") != "raw" or "bit_rate" in params:
            problems.append(("container" if "container" in params else "bit_rate",
                             "A session streams raw audio: no wav container, no bit_rate."))
        options = read_options({k: v for k, v in params.items()
                                if k not in ("container", "bit_rate")}, query=True,
                               problems=problems)
        if isinstance(options, Refusal):
            return options
        unknown = sorted(k for k in params if k not in SESSION_PARAMS)
        return cls(options, flag == "true", inactivity or INACTIVITY_S[1], unknown)


# -- one session ---------------------------------------------------------------------------------

_FRAME_FIELDS: dict[str, dict[str, type]] = {
    "Generate": {"text": str}, "Flush": {}, "Cancel": {}, "KeepAlive": {}, "Terminate": {}}


def read_frame(message: str | bytes) -> tuple[dict[str, Any] | None, str, str | None]:
    """A client frame, or why it breaks the frame rules (and the field at fault)."""
    if isinstance(message, bytes):
        return None, "Binary frames are not accepted: send JSON text frames.", None
    try:
        data = json.loads(message)
    except ValueError:
        return None, f"The frame is not JSON: {message[:60]!r}", None
    if not isinstance(data, dict):
        return None, "A frame must be a JSON object with a type.", None
    kind = data.get("type")
    if kind not in _FRAME_FIELDS:
        what = "has no type" if kind is None else f"has an unknown type {kind!r}"
        return None, f"The frame {what}: send one of {', '.join(_FRAME_FIELDS)}.", "type"
    for name, kind_of in _FRAME_FIELDS[kind].items():
        if not isinstance(data.get(name), kind_of):
            return None, f"{kind} needs {name!r} as a {kind_of.__name__}.", name
    return data, "", None


@dataclass
class _Request:
    """Text up to a Flush: what has arrived, what has been handed to synthesis, what of it
    has been sent."""

    text: str = ""
    taken: int = 0                  # characters of text handed to synthesis
    flush_id: int | None = None     # set by its Flush
    samples: int = 0                # audio sent for it
    audio_start: int | None = None  # where its audio starts on the session's timeline
    words: list[tuple[str, int, int]] = field(default_factory=list)

    def take(self) -> list[str] | None:
        """The tokens ready to speak: complete sentences (a sentence's end and the space
        after it), or, once flushed, the rest. None when there are none yet."""
        rest = self.text[self.taken:]
        if self.flush_id is None:
            ends = [m.end() for m in _SENTENCE_END.finditer(rest)]
            if not ends:
                return None
            rest = rest[:ends[-1]]
        self.taken += len(rest)
        return rest.split() or None


class _Struck(Exception):
    """A planned fault ended the session while its audio was being sent."""


class _Session:
    def __init__(self, service: TTSService, ws: Any, config: _SessionConfig) -> None:
        self.service, self.ws, self.config = service, ws, config
        self.options = config.options
        self.rate = config.options.sample_rate
        self.id = str(uuid.uuid4())
        self.started = time.monotonic()
        self.expires_at = int(time.time()) + SESSION_TTL_S
        self.requests: deque[_Request] = deque([_Request()])
        self.next_id = 0            # the id the next Flush (or Cancel) takes
        self.samples = 0            # audio sent: the session's timeline
        self.chars = 0              # characters received, billed
        self.last_frame = time.monotonic()
        self.wake = asyncio.Event()
        self.pace = _Pace(service.speed)
        self.terminating = False
        self.speaker: asyncio.Task[None] | None = None
        #: the FlushDone (and WordBoundaries) being sent, which a Cancel lets finish
        self.concluding: asyncio.Future[None] | None = None
        #: the failures planned for it (``sim.tts.faults``): its frames are the client's
        #: messages and the Audio frames sent, so a fault can strike mid-answer
        self.faults = service.faults.session()

    async def _send(self, frame: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(frame))
        self.last_frame = time.monotonic()

    async def run(self) -> None:
        from websockets.exceptions import ConnectionClosed

        config = self.config
        await self._send({"type": "Begin", "id": self.id, "expires_at": self.expires_at,
                          "configuration": _configuration(
                              self.options, config.word_boundaries, config.inactivity,
                              config.unknown)})
        self.speaker = asyncio.create_task(self._speak())
        watchdog = asyncio.create_task(self._watch())
        try:
            async for message in self.ws:
                self.last_frame = time.monotonic()
                if await self._struck() or not await self._handle(message):
                    return
        except ConnectionClosed:  # the client left, or sent more than 1 MiB (1009)
            pass
        finally:
            watchdog.cancel()
            self.speaker.cancel()

    async def _struck(self) -> bool:
        """Count a frame and act out a fault due now; True when it ended the session."""
        fault = self.faults.due()
        if fault is None:
            return False
        self.service.count("faults")
        return await self.faults.act(self.ws, fault)

    async def _handle(self, message: str | bytes) -> bool:
        """Act on one client frame; False when the session is over."""
        data, problem, param = read_frame(message)
        if data is None:
            self.service.count("closed_with_error")
            await _fail(self.ws, CLOSE_INVALID, "invalid_message", problem, param)
            return False
        kind = data["type"]
        if kind == "Generate":
            if len(data["text"]) > MAX_GENERATE_CHARS:
                self.service.count("closed_with_error")
                await _fail(self.ws, CLOSE_INVALID, "invalid_message",
                            f"Generate text is {len(data['text'])} characters, over the "
                            f"limit of {MAX_GENERATE_CHARS}.", "text")
                return False
            self.requests[-1].text += data["text"]
            self.chars += len(data["text"])
            self.wake.set()
        elif kind == "Flush":
            self._flush()
        elif kind == "Cancel":
            await self._cancel()
        elif kind == "Terminate":
            await self._terminate()
            return False
        return True  # a KeepAlive did its work by arriving

    def _flush(self) -> None:
        self.requests[-1].flush_id = self.next_id
        self.next_id += 1
        self.requests.append(_Request())
        self.wake.set()

    async def _cancel(self) -> None:
        """Stop the request in flight, drop every queued one and the text being written;
        the Cancel takes an id of its own."""
        self.next_id += 1
        assert self.speaker is not None
        self.speaker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.speaker
        if self.concluding is not None:  # a request already said is not cancelled
            await self.concluding
            self.concluding = None
        in_flight = self.requests[0]
        self.requests = deque([_Request()])
        self.pace = _Pace(self.service.speed)  # what was cancelled is no longer being made
        self.service.count("cancels")
        await self._send({"type": "Cancelled",
                          "audio_duration_seconds": round(in_flight.samples / self.rate, 3)})
        self.speaker = asyncio.create_task(self._speak())

    async def _terminate(self) -> None:
        """Speak what is left (unflushed text included), then the session's summary."""
        if self.requests[-1].text.strip():
            self._flush()
        self.terminating = True
        self.wake.set()
        assert self.speaker is not None
        await self.speaker
        self.service.count("terminated")
        await self._send({"type": "Termination",
                          "session_duration_seconds": round(time.monotonic() - self.started),
                          "total_input_char_length": self.chars,
                          "audio_duration_seconds": round(self.samples / self.rate, 3),
                          "voice_expires_at": None})
        await self.ws.close(1000, "")

    async def _watch(self) -> None:
        """End the session after ``inactivity_timeout`` with no frame either way, or at
        the end of its hour."""
        deadline = self.started + SESSION_TTL_S
        while True:
            now = time.monotonic()
            idle_left = self.last_frame + self.config.inactivity - now
            if deadline <= now:
                self.service.count("closed_with_error")
                return await _fail(self.ws, CLOSE_EXPIRED, "session_expired",
                                   "Session expired: its maximum duration has passed.",
                                   retryable=True)
            if idle_left <= 0:
                self.service.count("closed_with_error")
                return await _fail(self.ws, CLOSE_INVALID, "inactivity_timeout",
                                   f"No frame for {self.config.inactivity} seconds: send "
                                   "KeepAlive while the session waits.", retryable=True)
            await asyncio.sleep(min(idle_left, deadline - now) + 0.01)

    async def _speak(self) -> None:
        """Speak the requests in order, each as its sentences become ready; conclude each
        with FlushDone (then WordBoundaries) once flushed and said."""
        from websockets.exceptions import ConnectionClosed

        loop = asyncio.get_running_loop()
        try:
            while True:
                head = self.requests[0]
                tokens = head.take()
                if tokens is None:
                    if head.flush_id is not None:
                        # shielded: a Cancel must not split FlushDone from its words
                        self.concluding = asyncio.ensure_future(
                            self._conclude(self.requests.popleft()))
                        await asyncio.shield(self.concluding)
                        self.concluding = None
                        continue
                    if self.terminating:
                        return
                    self.wake.clear()
                    await self.wake.wait()
                    continue
                if not any(ch.isalnum() for token in tokens for ch in token):
                    continue  # nothing to speak (punctuation, emoji): no audio, no words
                ready, lead = time.monotonic(), head.audio_start is None and not head.words
                spoken = await loop.run_in_executor(
                    self.service.synth, lambda: self.service.speak(tokens, self.options,
                                                                   lead=lead))
                await self._play(head, spoken, ready)
        except (ConnectionClosed, _Struck):  # the client left, or a fault cut the socket:
            pass                             # the reader ends the session

    async def _play(self, head: _Request, spoken: Spoken, ready: float) -> None:
        if head.audio_start is None:
            head.audio_start = self.samples
            self.pace.start(ready + self.service.ttfb)
        base = self.samples
        head.words += [(w, base + s, base + e) for w, s, e in spoken.words]
        for piece in frames(spoken.pcm, self.rate):
            n = len(piece) // 2
            if wait := self.pace.next(ms_of(n, self.rate)):
                await asyncio.sleep(wait)
            # a request still being written takes the id its Flush will give it
            flush_id = head.flush_id if head.flush_id is not None else self.next_id
            if await self._struck():  # mid-answer, as the service's audio streams
                raise _Struck
            await self._send({"type": "Audio", "flush_id": flush_id, "audio": base64.b64encode(
                g711(piece, self.options.encoding)).decode()})
            self.samples += n
            head.samples += n

    async def _conclude(self, request: _Request) -> None:
        start = self.samples if request.audio_start is None else request.audio_start
        self.service.count("flushes")
        await self._send({"type": "FlushDone", "flush_id": request.flush_id,
                          "audio_duration_ms": ms_of(request.samples, self.rate)})
        if self.config.word_boundaries and request.words:
            await self._send({"type": "WordBoundaries", "flush_id": request.flush_id,
                              "audio_start_ms": ms_of(start, self.rate),
                              "words": [word_json(w, s, e, self.rate)
                                        for w, s, e in request.words]})
