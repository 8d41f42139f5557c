"""Speech to text on this machine: pocketsphinx (offline, ships its model) and faster-whisper
(its model is downloaded once; offline and uncached it says how to get it)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

import voicenb as vnb
from voicenb import stt
from voicenb.stt import local

FRANCE = {"what", "is", "the", "capital", "of", "france"}
NOTEBOOK_SAMPLES = Path(__file__).resolve().parents[1] / "notebooks" / "samples"


@pytest.fixture(autouse=True)
def fresh_clients(monkeypatch):
    """Each test builds its own backend clients (so a simulated absence is seen)."""
    monkeypatch.setattr(stt, "_clients", {})


@pytest.fixture
def no_whisper_cache(monkeypatch, tmp_path):
    """An empty Hugging Face cache and no network access for huggingface_hub."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


# -- pocketsphinx -------------------------------------------------------------------------------


def test_sphinx_transcribes_a_sample_clip_without_a_key_or_network(sample):
    t = vnb.transcribe(sample, backend="sphinx")
    assert t.ok and t.backend == "sphinx"
    assert set(t.text.split()) & FRANCE


def test_sphinx_reports_its_timings(sample):
    t = vnb.transcribe(sample, backend="sphinx")
    assert t.audio_s == pytest.approx(vnb.Audio(sample).duration)
    assert 0 < t.transcribe_s <= t.stt_s
    assert t.upload_s is None and t.polls == 0 and t.id is None


def test_sphinx_hears_a_browser_webm_recording(encode):
    clip = encode(NOTEBOOK_SAMPLES / "01_capital_of_france.wav")
    t = vnb.transcribe(clip, backend="sphinx")
    assert vnb.Audio(clip).format == "webm"
    assert set(t.text.split()) & FRANCE


def test_sphinx_batch_keeps_input_order_and_reports_failures_as_items(samples):
    results = vnb.transcribe_many([samples[0], "missing.wav", samples[1]], backend="sphinx",
                                  progress=False)
    assert [t.status for t in results] == ["completed", "error", "completed"]
    assert "not found" in results[1].error and results[1].backend == "sphinx"
    assert results[0].source == str(samples[0])


def test_sphinx_rejects_unusable_audio_with_an_audio_error():
    with pytest.raises(vnb.AudioError, match="not found"):
        vnb.transcribe("missing.wav", backend="sphinx")


def test_sphinx_takes_no_service_options(sample):
    with pytest.raises(vnb.ConfigError, match="takes no options"):
        vnb.transcribe(sample, backend="sphinx", language_code="de")


def test_sphinx_not_installed_names_the_extra(monkeypatch, sample):
    monkeypatch.setattr(local, "_installed", lambda name: name != "pocketsphinx")
    with pytest.raises(vnb.MissingDependencyError) as info:
        vnb.transcribe(sample, backend="sphinx")
    assert "pip install 'voicenb[sphinx]'" in str(info.value)
    assert info.value.extra == "sphinx"


def test_sphinx_in_a_fully_offline_session_with_a_local_llm_server(sample, tmp_path,
                                                                   monkeypatch):
    with vnb.sim.Simulator(openai_key=None) as llm:  # stands in for Ollama / llama.cpp
        monkeypatch.setenv("OPENAI_BASE_URL", f"{llm.url}/v1")
        s = vnb.Session("offline", home=str(tmp_path / "home"), stt="sphinx")
        turn = s.ask_audio(sample)
    assert turn.ok and turn.stt_backend == "sphinx"
    assert set(turn.transcript.split()) & FRANCE
    assert turn.answer.startswith("(simulated answer)")
    assert llm.stats["chat_completions"] == 1 and llm.stats["uploads"] == 0


# -- faster-whisper -----------------------------------------------------------------------------


def test_whisper_without_a_cached_model_offline_says_how_to_get_it(no_whisper_cache, sample):
    with pytest.raises(vnb.ConfigError) as info:
        vnb.transcribe(sample, backend="whisper")
    message = str(info.value)
    assert "'base.en' is not on this machine" in message
    assert "HF_HUB_OFFLINE is set, so there is no network access" in message
    assert "download_model('base.en', output_dir='whisper-base.en')" in message
    assert "export VOICENB_WHISPER_MODEL=/path/to/whisper-base.en" in message
    assert "backend='sphinx'" in message


def test_whisper_with_no_network_fails_at_once_saying_so(monkeypatch, tmp_path, sample):
    with socket.socket() as s:  # a local port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for proxy in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(proxy, raising=False)
    with pytest.raises(vnb.ConfigError) as info:
        vnb.transcribe(sample, backend="whisper")
    assert f"there is no network (http://127.0.0.1:{port} cannot be reached)" in str(info.value)


def test_whisper_model_is_chosen_with_voicenb_whisper_model(no_whisper_cache, monkeypatch,
                                                            sample):
    monkeypatch.setenv("VOICENB_WHISPER_MODEL", "tiny.en")
    with pytest.raises(vnb.ConfigError, match=r"'tiny.en' is not on this machine") as info:
        vnb.transcribe(sample, backend="whisper")
    assert "about 75 MB" in str(info.value)


def test_whisper_model_folder_without_a_model_is_refused(monkeypatch, tmp_path, sample):
    monkeypatch.setenv("VOICENB_WHISPER_MODEL", str(tmp_path))
    with pytest.raises(vnb.ConfigError, match="is not a faster-whisper model: it has no "
                                              "model.bin"):
        vnb.transcribe(sample, backend="whisper")


def test_whisper_model_folder_that_does_not_exist_is_named(monkeypatch, sample):
    monkeypatch.setenv("VOICENB_WHISPER_MODEL", "./models/whisper-small")
    with pytest.raises(vnb.ConfigError, match=r"folder './models/whisper-small' .* does not "
                                              "exist"):
        vnb.transcribe(sample, backend="whisper")


def test_whisper_unknown_model_size_lists_what_to_use(no_whisper_cache, sample):
    with pytest.raises(vnb.ConfigError, match="Unknown Whisper model 'enormous'"):
        vnb.transcribe(sample, backend="whisper", model="enormous")


def test_whisper_not_installed_names_the_extra(monkeypatch, sample):
    monkeypatch.setattr(local, "_installed", lambda name: name != "faster_whisper")
    with pytest.raises(vnb.MissingDependencyError, match=r"pip install 'voicenb\[whisper\]'"):
        vnb.transcribe(sample, backend="whisper")


def test_whisper_model_is_not_ready_without_a_cached_model(no_whisper_cache):
    assert local.whisper_model_ready() is False


def test_audio_for_whisper_is_16khz_mono_float32_in_unit_range(encode):
    import numpy as np

    clip = vnb.Audio(encode(NOTEBOOK_SAMPLES / "02_moon_distance.wav"))
    samples = local.to_float32(clip)
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert len(samples) == pytest.approx(clip.duration * 16000, rel=0.05)
    assert 0.05 < float(np.abs(samples).max()) <= 1.0
    pcm = np.frombuffer(clip.pcm16k(), dtype="<i2")
    assert np.array_equal(samples * 32768.0, pcm.astype(np.float32))


def test_a_session_batch_on_sphinx_answers_every_clip_in_order(samples, tmp_path, monkeypatch):
    with vnb.sim.Simulator(openai_key=None) as llm:
        monkeypatch.setenv("OPENAI_BASE_URL", f"{llm.url}/v1")
        s = vnb.Session("batch", home=str(tmp_path / "home"), stt="sphinx")
        turns = s.ask_many(samples * 3, progress=False)
    assert [t.turn for t in turns] == list(range(1, 10))
    assert all(t.ok and t.stt_backend == "sphinx" for t in turns)
    assert [t.transcript for t in turns[:3]] == [t.transcript for t in turns[3:6]]
    decoders = stt._clients[("sphinx",)]._idle  # however many threads asked, few decoders
    assert 1 <= len(decoders) <= local.SphinxTranscriber.max_workers
