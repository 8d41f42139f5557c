"""session.live() without a browser: PCM fed from Python becomes answered, recorded turns."""

from __future__ import annotations

import pytest

import voicenb as vnb
from tests._page_player import PagePlayer


@pytest.fixture
def live(sim, tmp_path):
    return vnb.Session("live", home=str(tmp_path / "home")).live()


def test_fed_speech_becomes_a_recorded_streaming_turn(live, sim, samples):
    pcm = vnb.Audio(samples[0]).pcm16k() + b"\0\0" * 16000
    for i in range(0, len(pcm), 1600):  # 100 ms at a time, as the browser sends it
        live.feed(pcm[i:i + 1600])
    live.stop()
    assert live.wait(30)
    assert live.transcript == "What is the capital of France?"
    assert live.answer.startswith("(simulated answer)")
    df = live.session.history
    assert df["status"].tolist() == ["ok"]
    assert df["stt_backend"].tolist() == ["assemblyai-streaming"]
    assert df["stt_s"].iloc[0] > 0 and df["audio_s"].iloc[0] > 1
    assert sim.streaming.stats["terminated"] == 1


def test_the_browser_messages_drive_it(live, sim, samples):
    live._on_msg(live, {"type": "start", "rate": 16000}, [])
    assert live.state == "listening"
    pcm = vnb.Audio(samples[1]).pcm16k() + b"\0\0" * 16000
    live._on_msg(live, {"type": "audio"}, [memoryview(pcm)])
    live.stop()
    assert live.wait(30)
    assert live.transcript == "How far away is the moon?"


def test_the_captures_last_chunk_after_stop_opens_no_new_stream(live, sim):
    live._on_msg(live, {"type": "start", "rate": 16000}, [])
    live._on_msg(live, {"type": "audio"}, [memoryview(b"\0\0" * 1600)])
    live._on_msg(live, {"type": "stop"}, [])
    live.stop()  # (the message stops it on a thread; either way it is stopped now)
    live._on_msg(live, {"type": "audio"}, [memoryview(b"\0\0" * 1600)])  # still in flight
    assert live._rt is None and sim.streaming.stats["sessions"] == 1
    live._on_msg(live, {"type": "start", "rate": 16000}, [])  # Start again: a new stream
    live._on_msg(live, {"type": "audio"}, [memoryview(b"\0\0" * 1600)])
    live.stop()
    assert sim.streaming.stats["sessions"] == 2


def test_a_refused_microphone_is_explained(live):
    why = "the microphone was refused: allow it for this page in the address bar's settings"
    live._on_msg(live, {"type": "error", "message": why}, [])
    assert live.state == "error" and why in live.status


def test_a_stream_of_silence_says_nothing_was_heard(live):
    live.feed(b"\0\0" * 16000)
    live.stop()
    assert live.state == "idle" and live.status == "stopped: no speech was heard"
    assert live.turns == []


def test_the_live_widget_lists_the_last_turns(live, samples):
    live.feed(vnb.Audio(samples[0]).pcm16k() + b"\0\0" * 16000)
    live.stop()
    assert live.wait(30)
    assert [r["said"] for r in live.turns] == ["What is the capital of France?"]
    assert live.status.startswith("turn 1: done")


def test_the_streaming_model_comes_from_the_sessions_settings(sim, samples, tmp_path):
    settings = vnb.Settings(streaming_model="universal-streaming-english")
    live = vnb.Session("live", home=str(tmp_path / "home"), settings=settings).live()
    live.feed(vnb.Audio(samples[1]).pcm16k() + b"\0\0" * 16000)
    live.stop()
    assert live.wait(30)
    assert live.transcript == "How far away is the moon?"
    assert sim.streaming.received[-1].params["speech_model"] == "universal-streaming-english"


def test_the_live_widget_streams_to_u3_rt_pro_by_default(live, sim, samples):
    live.feed(vnb.Audio(samples[0]).pcm16k() + b"\0\0" * 16000)
    live.stop()
    assert live.wait(30)
    params = sim.streaming.received[-1].params
    assert params["speech_model"] == "u3-rt-pro" and "format_turns" not in params
    # the turn says which model heard it, so that it is priced: $0.45 an hour of its audio
    row = live.session.history.iloc[-1]
    assert row["speech_model"] == "u3-rt-pro" and row["cost_usd"] > row["audio_s"] * 0.45 / 3600


def test_answers_are_not_read_aloud_when_no_page_shows_the_widget(sim, samples, tmp_path):
    live = vnb.Session("quiet", home=str(tmp_path / "home")).live(speak="espeak")
    live.feed(vnb.Audio(samples[0]).pcm16k() + b"\0\0" * 16000)
    live.stop()
    assert live.wait(30)
    turn = live.session.turn(1)
    assert turn.status == "ok" and turn.spoken_chars is None and turn.first_audio_s is None


@pytest.mark.skipif(not __import__("shutil").which("espeak-ng"), reason="needs espeak-ng")
@pytest.mark.parametrize("barge_after", [None, 1])
def test_a_spoken_answer_is_recorded_as_heard(sim, samples, tmp_path, barge_after):
    live = vnb.Session("spoken", home=str(tmp_path / "home")).live(speak="espeak")
    player = PagePlayer(live, barge_after=barge_after)
    live.feed(vnb.Audio(samples[0]).pcm16k() + b"\0\0" * 16000)
    live.stop()
    assert live.wait(60)
    turn = live.session.turn(1)
    assert turn.tts_model == "espeak" and turn.tts_ttfb_s > 0
    assert turn.stt_s < turn.first_token_s < turn.first_audio_s
    if barge_after is None:
        assert turn.status == "ok" and turn.spoken_chars == len(turn.answer)
        assert player.seen[-1] == "said"
    else:
        assert turn.status == "barged_in" and 0 < turn.spoken_chars < len(turn.answer)
        assert "hush" in player.seen and len(live.barge_stops) == 1
        assert live.session.chat.history[-1][1] == turn.answer[:turn.spoken_chars]


def test_an_unknown_speech_backend_is_said_when_the_widget_is_made(sim, tmp_path):
    with pytest.raises(vnb.ConfigError, match="Unknown speech backend 'espek'"):
        vnb.Session("s", home=str(tmp_path)).live(speak="espek")
    with pytest.raises(vnb.ConfigError, match="Unknown speech backend"):
        vnb.Session("s", home=str(tmp_path)).recorder(speak="espek")
