"""Speech to text on this machine: faster-whisper with Whisper tiny.en, which installs from the
package index (bigger models are downloaded once; offline and uncached it says how to get
them), and pocketsphinx (offline, ships its model)."""

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
        vnb.transcribe(sample, backend="whisper", model="base.en")
    message = str(info.value)
    assert "'base.en' is not on this machine" in message
    assert "HF_HUB_OFFLINE is set, so there is no network access" in message
    assert "download_model('base.en', output_dir='whisper-base.en')" in message
    assert "export VOICENB_WHISPER_MODEL=/path/to/whisper-base.en" in message
    assert "tiny.en, which installs with pip install 'voicenb[whisper]'" in message
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
        vnb.transcribe(sample, backend="whisper", model="small.en")
    assert f"there is no network (http://127.0.0.1:{port} cannot be reached)" in str(info.value)


def test_whisper_model_is_chosen_with_voicenb_whisper_model(no_whisper_cache, monkeypatch,
                                                            sample):
    monkeypatch.setenv("VOICENB_WHISPER_MODEL", "base.en")
    with pytest.raises(vnb.ConfigError, match=r"'base.en' is not on this machine") as info:
        vnb.transcribe(sample, backend="whisper")
    assert "about 145 MB" in str(info.value)


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
    assert local.whisper_model_ready("base.en") is False


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


# -- the default local engine: Whisper tiny.en, installed from the package index ----------------


def test_whisper_hears_a_human_sentence_with_the_model_that_installs_with_voicenb(
        no_whisper_cache, sample):
    t = vnb.transcribe(sample, backend="whisper")  # no cache, no network: the bundled model
    assert t.ok and t.backend == "whisper" and t.speech_model == "tiny.en"
    from voicenb.accuracy import word_errors

    assert word_errors("What is the capital of France?", t.text).wer <= 0.34
    assert 0 < t.transcribe_s <= t.stt_s


def test_the_bundled_model_is_a_complete_ctranslate2_folder():
    folder = local.bundled_model()
    assert folder is not None and local.locate_whisper_model() == str(folder)
    assert {"model.bin", "config.json", "tokenizer.json", "vocabulary.txt"} <= {
        p.name for p in folder.iterdir()}


def test_auto_without_keys_chooses_whisper(no_whisper_cache, sample):
    t = vnb.transcribe(sample, backend="auto")
    assert t.backend == "whisper" and "France" in t.text


def test_the_model_loads_once_per_process_in_the_background():
    assert local.preload() is True
    first = local.WhisperTranscriber()._model()  # waits for the background load, if any
    assert not local.loading()
    assert local.WhisperTranscriber()._model() is first
    assert len([k for k in local._models if k[0] == str(local.bundled_model())]) == 1


def test_a_silent_clip_is_an_audio_error_that_says_so(tmp_path):
    silent = vnb.audio.pcm_to_wav(b"\0\0" * 16000 * 2)
    with pytest.raises(vnb.AudioError, match="it is silent.*microphone"):
        vnb.transcribe(silent, backend="whisper")


def test_a_clip_of_pure_noise_is_an_audio_error_not_made_up_words():
    import numpy as np

    noise = np.random.default_rng(0).normal(0, 3000, 16000 * 3).astype("<i2").tobytes()
    with pytest.raises(vnb.AudioError, match="no words were heard: it may be only noise"):
        vnb.transcribe(vnb.audio.pcm_to_wav(noise), backend="whisper")


def test_a_damaged_model_folder_says_to_replace_it(monkeypatch, tmp_path, sample):
    folder = tmp_path / "whisper-broken"
    folder.mkdir()
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        (folder / name).write_bytes((local.bundled_model() / name).read_bytes())
    (folder / "model.bin").write_bytes(b"not a model")
    monkeypatch.setenv("VOICENB_WHISPER_MODEL", str(folder))
    with pytest.raises(vnb.ConfigError, match="the folder is damaged or not a CTranslate2 "
                                              "Whisper model.*Download it again"):
        vnb.transcribe(sample, backend="whisper")


def test_a_model_folder_missing_files_names_them(monkeypatch, tmp_path, sample):
    (tmp_path / "model.bin").write_bytes(b"x")
    monkeypatch.setenv("VOICENB_WHISPER_MODEL", str(tmp_path))
    with pytest.raises(vnb.ConfigError, match="it has no config.json, tokenizer.json, "
                                              "vocabulary.txt"):
        vnb.transcribe(sample, backend="whisper")


def test_a_long_file_is_cut_in_pauses_into_pieces_of_at_most_two_minutes():
    import numpy as np

    rng = np.random.default_rng(1)
    second = 16000
    # 5 minutes: 4.5 s of "speech" then 0.5 s of silence, over and over
    period = np.concatenate([rng.normal(0, 4000, int(4.5 * second)), np.zeros(second // 2)])
    pcm = np.tile(period, 60).astype("<i2").tobytes()
    blocks = (pcm[i:i + 10 * 2 * second] for i in range(0, len(pcm), 10 * 2 * second))
    pieces = list(local._pieces(blocks))
    assert sum(len(p) for p in pieces) == len(pcm) // 2
    assert all(len(p) <= local.PIECE_S * second for p in pieces)
    for piece in pieces[:-1]:  # every cut falls in a pause
        assert float(np.abs(piece[-800:]).max()) == 0.0


def test_a_long_file_shows_its_progress_and_keeps_every_piece(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(local, "PIECE_S", 12.0)
    monkeypatch.setattr(local, "CUT_SEARCH_S", 4.0)
    monkeypatch.setattr(local, "PROGRESS_OVER_S", 10.0)
    clips = {"capital": "01_capital_of_france.wav", "moon": "02_moon_distance.wav",
             "light": "06_speed_of_light.wav", "mountain": "08_tallest_mountain.wav",
             "python": "05_python_creator.wav", "sleep": "10_sleep_hours.wav"}
    pause = b"\0\0" * 16000
    long = vnb.audio.pcm_to_wav(b"".join(vnb.Audio(NOTEBOOK_SAMPLES / name).pcm16k() + pause
                                         for name in clips.values()))  # ~22 s: two pieces
    t = vnb.transcribe(long, backend="whisper")
    assert sum(word in t.text.lower() for word in clips) >= 5
    assert "transcribing" in capsys.readouterr().err
