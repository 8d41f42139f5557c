"""Speaking answers: vnb.speak through OpenAI's audio.speech (the simulator) or espeak-ng
offline, the auto choice among them and AssemblyAI, and Session(speak=True). AssemblyAI's own
backend is tested in test_tts_assemblyai.py."""

from __future__ import annotations

import logging
import shutil
import warnings

import nbformat
import pytest
from nbclient import NotebookClient

import voicenb as vnb
from voicenb import tts

ANSWER = "Paris is the capital of France."
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                  reason="espeak-ng is not installed (apt-get install espeak-ng)")


@pytest.fixture(autouse=True)
def warn_again(monkeypatch):
    monkeypatch.setattr(tts, "_warned", False)


@pytest.fixture(autouse=True)
def openai_speech(monkeypatch):
    """These tests speak with OpenAI where they name no backend (the simulator's AssemblyAI
    key would make auto choose AssemblyAI)."""
    monkeypatch.setenv("VOICENB_TTS", "openai")


# -- OpenAI audio.speech, against the simulator -------------------------------------------------


def test_speak_returns_the_speech_as_audio(sim):
    clip = vnb.speak(ANSWER)
    assert isinstance(clip, vnb.Audio)
    assert clip.format == "mp3" and clip.duration > 0.5
    assert sim.stats["audio_speech"] == 1


def test_speak_chooses_voice_and_model(sim):
    assert vnb.speak(ANSWER, voice="coral", model="tts-1").duration > 0


def test_speak_passes_options_such_as_the_format(sim):
    assert vnb.speak(ANSWER, response_format="wav").format == "wav"
    assert vnb.speak(ANSWER, response_format="opus").format == "ogg"
    pcm = vnb.speak(ANSWER, response_format="pcm")  # headerless, so voicenb wraps it
    assert pcm.format == "wav" and pcm.duration == pytest.approx(
        vnb.speak(ANSWER, response_format="wav").duration)


def test_the_simulator_hears_its_own_speech_as_the_text(sim):
    assert vnb.transcribe(vnb.speak(ANSWER)).text == ANSWER


def test_unknown_voice_is_a_service_error_listing_the_voices(sim):
    with pytest.raises(vnb.ServiceError) as info:
        vnb.speak(ANSWER, voice="robot")
    assert info.value.status_code == 400
    assert "'robot'" in str(info.value) and "alloy" in str(info.value)


def test_unknown_speech_model_says_how_to_choose_one(sim):
    with pytest.raises(vnb.ModelNotFoundError) as info:
        vnb.speak(ANSWER, model="tts-9")
    message = str(info.value)
    assert "Speech model 'tts-9'" in message and "gpt-4o-mini-tts" in message
    assert info.value.model == "tts-9"


def test_speech_errors_are_retried_by_the_sdk(sim):
    sim.inject("500", "/v1/audio/speech", times=1)
    assert vnb.speak(ANSWER).duration > 0
    assert sim.stats["fault:500"] == 1


def test_speak_without_an_openai_key_names_every_way_to_set_it():
    with pytest.raises(vnb.ConfigError) as info:
        vnb.speak(ANSWER, backend="openai")
    assert "OPENAI_API_KEY" in str(info.value) and ".env" in str(info.value)


def test_empty_text_is_refused_before_any_request(sim):
    with pytest.raises(vnb.ConfigError, match="no text to speak"):
        vnb.speak("  ")
    assert sim.stats["audio_speech"] == 0


def test_unknown_speech_backend_lists_the_choices():
    with pytest.raises(vnb.ConfigError, match="openai, espeak, auto"):
        vnb.speak(ANSWER, backend="festival")


# -- espeak-ng, offline -------------------------------------------------------------------------


@needs_espeak
def test_espeak_speaks_offline_without_a_key():
    clip = vnb.speak(ANSWER, backend="espeak")
    assert clip.format == "wav" and clip.duration > 1.0
    assert not clip.is_silent()


@needs_espeak
def test_espeak_voice_is_selectable():
    assert vnb.speak("Bonjour tout le monde.", backend="espeak", voice="fr").duration > 0.5


@needs_espeak
def test_espeak_unknown_voice_says_how_to_list_them():
    with pytest.raises(vnb.ConfigError, match="espeak-ng --voices"):
        vnb.speak(ANSWER, backend="espeak", voice="robot")


@needs_espeak
def test_espeak_text_starting_with_a_dash_is_spoken_not_parsed():
    assert vnb.speak("-w /tmp/x.wav --help", backend="espeak").duration > 0.5


def test_espeak_missing_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no espeak-ng on it
    with pytest.raises(vnb.ConfigError) as info:
        vnb.speak(ANSWER, backend="espeak")
    assert "apt-get install espeak-ng" in str(info.value)
    assert "backend='openai'" in str(info.value)


@needs_espeak
def test_voicenb_tts_selects_the_default_backend(monkeypatch):
    monkeypatch.setenv("VOICENB_TTS", "espeak")
    assert vnb.speak(ANSWER).format == "wav"


@needs_espeak
def test_auto_speaks_with_assemblyai_else_openai_else_espeak(monkeypatch):
    assert vnb.speak(ANSWER, backend="auto").format == "wav"  # espeak-ng: no key here
    with vnb.sim.running() as sim:
        assert tts.backend_for(vnb.Settings(tts="auto").resolved()) == "assemblyai"
        assert vnb.speak(ANSWER, backend="auto").format == "wav"
        assert sim.tts.stats["requests"] == 1 and sim.stats["audio_speech"] == 0
        monkeypatch.delenv("ASSEMBLYAI_API_KEY")  # OpenAI's key only
        assert vnb.speak(ANSWER, backend="auto").format == "mp3"
        assert sim.stats["audio_speech"] == 1


# -- Session(speak=True) ------------------------------------------------------------------------


def test_session_speaks_each_answer(sim, sample, tmp_path, caplog):
    s = vnb.Session("talk", home=str(tmp_path / "home"), speak=True)
    with caplog.at_level(logging.WARNING, logger="voicenb"):
        s.ask_audio(sample)
        s.ask_audio(sample)
    assert sim.stats["audio_speech"] == 2
    # no sounddevice here: it says so once, and the turns are fine
    assert sum("not played aloud" in r.getMessage() for r in caplog.records) == 1
    assert s.history["status"].tolist() == ["ok", "ok"]


def test_session_is_silent_by_default(sim, sample, tmp_path):
    vnb.Session("quiet", home=str(tmp_path / "home")).ask_audio(sample)
    assert sim.stats["audio_speech"] == 0


def test_session_speech_failure_keeps_the_answered_turn(sim, sample, tmp_path):
    sim.inject("500", "/v1/audio/speech", times=10)
    s = vnb.Session("talk", home=str(tmp_path / "home"), speak=True,
                    settings=vnb.Settings(max_retries=0))
    with pytest.warns(RuntimeWarning, match="recorded but could not be spoken"):
        turn = s.ask_audio(sample)
    assert turn.ok and turn.answer.startswith("(simulated answer)")


@needs_espeak
def test_session_speaks_with_the_backend_named(sim, sample, tmp_path):
    s = vnb.Session("talk", home=str(tmp_path / "home"), speak="espeak")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s.ask_audio(sample)
    assert sim.stats["audio_speech"] == 0  # espeak-ng, not OpenAI


def test_play_outside_a_notebook_without_sounddevice_reports_none(caplog):
    clip = vnb.Audio(vnb.sim.samples()[0])
    with caplog.at_level(logging.WARNING, logger="voicenb"):
        assert tts.play(clip) == "none"
    assert "pip install 'voicenb[speak]'" in caplog.text


@needs_espeak
def test_in_a_notebook_the_answer_plays_once_as_one_audio_element(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        "import voicenb as vnb\n"
        "from voicenb.tts import play\n"
        "how = play(vnb.speak('Paris is the capital of France.', backend='espeak'))\n"
        "print(how)")]
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = nb.cells[0].outputs
    audio = [o for o in outputs if o.output_type == "display_data"]
    assert len(audio) == 1
    html = audio[0].data["text/html"]
    assert "<audio" in html and "autoplay" in html
    assert [o.text.strip() for o in outputs if o.output_type == "stream"] == ["notebook"]
