"""OpenAI shuts tts-1, tts-1-hd and gpt-4o-mini-tts down on 2027-01-06: before the day a
one-time warning says what to switch to; from it voicenb refuses them, before anything is paid,
and VOICENB_TTS=auto speaks with espeak-ng instead. The day is data; tests move the clock."""

from __future__ import annotations

import warnings
from datetime import date

import pytest

import voicenb as vnb
from voicenb import tts

SHUT = date(2027, 1, 6)


@pytest.fixture
def after_shutdown(monkeypatch):
    monkeypatch.setattr(tts, "today", lambda: SHUT)


def test_the_three_models_shut_down_on_the_announced_day():
    assert {tts.SHUTDOWN[m] for m in ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")} == {SHUT}


def test_before_the_day_openai_speech_works_and_warns_once(sim):
    with pytest.warns(FutureWarning, match="shuts its speech model 'gpt-4o-mini-tts' down on "
                                           "2027-01-06.*backend='espeak'"):
        clip = vnb.speak("Paris is the capital of France.", backend="openai")
    assert clip.duration > 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning for the same model
        vnb.speak("And Rome of Italy.", backend="openai")


@pytest.mark.parametrize("model", ["tts-1", "tts-1-hd", "gpt-4o-mini-tts"])
def test_from_the_day_each_model_is_refused_before_anything_is_paid(sim, after_shutdown,
                                                                     model):
    with pytest.raises(vnb.ConfigError, match=f"shut its speech model '{model}' down on "
                                              "2027-01-06.*backend='espeak'"):
        vnb.speak("Hello.", backend="openai", model=model)
    with pytest.raises(vnb.ConfigError, match="shut its speech model"):
        tts.speak_wav("Hello.", backend="openai", model=model)
    assert sim.stats["audio_speech"] == 0 and sim.stats["requests"] == 0


def test_auto_speaks_with_openai_while_its_model_lives_then_with_espeak(sim, monkeypatch):
    monkeypatch.delenv("ASSEMBLYAI_API_KEY")  # with it, auto speaks with AssemblyAI
    cfg = vnb.Settings(tts="auto").resolved()
    assert tts.backend_for(cfg) == "openai"
    monkeypatch.setattr(tts, "today", lambda: SHUT)
    assert tts.backend_for(cfg) == "espeak"
    monkeypatch.setenv("ASSEMBLYAI_API_KEY", sim.assemblyai.key)
    assert tts.backend_for(vnb.Settings(tts="auto").resolved()) == "assemblyai"


def test_a_talking_widget_says_so_when_it_is_made(sim, tmp_path, after_shutdown):
    s = vnb.Session("talk", home=str(tmp_path / "home"))
    with pytest.raises(vnb.ConfigError, match="shut its speech model 'gpt-4o-mini-tts'"):
        s.live(speak="openai")
    assert s.live(speak="espeak").speak  # offline speech still works
