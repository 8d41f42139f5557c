"""Every second of a turn is in a named column: the top-level stages add up to total_s, for
single, batch, typed, streamed, rerun and recorder turns alike; the plot draws exactly that;
a store written by the first schema upgrades in place; every turn's audio is playable."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pandas as pd
import pytest

import voicenb as vnb
from voicenb.history import NAMES, SCHEMA_VERSION, TOP


@pytest.fixture
def session(sim, tmp_path):
    return vnb.Session("lat", home=str(tmp_path / "home"))


def _adds_up(df: pd.DataFrame) -> None:
    ok = df[df["status"] == "ok"]
    assert len(ok)
    parts = ok[list(TOP)].fillna(0.0).sum(axis=1)
    assert ((parts - ok["total_s"]).abs() <= 0.01 * ok["total_s"]).all(), \
        ok[["turn", *TOP, "total_s"]]
    assert (ok[list(TOP)].fillna(0.0) >= 0).all().all()


def test_single_batch_typed_and_streamed_turns_add_up(session, samples):
    session.ask_audio(samples[0])  # the first turn pays the set-up
    session.ask_many(samples * 2, progress=False)
    session.ask_text("What is two and two?")
    session.ask_text("Heard while streaming", stt_backend="assemblyai-streaming", stt_s=0.4)
    df = session.history
    _adds_up(df)
    assert df["setup_s"].iloc[0] > 0
    assert df["wait_s"].iloc[1:7].max() > 0  # batch turns wait for earlier answers
    streamed = df.iloc[-1]
    assert streamed["total_s"] > streamed["stt_s"] == pytest.approx(0.4)


def test_recorder_turns_add_up(session, samples):
    rec = session.recorder()
    for clip in samples:
        rec.submit(clip)
    assert rec.wait(60)
    _adds_up(session.history)


def test_rerun_turns_add_up(sim, session, samples):
    sim.fail_audio(samples[1], "Transcoding failed (simulated).")
    session.ask_many(samples, progress=False)
    sim.registry.clear_failures()
    session.retry_failed(progress=False)
    df = session.history
    assert df["status"].tolist() == ["ok"] * 3
    _adds_up(df)


def test_the_plot_stacks_exactly_total_s_with_the_legend_outside(session, samples):
    import matplotlib

    matplotlib.use("Agg")
    session.ask_many(samples, progress=False)
    df = session.history
    ax = vnb.plot_latency(df)
    heights = [0.0] * len(df)
    for bar in ax.patches:
        heights[round(bar.get_x() + bar.get_width() / 2)] += bar.get_height()
    assert heights == pytest.approx(df["total_s"].tolist(), rel=0.01)
    legend = ax.get_legend().get_window_extent()
    assert legend.x0 >= ax.get_window_extent().x1  # beside the bars, not over them


def test_started_at_shows_milliseconds(session, sample):
    session.ask_audio(sample)
    shown = session.history[["started_at"]].to_string().splitlines()[1]  # as a table shows it
    assert len(shown.split(".")[1].split("+")[0]) == 3, shown


def test_audio_paths_open_from_any_working_directory(session, samples, tmp_path,
                                                    monkeypatch):
    session.ask_audio(samples[0])
    monkeypatch.chdir(tmp_path.parent)
    for path in [vnb.load_history(tmp_path / "home")["audio_path"].iloc[0],
                 session.turn(1).audio_path]:
        assert vnb.Audio(path).duration > 1
    player = vnb.play(session.history.iloc[0])
    assert "<audio" in player._repr_html_()
    assert vnb.play(session.turn(1)).filename == session.turn(1).audio_path


def test_a_turn_without_audio_says_it_cannot_be_played(session):
    turn = session.ask_text("typed")
    with pytest.raises(vnb.ConfigError, match="no audio"):
        vnb.play(turn)


def test_a_first_schema_store_upgrades_in_place(tmp_path):
    home = tmp_path / "old"
    home.mkdir()
    db = sqlite3.connect(home / "history.sqlite")
    old = NAMES[:NAMES.index("total_s") + 1]
    db.execute(f"CREATE TABLE turns ({', '.join(old)}, PRIMARY KEY (session, turn))")
    db.execute("CREATE TABLE turn_state (session TEXT NOT NULL, turn INTEGER NOT NULL, "
               "upload_url TEXT, owner TEXT, updated_at REAL, PRIMARY KEY (session, turn))")
    db.execute("INSERT INTO turns (session, turn, status, transcript, total_s) VALUES "
               "('s', 1, 'ok', 'kept', 1.5)")
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    df = vnb.load_history(home)
    assert tuple(df.columns) == NAMES
    assert df["transcript"].tolist() == ["kept"] and pd.isna(df["setup_s"].iloc[0])


def test_a_store_written_by_schema_3_code_migrates_in_place_keeping_every_row(tmp_path, sim):
    """tests/data/schema3/history.sqlite was written by voicenb at schema 3 (a turn heard by
    the Sync API, a typed turn, a clip that was not audio)."""
    import shutil

    home = tmp_path / "old"
    home.mkdir()
    shutil.copy(Path(__file__).parent / "data" / "schema3" / "history.sqlite", home)
    before = sqlite3.connect(home / "history.sqlite")
    rows = before.execute("SELECT * FROM turns ORDER BY turn").fetchall()
    assert before.execute("PRAGMA user_version").fetchone()[0] == 3
    before.close()
    df = vnb.load_history(home)
    assert tuple(df.columns) == NAMES
    assert len(df) == len(rows) == 3
    assert df["status"].tolist() == ["ok", "ok", "error"]
    assert df["transcript"].iloc[0] == "What is the capital of France?"
    assert df["speech_model"].iloc[0] == "universal-3-5-pro"
    assert df[["experiment", "variant", "reference", "wer", "cost_usd"]].isna().all().all()
    after = sqlite3.connect(home / "history.sqlite")
    assert after.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    # every old value is where it was: the old columns come first, in the same order
    assert [r[:len(rows[0])] for r in after.execute("SELECT * FROM turns ORDER BY turn")] == rows
    # and the store takes new turns after the old ones
    session = vnb.Session("written-by-schema-3", home=home)
    assert session.ask_text("And of Italy?").turn == 4


def test_a_turn_costs_its_speech_seconds_and_tokens_at_the_shipped_prices(sim, tmp_path, sample):
    session = vnb.Session("s", home=tmp_path)
    turn = session.ask_audio(sample)  # a short clip: the Sync API's universal-3-5-pro
    assert (turn.stt_backend, turn.speech_model, turn.llm_model) == (
        "assemblyai-sync", "universal-3-5-pro", "gpt-5.4-mini")
    # $0.30 an hour of audio; gpt-5.4-mini $0.75 / $4.50 per million tokens in / out
    expected = (turn.audio_s / 3600 * 0.30 + turn.prompt_tokens * 0.75e-6
                + turn.completion_tokens * 4.50e-6)
    assert turn.cost_usd == pytest.approx(expected, rel=1e-12)
    s = vnb.summary(session.history)
    assert s.cost["total"] == pytest.approx(expected) and s.cost["turns priced"] == 1
    assert "cost (USD)" in repr(s)


def test_a_turn_with_a_model_of_unknown_price_has_no_cost(sim, tmp_path, sample):
    turn = vnb.Session("s", home=tmp_path, model="gpt-4.1").ask_audio(sample)
    assert turn.ok and turn.cost_usd is None


def test_first_token_is_timed_from_the_start_of_the_turn(sim, tmp_path, sample):
    turn = vnb.Session("s", home=tmp_path).ask_audio(sample)
    assert turn.stt_s + turn.ttft_s <= turn.first_token_s <= turn.total_s


def test_an_answer_spoken_over_is_barged_in_and_remembered_as_heard(sim, tmp_path):
    session = vnb.Session("talk", home=tmp_path)
    first = session.ask_text("Tell me about the moon.")
    heard = 12
    turn = session.record_speech(first.turn, spoken_chars=heard, interrupted=True,
                                 tts_model="espeak", tts_ttfb_s=0.21, first_audio_s=0.9)
    assert turn.status == "barged_in" and turn.ok and turn.spoken_chars == heard
    assert (turn.tts_model, turn.tts_ttfb_s, turn.first_audio_s) == ("espeak", 0.21, 0.9)
    assert session.chat.history == [(first.prompt, first.answer[:heard])]
    # a new process rebuilds the same memory from the history
    again = vnb.Session("talk", home=tmp_path)
    assert again.chat.history == [(first.prompt, first.answer[:heard])]
    second = session.record_speech(session.ask_text("And the sun?").turn,
                                   spoken_chars=40, first_audio_s=1.1, tts_model="espeak")
    assert second.status == "ok"
    s = vnb.summary(session.history)
    assert s.by_status.to_dict() == {"barged_in": 1, "ok": 1}
    assert s.voice.loc["end of speech -> first answer audio", "count"] == 2
    assert s.voice.loc["end of speech -> first answer audio", "p50"] == pytest.approx(1.0)
    assert "voice to voice" in repr(s)


def test_a_schema_6_store_gains_the_speaking_and_live_columns_keeping_every_row(tmp_path, sim):
    """Schema 7 appends tts_backend, tts_voice and words_heard, schema 8 the live columns
    (live_backend, audio tokens, billed_s, reconnects); a store written before them (they
    are dropped here, as schema 6 had none) migrates in place, one step after the other."""
    from voicenb._store import ADDED_IN

    later = [name for name in NAMES if ADDED_IN.get(name, 1) >= 7]
    assert later[:3] == ["tts_backend", "tts_voice", "words_heard"]
    assert "live_backend" in later and "reconnects" in later
    home = tmp_path / "six"
    session = vnb.Session("s", home=home)
    session.ask_text("What is the capital of France?")
    session.store.close()
    db = sqlite3.connect(home / "history.sqlite")
    for column in later:
        db.execute(f"ALTER TABLE turns DROP COLUMN {column}")
    db.execute("PRAGMA user_version = 6")
    db.execute("UPDATE voicenb_schema SET version = 6")
    rows = db.execute("SELECT * FROM turns").fetchall()
    db.commit()
    db.close()
    df = vnb.load_history(home)
    assert tuple(df.columns) == NAMES and len(df) == len(rows) == 1
    assert df[later].isna().all().all()
    after = sqlite3.connect(home / "history.sqlite")
    assert after.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 8
    assert [r[:len(rows[0])] for r in after.execute("SELECT * FROM turns")] == rows
