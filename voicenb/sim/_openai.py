"""OpenAI's HTTP API, simulated: chat completions (JSON and SSE), models, transcriptions,
speech.

Answers are deterministic and say that they are simulated. Knobs: time to first token
(``ttft``), tokens per second (``token_rate``) and the context window in tokens.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from email.parser import BytesParser
from email.policy import default as default_policy
from typing import Any

from .._errors import AudioError
from ..audio import Audio, pcm_to_wav
from ._registry import Registry
from ._server import App, Request, Response

CHAT_MODELS = ("gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "gpt-4.1", "gpt-5-mini")
AUDIO_MODELS = ("whisper-1", "gpt-4o-mini-transcribe", "gpt-4o-transcribe")
TTS_MODELS = ("gpt-4o-mini-tts", "tts-1")
TTS_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage",
              "shimmer", "verse", "marin", "cedar")
#: response_format -> content type, as OpenAI sends them
SPEECH_FORMATS = {"mp3": "audio/mpeg", "opus": "audio/opus", "aac": "audio/aac",
                  "flac": "audio/flac", "wav": "audio/wav", "pcm": "audio/pcm"}
SPEECH_RATE = 24000
SIMULATED = "(simulated answer)"


def openai_error(status: int, message: str, type_: str, code: str | None = None,
                 **headers: str) -> Response:
    return Response(status, {"error": {"message": message, "type": type_, "param": None,
                                       "code": code}}, headers=headers)


def count_tokens(text: str) -> int:
    """A rough token count: about four characters a token, at least one a word."""
    return max(len(text.split()), (len(text) + 3) // 4)


def answer_for(messages: list[dict[str, Any]]) -> str:
    """The deterministic simulated reply to the last user message."""
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
        app.route("POST", "/v1/chat/completions", self.chat)
        app.route("GET", "/v1/models", self.models)
        app.route("POST", "/v1/audio/transcriptions", self.transcriptions)
        app.route("POST", "/v1/audio/speech", self.speech)

    def _auth(self, request: Request) -> Response | None:
        if self.key is None:  # like a local server (Ollama, llama.cpp): no key needed
            return None
        token = request.headers.get("Authorization", "")
        if token != f"Bearer {self.key}":
            return openai_error(401, "Incorrect API key provided. You can find your API key at "
                                     "https://platform.openai.com/account/api-keys.",
                                "invalid_request_error", "invalid_api_key")
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
            return openai_error(400, "'messages' is a required property",
                                "invalid_request_error")
        model = body.get("model")
        if model not in CHAT_MODELS:
            return openai_error(404, f"The model `{model}` does not exist or you do not have "
                                     "access to it.", "invalid_request_error", "model_not_found")
        messages = body["messages"]
        prompt_tokens = sum(count_tokens(str(m.get("content") or "")) + 4 for m in messages)
        if prompt_tokens > self.context_window:
            return openai_error(
                400, f"This model's maximum context length is {self.context_window} tokens. "
                     f"However, your messages resulted in {prompt_tokens} tokens. Please reduce "
                     "the length of the messages.", "invalid_request_error",
                "context_length_exceeded")
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
                                                     "refusal": None},
                             "logprobs": None, "finish_reason": "stop"}],
                "usage": usage, "system_fingerprint": "fp_voicenb_sim"})
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return Response(200, content_type="text/event-stream",
                        headers={"Cache-Control": "no-cache"},
                        stream=self._sse(cid, created, model, pieces, usage, include_usage))

    def _sse(self, cid: str, created: int, model: str, pieces: list[str],
             usage: dict[str, int], include_usage: bool) -> Iterator[bytes]:
        def event(choices: list[dict[str, Any]], **extra: Any) -> bytes:
            chunk = {"id": cid, "object": "chat.completion.chunk", "created": created,
                     "model": model, "system_fingerprint": "fp_voicenb_sim", "choices": choices,
                     **extra}
            if include_usage and "usage" not in extra:
                chunk["usage"] = None
            return f"data: {json.dumps(chunk)}\n\n".encode()

        time.sleep(self.ttft)
        yield event([{"index": 0, "delta": {"role": "assistant", "content": ""},
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
        model = fields.get("model")
        if model not in AUDIO_MODELS:
            return openai_error(400 if model else 400,
                                f"Invalid model {model!r}: use one of {', '.join(AUDIO_MODELS)}.",
                                "invalid_request_error", "invalid_model")
        if "file" not in files:
            return openai_error(400, "'file' is a required property", "invalid_request_error")
        data = files["file"]
        try:
            audio = Audio(data)
            seconds = audio.duration
        except AudioError:
            return openai_error(400, "Invalid file format. Supported formats: ['flac', 'm4a', "
                                     "'mp3', 'mp4', 'mpeg', 'mpga', 'oga', 'ogg', 'wav', 'webm']",
                                "invalid_request_error")
        time.sleep(self.ttft)
        self.app.count("audio_transcriptions")
        text = self.registry.hear(audio.sha256, seconds, audio)
        fmt = fields.get("response_format", "json")
        if fmt == "text":
            return Response(200, text + "\n", content_type="text/plain")
        if fmt == "verbose_json":
            return Response(200, {"task": "transcribe", "language": "english",
                                  "duration": seconds, "text": text, "segments": []})
        return Response(200, {"text": text, "usage": {"type": "duration",
                                                      "seconds": round(seconds)}})


    def speech(self, request: Request) -> Response:
        """A short tone, one beep a word, in the requested format; transcribing it later
        gives back the text (it is registered)."""
        if (denied := self._auth(request)) is not None:
            return denied
        body = request.json()
        if not isinstance(body, dict):
            return openai_error(400, "The request body must be a JSON object.",
                                "invalid_request_error")
        for name in ("model", "input", "voice"):
            if not body.get(name):
                return openai_error(400, f"'{name}' is a required property",
                                    "invalid_request_error")
        model, text, voice = body["model"], str(body["input"]), body["voice"]
        if model not in TTS_MODELS:
            return openai_error(404, f"The model `{model}` does not exist or you do not have "
                                     "access to it.", "invalid_request_error", "model_not_found")
        if len(text) > 4096:
            return openai_error(400, "Invalid 'input': string too long. Expected a string with "
                                     f"maximum length 4096, but got a string with length "
                                     f"{len(text)} instead.", "invalid_request_error",
                                "string_above_max_length")
        if voice not in TTS_VOICES:
            return openai_error(400, f"Invalid value for 'voice': {voice!r}. Supported values "
                                     f"are: {', '.join(TTS_VOICES)}.", "invalid_request_error",
                                "invalid_value")
        fmt = body.get("response_format") or "mp3"
        if fmt not in SPEECH_FORMATS:
            return openai_error(400, f"Invalid value for 'response_format': {fmt!r}. Supported "
                                     f"values are: {', '.join(SPEECH_FORMATS)}.",
                                "invalid_request_error", "invalid_value")
        time.sleep(self.ttft)
        data = speech_audio(text, fmt)
        self.registry.register(data, text)
        self.app.count("audio_speech")
        return Response(200, data, content_type=SPEECH_FORMATS[fmt])


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


def _multipart(content_type: str, body: bytes) -> tuple[dict[str, str], dict[str, bytes]]:
    message = BytesParser(policy=default_policy).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    fields: dict[str, str] = {}
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
            fields[name] = payload.decode("utf-8", "replace")
    return fields, files
