"""stt="auto": AssemblyAI when its key is set, else OpenAI when its key is, else a local engine
that works offline, else a ConfigError listing every option."""

from __future__ import annotations

import itertools

from pathlib import Path

import pytest

import voicenb as vnb
from voicenb import stt
from voicenb.stt import local

KEYS = {"none": {}, "assemblyai": {"ASSEMBLYAI_API_KEY": "aai-key"},
        "openai": {"OPENAI_API_KEY": "sk-key"},
        "both": {"ASSEMBLYAI_API_KEY": "aai-key", "OPENAI_API_KEY": "sk-key"}}
#: which local engines are usable: pocketsphinx installed; faster-whisper installed with a model
ENGINES = {"none": set(), "sphinx": {"sphinx"}, "whisper": {"whisper"},
           "both": {"sphinx", "whisper"}}


def expected(keys: str, engines: str) -> str | None:
    if keys in ("assemblyai", "both"):
        return "assemblyai"
    if keys == "openai":
        return "openai"
    if "whisper" in ENGINES[engines]:
        return "whisper"  # far more accurate than pocketsphinx, when its model is here
    if "sphinx" in ENGINES[engines]:
        return "sphinx"
    return None


@pytest.fixture(autouse=True)
def fresh_clients(monkeypatch):
    monkeypatch.setattr(stt, "_clients", {})


@pytest.fixture
def engines(monkeypatch):
    """Pretend only some local engines are usable (no network is involved either way)."""
    def use(*names: str) -> None:
        packages = {"sphinx": "pocketsphinx", "whisper": "faster_whisper"}
        installed = {packages[n] for n in names}
        monkeypatch.setattr(local, "_installed", lambda package: package in installed)
        monkeypatch.setattr(local, "whisper_model_ready", lambda model=None: "whisper" in names)
    return use


@pytest.mark.parametrize("keys,engine_set", list(itertools.product(KEYS, ENGINES)))
def test_auto_picks_by_keys_then_local_engines(keys, engine_set, monkeypatch, engines):
    for name, value in KEYS[keys].items():
        monkeypatch.setenv(name, value)
    engines(*ENGINES[engine_set])
    settings = vnb.Settings().resolved()
    want = expected(keys, engine_set)
    if want is None:
        with pytest.raises(vnb.ConfigError, match="No speech-to-text backend is available"):
            local.auto_backend(settings)
    else:
        assert local.auto_backend(settings) == want


def test_nothing_available_lists_every_option(engines, sample):
    engines()
    with pytest.raises(vnb.ConfigError) as info:
        vnb.transcribe(sample, backend="auto")
    message = str(info.value)
    for option in ("ASSEMBLYAI_API_KEY", "OPENAI_API_KEY", "pip install 'voicenb[sphinx]'",
                   "pip install 'voicenb[whisper]'", "voicenb.sim.running()"):
        assert option in message


def test_whisper_installed_without_its_model_says_so(monkeypatch, tmp_path, sample):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(local, "_installed", lambda package: package == "faster_whisper")
    with pytest.raises(vnb.ConfigError, match="installed, but its model is not on this "
                                              "machine"):
        vnb.transcribe(sample, backend="auto")


def test_auto_uses_assemblyai_when_its_key_is_set(sim, sample):
    t = vnb.transcribe(sample, backend="auto")
    assert t.backend == "assemblyai-sync" and t.text == "What is the capital of France?"
    assert sim.stats["sync_transcripts"] == 1


def test_auto_uses_openai_when_only_its_key_is_set(sim, sample, monkeypatch):
    monkeypatch.delenv("ASSEMBLYAI_API_KEY")
    t = vnb.transcribe(sample, backend="auto")
    assert t.backend == "openai" and t.text == "What is the capital of France?"
    assert sim.stats["audio_transcriptions"] == 1 and sim.stats["uploads"] == 0


def test_auto_without_keys_transcribes_on_this_machine(sample, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))  # nothing downloaded
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t = vnb.transcribe(sample, backend="auto")
    assert t.backend == "whisper" and "capital of France" in t.text  # it installs with voicenb


def test_auto_without_keys_or_whisper_uses_pocketsphinx(sample, monkeypatch):
    monkeypatch.setattr(local, "_installed", lambda package: package == "pocketsphinx")
    t = vnb.transcribe(sample, backend="auto")
    assert t.backend == "sphinx" and t.text


def test_voicenb_stt_auto_is_the_default_when_set(sim, sample, monkeypatch):
    monkeypatch.setenv("VOICENB_STT", "auto")
    assert vnb.transcribe(sample).backend == "assemblyai-sync"


def test_session_records_the_backend_auto_chose(sample, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with vnb.sim.Simulator(openai_key=None) as llm:
        monkeypatch.setenv("OPENAI_BASE_URL", f"{llm.url}/v1")
        s = vnb.Session("auto", home=str(tmp_path / "home"), stt="auto")
        turn = s.ask_audio(sample)
    assert turn.ok and turn.stt_backend == "whisper"
    assert s.history["stt_backend"].tolist() == ["whisper"]


def test_session_auto_with_keys_records_assemblyai(sim, sample, tmp_path):
    s = vnb.Session("auto", home=str(tmp_path / "home"), stt="auto")
    turns = s.ask_many([sample, sample], progress=False)
    assert [t.stt_backend for t in turns] == ["assemblyai", "assemblyai"]
    assert all(t.ok for t in turns)


def test_session_auto_with_nothing_available_records_the_failed_turn(engines, sample,
                                                                     tmp_path):
    engines()
    s = vnb.Session("auto", home=str(tmp_path / "home"), stt="auto")
    with pytest.raises(vnb.ConfigError, match="No speech-to-text backend is available"):
        s.ask_audio(sample)
    row = s.history.iloc[0]
    assert row["status"] == "error" and "pip install 'voicenb[sphinx]'" in row["error"]
    assert Path(row["audio_path"]).is_file()  # the audio is kept for a retry
