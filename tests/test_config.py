"""Settings: explicit > settings > environment (and .env); keys never shown."""

from __future__ import annotations

import logging

import pytest

import voicenb as vnb
from voicenb._config import resolve

KEY = "aai-test-key-3f9d1c7e"


def test_environment_fills_unset_fields(monkeypatch):
    monkeypatch.setenv("ASSEMBLYAI_BASE_URL", "http://127.0.0.1:9")
    assert resolve().assemblyai_base_url == "http://127.0.0.1:9"


def test_settings_beat_environment(monkeypatch):
    monkeypatch.setenv("VOICENB_MODEL", "from-env")
    assert resolve(vnb.Settings(model="from-settings")).model == "from-settings"


def test_explicit_argument_beats_settings():
    s = vnb.Settings(model="from-settings")
    assert resolve(s, model="explicit").model == "explicit"


def test_dotenv_file_in_working_directory_is_read(tmp_path):
    (tmp_path / ".env").write_text(f"ASSEMBLYAI_API_KEY={KEY}\n")
    assert resolve().assemblyai_api_key == KEY


def test_real_environment_beats_dotenv(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("VOICENB_MODEL=from-dotenv\n")
    monkeypatch.setenv("VOICENB_MODEL", "from-env")
    assert resolve().model == "from-env"


def test_defaults_when_nothing_is_set():
    s = resolve()
    assert s.assemblyai_base_url == "https://api.assemblyai.com"
    assert s.assemblyai_streaming_url == "wss://streaming.assemblyai.com"
    assert s.model == "gpt-5.4-mini"
    assert str(s.home) == "voicenb-data"


def test_settings_are_never_changed_in_place():
    s = vnb.Settings(model="a")
    t = s.replace(model="b")
    assert (s.model, t.model) == ("a", "b")
    with pytest.raises(Exception):
        s.model = "c"


def test_missing_key_names_every_way_to_set_it():
    with pytest.raises(vnb.ConfigError) as info:
        vnb.transcribe(b"RIFF")
    message = str(info.value)
    assert "ASSEMBLYAI_API_KEY" in message
    assert ".env" in message
    assert "Settings(assemblyai_api_key=" in message
    assert "api_key=" in message
    assert "voicenb.sim" in message


def test_repr_hides_keys():
    s = vnb.Settings(assemblyai_api_key=KEY, openai_api_key=KEY + "x")
    assert KEY not in repr(s)
    assert KEY not in str(s)
    assert "<set>" in repr(s)


def test_client_repr_hides_key(sim):
    client = vnb.AssemblyAI()
    assert sim.assemblyai.key not in repr(client)


def test_wrong_key_raises_authentication_error_without_echoing_it(sim, sample, caplog):
    caplog.set_level(logging.DEBUG)
    with pytest.raises(vnb.AuthenticationError) as info:
        vnb.transcribe(sample, api_key=KEY)
    assert info.value.status_code == 401
    assert "Invalid API key" in str(info.value)  # the service's own words (the Sync API's)
    assert KEY not in str(info.value)
    assert KEY not in repr(info.value)
    assert KEY not in caplog.text


def test_error_messages_mask_known_keys():
    vnb.Settings(assemblyai_api_key=KEY)
    err = vnb.ServiceError(f"the service said: bad key {KEY}", detail=f"key {KEY}")
    assert KEY not in str(err) and KEY not in err.detail
