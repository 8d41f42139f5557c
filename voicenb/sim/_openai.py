"""OpenAI's HTTP API, simulated: chat completions (JSON and SSE), models, transcriptions,
speech.

Answers are deterministic and say that they are simulated. Knobs: time to first token
(``ttft``), tokens per second (``token_rate``), the context window in tokens, and ``credit``
(billable requests left before the account runs out: then 429 ``insufficient_quota``).

Bodies follow OpenAI's published OpenAPI spec (``CreateChatCompletionResponse``,
``CreateChatCompletionStreamResponse``, ``CreateTranscriptionResponseJson`` /
``...VerboseJson`` / ``...DiarizedJson``, ``ErrorResponse``); tests/test_sim_openai_spec.py
checks them. Errors, injected faults included, have OpenAI's ``{"error": {"message", "type",
"param", "code"}}`` shape.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Iterator
from email.parser import BytesParser
from email.policy import default as default_policy
from typing import Any

from .._chat_models import CHAT_MODELS, known, refused
from .._errors import AudioError
from ..audio import Audio, pcm_to_wav
from ._registry import Registry
from ._server import App, Request, Response

#: CreateTranscriptionRequest.model's enum (plus the 2025-03-20 snapshot on OpenAI's model
#: page), each with the response formats it returns (AudioResponseFormat: only whisper-1 has
#: srt, vtt and verbose_json; only the diarize model has diarized_json)
TRANSCRIBE_FORMATS = {
    "whisper-1": ("json", "text", "srt", "verbose_json", "vtt"),
    "gpt-transcribe": ("json", "text"),
    "gpt-4o-transcribe": ("json", "text"),
    "gpt-4o-mini-transcribe": ("json", "text"),
    "gpt-4o-mini-transcribe-2025-12-15": ("json", "text"),
    "gpt-4o-mini-transcribe-2025-03-20": ("json", "text"),
    "gpt-4o-transcribe-diarize": ("json", "text", "diarized_json"),
}
AUDIO_MODELS = tuple(TRANSCRIBE_FORMATS)
#: AudioResponseFormat's enum
TRANSCRIBE_FORMAT_NAMES = ("json", "text", "srt", "verbose_json", "vtt", "diarized_json")
#: CreateSpeechRequest.model's enum (plus the 2025-03-20 snapshot on OpenAI's model page)
TTS_MODELS = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts", "gpt-4o-mini-tts-2025-12-15",
              "gpt-4o-mini-tts-2025-03-20")
#: the built-in voices CreateSpeechRequest.voice names
TTS_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage",
              "shimmer", "verse", "marin", "cedar")
#: response_format -> content type, as OpenAI sends them
SPEECH_FORMATS = {"mp3": "audio/mpeg", "opus": "audio/opus", "aac": "audio/aac",
                  "flac": "audio/flac", "wav": "audio/wav", "pcm": "audio/pcm"}
SPEECH_RATE = 24000
SIMULATED = "(simulated answer)"
TEXT_PLAIN = "text/plain; charset=utf-8"
#: paths whose errors are OpenAI's (not /v1/ as a whole: AssemblyAI's Sync API lives there too)
OPENAI_PREFIXES = ("/v1/chat/", "/v1/audio/", "/v1/models", "/v1/completions",
                   "/v1/embeddings", "/v1/responses")
#: OpenAI's error code for an account with no credit left
OUT_OF_CREDIT = "insufficient_quota"


def openai_error(status: int, message: str, type_: str, code: str | None = None,
                 param: str | None = None, **headers: str) -> Response:
    return Response(status, {"error": {"message": message, "type": type_, "param": param,
                                       "code": code}}, headers=headers)


def fault_error(status: int, message: str, headers: dict[str, str]) -> Response:
    """An injected fault (or an unknown path) as OpenAI words it (``App.error_shape``)."""
    if status == 429:
        wait = headers.get("Retry-After", "1")
        return openai_error(
            429, "Rate limit reached for gpt-4o-mini in organization org-voicenb-sim on "
                 f"requests per min (RPM): Limit 500, Used 500, Requested 1. Please try again "
                 f"in {wait}s. Visit https://platform.openai.com/account/rate-limits to learn "
                 "more.", "requests", "rate_limit_exceeded", **headers)
    if status == 500:
        return openai_error(500, "The server had an error while processing your request. "
                                 "Sorry about that!", "server_error", **headers)
    if status > 500:
        return openai_error(status, message, "server_error", **headers)
    if status == 404 and message.startswith("Not found: "):
        return openai_error(404, f"Invalid URL ({message.removeprefix('Not found: ')})",
                            "invalid_request_error", **headers)
    return openai_error(status, message, "invalid_request_error", **headers)


def out_of_credit() -> Response:
    return openai_error(429, "You exceeded your current quota, please check your plan and "
                             "billing details. For more information on this error, read the "
                             "docs: https://platform.openai.com/docs/guides/error-codes/"
                             "api-errors.", OUT_OF_CREDIT, OUT_OF_CREDIT)


def count_tokens(text: str) -> int:
    """A rough token count: about four characters a token, at least one a word."""
    return max(len(text.split()), (len(text) + 3) // 4)


def answer_for(messages: list[dict[str, Any]]) -> str:
    """The deterministic simulated reply to the last user message. Asked to continue a
    reply that was cut off (the part given, as its own message, then a user message that
    says "continue"), it gives the rest of that reply only, as a model asked so would."""
    if len(messages) >= 3 and messages[-2].get("role") == "assistant" and \
            "continue" in str(messages[-1].get("content") or "").lower():
        given = messages[-2].get("content")
        whole = answer_for(messages[:-2])
        if isinstance(given, str) and given and whole.startswith(given) and whole != given:
            return whole[len(given):]
    last = next((m for m in reversed(messages) if m.get("role") == "user"), {})
    content = last.get("content") or ""
    if isinstance(content, list):  # content parts
        content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    earlier = sum(1 for m in messages if m.get("role") == "user") - 1
    memory = f" I remember {earlier} earlier question{'s' if earlier != 1 else ''}." \
        if earlier > 0 else ""
    return (f"{SIMULATED} You asked: \u201c{content.strip()}\u201d.{memory} This reply comes "
            "from voicenb's local simulator, not a language model.")


def tokens_of(text: str) -> list[str]:
    """Split into word-sized pieces that join back to ``text``."""
    out, word = [], ""
    for ch in text:
        word += ch
        if ch == " ":
            out.append(word)
            word = ""
    if word:
        out.append(word)
    return out


class OpenAIService:
    def __init__(self, app: App, registry: Registry, *, key: str | None, ttft: float,
                 token_rate: float, context_window: int) -> None:
        self.app = app
        self.registry = registry
        self.key = key
        self.ttft = ttft
        self.token_rate = token_rate
        self.context_window = context_window
        #: billable requests (chat, transcription, speech) left before the account is out of
        #: credit and each answers 429 ``insufficient_quota``; None: no limit
        self.credit: int | None = None
        app.route("POST", "/v1/chat/completions", self.chat)
        app.route("GET", "/v1/models", self.models)
        app.route("POST", "/v1/audio/transcriptions", self.transcriptions)
        app.route("POST", "/v1/audio/speech", self.speech)
        for prefix in OPENAI_PREFIXES:
            app.error_shape(prefix, fault_error)

    def _auth(self, request: Request) -> Response | None:
        if self.key is None:  # like a local server (Ollama, llama.cpp): no key needed
            return None
        token = request.headers.get("Authorization", "")
        if token != f"Bearer {self.key}":
            return openai_error(401, "Incorrect API key provided. You can find your API key at "
                                     "https://platform.openai.com/account/api-keys.",
                                "invalid_request_error", "invalid_api_key")
        return None

    def _spend(self) -> Response | None:
        """One billable request, after the key and the request are checked (a refused one
        is free): None, or 429 ``insufficient_quota`` once the credit is gone."""
        with self.app.lock:
            if self.credit is not None:
                if self.credit <= 0:
                    self.app.stats[OUT_OF_CREDIT] += 1
                    return out_of_credit()
                self.credit -= 1
        return None

    def models(self, request: Request) -> Response:
        if (denied := self._auth(request)) is not None:
            return denied
        data = [{"id": m, "object": "model", "created": 1700000000, "owned_by": "voicenb-sim"}
                for m in (*CHAT_MODELS, *AUDIO_MODELS, *TTS_MODELS)]
        return Response(200, {"object": "list", "data": data})

    def chat(self, request: Request) -> Response:
        if (denied := self._auth(request)) is not None:
            return denied
        body = request.json()
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return openai_error(400, "Missing required parameter: 'messages'.",
                                "invalid_request_error", "missing_required_parameter",
                                "messages")
        model = body.get("model")
        if not isinstance(model, str) or not known(model):
            return openai_error(404, f"The model `{model}` does not exist or you do not have "
                                     "access to it.", "invalid_request_error", "model_not_found")
        if (why := refused(model, body)) is not None:
            return openai_error(400, why[0], "invalid_request_error", why[1], why[2])
        messages = body["messages"]
        prompt_tokens = sum(count_tokens(str(m.get("content") or "")) + 4 for m in messages)
        if prompt_tokens > self.context_window:
            return openai_error(
                400, f"This model's maximum context length is {self.context_window} tokens. "
                     f"However, your messages resulted in {prompt_tokens} tokens. Please reduce "
                     "the length of the messages.", "invalid_request_error",
                "context_length_exceeded", "messages")
        if (denied := self._spend()) is not None:
            return denied
        text = answer_for(messages)
        pieces = tokens_of(text)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(pieces),
                 "total_tokens": prompt_tokens + len(pieces)}
        self.app.count("chat_completions")
        cid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        if not body.get("stream"):
            time.sleep(self.ttft + len(pieces) / self.token_rate)
            return Response(200, {
                "id": cid, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text,
                                                     "refusal": None, "annotations": []},
                             "logprobs": None, "finish_reason": "stop"}],
                "usage": usage, "service_tier": "default",
                "system_fingerprint": "fp_voicenb_sim"})
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return Response(200, content_type="text/event-stream",
                        headers={"Cache-Control": "no-cache"},
                        stream=self._sse(cid, created, model, pieces, usage, include_usage))

    def _sse(self, cid: str, created: int, model: str, pieces: list[str],
             usage: dict[str, int], include_usage: bool) -> Iterator[bytes]:
        def event(choices: list[dict[str, Any]], **extra: Any) -> bytes:
            chunk = {"id": cid, "object": "chat.completion.chunk", "created": created,
                     "model": model, "service_tier": "default",
                     "system_fingerprint": "fp_voicenb_sim", "choices": choices, **extra}
            if include_usage and "usage" not in extra:
                chunk["usage"] = None
            return f"data: {json.dumps(chunk)}\n\n".encode()

        time.sleep(self.ttft)
        yield event([{"index": 0, "delta": {"role": "assistant", "content": "",
                                            "refusal": None},
                      "logprobs": None, "finish_reason": None}])
        for piece in pieces:
            yield event([{"index": 0, "delta": {"content": piece}, "logprobs": None,
                          "finish_reason": None}])
            time.sleep(1.0 / self.token_rate)
        yield event([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}])
        if include_usage:
            yield event([], usage=usage)
        yield b"data: [DONE]\n\n"

    def transcriptions(self, request: Request) -> Response:
        if (denied := self._auth(request)) is not None:
            return denied
        fields, files = _multipart(request.headers.get("Content-Type", ""), request.body())
        model = _one(fields, "model")
        fmt = _one(fields, "response_format") or "json"
        refused = _check_transcription(model, fmt, fields) or (
            None if "file" in files else openai_error(
                400, "Missing required parameter: 'file'.", "invalid_request_error",
                "missing_required_parameter", "file"))
        if refused is not None:
            return refused
        try:
            audio = Audio(files["file"])
            seconds = audio.duration
        except AudioError:
            return openai_error(400, "Invalid file format. Supported formats: ['flac', 'm4a', "
                                     "'mp3', 'mp4', 'mpeg', 'mpga', 'oga', 'ogg', 'wav', 'webm']",
                                "invalid_request_error", "invalid_value", "file")
        if (denied := self._spend()) is not None:
            return denied
        time.sleep(self.ttft)
        self.app.count("audio_transcriptions")
        text = self.registry.hear(audio.sha256, seconds, audio, service="openai")
        words = "word" in fields.get("timestamp_granularities[]", [])
        return transcription_body(model, fmt, text, seconds, words=words)

    def speech(self, request: Request) -> Response:
        """A short tone, one beep a word, in the requested format; transcribing it later
        gives back the text (it is registered)."""
        if (denied := self._auth(request)) is not None:
            return denied
        body = request.json()
        if not isinstance(body, dict):
            return openai_error(400, "We could not parse the JSON body of your request.",
                                "invalid_request_error")
        if (refused := _check_speech(body)) is not None:
            return refused
        if (denied := self._spend()) is not None:
            return denied
        text, fmt = str(body["input"]), body.get("response_format") or "mp3"
        time.sleep(self.ttft)
        data = speech_audio(text, fmt)
        self.registry.register(data, text)
        self.app.count("audio_speech")
        return Response(200, data, content_type=SPEECH_FORMATS[fmt])


def _one(fields: dict[str, list[str]], name: str) -> str | None:
    values = fields.get(name)
    return values[-1] if values else None


def _invalid(param: str, value: Any, allowed: tuple[str, ...] | list[str]) -> Response:
    return openai_error(400, f"Invalid value for '{param}': {value!r}. Supported values are: "
                             f"{', '.join(repr(a) for a in allowed)}.",
                        "invalid_request_error", "invalid_value", param)


def _check_transcription(model: str | None, fmt: str, fields: dict[str, list[str]]
                         ) -> Response | None:
    """The refusals of CreateTranscriptionRequest (model, response_format and the options
    some models do not take), or None."""
    if not model:
        return openai_error(400, "Missing required parameter: 'model'.",
                            "invalid_request_error", "missing_required_parameter", "model")
    if model not in TRANSCRIBE_FORMATS:
        return openai_error(400, f"Invalid model {model!r}. Supported models are: "
                                 f"{', '.join(AUDIO_MODELS)}.", "invalid_request_error",
                            "model_not_found", "model")
    if fmt not in TRANSCRIBE_FORMAT_NAMES:
        return _invalid("response_format", fmt, TRANSCRIBE_FORMAT_NAMES)
    allowed = TRANSCRIBE_FORMATS[model]
    if fmt not in allowed:
        return openai_error(400, f"response_format '{fmt}' is not compatible with model "
                                 f"'{model}'. Use {' or '.join(repr(a) for a in allowed)} "
                                 "instead.", "invalid_request_error", "unsupported_value",
                            "response_format")
    if fields.get("timestamp_granularities[]") and fmt != "verbose_json":
        return openai_error(400, "timestamp_granularities requires response_format "
                                 "'verbose_json'.", "invalid_request_error",
                            "unsupported_value", "timestamp_granularities")
    if model == "gpt-4o-transcribe-diarize" and fields.get("prompt"):
        return openai_error(400, f"'prompt' is not supported with model '{model}'.",
                            "invalid_request_error", "unsupported_parameter", "prompt")
    return None


def _check_speech(body: dict[str, Any]) -> Response | None:
    """The refusals of CreateSpeechRequest, or None."""
    for name in ("model", "input", "voice"):
        if not body.get(name):
            return openai_error(400, f"Missing required parameter: '{name}'.",
                                "invalid_request_error", "missing_required_parameter", name)
    model, text, voice = body["model"], str(body["input"]), body["voice"]
    if model not in TTS_MODELS:
        return openai_error(404, f"The model `{model}` does not exist or you do not have "
                                 "access to it.", "invalid_request_error", "model_not_found")
    if len(text) > 4096:
        return openai_error(400, "Invalid 'input': string too long. Expected a string with "
                                 f"maximum length 4096, but got a string with length "
                                 f"{len(text)} instead.", "invalid_request_error",
                            "string_above_max_length", "input")
    custom = isinstance(voice, dict) and isinstance(voice.get("id"), str)
    if not custom and voice not in TTS_VOICES:
        return _invalid("voice", voice, TTS_VOICES)
    fmt = body.get("response_format") or "mp3"
    if fmt not in SPEECH_FORMATS:
        return _invalid("response_format", fmt, list(SPEECH_FORMATS))
    speed = body.get("speed", 1.0)
    if not isinstance(speed, (int, float)) or not 0.25 <= speed <= 4.0:
        return openai_error(400, f"Invalid 'speed': {speed!r}. Expected a number from 0.25 "
                                 "to 4.0.", "invalid_request_error", "invalid_value", "speed")
    if body.get("stream_format") == "sse" and model.startswith("tts-1"):
        return openai_error(400, f"stream_format 'sse' is not supported for model '{model}'.",
                            "invalid_request_error", "unsupported_value", "stream_format")
    return None


def transcription_body(model: str, fmt: str, text: str, seconds: float, *,
                       words: bool = False) -> Response:
    """The answer for ``response_format`` ``fmt``: CreateTranscriptionResponseJson (with
    whisper-1's duration usage or the GPT models' token usage), ...VerboseJson,
    ...DiarizedJson, or plain text (text, srt, vtt)."""
    if fmt == "text":
        return Response(200, text + "\n", content_type=TEXT_PLAIN)
    if fmt in ("srt", "vtt"):
        return Response(200, subtitles(text, seconds, vtt=fmt == "vtt"),
                        content_type=TEXT_PLAIN)
    duration_usage = {"type": "duration", "seconds": math.ceil(seconds)}
    if fmt == "verbose_json":
        body: dict[str, Any] = {
            "task": "transcribe", "language": "english", "duration": round(seconds, 2),
            "text": text, "segments": [_segment(text, seconds)], "usage": duration_usage}
        if words:
            body["words"] = _words(text, seconds)
        return Response(200, body)
    audio_tokens = max(1, round(seconds * 10))
    out_tokens = count_tokens(text)
    tokens_usage = {"type": "tokens", "input_tokens": audio_tokens,
                    "input_token_details": {"text_tokens": 0, "audio_tokens": audio_tokens},
                    "output_tokens": out_tokens, "total_tokens": audio_tokens + out_tokens}
    if fmt == "diarized_json":
        return Response(200, {
            "task": "transcribe", "duration": round(seconds, 2), "text": text,
            "segments": [{"type": "transcript.text.segment", "id": "seg_0", "start": 0.0,
                          "end": round(seconds, 2), "text": text, "speaker": "A"}],
            "usage": tokens_usage})
    body = {"text": text, "usage": duration_usage if model == "whisper-1" else tokens_usage}
    if model == "gpt-transcribe":
        body["languages"] = [{"code": "en"}]
    return Response(200, body)


def _segment(text: str, seconds: float) -> dict[str, Any]:
    return {"id": 0, "seek": 0, "start": 0.0, "end": round(seconds, 2), "text": f" {text}",
            "tokens": [50364 + i for i in range(len(tokens_of(text)))], "temperature": 0.0,
            "avg_logprob": -0.25, "compression_ratio": 1.2, "no_speech_prob": 0.01}


def _words(text: str, seconds: float) -> list[dict[str, Any]]:
    words = text.split()
    step = seconds / max(len(words), 1)
    return [{"word": w, "start": round(i * step, 2), "end": round((i + 1) * step, 2)}
            for i, w in enumerate(words)]


def subtitles(text: str, seconds: float, *, vtt: bool) -> str:
    """One cue spanning the clip, as SubRip or WebVTT."""
    def stamp(t: float) -> str:
        ms = round(t * 1000)
        sep = "." if vtt else ","
        hours, minutes, secs = ms // 3600000, ms // 60000 % 60, ms // 1000 % 60
        return f"{hours:02d}:{minutes:02d}:{secs:02d}{sep}{ms % 1000:03d}"

    cue = f"{stamp(0)} --> {stamp(seconds)}\n{text}\n"
    return f"WEBVTT\n\n{cue}\n" if vtt else f"1\n{cue}\n"


def speech_pcm(text: str, rate: int = SPEECH_RATE) -> bytes:
    """Mono s16le: a 0.12 s beep for each word (pitch from its length), 0.06 s apart."""
    import math

    out = bytearray()
    gap = bytes(int(0.06 * rate) * 2)
    for word in (text.split() or [""])[:60]:
        freq = 300 + 40 * min(len(word), 12)
        n = int(0.12 * rate)
        for i in range(n):
            envelope = min(1.0, i / 240, (n - i) / 240)
            out += int(6000 * envelope * math.sin(2 * math.pi * freq * i / rate)).to_bytes(
                2, "little", signed=True)
        out += gap
    return bytes(out)


def speech_audio(text: str, fmt: str) -> bytes:
    """The simulated speech for ``text`` as OpenAI's ``response_format`` ``fmt``."""
    import io

    pcm = speech_pcm(text)
    if fmt == "pcm":
        return pcm
    if fmt == "wav":
        return pcm_to_wav(pcm, SPEECH_RATE)
    buf = io.BytesIO()
    import av
    import numpy as np

    container, codec, rate = {"mp3": ("mp3", "libmp3lame", SPEECH_RATE),
                              "opus": ("ogg", "libopus", 48000),
                              "aac": ("adts", "aac", SPEECH_RATE),
                              "flac": ("flac", "flac", SPEECH_RATE)}[fmt]
    samples = np.frombuffer(pcm, dtype="<i2").reshape(1, -1)
    with av.open(buf, "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = SPEECH_RATE
        resampler = av.AudioResampler(format=stream.codec_context.format.name,
                                      layout="mono", rate=rate,
                                      frame_size=stream.codec_context.frame_size or None)
        for chunk in [*resampler.resample(frame), *resampler.resample(None)]:
            for packet in stream.encode(chunk):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def _multipart(content_type: str, body: bytes
               ) -> tuple[dict[str, list[str]], dict[str, bytes]]:
    """Form fields (a name may repeat: ``timestamp_granularities[]``) and files."""
    message = BytesParser(policy=default_policy).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    fields: dict[str, list[str]] = {}
    files: dict[str, bytes] = {}
    if not message.is_multipart():
        return fields, files
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            continue
        payload = part.get_payload(decode=True) or b""
        if part.get_filename() is not None:
            files[name] = payload
        else:
            fields.setdefault(name, []).append(payload.decode("utf-8", "replace"))
    return fields, files
