"""The AssemblyAI simulator's REST bodies against the vendor's published schema.

The schemas below are the facts these tests need, written from AssemblyAI's
``assemblyai-api-spec`` (``openapi.yml``: ``Transcript``, ``TranscriptWord``,
``TranscriptStatus``, ``TranscriptList``, ``TranscriptListItem``, ``PageDetails``, ``Error``),
restricted to the properties the simulator sends. ``Transcript`` allows no other property
and types ``error`` and ``speech_model_used`` as strings, so they are absent, not null, until
they apply.
"""

from __future__ import annotations

import time

import pytest
import requests

jsonschema = pytest.importorskip("jsonschema")

NULLABLE_STRING = {"type": ["string", "null"]}
STATUS = {"type": "string", "enum": ["queued", "processing", "completed", "error"]}
WORD = {
    "type": "object",
    "required": ["confidence", "start", "end", "text", "speaker"],
    "properties": {"confidence": {"type": "number"}, "start": {"type": "integer"},
                   "end": {"type": "integer"}, "text": {"type": "string"},
                   "channel": NULLABLE_STRING, "speaker": NULLABLE_STRING},
}
TRANSCRIPT = {
    "type": "object",
    "additionalProperties": False,
    "required": ["id", "speech_model", "language_model", "acoustic_model", "status",
                 "audio_url", "webhook_auth", "auto_highlights", "redact_pii", "summarization",
                 "language_confidence_threshold", "language_confidence"],
    "properties": {
        "id": {"type": "string"}, "status": STATUS, "audio_url": {"type": "string"},
        "text": NULLABLE_STRING, "words": {"type": ["array", "null"], "items": WORD},
        "utterances": {"type": ["array", "null"]}, "confidence": {"type": ["number", "null"]},
        "audio_duration": {"type": ["integer", "null"]}, "language_code": {"type": "string"},
        "punctuate": {"type": ["boolean", "null"]}, "format_text": {"type": ["boolean", "null"]},
        "speech_models": {"type": ["array", "null"], "items": {"type": "string"}},
        "speech_model": NULLABLE_STRING, "language_model": {"type": "string"},
        "acoustic_model": {"type": "string"}, "webhook_auth": {"type": "boolean"},
        "auto_highlights": {"type": "boolean"}, "redact_pii": {"type": "boolean"},
        "summarization": {"type": "boolean"},
        "language_confidence_threshold": {"type": ["number", "null"]},
        "language_confidence": {"type": ["number", "null"]},
        "error": {"type": "string"}, "speech_model_used": {"type": "string"},
    },
}
LIST = {
    "type": "object",
    "required": ["page_details", "transcripts"],
    "properties": {
        "page_details": {
            "type": "object", "additionalProperties": False,
            "required": ["limit", "result_count", "current_url", "prev_url", "next_url"],
            "properties": {"limit": {"type": "integer"}, "result_count": {"type": "integer"},
                           "current_url": {"type": "string"}, "prev_url": NULLABLE_STRING,
                           "next_url": NULLABLE_STRING}},
        "transcripts": {"type": "array", "items": {
            "type": "object", "additionalProperties": False,
            "required": ["id", "resource_url", "status", "created", "completed", "audio_url",
                         "error"],
            "properties": {"id": {"type": "string"}, "resource_url": {"type": "string"},
                           "status": STATUS, "created": {"type": "string"},
                           "completed": NULLABLE_STRING, "audio_url": {"type": "string"},
                           "error": NULLABLE_STRING}}},
    },
}
ERROR = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}


def _api(sim):
    headers = {"Authorization": sim.assemblyai.key}

    def call(method: str, path: str, **kwargs) -> requests.Response:
        return requests.request(method, sim.url + path, headers=headers, timeout=10, **kwargs)

    return call


def _create(call, sample, **options) -> dict:
    url = call("POST", "/v2/upload", data=sample.read_bytes()).json()["upload_url"]
    r = call("POST", "/v2/transcript", json={"audio_url": url, **options})
    assert r.status_code == 200, r.text
    return r.json()


def _until(call, tid: str, status: str) -> dict:
    deadline = time.monotonic() + 10
    while True:
        body = call("GET", f"/v2/transcript/{tid}").json()
        if body["status"] == status or time.monotonic() > deadline:
            return body
        time.sleep(0.05)


def test_every_transcript_state_matches_the_schema(sim, sample):
    call = _api(sim)
    sim.assemblyai.concurrency = 1
    first = _create(call, sample)
    queued = _create(call, sample)  # waits for the only slot
    assert queued["status"] == "queued"
    jsonschema.validate(queued, TRANSCRIPT)
    processing = call("GET", f"/v2/transcript/{first['id']}").json()
    assert processing["status"] == "processing"
    jsonschema.validate(processing, TRANSCRIPT)
    done = _until(call, first["id"], "completed")
    jsonschema.validate(done, TRANSCRIPT)
    assert "error" not in done and done["speech_model_used"] == "assemblyai-stt-3-7"
    assert "speech_model_used" not in queued and "error" not in queued


def test_a_failed_transcript_matches_the_schema(sim, sample):
    call = _api(sim)
    sim.fail_audio(sample, "Transcoding failed.")
    body = _until(call, _create(call, sample)["id"], "error")
    jsonschema.validate(body, TRANSCRIPT)
    assert body["error"] == "Transcoding failed." and "speech_model_used" not in body


def test_the_list_matches_the_schema(sim, sample):
    call = _api(sim)
    _create(call, sample)
    body = call("GET", "/v2/transcript", params={"limit": 5}).json()
    jsonschema.validate(body, LIST)
    assert body["page_details"]["result_count"] == len(body["transcripts"]) == 1


@pytest.mark.parametrize("fault", ["429", "500"])
def test_errors_have_the_error_shape(sim, sample, fault):
    call = _api(sim)
    sim.inject(fault, "/v2/transcript", times=1)
    r = call("GET", "/v2/transcript/abc")
    assert r.status_code == int(fault)
    jsonschema.validate(r.json(), ERROR)
    r = requests.get(sim.url + "/v2/transcript/abc", timeout=10)
    assert r.status_code == 401
    jsonschema.validate(r.json(), ERROR)
