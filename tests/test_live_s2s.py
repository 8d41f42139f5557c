"""Speech-to-speech live backends end to end: spoken clips said into a conversation with each
simulated service (real websockets on loopback), every turn recorded in the history with the
backend that ran, its timings, tokens or billed seconds, and its cost; a barge-in leaves what
was heard; the widget drives the same conversation from Python."""

from __future__ import annotations

import math

import pandas as pd
import pytest

import voicenb as vnb
from voicenb.history import TOP
from voicenb.live._driver import Driver, talk

S2S = ("openai-realtime", "assemblyai-agent")


@pytest.fixture
def two(samples):
    return samples[:2]


@pytest.mark.parametrize("backend", S2S)
def test_each_spoken_turn_lands_in_the_history_with_its_backend_timings_and_cost(
        sim, tmp_path, two, backend):
    session = vnb.Session("s2s", home=tmp_path / "home")
    said = [sim.registry.text(vnb.Audio(p).sha256) for p in two]
    numbers = talk(session, backend, two, pace=2.0)
    assert numbers == [1, 2]
    df = session.history
    assert df["live_backend"].tolist() == [backend] * 2
    assert df["status"].tolist() == ["ok"] * 2
    assert df["transcript"].tolist() == said  # heard as said
    for row in df.itertuples():
        assert row.answer.startswith("(simulated answer)")
        assert row.audio_s > 0.5 and row.audio_path  # the person's turn was kept
        assert 0 < row.first_audio_s < 10 and row.spoken_chars == len(row.answer)
        top = sum(getattr(row, name) or 0.0 for name in TOP)
        assert math.isclose(top, row.total_s, abs_tol=1e-6)  # the stages add up
        assert row.cost_usd is not None and row.cost_usd > 0
    if backend == "openai-realtime":
        assert (df["audio_out_tokens"] > 0).all() and (df["prompt_tokens"] > 0).all()
        assert df["llm_model"].tolist() == ["gpt-realtime-2"] * 2
    else:
        assert (df["billed_s"] > 0).all()


@pytest.mark.parametrize("backend", S2S)
def test_speaking_over_an_answer_stops_it_and_keeps_what_was_heard(sim, tmp_path, two,
                                                                   backend):
    session = vnb.Session("barge", home=tmp_path / "home")
    driver = Driver(session, backend).start()
    try:
        # the second question starts right after the first: over its answer
        talk(session, backend, [two[0]], gap_s=0.0, answer_timeout=0.6, driver=driver)
        talk(session, backend, [two[1]], driver=driver)
    finally:
        driver.stop()
        driver.wait(30)
    df = session.history
    first = df.iloc[0]
    assert first["status"] == "barged_in"
    assert 0 <= first["spoken_chars"] < len(first["answer"])
    assert df.iloc[-1]["status"] == "ok"


@pytest.mark.parametrize("backend", S2S)
def test_the_live_widget_runs_a_speech_to_speech_backend_from_python(sim, tmp_path, sample,
                                                                     backend):
    session = vnb.Session("widget", home=tmp_path / "home")
    widget = session.live(backend=backend)
    assert widget.backend == backend and widget.speak
    pcm = vnb.Audio(sample).pcm16k() + bytes(16_000 * 2 * 3)
    import time

    for i in range(0, len(pcm), 3200):
        widget.feed(pcm[i:i + 3200])
        time.sleep(0.05)
    deadline = time.monotonic() + 30
    while len(session.history) < 1 and time.monotonic() < deadline:
        widget.feed(bytes(3200))
        time.sleep(0.05)
    widget.stop()
    assert widget.wait(30)
    row = session.history.iloc[0]
    assert row["live_backend"] == backend and row["status"] == "ok"
    assert widget.transcript == row["transcript"] and widget.answer == row["answer"]


def test_an_unknown_live_backend_names_the_three(tmp_path):
    session = vnb.Session("bad", home=tmp_path / "home")
    with pytest.raises(vnb.ConfigError, match="cascade, openai-realtime, assemblyai-agent"):
        session.live(backend="gemini-live")


def test_an_experiment_puts_the_pipeline_and_both_speech_to_speech_services_side_by_side(
        sim, tmp_path, two):
    reference = [sim.registry.text(vnb.Audio(p).sha256) for p in two]
    exp = vnb.Experiment("s2s", audio=two, reference=reference, home=str(tmp_path / "home"),
                         variants={"pipeline": {},
                                   "realtime": {"live": "openai-realtime"},
                                   "agent": {"live": "assemblyai-agent"}})
    df = exp.run(progress=False, live_concurrency=2)
    assert len(df) == 6 and (df["status"] == "ok").all()
    live = df[df["variant"] != "pipeline"]
    assert set(live["live_backend"]) == {"openai-realtime", "assemblyai-agent"}
    assert (live["wer"] == 0).all() and live["first_audio_s"].notna().all()
    table = exp.compare(baseline="pipeline")
    assert table.loc["realtime", "live"] == "openai-realtime"
    assert pd.isna(table.loc["pipeline", "live"])
    assert table.loc["agent", "first_audio_s p50"] > 0
    assert table["cost_usd"].notna().all() and table.loc["agent", "wer"] == 0
    # a live turn's time starts at its clip, not while it waited for a free conversation
    assert (live["wait_s"] == 0).all() and (live["total_s"] < 15).all()
    assert table.loc["agent", "simulated"] == "stt+llm+tts"
    # a rerun has nothing left to do: no turn is said (or billed) twice
    before = (sim.realtime.stats["sessions"], sim.agent.stats["sessions"])
    exp.run(progress=False)
    assert (sim.realtime.stats["sessions"], sim.agent.stats["sessions"]) == before


def test_a_speech_to_speech_variant_refuses_speech_to_text_settings(tmp_path, two):
    with pytest.raises(vnb.ConfigError, match="stt, stt_options and prompt_template"):
        vnb.Experiment("bad", audio=two, home=str(tmp_path / "home"),
                       variants={"x": {"live": "assemblyai-agent", "stt": "whisper"}})
    with pytest.raises(vnb.ConfigError, match="choose one of cascade"):
        vnb.Experiment("bad", audio=two, home=str(tmp_path / "home"),
                       variants={"x": {"live": "gemini"}})


@pytest.mark.parametrize("backend", S2S)
def test_an_error_event_records_that_turn_as_error_and_the_conversation_goes_on(
        sim, tmp_path, two, backend):
    service = sim.realtime if backend == "openai-realtime" else sim.agent
    service.inject("error")
    session = vnb.Session("faults", home=tmp_path / "home")
    talk(session, backend, two, pace=2.0, answer_timeout=20)
    df = session.history
    assert df["status"].tolist() == ["error", "ok"], df[["status", "error"]]
    assert df.iloc[0]["transcript"] == sim.registry.text(vnb.Audio(two[0]).sha256)
    assert df.iloc[0]["error"] and "key" not in df.iloc[0]["error"].lower()
    assert df.iloc[1]["answer"].startswith("(simulated answer)")


def test_a_socket_dropped_mid_answer_is_an_error_turn_and_the_agent_resumes(sim, tmp_path,
                                                                            two):
    sim.agent.inject("drop")
    session = vnb.Session("drop", home=tmp_path / "home")
    talk(session, "assemblyai-agent", two, pace=2.0, answer_timeout=20)
    df = session.history
    assert df["status"].tolist() == ["error", "ok"], df[["status", "error"]]
    assert sim.agent.stats["resumes"] >= 1  # the same session, within its grace window


def test_a_socket_dropped_mid_answer_is_an_error_turn_and_a_new_realtime_session_goes_on(
        sim, tmp_path, two):
    sim.realtime.inject("drop")
    session = vnb.Session("drop", home=tmp_path / "home")
    talk(session, "openai-realtime", two, pace=2.0, answer_timeout=20)
    df = session.history
    assert df["status"].tolist() == ["error", "ok"], df[["status", "error"]]
    assert df.iloc[0]["transcript"] and df["reconnects"].tolist() == [1, 0]
    assert df.iloc[0]["live_backend"] == "openai-realtime"
    assert sim.realtime.stats["sessions"] == 2  # a new session, given the conversation so far


@pytest.mark.parametrize("backend", S2S)
def test_a_wrong_key_is_an_authentication_error_before_anything_is_said(sim, tmp_path,
                                                                        backend):
    settings = vnb.Settings(openai_api_key="sk-canary-5150",
                            assemblyai_api_key="aai-canary-5150")
    session = vnb.Session("wrong", home=tmp_path / "home", settings=settings)
    with pytest.raises(vnb.AuthenticationError) as info:
        Driver(session, backend).start()
    assert "canary" not in str(info.value) and session.history.empty
