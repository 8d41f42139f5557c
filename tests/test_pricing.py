"""Turn costs: speech seconds, tokens and spoken characters at dated, cited prices; overrides
from Settings or a file; unknown prices give an unknown cost, never a guess."""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import voicenb as vnb
from voicenb._chat_models import CHAT_MODELS
from voicenb._config import DEFAULT_MODEL, resolve
from voicenb.pricing import AS_OF, Prices

DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@pytest.fixture
def prices() -> Prices:
    return Prices.load()


def turn(**fields):
    """A history row as Session writes it: the columns a finished voice turn fills."""
    row = {"status": "ok", "stt_backend": "assemblyai", "speech_model": "universal-2",
           "audio_s": 90.0, "transcript": "What is the capital of France?",
           "llm_model": "gpt-4o-mini", "prompt_tokens": 1000, "completion_tokens": 250}
    row.update(fields)
    return row


# -- the arithmetic ----------------------------------------------------------------------------


def test_a_turn_costs_its_speech_plus_its_tokens(prices):
    # 90 s at $0.15/h = 0.00375; 1,000 x $0.15/1M = 0.00015; 250 x $0.60/1M = 0.00015
    assert prices.turn_cost(turn()) == pytest.approx(0.00405)


def test_each_assemblyai_api_has_its_own_rate(prices):
    # the Sync API: 12 s at $0.30/h = 0.001
    sync = turn(stt_backend="assemblyai-sync", speech_model="universal-3-5-pro", audio_s=12.0,
                prompt_tokens=None, completion_tokens=None)
    assert prices.turn_cost(sync) == pytest.approx(0.001)
    # the async API on Universal-3.5 Pro: 120 s at $0.21/h = 0.007
    slow = turn(speech_model="universal-3-5-pro", audio_s=120.0, prompt_tokens=None,
                completion_tokens=None)
    assert prices.turn_cost(slow) == pytest.approx(0.007)


def test_openai_transcription_is_priced_per_minute(prices):
    # 30 s at $0.006/min = 0.003; then gpt-5-mini: 400 x $0.25/1M + 100 x $2/1M = 0.0003
    row = turn(stt_backend="openai", speech_model="whisper-1", audio_s=30.0,
               llm_model="gpt-5-mini", prompt_tokens=400, completion_tokens=100)
    assert prices.turn_cost(row) == pytest.approx(0.0033)


def test_local_engines_cost_nothing(prices):
    local = [turn(stt_backend="sphinx", speech_model="pocketsphinx en-us"),
             turn(stt_backend="whisper", speech_model="base.en"),
             turn(stt_backend="whisper", speech_model="/models/my-finetune")]
    for row in local:
        row.update(prompt_tokens=None, completion_tokens=None)
        assert prices.turn_cost(row) == 0.0
        assert prices.missing(row) == []
    spoken = {"tts_backend": "espeak", "spoken_chars": 5000}
    assert prices.turn_cost(spoken) == 0.0


def test_a_typed_turn_costs_only_its_answer(prices):
    # no transcription; gpt-4.1-nano: 2,000 x $0.10/1M + 500 x $0.40/1M = 0.0004
    row = turn(stt_backend="text", speech_model=None, audio_s=5.0, llm_model="gpt-4.1-nano",
               prompt_tokens=2000, completion_tokens=500)
    assert prices.turn_cost(row) == pytest.approx(0.0004)


def test_spoken_characters_are_priced_when_the_row_has_them(prices):
    # the turn above (0.00405) + 2,000 characters of tts-1 at $15/1M = 0.03
    row = turn(tts_model="tts-1", spoken_chars=2000)
    assert prices.turn_cost(row) == pytest.approx(0.03405)


def test_live_turns_are_priced_on_their_audio(prices):
    # u3-rt-pro: 20 s at $0.45/h = 0.0025
    row = turn(stt_backend="assemblyai-streaming", speech_model="u3-rt-pro", audio_s=20.0,
               prompt_tokens=None, completion_tokens=None)
    assert prices.turn_cost(row) == pytest.approx(0.0025)


# -- parts that did not happen -------------------------------------------------------------------


def test_a_failed_turn_without_tokens_costs_only_its_speech(prices):
    # the model never answered: 60 s of Universal-3.5 Pro at $0.21/h = 0.0035
    row = turn(status="error", speech_model="universal-3-5-pro", audio_s=60.0,
               prompt_tokens=None, completion_tokens=None)
    assert prices.turn_cost(row) == pytest.approx(0.0035)


def test_a_transcript_that_never_came_is_not_charged(prices):
    row = turn(status="error", transcript=None, prompt_tokens=None, completion_tokens=None)
    assert prices.turn_cost(row) == 0.0


def test_silence_transcribed_to_nothing_is_still_charged(prices):
    # 10 s at $0.15/h = 0.000416666...
    row = turn(transcript="", audio_s=10.0, prompt_tokens=None, completion_tokens=None)
    assert prices.turn_cost(row) == pytest.approx(10 * 0.15 / 3600)


def test_nan_and_na_in_a_history_frame_count_as_absent(prices):
    frame = pd.DataFrame([turn(), turn(prompt_tokens=np.nan, completion_tokens=pd.NA,
                                       llm_model=pd.NA, spoken_chars=np.nan)])
    costs = frame.apply(prices.turn_cost, axis=1)
    # row 0 as above; row 1 is its speech alone: 90 s at $0.15/h = 0.00375
    assert costs.tolist() == pytest.approx([0.00405, 0.00375])


# -- unknown prices --------------------------------------------------------------------------------


def test_an_unknown_model_makes_the_cost_unknown_and_is_named(prices):
    row = turn(llm_model="gpt-9")
    assert prices.turn_cost(row) is None
    assert prices.missing(row) == ["llm gpt-9"]
    advice = prices.explain(row)
    assert "llm gpt-9" in advice
    assert "VOICENB_PRICES" in advice and "Settings(prices=" in advice
    assert prices.explain(turn()) is None


def test_assemblyai_stt_3_7_is_priced_on_an_assumption_that_says_so(prices):
    # 90 s at $0.21/h = 0.00525; the tokens as above: 0.0003
    row = turn(speech_model="assemblyai-stt-3-7")
    assert prices.turn_cost(row) == pytest.approx(0.00555)
    entry = prices.entries[("stt", "assemblyai/assemblyai-stt-3-7")]
    assert entry.note.startswith("ASSUMPTION: ") and entry.source.startswith("https://")


def test_tokens_without_a_model_name_are_not_guessed(prices):
    row = turn(llm_model=None)
    assert prices.turn_cost(row) is None
    assert prices.missing(row) == ["llm (unknown model)"]


def test_an_unpriced_speech_model_is_named_with_its_backend(prices):
    row = turn(stt_backend="openai", speech_model="gpt-9-transcribe", tts_model="mystery",
               spoken_chars=10)
    assert prices.missing(row) == ["stt openai/gpt-9-transcribe", "tts mystery"]


# -- overrides -------------------------------------------------------------------------------------


def test_settings_prices_win_over_the_shipped_table():
    s = vnb.Settings(prices={
        "llm": {"gpt-4o-mini": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}},
        "stt": {"assemblyai/assemblyai-stt-3-7": {"per_hour": 0.12}}})
    prices = Prices.load(s)
    # 90 s at $0.12/h = 0.003; 1,000 x $1/1M = 0.001; 250 x $2/1M = 0.0005
    assert prices.turn_cost(turn(speech_model="assemblyai-stt-3-7")) == pytest.approx(0.0045)
    # entries not overridden keep their shipped price: gpt-4o, 1,000 x $2.50/1M + 250 x $10/1M
    assert prices.turn_cost(turn(llm_model="gpt-4o", audio_s=None)) == pytest.approx(0.005)


def test_a_price_file_named_by_the_environment_wins(tmp_path, monkeypatch):
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"llm": {"gpt-9": {
        "input_per_mtok": 3.0, "output_per_mtok": 12.0, "as_of": "2026-11-20",
        "source": "https://example.com/gpt-9-pricing"}}}))
    monkeypatch.setenv("VOICENB_PRICES", str(path))
    assert resolve().prices == str(path)
    prices = Prices.load()
    # 90 s at $0.15/h = 0.00375; 1,000 x $3/1M = 0.003; 250 x $12/1M = 0.003
    assert prices.turn_cost(turn(llm_model="gpt-9")) == pytest.approx(0.00975)
    listed = prices.table().query("key == 'gpt-9'")
    assert listed["usd"].tolist() == [3.0, 12.0]
    assert set(listed["source"]) == {"https://example.com/gpt-9-pricing"}


def test_an_override_without_a_source_is_attributed_to_its_file(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text('{"stt": {"assemblyai/*": {"per_minute": 0.01}}}')
    prices = Prices.load(vnb.Settings(prices=path))
    # the shipped universal-2 entry still wins over the backend-wide one: 90 s at $0.15/h
    assert prices.turn_cost(turn(prompt_tokens=None, completion_tokens=None)) == \
        pytest.approx(0.00375)
    # any AssemblyAI model the table lacks now falls back to $0.01/min: 90 s = 0.015
    row = turn(speech_model="universal-9", prompt_tokens=None, completion_tokens=None)
    assert prices.turn_cost(row) == pytest.approx(0.015)
    assert prices.table().query("key == 'assemblyai/*'")["source"].tolist() == [str(path)]


def test_settings_beat_the_environment(tmp_path, monkeypatch):
    path = tmp_path / "prices.json"
    path.write_text('{"llm": {"gpt-9": {"input_per_mtok": 3.0, "output_per_mtok": 12.0}}}')
    monkeypatch.setenv("VOICENB_PRICES", str(path))
    prices = Prices.load(vnb.Settings(prices={}))
    assert prices.turn_cost(turn(llm_model="gpt-9")) is None


@pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib is Python 3.11+")
def test_a_toml_price_file_works(tmp_path):
    path = tmp_path / "prices.toml"
    path.write_text('[llm."gpt-9"]\ninput_per_mtok = 3.0\noutput_per_mtok = 12.0\n')
    prices = Prices.load(vnb.Settings(prices=str(path)))
    assert prices.turn_cost(turn(llm_model="gpt-9")) == pytest.approx(0.00975)


# -- malformed overrides ------------------------------------------------------------------------------


@pytest.mark.parametrize(("override", "says"), [
    ({"llm": {"gpt-9": {"input_per_mtok": 1.0}}},
     "llm entry 'gpt-9' needs input_per_mtok and output_per_mtok"),
    ({"llm": {"gpt-9": {"input_per_mtok": "cheap", "output_per_mtok": 1.0}}},
     "llm entry 'gpt-9' has input_per_mtok='cheap'"),
    ({"llm": {"gpt-9": {"input_per_mtok": 1, "output_per_mtok": 1, "cached_per_mtok": 0.1}}},
     "llm entry 'gpt-9' has an unknown field 'cached_per_mtok'"),
    ({"stt": {"universal-2": {"per_hour": 0.15}}},
     "stt entry 'universal-2' is not '<stt_backend>/<speech_model>'"),
    ({"stt": {"assemblyai/universal-2": {"per_hour": 0.15, "per_minute": 0.0025}}},
     "needs exactly one of per_hour or per_minute"),
    ({"tts": {"tts-1": {"per_mchar": -1}}}, "tts entry 'tts-1' has per_mchar=-1"),
    ({"asr": {"x/y": {"per_hour": 1}}}, "section 'asr' is not one of stt, llm, tts"),
    ({"llm": ["gpt-9", 1.0, 2.0]}, "section 'llm' is not an object of entries"),
])
def test_a_malformed_override_says_what_is_wrong_and_what_is_expected(override, says):
    with pytest.raises(vnb.ConfigError) as info:
        Prices.load(vnb.Settings(prices=override))
    message = str(info.value)
    assert says in message
    assert message.startswith("In Settings(prices=...),")
    assert '"input_per_mtok": 1.0, "output_per_mtok": 4.0' in message


def test_a_price_file_that_is_not_json_names_the_file(tmp_path):
    path = tmp_path / "prices.json"
    path.write_text("llm: gpt-9 = 1.0")
    with pytest.raises(vnb.ConfigError) as info:
        Prices.load(vnb.Settings(prices=str(path)))
    assert f"The price file {path} is not valid JSON" in str(info.value)
    assert "Expected prices shaped like" in str(info.value)


def test_a_bad_entry_in_a_file_names_the_file_and_the_entry(tmp_path):
    path = tmp_path / "prices.json"
    path.write_text('{"stt": {"openai/whisper-1": {"per_second": 0.0001}}}')
    with pytest.raises(vnb.ConfigError) as info:
        Prices.load(vnb.Settings(prices=str(path)))
    assert str(info.value).startswith(
        f"In the price file {path}, stt entry 'openai/whisper-1' has an unknown field "
        f"'per_second'")


def test_a_missing_price_file_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("VOICENB_PRICES", str(tmp_path / "nowhere.json"))
    with pytest.raises(vnb.ConfigError) as info:
        Prices.load()
    message = str(info.value)
    assert "nowhere.json" in message and "does not exist" in message
    assert "unset it to use the prices that ship with voicenb" in message


# -- the shipped table -----------------------------------------------------------------------------


def test_every_shipped_price_is_dated_and_cites_a_page(prices):
    table = prices.table()
    assert len(table) >= 20
    assert table["source"].str.startswith("https://").all()
    assert table["as_of"].str.match(DATE).all()
    assert (table["as_of"] <= AS_OF).all() and DATE.match(AS_OF)
    # a price dated before 2026 says next to it that it is an assumption
    old = table[table["as_of"] < "2026-01-01"]
    assert old["note"].str.startswith("ASSUMPTION: ").all()


def test_the_table_lists_each_rate_with_its_unit(prices):
    table = prices.table().set_index(["kind", "key", "item"])
    universal = table.loc[("stt", "assemblyai/universal-2", "audio")]
    assert (universal["usd"], universal["per"]) == (0.15, "hour")
    assert universal["source"] == "https://www.assemblyai.com/pricing"
    assert table.loc[("llm", "gpt-4o-mini", "output"), "usd"] == 0.60
    assert table.loc[("stt", "openai/whisper-1", "audio"), "per"] == "minute"
    assert table.loc[("tts", "tts-1", "characters"), "per"] == "1M characters"
    assert list(table.index.get_level_values("kind").unique()) == ["stt", "llm", "tts", "live"]
    assert table.loc[("llm", "gpt-realtime-2", "audio output"), "usd"] == 64.0
    assert table.loc[("live", "assemblyai-agent", "audio"), "per"] == "hour"


def test_a_realtime_turn_is_priced_by_its_text_and_audio_tokens_and_its_transcription(prices):
    row = {"live_backend": "openai-realtime", "stt_backend": "openai-realtime",
           "speech_model": "gpt-4o-transcribe", "audio_s": 60.0, "transcript": "hi",
           "llm_model": "gpt-realtime-2", "prompt_tokens": 1_100, "audio_in_tokens": 100,
           "completion_tokens": 300, "audio_out_tokens": 200, "spoken_chars": 500,
           "tts_backend": "openai-realtime"}
    text = 1_000 * 4.00 + 100 * 24.00
    audio = 100 * 32.00 + 200 * 64.00
    assert prices.turn_cost(row) == pytest.approx((text + audio) / 1e6 + 0.006)
    assert prices.missing({**row, "llm_model": "gpt-4o-mini"}) == [
        "llm gpt-4o-mini audio tokens"]


def test_a_voice_agent_turn_costs_its_share_of_the_session_hour_all_in(prices):
    row = {"live_backend": "assemblyai-agent", "stt_backend": "assemblyai-agent",
           "audio_s": 3.0, "transcript": "hi", "billed_s": 36.0, "spoken_chars": 120,
           "tts_backend": "assemblyai-agent", "llm_model": "assemblyai-agent"}
    assert prices.turn_cost(row) == pytest.approx(4.50 / 100)
    assert prices.turn_cost({**row, "billed_s": None}) == 0.0  # nothing billed yet


def test_prices_are_never_changed_in_place(prices):
    with pytest.raises(dataclasses.FrozenInstanceError):
        prices.entries = {}
    with pytest.raises(TypeError):
        prices.entries[("llm", "gpt-9")] = prices.entries[("llm", "gpt-4o")]


# -- every model voicenb names has a price ---------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
#: a model name as a word: not part of a longer name, nor a path in a URL
NAME = re.compile(r"(?<![\w./-])(gpt-[\w.-]*\w|o[134](?:-mini)?|chatgpt-4o-latest)(?![\w-])")


def chat_models_named_in_the_docs() -> dict[str, set[str]]:
    """Every OpenAI chat model name the README, the notebooks, the benchmarks and voicenb's own
    modules name, and where (OpenAI's whole list in _chat_models and the simulator aside)."""
    files = [ROOT / "README.md", *ROOT.glob("notebooks/*.ipynb"), *ROOT.glob("bench/*.py"),
             *ROOT.glob("bench/*.md"),
             *(p for p in (ROOT / "voicenb").rglob("*.py")
               if "sim" not in p.relative_to(ROOT / "voicenb").parts
               and p.name != "_chat_models.py")]
    named: dict[str, set[str]] = {}
    for path in files:
        for match in NAME.finditer(path.read_text(encoding="utf-8")):
            if match.group(1) in CHAT_MODELS:
                named.setdefault(match.group(1), set()).add(str(path.relative_to(ROOT)))
    return named


def test_every_chat_model_in_the_defaults_and_docs_has_a_price(prices):
    named = chat_models_named_in_the_docs()
    # the scan finds what the README names, so an empty scan is a broken test, not a pass
    assert {DEFAULT_MODEL, "gpt-5.4-mini", "gpt-5.5", "gpt-3.5-turbo"} <= set(named)
    unpriced = {m: sorted(where) for m, where in named.items() if ("llm", m) not in prices.entries}
    assert unpriced == {}
    # and the current small models a spoken conversation would pick from
    for model in ("gpt-5.4-mini", "gpt-5.4-nano", "gpt-5.4", "gpt-5.5", "gpt-5.6-luna",
                  "gpt-5.6-terra", "gpt-5.6-sol", "gpt-5.4-mini-2026-03-17"):
        assert ("llm", model) in prices.entries, model


def test_every_speech_model_voicenb_uses_by_default_has_a_price(prices):
    from voicenb import _config, tts
    from voicenb.stt import openai as openai_stt

    keys = [f"assemblyai/{m}" for m in _config.DEFAULT_SPEECH_MODELS.split(",")]
    keys += [f"assemblyai-sync/{_config.DEFAULT_SYNC_MODEL}",
             f"assemblyai-streaming/{_config.DEFAULT_STREAMING_MODEL}",
             f"openai/{openai_stt.DEFAULT_MODEL}"]
    # and the others the README and the streaming client name
    keys += ["assemblyai/universal-3-5-pro", "openai/gpt-4o-mini-transcribe",
             "assemblyai-streaming/u3-pro", "assemblyai-streaming/universal-streaming-english",
             "assemblyai-streaming/universal-streaming-multilingual"]
    assert [k for k in keys if ("stt", k) not in prices.entries] == []
    voices = {tts.DEFAULT_MODEL, *tts.SHUTDOWN, "assemblyai-tts-1", "espeak"}
    assert sorted(v for v in voices if ("tts", v) not in prices.entries) == []


def test_assemblyai_tts_1_is_priced_per_character_with_a_date_and_source(prices):
    rates = prices.table().set_index(["kind", "key"]).loc[("tts", "assemblyai-tts-1")]
    assert (rates["item"], rates["usd"], rates["per"]) == ("characters", 15.0, "1M characters")
    assert DATE.match(rates["as_of"]) and rates["as_of"] >= "2026-11-01"
    assert rates["source"].startswith("https://www.assemblyai.com/")
    assert "billed" in rates["note"].lower() or "bills" in rates["note"]


def test_a_row_spoken_by_assemblyai_costs_its_characters_at_the_tables_rate(prices):
    # the turn (0.00405) + 2,000 characters at $15/1M = 0.03
    spoken = turn(tts_backend="assemblyai", tts_model="assemblyai-tts-1", spoken_chars=2000)
    assert prices.turn_cost(spoken) == pytest.approx(0.03405)
    # a row that names its backend but no model (or a model the table lacks) is priced by it
    for model in (None, "assemblyai-tts-xx"):
        row = turn(tts_backend="assemblyai", tts_model=model, spoken_chars=2000)
        assert prices.turn_cost(row) == pytest.approx(0.03405)
        assert prices.missing(row) == []
    # the rate is the table's: an override moves the cost with it
    cheaper = Prices.load(vnb.Settings(prices={"tts": {"assemblyai-tts-1": {"per_mchar": 5.0}}}))
    assert cheaper.turn_cost(spoken) == pytest.approx(0.00405 + 0.01)


def test_an_espeak_row_costs_nothing_for_speech(prices):
    for fields in ({"tts_backend": "espeak"}, {"tts_model": "espeak"},
                   {"tts_backend": "espeak", "tts_model": "espeak"}):
        row = turn(spoken_chars=5000, **fields)
        assert prices.turn_cost(row) == pytest.approx(0.00405)  # the turn's speech and tokens
        assert prices.missing(row) == []


def test_openai_speech_is_priced_per_character_until_its_shutdown(prices):
    # gpt-4o-mini-tts is billed in tokens: 15.9 per 1M characters is an assumption, said so
    entry = prices.entries[("tts", "gpt-4o-mini-tts")]
    assert entry.note.startswith("ASSUMPTION: ") and "2027-01-06" in entry.note
    row = turn(tts_backend="openai", tts_model="gpt-4o-mini-tts", spoken_chars=1000)
    assert prices.turn_cost(row) == pytest.approx(0.00405 + 1000 * 15.9e-6)


def test_models_openai_retires_say_when_next_to_their_price(prices):
    notes = {m: prices.entries[("llm", m)].note for m in
             ("gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "gpt-5-mini", "gpt-3.5-turbo")}
    assert "2027-01-14" in notes["gpt-4o-mini"] and "2027-01-14" in notes["gpt-4.1-mini"]
    assert "2026-12-11" in notes["gpt-5-mini"] and "2026-10-23" in notes["gpt-3.5-turbo"]
