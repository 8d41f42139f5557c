"""The simulators hear people with the local Whisper, off their event loops; the widgets start
loading the model at once and say so while a turn waits for it."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from concurrent.futures import Future
from pathlib import Path

import pytest

import voicenb as vnb
from voicenb.accuracy import word_errors
from voicenb.audio import pcm_to_wav
from voicenb.stt import local
from voicenb.widgets._hearing import LOADING

QUESTION = "What time is it in Tokyo?"

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                  reason="espeak-ng is not installed (.ci/run installs it)")


def _spoken(text: str) -> bytes:
    """``text`` spoken by espeak-ng, as a 16 kHz WAV: a voice the simulators have never been
    told about."""
    wav = subprocess.run(["espeak-ng", "--stdout", text], capture_output=True,
                         check=True).stdout
    return pcm_to_wav(vnb.Audio(wav).pcm16k())


@pytest.fixture
def hearing():
    with vnb.sim.running(hear=True) as sim:
        assert sim.engine == "whisper"
        yield sim


@needs_espeak
@pytest.mark.parametrize("api", ["sync", "async"])
def test_the_simulator_hears_an_unregistered_question_with_whisper(hearing, api, monkeypatch):
    monkeypatch.setenv("VOICENB_ASSEMBLYAI_API", api)
    t = vnb.transcribe(_spoken(QUESTION))
    assert word_errors(QUESTION, t.text).wer <= 0.2, t.text


@needs_espeak
def test_a_live_question_is_heard_with_its_words(hearing):
    finals = []
    rt = vnb.stt.streaming.RealtimeTranscriber(on_turn=finals.append).start()
    rt.send(vnb.Audio(_spoken(QUESTION)).pcm16k() + b"\0\0" * 16000)
    rt.close()
    assert len(finals) == 1 and word_errors(QUESTION, finals[0].text).wer <= 0.2, finals


class _Held:
    """A listener the test lets go of: while it is held, a turn cannot be heard."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def __call__(self, audio: vnb.Audio) -> str:
        self.calls += 1
        self.release.wait(30)
        return "Held words."


def test_frames_keep_being_read_and_pings_answered_while_a_turn_is_heard():
    from websockets.sync.client import connect

    held = _Held()
    with vnb.sim.running(streaming_realtime_slack_s=None) as sim:
        sim.registry.listener = held
        noise = bytes(range(256)) * 25 * 10  # loud, unregistered: 2 s
        url = f"{sim.streaming.url}/v3/ws?sample_rate=16000&speech_model=u3-rt-pro"
        with connect(url, additional_headers={"Authorization": sim.assemblyai.key}) as ws:
            ws.recv(5)  # Begin
            for i in range(0, len(noise), 3200):
                ws.send(noise[i:i + 3200])
            for _ in range(10):  # a pause: the turn is now being heard, on the held worker
                ws.send(b"\0" * 3200)
            frames = sim.streaming.stats["frames"]
            ws.ping().wait(5)  # the loop answers while the recognizer is busy
            for _ in range(10):
                ws.send(b"\0" * 3200)
            ws.ping().wait(5)
            assert sim.streaming.stats["frames"] >= frames + 10
            assert held.calls >= 1
            held.release.set()
            ws.send(json.dumps({"type": "Terminate"}))
            finals = [m for m in (json.loads(x) for x in ws)
                      if m.get("type") == "Turn" and m["end_of_turn"]]
    assert [m["transcript"] for m in finals] == ["Held words."]


def test_a_pause_is_heard_once_not_at_every_frame():
    calls = []

    def listener(audio: vnb.Audio) -> str:
        calls.append(audio.duration)
        return "still talking"  # unfinished: the pause does not end the turn

    with vnb.sim.running(streaming_realtime_slack_s=None) as sim:
        sim.registry.listener = listener
        finals = []
        rt = vnb.stt.streaming.RealtimeTranscriber(on_turn=finals.append, pace=False).start()
        noise = bytes(range(256)) * 125  # 1 s, loud
        rt.send(noise + b"\0\0" * 12800 + noise + b"\0\0" * 24000)  # 0.8 s pause, 1.5 s end
        rt.close()
    # one partial at most per 300 ms of speech, one hearing per pause: never one per frame
    assert len(calls) <= 2 / 0.3 + 2, calls
    assert [f.text for f in finals] == ["still talking"]


# -- the widgets: the model loads at once, and the status line says when a turn waits ------


@pytest.fixture
def slow_load():
    """The Whisper model 'still loading' until the test lets go: its load in this process is
    a Future that other callers wait on (see local._models)."""
    model = local.WhisperTranscriber()._model()
    key = next(k for k, f in local._models.items() if f.done() and f.result() is model)
    pending: Future = Future()
    local._models[key] = pending
    yield lambda: pending.set_result(model)
    if not pending.done():
        pending.set_result(model)


def test_a_turn_waiting_for_the_model_says_loading_the_speech_model(slow_load, tmp_path,
                                                                    sample, monkeypatch):
    with vnb.sim.Simulator(openai_key=None) as llm:  # answers only; hearing is in the kernel
        monkeypatch.setenv("OPENAI_BASE_URL", f"{llm.url}/v1")
        rec = vnb.Session("load", home=str(tmp_path / "home"), stt="whisper").recorder()
        assert local.loading()
        rec.submit(sample)
        seen = threading.Event()
        rec.observe(lambda change: LOADING in change["new"] and seen.set(), names="status")
        assert seen.wait(30) or LOADING in rec.status
        slow_load()
        assert rec.wait(60)
    assert rec.state == "ok" and "France" in rec.transcript


def test_a_widget_starts_loading_the_model_when_its_session_hears_with_it(tmp_path):
    local._models.clear()
    vnb.Session("pre", home=str(tmp_path / "home"), stt="whisper").recorder()
    assert local.loading() or local._models  # started (or already done, on a fast machine)
    local.WhisperTranscriber()._model()
    assert not local.loading()


def test_the_live_widget_says_loading_while_the_model_loads(slow_load, sim, tmp_path):
    live = vnb.Session("live", home=str(tmp_path / "home")).live()
    live.start()
    assert live.status.startswith(LOADING) and live.state == "listening"
    slow_load()
    for _ in range(100):
        if not live.status.startswith(LOADING):
            break
        threading.Event().wait(0.05)
    assert live.status.startswith("listening")
    live.stop()


def test_a_turn_of_pure_noise_is_an_error_row_with_its_audio_kept(tmp_path, monkeypatch):
    import numpy as np

    noise = np.random.default_rng(0).normal(0, 3000, 16000 * 3).astype("<i2").tobytes()
    with vnb.sim.Simulator(openai_key=None) as llm:
        monkeypatch.setenv("OPENAI_BASE_URL", f"{llm.url}/v1")
        s = vnb.Session("noise", home=str(tmp_path / "home"), stt="whisper")
        with pytest.raises(vnb.VoicenbError, match="it may be only noise"):
            s.ask_audio(pcm_to_wav(noise))
        assert llm.stats["chat_completions"] == 0  # nothing was asked
    row = s.history.iloc[0]
    assert row["status"] == "error" and "noise" in row["error"]
    assert Path(row["audio_path"]).exists()  # the audio was saved before anything else
