"""The "openai-realtime" live backend against the simulated Realtime API, over real sockets."""

from __future__ import annotations

import threading
import time

import pytest

import voicenb as vnb
from tests import _realtime_spec as spec
from voicenb import AuthenticationError, ConfigError, RateLimitError, ServiceError
from voicenb.live import Conversation
from voicenb.live.openai_realtime import OpenAIRealtime


class Recorder:
    """A Listener that keeps everything it is told."""

    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []
        self.turns: list[vnb.live.Heard] = []
        self.replies: list[vnb.live.Reply] = []
        self.audio = bytearray()
        self.failures: list[Exception] = []
        self.changed = threading.Condition()
        self.on_audio = None

    def _note(self, kind: str, value: object = None) -> None:
        with self.changed:
            self.events.append((kind, value))
            self.changed.notify_all()

    def speech_started(self) -> None:
        self._note("speech_started")

    def partial(self, text: str) -> None:
        self._note("partial", text)

    def heard(self, turn) -> None:
        self.turns.append(turn)
        self._note("heard", turn)

    def answer_text(self, delta: str) -> None:
        self._note("answer_text", delta)

    def answer_audio(self, pcm: bytes) -> None:
        self.audio += pcm
        self._note("answer_audio", len(pcm))
        if self.on_audio is not None:
            self.on_audio, hook = None, self.on_audio
            hook()

    def replied(self, reply) -> None:
        self.replies.append(reply)
        self._note("replied", reply)

    def failed(self, error) -> None:
        self.failures.append(error)
        self._note("failed", error)

    def reconnecting(self, attempt: int, error) -> None:
        self._note("reconnecting", attempt)

    def reconnected(self, downtime_s: float) -> None:
        self._note("reconnected", downtime_s)

    def wait(self, test, timeout: float = 30) -> None:
        with self.changed:
            assert self.changed.wait_for(test, timeout), self.events[-5:]


def speak(conv, path, silence_s: float = 1.0) -> None:
    """A clip then silence, 100 ms at a time, four times faster than real time."""
    pcm = vnb.Audio(path).pcm16k() + b"\0\0" * int(16000 * silence_s)
    for i in range(0, len(pcm), 3200):
        conv.send(pcm[i:i + 3200])
        time.sleep(0.025)


@pytest.fixture
def fast(sim):
    sim.realtime.ttfa, sim.realtime.speed = 0.1, 8.0
    return sim


@pytest.fixture
def talk(fast):
    made = []

    def make(**kw):
        listener = Recorder()
        conv = OpenAIRealtime(listener, **kw)
        conv.start()
        made.append(conv)
        return conv, listener

    yield make
    for conv in made:
        conv.close()


def test_a_spoken_question_is_heard_and_answered(talk, samples, sim):
    conv, heard = talk(system="Be brief.")
    assert isinstance(conv, Conversation)
    assert conv.backend == "openai-realtime" and conv.output_rate == 24000
    assert conv.model == "gpt-realtime-2" and conv.voice == "alloy"  # the service's default
    speak(conv, samples[0])
    heard.wait(lambda: heard.replies)
    turn, reply = heard.turns[0], heard.replies[0]
    assert turn.text == "What is the capital of France?"
    assert turn.speech_model == "gpt-4o-transcribe" and turn.stt_s is not None
    assert len(turn.audio) > 16000 * 2 and turn.rate == 16000  # the person's own audio
    assert reply.text.startswith("(simulated answer) You asked: \u201cWhat is the capital")
    assert reply.error is None and not reply.interrupted
    assert len(heard.audio) > 24000 * 2 and reply.audio_ms == pytest.approx(
        len(heard.audio) / 48, abs=1)
    assert 0 < reply.first_token_s <= reply.first_audio_s <= reply.llm_s < 20
    assert reply.prompt_tokens > reply.audio_in_tokens > 0
    assert reply.completion_tokens > reply.audio_out_tokens > 0
    kinds = [k for k, _ in heard.events]
    assert kinds.index("speech_started") < kinds.index("partial") < kinds.index("heard") \
        < kinds.index("answer_text") < kinds.index("replied")
    # everything the client sent validates against the spec
    sent = list(sim.realtime.received)
    assert sent[0]["type"] == "session.update"
    assert sent[0]["session"]["instructions"] == "Be brief."
    assert [p for e in sent for p in spec.problems(e, server=False)] == []


def test_the_voice_and_model_can_be_chosen(talk, samples):
    conv, heard = talk(voice="cedar", model="gpt-realtime-mini")
    speak(conv, samples[1])
    heard.wait(lambda: heard.replies)
    assert heard.replies[0].voice == "cedar" and heard.replies[0].model == "gpt-realtime-mini"


def test_speaking_over_the_answer_interrupts_it(talk, samples, fast):
    fast.realtime.speed = 1.0  # the answer plays in real time
    conv, heard = talk()
    answering = threading.Event()
    heard.on_audio = answering.set
    speak(conv, samples[0])
    assert answering.wait(20)
    speak(conv, samples[2])  # over the answer, which plays for seconds yet
    heard.wait(lambda: heard.replies)
    first = heard.replies[0]
    assert first.interrupted and first.error is None
    assert first.extra["reason"] == "turn_detected"
    conv.interrupt(played_ms=200)  # the owner says how much was heard
    heard.wait(lambda: fast.realtime.stats["truncates"] == 1 or heard.failures, 10)
    truncate = [e for e in fast.realtime.received
                if e["type"] == "conversation.item.truncate"]
    # at most what arrived of it: the service refuses a cut past the item's audio
    assert truncate[0]["audio_end_ms"] == min(200, int(first.audio_ms)) > 0
    assert truncate[0]["content_index"] == 0
    fast.realtime.speed = None
    heard.wait(lambda: len(heard.replies) == 2)
    assert "Tell me a short joke" in heard.replies[1].text and not heard.failures


def test_an_error_event_ends_the_turn_and_the_conversation_goes_on(talk, samples, sim):
    conv, heard = talk()
    sim.realtime.inject("error")
    speak(conv, samples[0])
    heard.wait(lambda: heard.replies)
    assert isinstance(heard.replies[0].error, ServiceError)
    assert "Speak again" in str(heard.replies[0].error)
    speak(conv, samples[1])
    heard.wait(lambda: len(heard.replies) == 2)
    assert heard.replies[1].error is None and not heard.failures


def test_a_rate_limit_is_a_rate_limit_error(talk, samples, sim):
    conv, heard = talk()
    sim.realtime.inject("rate_limit")
    speak(conv, samples[0])
    heard.wait(lambda: heard.replies)
    assert isinstance(heard.replies[0].error, RateLimitError)


def test_a_dropped_socket_ends_the_answer_and_a_new_session_goes_on(talk, samples, sim):
    conv, heard = talk()
    sim.realtime.inject("drop")  # after the answer's first audio
    speak(conv, samples[0])
    heard.wait(lambda: heard.replies)
    cut = heard.replies[0]
    assert isinstance(cut.error, ServiceError) and "new session" in str(cut.error)
    assert cut.text.startswith("(simulated answer)")  # the words that arrived
    kinds = [k for k, _ in heard.events]
    # the turn that met the drop ends after the reconnect (the owner counts it on that turn)
    assert kinds.index("reconnecting") < kinds.index("reconnected") < kinds.index("replied")
    speak(conv, samples[1])
    heard.wait(lambda: len(heard.replies) == 2)
    # the new session was given the conversation so far, and answered the new question once
    assert "I remember 1 earlier question" in heard.replies[1].text
    assert heard.replies[1].error is None and not heard.failures
    assert sim.realtime.stats["sessions"] == 2 and sim.realtime.stats["responses"] == 2
    created = [e for e in sim.realtime.received if e["type"] == "conversation.item.create"]
    assert [e["item"]["role"] for e in created] == ["user", "assistant"]
    assert created[0]["item"]["content"][0]["text"] == heard.turns[0].text
    assert [p for e in created for p in spec.problems(e, server=False)] == []


def test_a_wrong_key_is_an_authentication_error(fast, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-the-key-5678")
    conv = OpenAIRealtime(Recorder())
    with pytest.raises(AuthenticationError) as caught:
        conv.start()
    assert "OPENAI_API_KEY" in str(caught.value)
    assert "sk-not-the-key-5678" not in str(caught.value) + repr(conv)


def test_an_unknown_voice_or_model_is_a_config_error(fast):
    with pytest.raises(ConfigError, match="live_voice"):
        OpenAIRealtime(Recorder(), voice="bob").start()
    with pytest.raises(ConfigError, match="realtime_model"):
        OpenAIRealtime(Recorder(), model="gpt-realtime-9000").start()


def test_close_is_clean_and_idempotent(talk, fast):
    conv, heard = talk()
    conv.close()
    conv.close()
    time.sleep(0.2)
    assert heard.failures == []
