"""The OpenAI simulator against OpenAI's published OpenAPI spec (openai/openai-openapi).

Every JSON body is fetched over loopback from a running simulator and validated against a
compact JSON Schema written here from the spec's components (names in the comments): only
the facts the simulator must honour (required fields, types, enums), not the vendor's file.
Then the official openai SDK, unchanged, against the same simulator; and voicenb's handling
of the two kinds of 429.
"""

from __future__ import annotations

import json

import pytest
import requests

import voicenb as vnb

jsonschema = pytest.importorskip("jsonschema", reason="pip install jsonschema (dev extra)")

QUESTION = "What is the capital of France?"

# -- schemas, from the spec's components/schemas -----------------------------------------------

STRING, INTEGER, NUMBER = {"type": "string"}, {"type": "integer"}, {"type": "number"}
NULLABLE_STRING = {"type": ["string", "null"]}
FINISH_REASONS = ["stop", "length", "tool_calls", "content_filter", "function_call"]
SERVICE_TIERS = ["auto", "default", "flex", "scale", "priority", "fast", None]

#: ErrorResponse / Error
ERROR_RESPONSE = {
    "type": "object", "required": ["error"],
    "properties": {"error": {
        "type": "object", "required": ["type", "message", "param", "code"],
        "properties": {"code": NULLABLE_STRING, "message": STRING, "param": NULLABLE_STRING,
                       "type": STRING}}}}

#: CompletionUsage
COMPLETION_USAGE = {
    "type": "object", "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
    "properties": {"prompt_tokens": INTEGER, "completion_tokens": INTEGER,
                   "total_tokens": INTEGER}}

#: CreateChatCompletionResponse (message: ChatCompletionResponseMessage)
CHAT_COMPLETION = {
    "type": "object", "required": ["choices", "created", "id", "model", "object"],
    "properties": {
        "id": STRING, "created": INTEGER, "model": STRING,
        "object": {"enum": ["chat.completion"]},
        "service_tier": {"enum": SERVICE_TIERS}, "system_fingerprint": STRING,
        "usage": COMPLETION_USAGE,
        "choices": {"type": "array", "items": {
            "type": "object", "required": ["finish_reason", "index", "message", "logprobs"],
            "properties": {
                "finish_reason": {"enum": FINISH_REASONS}, "index": INTEGER,
                "logprobs": {"type": ["object", "null"]},
                "message": {
                    "type": "object", "required": ["role", "content", "refusal"],
                    "properties": {"role": {"enum": ["assistant"]},
                                   "content": NULLABLE_STRING, "refusal": NULLABLE_STRING,
                                   "annotations": {"type": "array"}}}}}}}}

#: CreateChatCompletionStreamResponse (delta: ChatCompletionStreamResponseDelta)
CHAT_CHUNK = {
    "type": "object", "required": ["choices", "created", "id", "model", "object"],
    "properties": {
        "id": STRING, "created": INTEGER, "model": STRING,
        "object": {"enum": ["chat.completion.chunk"]},
        "service_tier": {"enum": SERVICE_TIERS}, "system_fingerprint": STRING,
        "usage": {"anyOf": [COMPLETION_USAGE, {"type": "null"}]},
        "choices": {"type": "array", "items": {
            "type": "object", "required": ["delta", "finish_reason", "index"],
            "properties": {
                "index": INTEGER, "finish_reason": {"enum": [*FINISH_REASONS, None]},
                "logprobs": {"type": ["object", "null"]},
                "delta": {"type": "object", "properties": {
                    "content": NULLABLE_STRING, "refusal": NULLABLE_STRING,
                    "role": {"enum": ["developer", "system", "user", "assistant", "tool"]}}}}}}}}

#: TranscriptTextUsageDuration, TranscriptTextUsageTokens
USAGE_DURATION = {"type": "object", "required": ["type", "seconds"],
                  "properties": {"type": {"enum": ["duration"]}, "seconds": NUMBER}}
USAGE_TOKENS = {
    "type": "object", "required": ["type", "input_tokens", "output_tokens", "total_tokens"],
    "properties": {"type": {"enum": ["tokens"]}, "input_tokens": INTEGER,
                   "output_tokens": INTEGER, "total_tokens": INTEGER,
                   "input_token_details": {"type": "object", "properties": {
                       "text_tokens": INTEGER, "audio_tokens": INTEGER}}}}

#: CreateTranscriptionResponseJson (languages: TranscriptionLanguage)
TRANSCRIPTION_JSON = {
    "type": "object", "required": ["text"],
    "properties": {"text": STRING, "usage": {"oneOf": [USAGE_TOKENS, USAGE_DURATION]},
                   "languages": {"type": "array", "items": {
                       "type": "object", "required": ["code"], "properties": {"code": STRING}}}}}

#: TranscriptionSegment
SEGMENT_FIELDS = {"id": INTEGER, "seek": INTEGER, "start": NUMBER, "end": NUMBER, "text": STRING,
                  "tokens": {"type": "array", "items": INTEGER}, "temperature": NUMBER,
                  "avg_logprob": NUMBER, "compression_ratio": NUMBER, "no_speech_prob": NUMBER}

#: CreateTranscriptionResponseVerboseJson (words: TranscriptionWord)
TRANSCRIPTION_VERBOSE = {
    "type": "object", "required": ["language", "duration", "text"],
    "properties": {
        "language": STRING, "duration": NUMBER, "text": STRING, "usage": USAGE_DURATION,
        "segments": {"type": "array", "items": {
            "type": "object", "required": list(SEGMENT_FIELDS), "properties": SEGMENT_FIELDS}},
        "words": {"type": "array", "items": {
            "type": "object", "required": ["word", "start", "end"],
            "properties": {"word": STRING, "start": NUMBER, "end": NUMBER}}}}}

#: CreateTranscriptionResponseDiarizedJson (segments: TranscriptionDiarizedSegment)
TRANSCRIPTION_DIARIZED = {
    "type": "object", "required": ["task", "duration", "text", "segments"],
    "properties": {
        "task": {"enum": ["transcribe"]}, "duration": NUMBER, "text": STRING,
        "usage": {"oneOf": [USAGE_TOKENS, USAGE_DURATION]},
        "segments": {"type": "array", "items": {
            "type": "object", "required": ["type", "id", "start", "end", "text", "speaker"],
            "properties": {"type": {"enum": ["transcript.text.segment"]}, "id": STRING,
                           "start": NUMBER, "end": NUMBER, "text": STRING,
                           "speaker": STRING}}}}}

#: ListModelsResponse / Model
MODEL_LIST = {
    "type": "object", "required": ["object", "data"],
    "properties": {"object": {"enum": ["list"]}, "data": {"type": "array", "items": {
        "type": "object", "required": ["id", "created", "object", "owned_by"],
        "properties": {"id": STRING, "created": INTEGER, "object": {"enum": ["model"]},
                       "owned_by": STRING}}}}}

#: CreateTranscriptionRequest.model, CreateSpeechRequest.model (enums), and the 2025-03-20
#: snapshots OpenAI's model pages list besides the spec's 2025-12-15 ones
TRANSCRIPTION_MODELS = ["whisper-1", "gpt-transcribe", "gpt-4o-transcribe",
                        "gpt-4o-mini-transcribe", "gpt-4o-mini-transcribe-2025-12-15",
                        "gpt-4o-transcribe-diarize", "gpt-4o-mini-transcribe-2025-03-20"]
SPEECH_MODELS = ["tts-1", "tts-1-hd", "gpt-4o-mini-tts", "gpt-4o-mini-tts-2025-12-15",
                 "gpt-4o-mini-tts-2025-03-20"]


def conforms(body: object, schema: dict) -> None:
    jsonschema.validate(body, schema, cls=jsonschema.Draft202012Validator)


# -- talking to the simulator over loopback ------------------------------------------------------


class API:
    def __init__(self, sim) -> None:
        self.base = f"{sim.url}/v1"
        self.headers = {"Authorization": f"Bearer {sim.openai.key}"}

    def chat(self, **body) -> requests.Response:
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": QUESTION}],
                **body}
        return requests.post(f"{self.base}/chat/completions", json=body, headers=self.headers,
                             timeout=10)

    def transcribe(self, clip, model: str = "whisper-1", **fields) -> requests.Response:
        with open(clip, "rb") as fh:
            return requests.post(f"{self.base}/audio/transcriptions", headers=self.headers,
                                 files={"file": ("clip.wav", fh, "audio/wav")},
                                 data={"model": model, **fields}, timeout=10)

    def speech(self, **body) -> requests.Response:
        body = {"model": "gpt-4o-mini-tts", "voice": "alloy", "input": "Paris.", **body}
        return requests.post(f"{self.base}/audio/speech", json=body, headers=self.headers,
                             timeout=10)


@pytest.fixture
def api(sim) -> API:
    return API(sim)


def refused(response: requests.Response, status: int) -> dict:
    """The ErrorResponse of a refused request, checked against the spec."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    conforms(response.json(), ERROR_RESPONSE)
    return response.json()["error"]


# -- chat ---------------------------------------------------------------------------------------


def test_chat_completion_matches_the_spec(api):
    r = api.chat()
    assert r.status_code == 200
    conforms(r.json(), CHAT_COMPLETION)
    assert r.json()["choices"][0]["message"]["content"].startswith("(simulated answer)")


@pytest.mark.parametrize("include_usage", [True, False])
def test_every_streamed_chunk_matches_the_spec(api, include_usage):
    r = api.chat(stream=True, stream_options={"include_usage": include_usage})
    assert r.headers["Content-Type"].startswith("text/event-stream")
    events = [line.removeprefix("data: ") for line in r.text.splitlines() if line]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    for chunk in chunks:
        conforms(chunk, CHAT_CHUNK)
    assert ("usage" in chunks[-1] and chunks[-1]["choices"] == []) == include_usage


def test_models_list_matches_the_spec(api):
    r = requests.get(f"{api.base}/models", headers=api.headers, timeout=10)
    conforms(r.json(), MODEL_LIST)


# -- transcriptions -----------------------------------------------------------------------------


@pytest.mark.parametrize("model", TRANSCRIPTION_MODELS)
def test_every_spec_transcription_model_answers_json(api, sample, model):
    r = api.transcribe(sample, model)
    assert r.status_code == 200, r.text
    conforms(r.json(), TRANSCRIPTION_JSON)
    assert r.json()["text"] == "What is the capital of France?"


def test_whisper_json_usage_is_by_duration_and_gpt_models_by_tokens(api, sample):
    assert api.transcribe(sample, "whisper-1").json()["usage"]["type"] == "duration"
    assert api.transcribe(sample, "gpt-4o-transcribe").json()["usage"]["type"] == "tokens"


def test_whisper_verbose_json_matches_the_spec(api, sample):
    r = api.transcribe(sample, response_format="verbose_json",
                       **{"timestamp_granularities[]": ["word", "segment"]})
    conforms(r.json(), TRANSCRIPTION_VERBOSE)
    assert r.json()["segments"] and [w["word"] for w in r.json()["words"]][0] == "What"


def test_diarize_model_answers_diarized_json_matching_the_spec(api, sample):
    r = api.transcribe(sample, "gpt-4o-transcribe-diarize", response_format="diarized_json")
    conforms(r.json(), TRANSCRIPTION_DIARIZED)


@pytest.mark.parametrize("fmt, start", [("text", "What is"), ("srt", "1\n00:00:00,000 --> "),
                                        ("vtt", "WEBVTT\n\n00:00:00.000 --> ")])
def test_whisper_text_formats_come_back_as_plain_text(api, sample, fmt, start):
    r = api.transcribe(sample, response_format=fmt)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/plain")
    assert r.text.startswith(start) and "What is the capital of France?" in r.text


@pytest.mark.parametrize("fmt", ["verbose_json", "srt", "vtt", "diarized_json"])
def test_gpt_4o_transcribe_refuses_whisper_only_formats(api, sample, fmt):
    error = refused(api.transcribe(sample, "gpt-4o-transcribe", response_format=fmt), 400)
    assert error["param"] == "response_format"
    assert error["message"] == (f"response_format '{fmt}' is not compatible with model "
                                "'gpt-4o-transcribe'. Use 'json' or 'text' instead.")


def test_whisper_refuses_diarized_json(api, sample):
    error = refused(api.transcribe(sample, response_format="diarized_json"), 400)
    assert error["code"] == "unsupported_value"


def test_unknown_response_format_is_refused(api, sample):
    assert refused(api.transcribe(sample, response_format="xml"), 400)["code"] == \
        "invalid_value"


def test_unknown_transcription_model_is_refused(api, sample):
    error = refused(api.transcribe(sample, "whisper-9"), 400)
    assert error["param"] == "model" and "whisper-9" in error["message"]


def test_word_timestamps_need_verbose_json(api, sample):
    r = api.transcribe(sample, **{"timestamp_granularities[]": "word"})
    assert refused(r, 400)["param"] == "timestamp_granularities"


# -- speech -------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", SPEECH_MODELS)
def test_every_spec_speech_model_speaks(api, model):
    r = api.speech(model=model)
    assert r.status_code == 200 and r.headers["Content-Type"] == "audio/mpeg"


def test_speech_accepts_a_custom_voice_object(api):
    assert api.speech(voice={"id": "voice_1234"}).status_code == 200


@pytest.mark.parametrize("body, param", [
    ({"model": "tts-9"}, None), ({"voice": "robot"}, "voice"),
    ({"response_format": "ogg"}, "response_format"), ({"speed": 5}, "speed"),
    ({"model": "tts-1", "stream_format": "sse"}, "stream_format"),
    ({"input": "x" * 4097}, "input"), ({"input": ""}, "input")])
def test_speech_refusals_have_the_spec_error_shape(api, body, param):
    r = api.speech(**body)
    error = refused(r, r.status_code)
    assert r.status_code in (400, 404) and error["param"] == param


# -- errors, injected faults included -----------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/audio/transcriptions",
                                  "/v1/audio/speech", "/v1/models"])
def test_an_injected_429_is_openais_rate_limit_error(sim, path):
    sim.inject("429", path, retry_after=2)
    r = requests.post(f"{sim.url}{path}", timeout=10) if path != "/v1/models" else \
        requests.get(f"{sim.url}{path}", timeout=10)
    error = refused(r, 429)
    assert error["code"] == "rate_limit_exceeded" and error["type"] == "requests"
    assert r.headers["Retry-After"] == "2"


@pytest.mark.parametrize("kind", ["500", "slow"])
def test_injected_server_errors_are_openais_server_error(sim, api, kind):
    sim.inject(kind, "/v1/chat/completions", delay=0.1)
    assert refused(api.chat(), 500 if kind == "500" else 503)["type"] == "server_error"


def test_an_unknown_openai_path_is_an_invalid_url_error(api):
    r = requests.post(f"{api.base}/chat/nothing", headers=api.headers, timeout=10)
    assert refused(r, 404)["message"] == "Invalid URL (POST /v1/chat/nothing)"


def test_assemblyais_sync_paths_under_v1_are_not_claimed():
    from voicenb.sim._openai import OPENAI_PREFIXES

    for path in ("/v1/transcribe", "/v1/transcribe/live", "/v1/warm"):
        assert not any(path.startswith(p) for p in OPENAI_PREFIXES)


def test_wrong_key_and_out_of_credit_have_the_spec_error_shape(sim, api):
    assert refused(requests.get(f"{api.base}/models", timeout=10), 401)["code"] == \
        "invalid_api_key"
    sim.openai.credit = 0
    error = refused(api.chat(), 429)
    assert error["code"] == error["type"] == "insufficient_quota"


def test_credit_counts_down_billable_requests(sim, api, sample):
    sim.openai.credit = 2
    assert api.chat().status_code == 200
    assert api.transcribe(sample).status_code == 200
    assert api.speech().status_code == 429
    assert requests.get(f"{api.base}/models", headers=api.headers, timeout=10).ok


# -- the official openai SDK, unchanged ---------------------------------------------------------

openai = pytest.importorskip("openai")


@pytest.fixture
def oai(sim):
    return openai.OpenAI(max_retries=1)  # OPENAI_BASE_URL and OPENAI_API_KEY: the simulator


def test_sdk_chat_with_and_without_streaming(oai):
    whole = oai.chat.completions.create(model="gpt-4o-mini",
                                        messages=[{"role": "user", "content": QUESTION}])
    chunks = list(oai.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": QUESTION}], stream=True,
        stream_options={"include_usage": True}))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == whole.choices[0].message.content
    assert chunks[-1].usage.total_tokens == whole.usage.total_tokens
    assert whole.service_tier == "default"


def test_sdk_transcribes_as_json_text_and_verbose_json(oai, sample):
    with open(sample, "rb") as fh:
        data = fh.read()
    as_json = oai.audio.transcriptions.create(model="whisper-1", file=("q.wav", data))
    as_text = oai.audio.transcriptions.create(model="whisper-1", file=("q.wav", data),
                                              response_format="text")
    verbose = oai.audio.transcriptions.create(model="whisper-1", file=("q.wav", data),
                                              response_format="verbose_json",
                                              timestamp_granularities=["word"])
    assert as_json.text == as_text.strip() == verbose.text == "What is the capital of France?"
    assert as_json.usage.type == "duration" and verbose.duration == pytest.approx(1.98)
    assert verbose.segments[0].end == pytest.approx(1.98) and verbose.words[0].word == "What"


def test_sdk_speaks(oai):
    speech = oai.audio.speech.create(model="tts-1-hd", voice="nova", input="Paris.",
                                     response_format="wav")
    assert speech.read()[:4] == b"RIFF"


def test_sdk_errors_carry_the_code_and_param(sim, oai, sample):
    with open(sample, "rb") as fh, pytest.raises(openai.BadRequestError) as bad:
        oai.audio.transcriptions.create(model="gpt-4o-transcribe", file=fh,
                                        response_format="srt")
    assert bad.value.code == "unsupported_value" and bad.value.param == "response_format"
    sim.inject("429", "/v1/chat/completions", times=2, retry_after=0)
    with pytest.raises(openai.RateLimitError) as limited:
        oai.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user",
                                                                    "content": "x"}])
    assert limited.value.code == "rate_limit_exceeded"


def test_sdk_sees_insufficient_quota_as_a_rate_limit_error_and_retries_it(sim, oai):
    sim.openai.credit = 0
    with pytest.raises(openai.RateLimitError) as info:
        oai.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user",
                                                                    "content": "x"}])
    assert info.value.code == "insufficient_quota"
    assert sim.stats["insufficient_quota"] == 2  # the plain SDK retries it: voicenb does not


# -- voicenb's handling of the two 429s ---------------------------------------------------------


def test_voicenb_retries_rate_limit_exceeded_after_retry_after(sim):
    sim.inject("429", "/v1/chat/completions", times=1, retry_after=1)
    assert vnb.ask(QUESTION).text.startswith("(simulated answer)")
    assert sim.stats["fault:429"] == 1 and sim.stats["chat_completions"] == 1


def test_voicenb_rate_limit_after_retries_keeps_the_code(sim):
    sim.inject("429", "/v1/chat/completions", times=5, retry_after=0)
    with pytest.raises(vnb.RateLimitError) as info:
        vnb.ask(QUESTION, settings=vnb.Settings(max_retries=1))
    assert info.value.code == "rate_limit_exceeded" and info.value.retry_after == 0


def test_out_of_credit_is_not_retried_and_says_how_to_fix_it(sim):
    sim.openai.credit = 0
    with pytest.raises(vnb.RateLimitError) as info:
        vnb.ask(QUESTION, settings=vnb.Settings(max_retries=3))
    assert sim.stats["insufficient_quota"] == 1  # one request: no retry
    assert info.value.code == "insufficient_quota" and info.value.status_code == 429
    message = str(info.value)
    assert "no credit left" in message and "Retrying will not help" in message
    assert "platform.openai.com/settings/organization/billing" in message
    assert "OPENAI_API_KEY" in message


def test_out_of_credit_stops_transcription_and_speech_too(sim, sample):
    sim.openai.credit = 0
    for call in (lambda: vnb.transcribe(sample, backend="openai"),
                 lambda: vnb.speak("Paris.", backend="openai")):
        with pytest.raises(vnb.RateLimitError) as info:
            call()
        assert info.value.code == "insufficient_quota"
    assert sim.stats["insufficient_quota"] == 2


def test_unknown_transcription_model_says_how_to_choose_one(sim, sample):
    with pytest.raises(vnb.ModelNotFoundError) as info:
        vnb.transcribe(sample, backend="openai", model="whisper-9")
    message = str(info.value)
    assert "Transcription model 'whisper-9'" in message and "'whisper-1'" in message
    assert info.value.status_code == 400 and info.value.model == "whisper-9"
