"""The simulated Realtime API, driven by OpenAI's own SDK unchanged: every frame both ways
validates against the spec's facts (tests/_realtime_spec.py)."""

from __future__ import annotations

import base64
import json
import math
import threading

import openai
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

import voicenb as vnb
from tests import _realtime_spec as spec
from voicenb.sim._tts import resample

MODEL = "gpt-realtime-2"


def pcm24k(path, silence_s: float = 1.0) -> bytes:
    return resample(vnb.Audio(path).pcm16k(), 16000, 24000) + b"\0\0" * int(24000 * silence_s)


class Client:
    """The SDK's connection, with every server frame kept (and checked as it comes)."""

    def __init__(self, sim, *, key: str | None = None, model: str = MODEL) -> None:
        sdk = openai.OpenAI(base_url=sim.url + "/v1", api_key=key or sim.openai.key)
        self.conn = sdk.realtime.connect(model=model).enter()
        self.events: list[dict] = []

    def next(self) -> dict:
        event = json.loads(self.conn.recv_bytes())
        assert spec.problems(event, server=True) == [], event
        self.events.append(event)
        return event

    def until(self, kind: str) -> dict:
        while (event := self.next())["type"] != kind:
            pass
        return event

    def speak(self, pcm: bytes) -> None:
        for i in range(0, len(pcm), 4800):  # 100 ms an event, faster than real time
            self.conn.input_audio_buffer.append(audio=base64.b64encode(pcm[i:i + 4800]).decode())

    def of(self, kind: str) -> list[dict]:
        return [e for e in self.events if e["type"] == kind]


@pytest.fixture
def rt(sim):
    sim.realtime.speed = None  # as fast as it is made: these tests are not about pacing
    sim.realtime.ttfa = 0.0
    client = Client(sim)
    yield client
    client.conn.close()


def test_the_sdk_holds_a_conversation_and_every_frame_validates(rt, sim, samples):
    created = rt.next()
    assert created["type"] == "session.created"
    audio = created["session"]["audio"]
    assert audio["output"]["voice"] == spec.DEFAULT_VOICE
    assert audio["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert audio["input"]["turn_detection"]["type"] == "server_vad"
    rt.conn.session.update(session={
        "type": "realtime", "instructions": "Be brief.",
        "audio": {"input": {"transcription": {"model": "gpt-4o-transcribe"}},
                  "output": {"voice": "marin"}}})
    updated = rt.until("session.updated")
    assert updated["session"]["audio"]["output"]["voice"] == "marin"
    assert updated["session"]["instructions"] == "Be brief."

    rt.speak(pcm24k(samples[0]))
    first = rt.until("response.done")["response"]
    rt.speak(pcm24k(samples[1]))
    second = rt.until("response.done")["response"]

    heard = [e["transcript"] for e in rt.of(
        "conversation.item.input_audio_transcription.completed")]
    assert heard == ["What is the capital of France?", "How far away is the moon?"]
    answers = [e["transcript"] for e in rt.of("response.output_audio_transcript.done")]
    assert answers[0].startswith("(simulated answer) You asked: \u201cWhat is the capital")
    assert "I remember 1 earlier question." in answers[1]
    assert first["status"] == second["status"] == "completed"
    assert first["output"][0]["content"][0]["transcript"] == answers[0]
    # the order of a turn, as the API sends it
    kinds = [e["type"] for e in rt.events]
    order = ["input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
             "input_audio_buffer.committed", "conversation.item.added",
             "conversation.item.input_audio_transcription.completed", "response.created",
             "rate_limits.updated", "response.output_item.added",
             "response.content_part.added", "response.output_audio_transcript.delta",
             "response.output_audio.delta", "response.output_audio.done",
             "response.output_audio_transcript.done", "response.content_part.done",
             "response.output_item.done", "response.done"]
    at = [kinds.index(kind) for kind in order]
    assert at == sorted(at)
    started, stopped = rt.of("input_audio_buffer.speech_started")[0], rt.of(
        "input_audio_buffer.speech_stopped")[0]
    assert 0 <= started["audio_start_ms"] < stopped["audio_end_ms"] <= 4000
    # audio tokens proportional to the audio: 20 a second out (1 per 50 ms)
    said = b"".join(base64.b64decode(e["delta"]) for e in rt.of("response.output_audio.delta")
                    if e["response_id"] == first["id"])
    seconds = len(said) / 2 / 24000
    assert seconds > 2
    usage = first["usage"]
    assert usage["output_token_details"]["audio_tokens"] == math.ceil(seconds * 20)
    assert usage["input_token_details"]["audio_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert second["usage"]["input_tokens"] > usage["input_tokens"]  # the whole conversation
    # what the SDK sent validates too
    sent = list(sim.realtime.received)
    assert {e["type"] for e in sent} == {"session.update", "input_audio_buffer.append"}
    assert [p for e in sent for p in spec.problems(e, server=False)] == []
    assert sim.realtime.stats["responses"] == 2 and sim.realtime.stats["audio_in_s"] > 4


def test_a_wrong_key_is_an_error_event_then_the_socket_closes(sim):
    client = Client(sim, key="sk-wrong-key-1234")
    error = client.next()
    assert error["type"] == "error" and error["error"]["code"] == "invalid_api_key"
    assert "sk-wrong" not in json.dumps(error)
    with pytest.raises(ConnectionClosed):
        client.next()
    assert sim.realtime.stats["refused"] == 1 and sim.realtime.stats["sessions"] == 0


def test_an_unknown_model_is_refused(sim):
    client = Client(sim, model="gpt-realtime-9000")
    error = client.next()["error"]
    assert error["code"] == "model_not_found" and "gpt-realtime-9000" in error["message"]


def test_an_unknown_voice_is_an_error_and_the_session_goes_on(rt):
    rt.until("session.created")
    rt.conn.session.update(session={"type": "realtime", "audio": {"output": {"voice": "bob"}}})
    error = rt.until("error")["error"]
    assert error["param"] == "session.audio.output.voice" and "'marin'" in error["message"]
    rt.conn.session.update(session={"type": "realtime", "audio": {"output": {"voice": "cedar"}}})
    assert rt.until("session.updated")["session"]["audio"]["output"]["voice"] == "cedar"


def test_bad_events_are_error_events_naming_them(rt):
    rt.until("session.created")
    rt.conn.send_raw(json.dumps({"type": "conversation.item.truncate", "event_id": "ev_1",
                                 "item_id": "x", "content_index": 0}))
    error = rt.until("error")["error"]
    assert error["code"] == "missing_required_parameter" and error["param"] == "audio_end_ms"
    assert error["event_id"] == "ev_1"
    rt.conn.send_raw(json.dumps({"type": "no.such.event"}))
    assert rt.until("error")["error"]["param"] == "type"
    rt.conn.send_raw("not json")
    assert rt.until("error")["error"]["code"] == "invalid_json"
    rt.conn.response.cancel()
    assert rt.until("error")["error"]["code"] == "response_cancel_not_active"


def test_speech_over_an_answer_cancels_it(sim, samples):
    sim.realtime.speed = 1.0  # the answer plays in real time: there is time to speak over it
    client = Client(sim)
    try:
        client.speak(pcm24k(samples[0]))
        client.until("response.output_audio.delta")
        client.speak(pcm24k(samples[2]))
        done = client.until("response.done")["response"]
        assert done["status"] == "cancelled"
        assert done["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
        assert done["output"][0]["status"] == "incomplete"
        assert done["usage"]["output_token_details"]["audio_tokens"] > 0
        speech = [e["type"] for e in client.events].index("input_audio_buffer.speech_started",
                                                           1)
        assert speech < [e["type"] for e in client.events].index("response.done")
        # the new turn is answered
        sim.realtime.speed = None
        nxt = client.until("response.done")["response"]
        assert nxt["status"] == "completed"
        assert "Tell me a short joke" in nxt["output"][0]["content"][0]["transcript"]
        assert sim.realtime.stats["cancels"] == 1
    finally:
        client.conn.close()


def test_response_cancel_stops_the_answer(sim, samples):
    sim.realtime.speed = 1.0
    client = Client(sim)
    try:
        client.speak(pcm24k(samples[0]))
        created = client.until("response.created")["response"]
        client.conn.response.cancel()
        done = client.until("response.done")["response"]
        assert done["id"] == created["id"] and done["status"] == "cancelled"
        assert done["status_details"]["reason"] == "client_cancelled"
    finally:
        client.conn.close()


def test_truncate_cuts_what_was_not_heard(rt, samples, sim):
    rt.speak(pcm24k(samples[0]))
    done = rt.until("response.done")["response"]
    item = done["output"][0]["id"]
    rt.conn.conversation.item.truncate(item_id=item, content_index=0, audio_end_ms=1500)
    truncated = rt.until("conversation.item.truncated")
    assert truncated["item_id"] == item and truncated["audio_end_ms"] == 1500
    rt.conn.conversation.item.truncate(item_id=item, content_index=0, audio_end_ms=99_000)
    assert rt.until("error")["error"]["param"] == "audio_end_ms"
    assert sim.realtime.stats["truncates"] == 1


def test_clear_empties_the_buffer(rt):
    rt.speak(b"\0\0" * 2400)
    rt.conn.input_audio_buffer.clear()
    assert rt.until("input_audio_buffer.cleared")["type"] == "input_audio_buffer.cleared"


def test_an_injected_error_fails_the_response_and_the_session_goes_on(rt, sim, samples):
    sim.realtime.inject("error")
    rt.speak(pcm24k(samples[0]))
    error = rt.until("error")["error"]
    assert error["type"] == "server_error"
    done = rt.until("response.done")["response"]
    assert done["status"] == "failed" and done["status_details"]["error"]["code"] == \
        "server_error"
    rt.speak(pcm24k(samples[1]))
    assert rt.until("response.done")["response"]["status"] == "completed"
    assert sim.realtime.stats["errors"] == 1


def test_an_injected_rate_limit_has_the_services_shape(rt, sim, samples):
    sim.realtime.inject("rate_limit")
    rt.speak(pcm24k(samples[0]))
    limits = rt.until("rate_limits.updated")["rate_limits"]
    assert {"name": "tokens", "limit": 50000, "remaining": 0, "reset_seconds": 1.2} in limits
    error = rt.until("error")["error"]
    assert error["code"] == "rate_limit_exceeded" and "try again in" in error["message"]
    assert rt.until("response.done")["response"]["status"] == "failed"


def test_a_dropped_socket_breaks_mid_answer(rt, sim, samples):
    sim.realtime.inject("drop")
    rt.speak(pcm24k(samples[0]))
    rt.until("response.output_audio.delta")
    with pytest.raises(ConnectionClosed):
        rt.until("response.done")


def test_drop_sessions_breaks_every_open_session(rt, sim):
    rt.until("session.created")
    assert sim.realtime.drop_sessions() == 1
    with pytest.raises(ConnectionClosed):
        rt.next()


def test_hearing_runs_off_the_loop(rt, sim, samples):
    """The loop answers a session.update while a turn is being heard."""
    heard = threading.Event()
    slow = sim.realtime.hear

    def hear(pcm):
        heard.wait(5)
        return slow(pcm)

    sim.realtime.hear = hear
    rt.speak(pcm24k(samples[0]))
    rt.until("input_audio_buffer.committed")
    rt.conn.session.update(session={"type": "realtime", "instructions": "Still here?"})
    assert rt.until("session.updated")["session"]["instructions"] == "Still here?"
    heard.set()
    assert rt.until("response.done")["response"]["status"] == "completed"


def test_items_given_as_text_become_the_conversation_so_far(rt, sim, samples):
    rt.until("session.created")
    rt.conn.conversation.item.create(item={
        "type": "message", "role": "user",
        "content": [{"type": "input_text", "text": "What is the capital of France?"}]})
    user = rt.until("conversation.item.added")
    assert rt.until("conversation.item.done")["item"] == user["item"]
    assert user["previous_item_id"] is None and user["item"]["status"] == "completed"
    assert user["item"]["content"] == [{"type": "input_text",
                                        "text": "What is the capital of France?"}]
    rt.conn.conversation.item.create(item={
        "type": "message", "role": "assistant",
        "content": [{"type": "output_text", "text": "Paris."}]})
    assistant = rt.until("conversation.item.added")
    assert assistant["previous_item_id"] == user["item"]["id"]
    rt.speak(pcm24k(samples[1]))
    answer = rt.until("response.done")["response"]
    assert "I remember 1 earlier question" in answer["output"][0]["content"][0]["transcript"]
    assert answer["usage"]["input_token_details"]["text_tokens"] > 0  # the typed turn counts
    assert sim.realtime.stats["items_created"] == 2


def test_an_item_the_api_cannot_take_is_an_error_event(rt):
    rt.until("session.created")
    rt.conn.conversation.item.create(item={  # the spec: no assistant audio messages
        "type": "message", "role": "assistant",
        "content": [{"type": "output_audio", "audio": "AAAA"}]})
    assert rt.until("error")["error"]["param"] == "item.content.type"
    rt.conn.conversation.item.create(previous_item_id="item_nowhere", item={
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]})
    assert rt.until("error")["error"]["param"] == "previous_item_id"


def test_a_socket_fault_closes_with_its_code_after_n_client_events(sim):
    sim.realtime.socket_faults.plan("close", code=1011, after_frames=3)
    client = Client(sim)
    client.until("session.created")
    for _ in range(3):
        client.conn.input_audio_buffer.append(audio=base64.b64encode(bytes(4800)).decode())
    with pytest.raises(ConnectionClosed) as info:
        client.until("never")
    assert info.value.rcvd.code == 1011
    assert sim.realtime.socket_faults.stats["close"] == 1


def test_a_socket_fault_may_strike_while_an_answer_is_sent(sim, samples):
    sim.realtime.speed, sim.realtime.ttfa = None, 3.0  # the answer's audio comes late
    sim.realtime.socket_faults.plan("drop", after_s=1.5)
    client = Client(sim)
    client.until("session.created")
    pcm = pcm24k(samples[0])
    client.speak(pcm)  # all of it at once, then only listening
    sent = len(range(0, len(pcm), 4800))
    with pytest.raises(ConnectionClosed) as info:
        client.until("response.done")
    assert info.value.rcvd is None  # cut, no close frame
    # the fault struck at a server event: every client event had been read
    assert [e["type"] for e in sim.realtime.received].count("input_audio_buffer.append") \
        == sent
    assert client.of("response.created") and not client.of("response.output_audio.delta")


def test_reconnects_are_refused_for_a_while_after_a_fault(sim):
    sim.realtime.socket_faults.plan("drop", after_frames=1, refuse_s=30)
    client = Client(sim)
    client.until("session.created")
    client.conn.input_audio_buffer.clear()
    with pytest.raises(ConnectionClosed):
        client.until("never")
    with pytest.raises(InvalidStatus) as info:
        Client(sim)
    assert info.value.response.status_code == 503
    assert sim.realtime.socket_faults.stats["refuse"] == 1
