"""The "assemblyai-agent" live backend against the simulated Voice Agent API, over real
loopback sockets: what a listener hears of a conversation."""

from __future__ import annotations

import json
import threading
import time

import pytest

import voicenb as vnb
from voicenb import AuthenticationError, ConfigError, RateLimitError
from voicenb.live.assemblyai_agent import AssemblyAIAgent
from voicenb.live.base import Conversation


class Recorder:
    """A listener that keeps everything it is told."""

    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []
        self.cond = threading.Condition()

    def _add(self, kind: str, value: object = None) -> None:
        with self.cond:
            self.events.append((kind, value))
            self.cond.notify_all()

    def speech_started(self) -> None:
        self._add("speech_started")

    def partial(self, text: str) -> None:
        self._add("partial", text)

    def heard(self, turn) -> None:
        self._add("heard", turn)

    def answer_text(self, delta: str) -> None:
        self._add("answer_text", delta)

    def answer_audio(self, pcm: bytes) -> None:
        self._add("answer_audio", pcm)

    def replied(self, reply) -> None:
        self._add("replied", reply)

    def failed(self, error) -> None:
        self._add("failed", error)

    def reconnecting(self, attempt: int, error) -> None:
        self._add("reconnecting", attempt)

    def reconnected(self, downtime_s: float) -> None:
        self._add("reconnected", downtime_s)

    def all(self, kind: str) -> list:
        with self.cond:
            return [v for k, v in self.events if k == kind]

    def wait(self, kind: str, count: int = 1, timeout: float = 40.0):
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.all_locked(kind)) >= count, timeout), \
                f"no {kind}: {[k for k, _ in self.events]}"
            return self.all_locked(kind)[count - 1]

    def all_locked(self, kind: str) -> list:
        return [v for k, v in self.events if k == kind]


def stream(agent: AssemblyAIAgent, pcm: bytes, pace: float = 1.0) -> None:
    """16 kHz PCM, 100 ms at a time, as the microphone sends it (``pace`` 1: real time)."""
    for at in range(0, len(pcm), 3200):
        agent.send(pcm[at:at + 3200])
        time.sleep(0.1 * pace)


@pytest.fixture
def question(sample):
    text = json.loads((sample.parent / "samples.json").read_text())[sample.name]
    return vnb.Audio(sample).pcm16k() + bytes(2 * 16000 * 2), text  # then 2 s of silence


@pytest.fixture
def agent(sim):
    listener = Recorder()
    conversation = AssemblyAIAgent(listener, system="Be brief.")
    yield conversation, listener
    conversation.close()


def test_a_spoken_question_gets_a_spoken_simulated_answer(agent, sim, question):
    sim.agent.speed = 8.0
    conversation, listener = agent
    pcm, text = question
    assert isinstance(conversation, Conversation)
    conversation.start()
    assert conversation.session_id in sim.agent.sessions
    stream(conversation, pcm)
    reply = listener.wait("replied")
    heard = listener.wait("heard")

    assert heard.text == text
    assert heard.stt_s is not None and 0 <= heard.stt_s < 2
    assert len(heard.audio) / 32000 > 1  # the person's own speech, kept for the turn
    assert heard.id.startswith(conversation.session_id + ":item_")
    assert reply.text.startswith("(simulated answer) You asked:") and text in reply.text
    assert "".join(listener.all("answer_text")) == reply.text
    audio = b"".join(listener.all("answer_audio"))
    assert len(audio) / 2 / 24000 > 2 and reply.audio_ms == pytest.approx(
        len(audio) / 48, rel=0.01)
    assert reply.first_audio_s >= sim.agent.ttfa - 0.05
    assert reply.first_audio_s <= reply.first_token_s <= reply.llm_s
    assert 0 < reply.billed_s <= time.monotonic()  # session seconds, not a count
    assert reply.interrupted is False and reply.error is None
    assert reply.voice == "ivy" and conversation.output_rate == 24000
    conversation.close()
    assert sim.agent.stats["session_s_billed"] >= reply.billed_s - 0.5
    assert "sim-assemblyai-key" not in repr(conversation)


def test_speaking_over_the_answer_interrupts_it(agent, sim, question):
    sim.agent.speed = 1.0
    conversation, listener = agent
    pcm, _ = question
    conversation.start()
    stream(conversation, pcm)
    listener.wait("answer_audio", 10)
    conversation.interrupt(500)
    stream(conversation, pcm[: 32000])  # the person speaks again
    reply = listener.wait("replied")
    assert reply.interrupted is True and reply.error is None
    assert 0 < len(reply.text) < 60  # only what was spoken
    assert sim.agent.stats["interrupted"] == 1


def test_a_dropped_socket_mid_answer_resumes_the_session(agent, sim, question):
    sim.agent.speed = 4.0
    conversation, listener = agent
    pcm, text = question
    conversation.start()
    session_id = conversation.session_id
    sim.agent.inject("drop")
    stream(conversation, pcm, pace=0.5)
    broken = listener.wait("replied")
    assert broken.error is not None and "dropped" in str(broken.error)
    stream(conversation, pcm, pace=0.5)
    reply = listener.wait("replied", 2)
    assert reply.error is None and "I remember 1 earlier question" in reply.text
    assert conversation.session_id == session_id and sim.agent.stats["resumes"] == 1
    assert listener.all("failed") == []


def test_a_session_that_cannot_be_resumed_fails_the_conversation(agent, sim):
    conversation, listener = agent
    conversation.start()
    sim.agent.grace_s = 0.0
    sim.agent.max_sessions = 0  # and nothing can connect again
    sim.agent.drop_sessions()
    error = listener.wait("failed", timeout=45)
    assert "rate limited" in str(error) or "resume" in str(error)


def test_a_session_error_during_a_turn_ends_its_reply(agent, sim, question):
    conversation, listener = agent
    pcm, _ = question
    conversation.start()
    sim.agent.inject("error")
    stream(conversation, pcm, pace=0.5)
    reply = listener.wait("replied")
    assert reply.error is not None and reply.error.code == "internal_error"
    assert "Try again" in str(reply.error)
    assert listener.all("failed") == []


def test_a_wrong_key_says_what_to_check(sim, monkeypatch):
    monkeypatch.setenv("ASSEMBLYAI_API_KEY", "wrong-key-1234")
    conversation = AssemblyAIAgent(Recorder())
    with pytest.raises(AuthenticationError) as info:
        conversation.start()
    assert info.value.status_code == 401
    assert "ASSEMBLYAI_API_KEY" in str(info.value) and "wrong-key-1234" not in str(info.value)


def test_an_unknown_voice_is_a_config_error(sim):
    conversation = AssemblyAIAgent(Recorder(), voice="claire")
    with pytest.raises(ConfigError) as info:
        conversation.start()
    assert "'claire'" in str(info.value) and "VOICENB_LIVE_VOICE" in str(info.value)


def test_a_rate_limit_is_a_rate_limit_error(sim):
    sim.agent.inject("rate_limit", retry_after=3)
    with pytest.raises(RateLimitError) as info:
        AssemblyAIAgent(Recorder()).start()
    assert info.value.retry_after == 3.0


def test_what_the_client_sends_is_in_the_spec(sim):
    import base64

    from _agent_spec import check_client

    conversation = AssemblyAIAgent(Recorder(), system="Be brief.", voice="james")
    update = conversation._session_update()
    assert check_client(update) == "session.update"
    assert update["session"]["output"]["voice"] == "james"
    audio = conversation._upsampler.feed(b"\1\0" * 1600)
    assert check_client({"type": "input.audio",
                         "audio": base64.b64encode(audio).decode()}) == "input.audio"
    assert check_client({"type": "session.resume", "session_id": "s"}) == "session.resume"
    assert check_client({"type": "session.end"}) == "session.end"
