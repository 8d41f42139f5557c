"""The speech-to-speech backends survive a dropped connection: spoken clips said into a
conversation (real websockets on loopback, the simulators' socket faults) whose connection is
cut mid-question or mid-answer; every question is answered once, with all its words, and the
turn that met the drop counts its reconnect. A refused key is not tried again."""

from __future__ import annotations

import threading

import pytest

import voicenb as vnb
from voicenb.live._driver import ClockPlayer, Driver, talk

S2S = ("openai-realtime", "assemblyai-agent")


class View:
    """What the driver tells a live view of the reconnects."""

    def __init__(self) -> None:
        self.attempts: list[int] = []
        self.downtimes: list[float] = []
        self.errors: list[Exception] = []
        self.failed = threading.Event()

    def on_reconnecting(self, attempt: int, error: Exception) -> None:
        self.attempts.append(attempt)
        self.errors.append(error)

    def on_reconnected(self, downtime_s: float) -> None:
        self.downtimes.append(downtime_s)

    def on_failed(self, error: Exception) -> None:
        self.failed.set()


@pytest.fixture
def fast(sim):
    sim.realtime.ttfa, sim.realtime.speed = 0.1, 8.0
    sim.agent.ttfa, sim.agent.speed = 0.1, 8.0
    return sim


def service(sim, backend: str):
    return sim.realtime if backend == "openai-realtime" else sim.agent


def converse(session, backend: str, clips) -> View:
    view = View()
    driver = Driver(session, backend, view=view, player=ClockPlayer(4.0)).start()
    try:
        talk(session, backend, clips, pace=2.0, answer_timeout=30, driver=driver)
    finally:
        driver.stop()
        driver.wait(30)
    return view


def asked_and_answered(sim, backend: str) -> tuple[int, int]:
    """Questions the service heard, answers it began, over every session it had."""
    if backend == "openai-realtime":
        return sim.realtime.stats["turns"], sim.realtime.stats["responses"]
    roles = [m["role"] for s in sim.agent.sessions.values() for m in s.history]
    return roles.count("user"), roles.count("assistant")


@pytest.mark.parametrize("backend", S2S)
def test_a_connection_cut_mid_question_loses_no_word_and_answers_once(fast, tmp_path,
                                                                      samples, backend):
    two = samples[:2]
    said = [fast.registry.text(vnb.Audio(p).sha256) for p in two]
    # about a second into the first question (a message is 100 ms of audio)
    service(fast, backend).socket_faults.plan("drop", after_frames=10)
    session = vnb.Session("cut", home=tmp_path / "home")
    view = converse(session, backend, two)
    df = session.history
    assert df["transcript"].tolist() == said  # every word, each question once
    assert df["status"].tolist() == ["ok", "ok"], df[["status", "error"]]
    assert df["reconnects"].tolist() == [1, 0]  # on the turn that met the drop
    assert asked_and_answered(fast, backend) == (2, 2)
    assert service(fast, backend).socket_faults.stats["drop"] == 1
    assert view.attempts == [1] and len(view.downtimes) == 1


@pytest.mark.parametrize("backend", S2S)
def test_a_connection_cut_mid_answer_keeps_what_arrived_and_the_talk_goes_on(
        fast, tmp_path, samples, backend):
    two = samples[:2]
    said = [fast.registry.text(vnb.Audio(p).sha256) for p in two]
    service(fast, backend).inject("drop")  # cut after the first answer's first audio
    session = vnb.Session("cut", home=tmp_path / "home")
    converse(session, backend, two)
    df = session.history
    assert df["transcript"].tolist() == said
    cut, next_ = df.iloc[0], df.iloc[1]
    assert cut["status"] == "error" and "dropped in the middle of the answer" in cut["error"]
    assert cut["first_audio_s"] > 0  # its speech began to arrive...
    if backend == "openai-realtime":  # ...with its words (the agent sends them after)
        assert cut["answer"].startswith("(simulated answer)")
    assert cut["reconnects"] == 1 and next_["reconnects"] == 0
    # not asked again; the conversation (cut answer included) went on where it was
    assert next_["status"] == "ok" and "I remember 1 earlier question" in next_["answer"]
    assert asked_and_answered(fast, backend) == (2, 2)


@pytest.mark.parametrize("backend", S2S)
def test_reconnects_refused_for_a_while_are_tried_again_until_one_is_taken(
        fast, tmp_path, sample, backend):
    said = fast.registry.text(vnb.Audio(sample).sha256)
    faults = service(fast, backend).socket_faults
    faults.plan("close", code=1011, after_frames=10, refuse_s=1.0)
    session = vnb.Session("refused", home=tmp_path / "home")
    view = converse(session, backend, [sample])
    df = session.history
    assert df["transcript"].tolist() == [said] and df["status"].tolist() == ["ok"]
    assert faults.stats["close"] == 1 and faults.stats["refuse"] >= 1
    assert len(view.attempts) >= 2 and len(view.downtimes) == 1  # several tries, one reconnect
    assert df["reconnects"].tolist() == [1]
    assert asked_and_answered(fast, backend) == (1, 1)


@pytest.mark.parametrize("backend", S2S)
def test_a_key_refused_on_reconnect_is_not_tried_again(fast, tmp_path, backend):
    session = vnb.Session("revoked", home=tmp_path / "home")
    view = View()
    driver = Driver(session, backend, view=view).start()
    try:
        service(fast, backend).key = "a-key-since-revoked"
        assert service(fast, backend).drop_sessions() == 1
        assert view.failed.wait(20)
    finally:
        driver.stop()
    assert isinstance(driver.error, vnb.AuthenticationError)
    assert view.attempts == [1]  # one try: a refused key does not come right


@pytest.mark.parametrize("backend", S2S)
def test_a_wrong_key_fails_at_once_with_one_connection(fast, tmp_path, backend):
    settings = vnb.Settings(openai_api_key="sk-wrong-5150", assemblyai_api_key="aai-wrong-5150")
    session = vnb.Session("wrong", home=tmp_path / "home", settings=settings)
    with pytest.raises(vnb.AuthenticationError):
        Driver(session, backend).start()
    assert service(fast, backend).stats["refused"] == 1
