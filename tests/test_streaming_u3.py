"""Universal-Streaming v3 as AssemblyAI's specs describe it: u3-rt-pro's own parameters and
messages, UpdateConfiguration, ForceEndpoint, temporary tokens, and the simulator's messages
field by field. Everything runs over real sockets against voicenb.sim."""

from __future__ import annotations

import json
import time
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

import voicenb as vnb
from voicenb.stt.streaming import RealtimeTranscriber, create_temporary_token

SILENCE = b"\0\0" * 16000  # one second
KNOWN_MODELS = ("u3-rt-pro", "universal-streaming-english", "universal-streaming-multilingual",
                "whisper-rt")

# The server messages' fields and types, from AssemblyAI's streaming specs (usm-streaming and
# usm-streaming-u3-pro, components/schemas/*Payload): (required, optional). "number" is a JSON
# number: an int or a float.
SERVER_MESSAGES: dict[str, tuple[dict[str, str], dict[str, str]]] = {
    "Begin": ({"type": "string", "id": "string", "expires_at": "integer"}, {}),
    "SpeechStarted": ({"type": "string", "timestamp": "integer", "confidence": "number"}, {}),
    "Turn": ({"type": "string", "turn_order": "integer", "turn_is_formatted": "boolean",
              "end_of_turn": "boolean", "transcript": "string",
              "end_of_turn_confidence": "number", "words": "array"},
             {"utterance": "string", "language_code": "string", "language_confidence": "number",
              "speaker_label": "string"}),
    "Termination": ({"type": "string", "audio_duration_seconds": "integer",
                     "session_duration_seconds": "integer"}, {}),
    # Not in the specs: the official SDK's ErrorEvent (error_code optional).
    "Error": ({"type": "string", "error": "string"}, {"error_code": "integer"}),
}
WORD = {"text": "string", "start": "integer", "end": "integer", "confidence": "number",
        "word_is_final": "boolean"}
# GET /v3/token (the token spec): the 200 body, and the Error schema of 400/401/429/500.
TOKEN_BODY = ({"token": "string", "expires_in_seconds": "integer"}, {})
TOKEN_ERROR = ({"error": "string"}, {"code": "string", "details": "object"})


def _has_type(value, kind: str) -> bool:
    return {"string": isinstance(value, str), "boolean": type(value) is bool,
            "integer": type(value) is int, "number": type(value) in (int, float),
            "array": isinstance(value, list), "object": isinstance(value, dict)}[kind]


def _mismatches(message: dict, schema: tuple[dict[str, str], dict[str, str]]) -> list[str]:
    required, optional = schema
    fields = {**required, **optional}
    wrong = [f"missing {k}" for k in required if k not in message]
    wrong += [f"extra {k}" for k in message if k not in fields]
    wrong += [f"{k} is not {fields[k]}: {message[k]!r}" for k in message
              if k in fields and not _has_type(message[k], fields[k])]
    return wrong


def _frames(pcm: bytes, ms: int = 100) -> list[bytes]:
    """``pcm`` in frames of ``ms``, the last one padded (a frame must hold 50-1000 ms)."""
    size = 32 * ms
    pcm += b"\0" * (-len(pcm) % size)
    return [pcm[i:i + size] for i in range(0, len(pcm), size)]


def _session(url: str, items: list = (), headers: dict | None = None
             ) -> tuple[list[dict], int | None]:
    """Every message of one raw session: send ``items`` (audio or JSON text) after Begin,
    then Terminate; read until the service closes."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    out = []
    with connect(url, additional_headers=headers or {}, compression=None) as ws:
        out.append(json.loads(ws.recv(timeout=10)))
        try:
            if out[0]["type"] == "Begin":
                for item in items:
                    ws.send(item)
                ws.send(json.dumps({"type": "Terminate"}))
            while True:
                out.append(json.loads(ws.recv(timeout=30)))
        except ConnectionClosed:
            pass
    return out, ws.close_code


def _finals(messages: list[dict]) -> list[str]:
    return [m["transcript"] for m in messages
            if m["type"] == "Turn" and m["end_of_turn"] and m["turn_is_formatted"]]


@pytest.fixture
def fast():
    """The simulators, taking audio as fast as it comes (for clients that do not pace)."""
    with vnb.sim.running(streaming_realtime_slack_s=None) as s:
        yield s


@pytest.fixture
def clips(samples):
    return [vnb.Audio(p).pcm16k() for p in samples]


def _ws(sim, **params) -> tuple[str, dict]:
    query = "&".join(f"{k}={v}" for k, v in {"sample_rate": 16000, **params}.items())
    return f"{sim.streaming.url}/v3/ws?{query}", {"Authorization": sim.assemblyai.key}


# -- the model and its parameters ---------------------------------------------------------------


def test_u3_rt_pro_is_the_default_model_and_settings_or_the_argument_choose_another(
        sim, monkeypatch):
    def model(**kw) -> str:
        return parse_qs(urlsplit(RealtimeTranscriber(**kw).url).query)["speech_model"][0]

    assert model() == "u3-rt-pro"
    assert model(settings=vnb.Settings(streaming_model="whisper-rt")) == "whisper-rt"
    monkeypatch.setenv("VOICENB_STREAMING_MODEL", "universal-streaming-multilingual")
    assert model() == "universal-streaming-multilingual"
    assert model(speech_model="u3-rt-pro",
                 settings=vnb.Settings(streaming_model="whisper-rt")) == "u3-rt-pro"


def test_u3_parameters_reach_the_service_and_format_turns_does_not(fast, clips):
    finals = []
    with RealtimeTranscriber(on_turn=finals.append, pace=False, min_turn_silence=160,
                             max_turn_silence=900, prompt="Transcribe questions to a bot.",
                             keyterms_prompt=["voicenb", "Paris"], format_turns=True) as rt:
        rt.send(clips[0] + SILENCE)
    params = fast.streaming.received[-1].params
    assert params["speech_model"] == "u3-rt-pro"
    assert params["min_turn_silence"] == "160" and params["max_turn_silence"] == "900"
    assert params["prompt"] == "Transcribe questions to a bot."
    assert json.loads(params["keyterms_prompt"]) == ["voicenb", "Paris"]
    assert "format_turns" not in params
    assert [t.text for t in finals] == ["What is the capital of France?"]
    assert finals[0].formatted and finals[0].end_of_turn_confidence == 1.0


def test_each_model_refuses_the_other_models_parameters(sim):
    with pytest.raises(vnb.ConfigError, match="universal-streaming-english"):
        RealtimeTranscriber(format_turns=False)  # u3-rt-pro formats every final turn
    with pytest.raises(vnb.ConfigError, match="end_of_turn_confidence_threshold"):
        RealtimeTranscriber(end_of_turn_confidence_threshold=0.5)
    with pytest.raises(vnb.ConfigError, match="u3-rt-pro"):
        RealtimeTranscriber(speech_model="universal-streaming-english", prompt="Be terse.")


def test_the_old_silence_name_is_sent_as_the_new_one_which_wins():
    def query(**kw) -> dict:
        return parse_qs(urlsplit(RealtimeTranscriber(api_key="k", **kw).url).query)

    assert query(min_end_of_turn_silence_when_confident=300)["min_turn_silence"] == ["300"]
    both = query(min_end_of_turn_silence_when_confident=300, min_turn_silence=120)
    assert both["min_turn_silence"] == ["120"]
    assert "min_end_of_turn_silence_when_confident" not in both


@pytest.mark.parametrize("params,turns", [
    ({}, 2),                                                           # u3 default: 100 ms
    ({"min_end_of_turn_silence_when_confident": 3000, "max_turn_silence": 4000}, 1),
    ({"min_end_of_turn_silence_when_confident": 3000, "min_turn_silence": 100}, 2),
])
def test_sim_reads_the_turn_silence_and_its_old_name(fast, clips, params, turns):
    url, headers = _ws(fast, speech_model="u3-rt-pro", **params)
    messages, _ = _session(url, _frames(clips[0] + SILENCE + clips[1] + SILENCE), headers)
    assert len(_finals(messages)) == turns


@pytest.mark.parametrize("model", KNOWN_MODELS)
def test_sim_begins_a_session_on_every_documented_model(fast, model):
    url, headers = _ws(fast, speech_model=model)
    messages, code = _session(url, [], headers)
    assert [m["type"] for m in messages] == ["Begin", "Termination"] and code == 1000


def test_an_undocumented_model_is_refused_naming_the_accepted_ones(sim):
    with pytest.raises(vnb.ServiceError) as info:
        RealtimeTranscriber(speech_model="universal-streaming-klingon").start()
    assert info.value.status_code == 3006
    assert "u3-rt-pro" in str(info.value) and "universal-streaming-klingon" in str(info.value)
    url, headers = _ws(sim, speech_model="u3-rt-pro-max")
    messages, code = _session(url, [], headers)
    assert code == 3006 and messages[-1]["type"] == "Error" and messages[-1]["error_code"] == 3006


def test_sim_refuses_a_malformed_parameter(sim):
    url, headers = _ws(sim, speech_model="u3-rt-pro", max_turn_silence="soon")
    messages, code = _session(url, [], headers)
    assert code == 3006 and "Invalid query parameter" in messages[-1]["error"]


# -- SpeechStarted, ForceEndpoint, UpdateConfiguration -------------------------------------------


def test_speech_started_comes_before_the_first_words_with_where_speech_began(fast, clips):
    events = []
    with RealtimeTranscriber(pace=False, on_speech_started=events.append,
                             on_partial=events.append, on_turn=events.append) as rt:
        rt.send(SILENCE + clips[1] + SILENCE)
    assert isinstance(events[0], float) and events[0] == pytest.approx(1.0, abs=0.05)
    assert [e for e in events if isinstance(e, float)] == [events[0]]  # once a turn
    assert events[-1].text == "How far away is the moon?"


def test_force_endpoint_ends_a_turn_that_silence_would_not(fast, clips):
    def finals(force: bool) -> list[str]:
        turns = []
        with RealtimeTranscriber(pace=False, on_turn=turns.append, min_turn_silence=3000,
                                 max_turn_silence=4000) as rt:
            rt.send(clips[0])
            if force:
                rt.force_endpoint()
            rt.send(clips[1])
        return [t.text for t in turns]

    assert len(finals(force=False)) == 1  # the short pause between them does not end a turn
    assert finals(force=True) == ["What is the capital of France?", "How far away is the moon?"]
    assert {"type": "ForceEndpoint"} in fast.streaming.received[-1].messages


def test_update_configuration_changes_the_turn_silence_mid_session(fast, clips):
    def finals(update: bool) -> list[str]:
        turns = []
        with RealtimeTranscriber(pace=False, on_turn=turns.append, min_turn_silence=3000,
                                 max_turn_silence=4000) as rt:
            rt.send(clips[0] + SILENCE)
            if update:
                rt.update_configuration(min_turn_silence=100, max_turn_silence=500)
            rt.send(SILENCE + clips[1] + SILENCE)
        return [t.text for t in turns]

    assert len(finals(update=False)) == 1  # 2.3 s of silence, under 3 s
    assert finals(update=True) == ["What is the capital of France?", "How far away is the moon?"]
    assert fast.streaming.received[-1].messages[0] == {
        "type": "UpdateConfiguration", "min_turn_silence": 100, "max_turn_silence": 500}


def test_update_configuration_takes_only_the_models_parameters(sim):
    with RealtimeTranscriber() as rt:
        with pytest.raises(vnb.ConfigError, match="end_of_turn_confidence_threshold"):
            rt.update_configuration(end_of_turn_confidence_threshold=0.7)
        rt.update_configuration(prompt="Names are French.", keyterms_prompt=["Lyon"])
    assert sim.streaming.received[-1].messages[0] == {
        "type": "UpdateConfiguration", "prompt": "Names are French.", "keyterms_prompt": ["Lyon"]}
    with pytest.raises(vnb.ConfigError, match="start"):
        RealtimeTranscriber().force_endpoint()


# -- temporary tokens ----------------------------------------------------------------------------


def test_a_temporary_token_opens_one_session_without_the_key(sim, clips, monkeypatch):
    token = create_temporary_token(60, max_session_duration_seconds=600)
    monkeypatch.delenv("ASSEMBLYAI_API_KEY")
    finals = []
    with RealtimeTranscriber(token=token, on_turn=finals.append) as rt:
        rt.send(clips[0] + SILENCE)
    assert [t.text for t in finals] == ["What is the capital of France?"]
    received = sim.streaming.received[-1]
    assert received.auth == "token" and received.params["token"] == token
    with pytest.raises(vnb.AuthenticationError, match="temporary token") as info:
        RealtimeTranscriber(token=token).start()  # single use
    assert info.value.status_code == 1008 and token not in str(info.value)


def test_an_expired_token_is_refused(sim):
    token = create_temporary_token(1)
    sim.streaming.clock = lambda: time.monotonic() + 2  # two seconds later
    with pytest.raises(vnb.AuthenticationError, match="expire"):
        RealtimeTranscriber(token=token).start()


def test_begin_says_when_a_token_session_expires(sim):
    token = create_temporary_token(60, max_session_duration_seconds=600)
    url = f"{sim.streaming.url}/v3/ws?sample_rate=16000&speech_model=u3-rt-pro&token={token}"
    messages, _ = _session(url)
    assert messages[0]["expires_at"] == pytest.approx(time.time() + 600, abs=30)


def test_token_endpoint_refusals_are_typed_errors(sim):
    with pytest.raises(vnb.AuthenticationError) as info:
        create_temporary_token(60, api_key="wrong-key-123456")
    assert info.value.status_code == 401
    with pytest.raises(vnb.ServiceError, match="between 1 and 600") as info:
        create_temporary_token(601)
    assert info.value.status_code == 400
    with pytest.raises(vnb.ServiceError, match="max_session_duration_seconds"):
        create_temporary_token(60, max_session_duration_seconds=30)


def test_token_endpoint_bodies_have_the_specs_fields(sim):
    url = sim.streaming.url.replace("ws://", "http://") + "/v3/token"
    key = {"Authorization": sim.assemblyai.key}
    ok = requests.get(url, params={"expires_in_seconds": 60}, headers=key, timeout=10)
    assert ok.status_code == 200 and ok.headers["Content-Type"] == "application/json"
    assert _mismatches(ok.json(), TOKEN_BODY) == [] and ok.json()["expires_in_seconds"] == 60
    for params, headers, status in (({}, key, 400), ({"expires_in_seconds": 60}, {}, 401),
                                    ({"expires_in_seconds": "soon"}, key, 400)):
        r = requests.get(url, params=params, headers=headers, timeout=10)
        assert r.status_code == status and _mismatches(r.json(), TOKEN_ERROR) == []


# -- every message the simulator sends, field by field ------------------------------------------


def _assert_conforms(messages: list[dict]) -> None:
    for m in messages:
        assert _mismatches(m, SERVER_MESSAGES[m["type"]]) == [], m
        for word in m.get("words", []):
            assert _mismatches(word, ({**WORD}, {})) == [], word
            assert 0 <= word["confidence"] <= 1 and word["start"] <= word["end"]
        if m["type"] == "Begin":
            uuid.UUID(m["id"])
        if m["type"] == "Turn":
            assert 0 <= m["end_of_turn_confidence"] <= 1


def test_u3_messages_have_exactly_the_specs_fields_and_rules(fast, clips):
    url, headers = _ws(fast, speech_model="u3-rt-pro", speaker_labels="true",
                       language_detection="true")
    messages, code = _session(url, _frames(SILENCE + clips[0] + SILENCE + clips[2] + SILENCE),
                              headers)
    _assert_conforms(messages)
    kinds = [m["type"] for m in messages]
    assert kinds[0] == "Begin" and kinds[-1] == "Termination" and code == 1000
    assert kinds.count("SpeechStarted") == 2
    assert kinds.index("SpeechStarted") < kinds.index("Turn")
    turns = [m for m in messages if m["type"] == "Turn"]
    for t in turns:  # u3-rt-pro: formatted exactly when final, and certain of it
        assert t["turn_is_formatted"] == t["end_of_turn"]
        assert t["end_of_turn_confidence"] == (1.0 if t["end_of_turn"] else 0.0)
        assert t["utterance"] == (t["transcript"] if t["end_of_turn"] else "")
        assert ("language_code" in t) == t["end_of_turn"]
        # "UNKNOWN" while a turn has less than about a second of audio (the specs)
        assert t["speaker_label"] == ("A" if t["end_of_turn"] else t["speaker_label"])
        assert t["speaker_label"] in ("A", "UNKNOWN")
    assert _finals(messages) == ["What is the capital of France?",
                                 "Tell me a short joke about computers."]


def test_universal_messages_have_exactly_the_specs_fields_and_rules(fast, clips):
    url, headers = _ws(fast, speech_model="universal-streaming-english", format_turns="true")
    messages, _ = _session(url, _frames(clips[1] + SILENCE), headers)
    _assert_conforms(messages)
    kinds = [m["type"] for m in messages]
    assert "SpeechStarted" not in kinds  # only the u3-rt-pro spec has it
    ends = [m for m in messages if m["type"] == "Turn" and m["end_of_turn"]]
    assert [m["turn_is_formatted"] for m in ends] == [False, True]  # then the formatted copy
    assert ends[1]["transcript"] == "How far away is the moon?"
    confidences = [m["end_of_turn_confidence"] for m in messages if m["type"] == "Turn"]
    assert all(0 < c < 1 for c in confidences) and ends[0]["end_of_turn_confidence"] >= 0.4


def test_error_messages_have_the_sdks_fields(fast):
    url, headers = _ws(fast, speech_model="nope")
    refused, _ = _session(url, [], headers)
    url, headers = _ws(fast)
    short, code = _session(url, [b"\0\0" * 320], headers)  # a 20 ms frame
    assert code == 3007
    for m in (refused[-1], short[-1]):
        assert m["type"] == "Error" and _mismatches(m, SERVER_MESSAGES["Error"]) == []


# -- the official SDK, unchanged -----------------------------------------------------------------


@pytest.fixture
def v3():
    return pytest.importorskip("assemblyai.streaming.v3")


def _sdk_session(v3, sim, options, params, feed) -> dict[str, list]:
    seen: dict[str, list] = {"Begin": [], "Turn": [], "SpeechStarted": [], "Termination": [],
                             "Error": []}
    client = v3.StreamingClient(options)
    for name in seen:
        client.on(getattr(v3.StreamingEvents, name), lambda _c, e, n=name: seen[n].append(e))
    client.connect(params)
    feed(client)
    client.disconnect(terminate=True)
    return seen


def test_sdk_streams_u3_with_its_parameters(v3, fast, clips):
    options = v3.StreamingClientOptions(api_host=fast.streaming.url, api_key=fast.assemblyai.key)
    params = v3.StreamingParameters(sample_rate=16000, speech_model=v3.SpeechModel.u3_rt_pro,
                                    min_turn_silence=3000, max_turn_silence=4000,
                                    prompt="Questions to a bot.", keyterms_prompt=["voicenb"])

    def feed(client):
        client.stream(_frames(clips[0]))
        client.force_endpoint()  # with 3 s silences, only this ends the first turn
        client.set_params(v3.StreamingSessionParameters(max_turn_silence=400))
        client.stream(_frames(SILENCE + clips[1] + SILENCE))

    seen = _sdk_session(v3, fast, options, params, feed)
    assert seen["Error"] == [] and len(seen["Begin"]) == 1 and len(seen["Termination"]) == 1
    finals = [t for t in seen["Turn"] if t.end_of_turn]
    assert [t.transcript for t in finals] == ["What is the capital of France?",
                                              "How far away is the moon?"]
    assert all(t.turn_is_formatted for t in finals) and len(seen["SpeechStarted"]) == 2
    received = fast.streaming.received[-1]
    assert received.params["prompt"] == "Questions to a bot."
    assert json.loads(received.params["keyterms_prompt"]) == ["voicenb"]
    assert received.params["min_turn_silence"] == "3000" and "format_turns" not in received.params
    assert [m["type"] for m in received.messages] == ["ForceEndpoint", "UpdateConfiguration",
                                                      "Terminate"]


def test_sdk_connects_with_a_temporary_token_once(v3, fast, clips):
    token = create_temporary_token(60)
    options = v3.StreamingClientOptions(api_host=fast.streaming.url, token=token)
    params = v3.StreamingParameters(sample_rate=16000, speech_model="u3-rt-pro")
    seen = _sdk_session(v3, fast, options, params,
                        lambda client: client.stream(_frames(clips[2] + SILENCE)))
    assert [t.transcript for t in seen["Turn"] if t.end_of_turn] == [
        "Tell me a short joke about computers."]
    assert fast.streaming.received[-1].auth == "token-header"  # the SDK sends it as a header
    again = _sdk_session(v3, fast, options, params, lambda client: None)
    assert again["Begin"] == [] and [e.code for e in again["Error"]] == [1008]
