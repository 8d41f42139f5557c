"""The Voice Agent API simulator, spoken to by a bare websockets client: every frame both ways
is checked against tests/_agent_spec.py (the docs' events, encoded)."""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import time
import urllib.request

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

import voicenb as vnb
from voicenb.sim._tts import resample

from _agent_spec import check_client, check_server

CHUNK = 2400 * 2  # 100 ms at 24 kHz


class Client:
    """A raw conversation: what it sent and what it got, all checked against the spec."""

    def __init__(self, url: str, key: str, *, session: dict | None = None,
                 resume: str | None = None) -> None:
        self.ws = connect(f"{url}/v1/ws", additional_headers={"Authorization": f"Bearer {key}"})
        self.sent: list[dict] = []
        self.got: list[dict] = []
        self.cond = threading.Condition()
        self.closed = False
        threading.Thread(target=self._read, daemon=True).start()
        self.send({"type": "session.resume", "session_id": resume} if resume else
                  {"type": "session.update", "session": session or {}})

    def _read(self) -> None:
        try:
            for message in self.ws:
                event = json.loads(message)
                check_server(event)
                with self.cond:
                    self.got.append(event)
                    self.cond.notify_all()
        except Exception:
            pass
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def send(self, event: dict) -> None:
        check_client(event)
        self.sent.append(event)
        self.ws.send(json.dumps(event))

    def audio(self, pcm24k: bytes, pace: float = 0.5) -> None:
        for at in range(0, len(pcm24k), CHUNK):
            piece = pcm24k[at:at + CHUNK]
            self.send({"type": "input.audio", "audio": base64.b64encode(piece).decode()})
            time.sleep(len(piece) / 2 / 24000 * pace)

    def wait(self, kind: str, count: int = 1, timeout: float = 30.0, **fields) -> dict:
        def found() -> list[dict]:
            return [e for e in self.got if e["type"] == kind
                    and all(e.get(k) == v for k, v in fields.items())]

        with self.cond:
            assert self.cond.wait_for(lambda: len(found()) >= count or self.closed, timeout), \
                f"no {kind} in {[e['type'] for e in self.got]}"
            assert len(found()) >= count, f"closed before {kind}: {self.got}"
            return found()[count - 1]

    def types(self) -> list[str]:
        with self.cond:
            return [e["type"] for e in self.got]


@pytest.fixture
def speech(sample):
    """The sample question at 24 kHz, then 1.6 s of silence (the turn's end)."""
    pcm = resample(vnb.Audio(sample).pcm16k(), 16000, 24000)
    return pcm + bytes(int(1.6 * 24000) * 2)


@pytest.fixture
def text(sample):
    return json.loads((sample.parent / "samples.json").read_text())[sample.name]


def test_a_whole_conversation_is_what_the_docs_describe(sim, speech, text):
    sim.agent.speed = None
    client = Client(sim.agent.url, sim.assemblyai.key, session={
        "system_prompt": "Be brief.", "greeting": "Hello there.",
        "input": {"format": {"encoding": "audio/pcm", "sample_rate": 24000},
                  "turn_detection": {"vad_threshold": 0.5, "min_silence": 400,
                                     "max_silence": 1200, "interrupt_response": True}},
        "output": {"voice": "james", "format": {"encoding": "audio/pcm"}}})
    ready = client.wait("session.ready")
    client.wait("reply.done", 1)  # the greeting
    client.audio(speech)
    heard = client.wait("transcript.user")
    done = client.wait("reply.done", 2)
    agent = client.wait("transcript.agent", 2)
    client.send({"type": "session.end"})
    client.wait("session.ended")

    assert heard["text"] == text
    assert agent["text"].startswith("(simulated answer) You asked:") and text in agent["text"]
    assert done == {"type": "reply.done", "status": "completed"}
    order = client.types()
    turn = order[order.index("input.speech.started"):]
    assert turn.index("input.speech.stopped") < turn.index("transcript.user") < \
        turn.index("reply.started") < turn.index("reply.audio") < \
        turn.index("transcript.agent") < turn.index("reply.done")
    assert ready["session_id"] in sim.agent.sessions
    assert sim.agent.stats["replies"] == 2 and sim.agent.stats["audio_out_s"] > 1
    assert sim.agent.stats["session_s_billed"] > 0


def test_the_greeting_is_spoken_first_in_24_khz_speech(sim):
    sim.agent.speed = None
    client = Client(sim.agent.url, sim.assemblyai.key, session={"greeting": "Hi, how can I "
                                                                           "help?"})
    client.wait("reply.done")
    pcm = b"".join(base64.b64decode(e["data"]) for e in client.got
                   if e["type"] == "reply.audio")
    assert client.wait("transcript.agent")["text"] == "Hi, how can I help?"
    assert 0.5 < len(pcm) / 2 / 24000 < 5  # seconds of real speech, not a beep


def test_a_wrong_key_is_refused_at_the_upgrade(sim):
    with pytest.raises(InvalidStatus) as info:
        connect(f"{sim.agent.url}/v1/ws", additional_headers={"Authorization": "Bearer nope"})
    assert info.value.response.status_code == 401
    assert json.loads(info.value.response.body) == {"detail": "Unauthorized"}
    with pytest.raises(InvalidStatus) as raw:  # the Bearer prefix is required
        connect(f"{sim.agent.url}/v1/ws",
                additional_headers={"Authorization": sim.assemblyai.key})
    assert raw.value.response.status_code == 401


def test_audio_before_session_ready_is_an_invalid_format_error(sim):
    ws = connect(f"{sim.agent.url}/v1/ws",
                 additional_headers={"Authorization": f"Bearer {sim.assemblyai.key}"})
    ws.send(json.dumps({"type": "input.audio", "audio": base64.b64encode(b"\0\0").decode()}))
    event = json.loads(ws.recv(timeout=5))
    check_server(event)
    assert event["type"] == "session.error" and event["code"] == "invalid_format"
    ws.close()


def test_an_unknown_voice_is_refused_naming_the_voices(sim):
    client = Client(sim.agent.url, sim.assemblyai.key, session={"output": {"voice": "claire"}})
    error = client.wait("session.error")
    assert error["code"] == "invalid_format" and "'claire'" in error["message"]
    assert "ivy" in error["message"]


def test_speech_over_the_answer_stops_it(sim, speech):
    sim.agent.speed = 1.0  # speaking in real time: there is time to speak over it
    client = Client(sim.agent.url, sim.assemblyai.key)
    client.wait("session.ready")
    client.audio(speech)
    client.wait("reply.audio", 20)  # 1.6 s of the answer
    client.audio(speech[: 24000 * 2])  # the person speaks again
    done = client.wait("reply.done")
    agent = client.wait("transcript.agent")
    assert done["status"] == "interrupted"
    assert agent["interrupted"] is True
    assert agent["text"] and len(agent["text"]) < 40  # only the words sent
    assert sim.agent.stats["interrupted"] == 1


def test_a_dropped_session_resumes_within_the_grace_and_remembers(sim, speech, text):
    sim.agent.speed = None
    first = Client(sim.agent.url, sim.assemblyai.key)
    session_id = first.wait("session.ready")["session_id"]
    first.audio(speech)
    first.wait("reply.done")
    assert sim.agent.drop_sessions() == 1
    again = Client(sim.agent.url, sim.assemblyai.key, resume=session_id)
    assert again.wait("session.ready")["session_id"] == session_id
    again.audio(speech)
    agent = again.wait("transcript.agent")
    assert "I remember 1 earlier question" in agent["text"]
    assert sim.agent.stats["resumes"] == 1


def test_resuming_after_the_grace_is_session_not_found(sim):
    sim.agent.grace_s = 0.3
    first = Client(sim.agent.url, sim.assemblyai.key)
    session_id = first.wait("session.ready")["session_id"]
    sim.agent.drop_sessions()
    time.sleep(1.0)
    late = Client(sim.agent.url, sim.assemblyai.key, resume=session_id)
    assert late.wait("session.error")["code"] == "session_not_found"
    assert sim.agent.stats["session_s_billed"] >= 0.3  # the grace is billed too


def test_faults_a_test_can_inject(sim, speech):
    sim.agent.speed = None
    sim.agent.inject("error")
    client = Client(sim.agent.url, sim.assemblyai.key)
    client.wait("session.ready")
    client.audio(speech)
    error = client.wait("session.error")
    assert error["code"] == "internal_error"
    assert "reply.done" not in client.types()

    sim.agent.inject("drop")
    with contextlib.suppress(ConnectionClosed):  # cut while the silence is still sent
        client.audio(speech)
    client.wait("reply.audio")
    with client.cond:
        assert client.cond.wait_for(lambda: client.closed, 10)

    sim.agent.inject("rate_limit", retry_after=7)
    with pytest.raises(InvalidStatus) as info:
        connect(f"{sim.agent.url}/v1/ws",
                additional_headers={"Authorization": f"Bearer {sim.assemblyai.key}"})
    assert info.value.response.status_code == 429
    assert info.value.response.headers["Retry-After"] == "7"


def test_too_many_sessions_are_refused(sim):
    sim.agent.max_sessions = 1
    first = Client(sim.agent.url, sim.assemblyai.key)
    first.wait("session.ready")
    with pytest.raises(InvalidStatus) as info:
        connect(f"{sim.agent.url}/v1/ws",
                additional_headers={"Authorization": f"Bearer {sim.assemblyai.key}"})
    assert info.value.response.status_code == 429
    assert "concurrent" in json.loads(info.value.response.body)["detail"]


def test_the_agent_port_says_it_is_a_simulator(sim):
    about = sim.agent.url.replace("ws://", "http://") + "/sim/about"
    with urllib.request.urlopen(about, timeout=5) as reply:
        assert json.loads(reply.read())["simulator"] == "voicenb"
    assert sim.env()["ASSEMBLYAI_AGENT_URL"] == sim.agent.url


def test_a_socket_fault_closes_with_its_code_after_n_client_events(sim):
    sim.agent.socket_faults.plan("close", code=1011, after_frames=2)
    client = Client(sim.agent.url, sim.assemblyai.key)
    client.wait("session.ready")
    client.send({"type": "input.audio", "audio": base64.b64encode(bytes(CHUNK)).decode()})
    with client.cond:
        assert client.cond.wait_for(lambda: client.closed, 10)
    assert client.ws.close_code == 1011
    assert sim.agent.socket_faults.stats["close"] == 1


def test_a_socket_fault_may_strike_while_a_reply_is_sent(sim, speech):
    sim.agent.speed, sim.agent.ttfa = None, 3.0  # the reply's audio comes late
    sim.agent.socket_faults.plan("drop", after_s=1.5)
    client = Client(sim.agent.url, sim.assemblyai.key)
    client.wait("session.ready")
    client.audio(speech, pace=0.0)  # all of it at once, then only listening
    client.wait("reply.started")
    with client.cond:
        assert client.cond.wait_for(lambda: client.closed, 10)
    assert client.ws.close_code is None or client.ws.close_code == 1006  # no close frame
    # every client event was read before it struck
    assert sim.agent.stats["audio_in_s"] == pytest.approx(len(speech) / 2 / 24000)
    assert "reply.audio" not in client.types()


def test_reconnects_are_refused_for_a_while_after_a_fault(sim):
    sim.agent.socket_faults.plan("drop", after_frames=1, refuse_s=30)
    client = Client(sim.agent.url, sim.assemblyai.key)
    with client.cond:
        assert client.cond.wait_for(lambda: client.closed, 10)
    with pytest.raises(InvalidStatus) as info:
        connect(f"{sim.agent.url}/v1/ws",
                additional_headers={"Authorization": f"Bearer {sim.assemblyai.key}"})
    assert info.value.response.status_code == 503
    assert sim.agent.socket_faults.stats["refuse"] == 1
