"""Session and history: one row per turn, nothing lost, resumable, ready for analysis."""

from __future__ import annotations

import socket
import sqlite3

import pandas as pd
import pytest
import sqlalchemy as sa

import voicenb as vnb
from voicenb.history import NAMES, SCHEMA_VERSION

#: uploads, transcript ids and resumes are the async API's (short clips take the Sync API
#: by default: tests/test_sync.py)
pytestmark = pytest.mark.usefixtures("async_api")

FRANCE = "What is the capital of France?"


@pytest.fixture
def home(tmp_path):
    return tmp_path / "home"


@pytest.fixture
def session(sim, home):
    return vnb.Session("demo", home=str(home), settings=vnb.Settings(backoff=0.05))


def test_history_columns_are_the_schema_in_order(session, sample):
    session.ask_audio(sample)
    df = session.history
    assert tuple(df.columns) == NAMES
    assert list(df.columns) == [
        "session", "turn", "started_at", "status", "error", "audio_path", "audio_s",
        "audio_sha256", "stt_backend", "transcript_id", "transcript", "confidence", "upload_s",
        "transcribe_s", "polls", "stt_s", "llm_model", "prompt", "answer", "ttft_s", "llm_s",
        "prompt_tokens", "completion_tokens", "total_s", "setup_s", "wait_s", "overhead_s",
        "speech_model", "experiment", "variant", "reference", "wer", "cost_usd", "simulated",
        "first_token_s", "first_audio_s", "tts_model", "tts_ttfb_s", "spoken_chars",
        "tts_backend", "tts_voice", "words_heard", "live_backend", "audio_in_tokens",
        "audio_out_tokens", "billed_s", "reconnects"]


def test_history_dtypes(session, sample, make_wav):
    session.ask_audio(sample)
    with pytest.raises(vnb.AudioError):
        session.ask_audio("missing.wav")
    df = session.history
    assert str(df["started_at"].dtype) .startswith("datetime64") and df["started_at"].dt.tz \
        is not None and str(df["started_at"].dt.tz) == "UTC"
    for col in ("audio_s", "confidence", "upload_s", "transcribe_s", "stt_s", "ttft_s", "llm_s",
                "total_s"):
        assert df[col].dtype == "float64", col
    for col in ("turn", "polls", "prompt_tokens", "completion_tokens"):
        assert str(df[col].dtype) == "Int64", col
    assert pd.isna(df.loc[1, "prompt_tokens"])  # nullable for the failed turn


def test_sqlite_table_has_exactly_the_schema(session, sample, home):
    session.ask_audio(sample)
    db = sqlite3.connect(home / "history.sqlite")
    cols = [r[1] for r in db.execute("PRAGMA table_info(turns)")]
    assert tuple(cols) == NAMES
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_turn_records_every_stage(session, sim, sample, home):
    turn = session.ask_audio(sample)
    assert turn.status == "ok" and turn.error is None
    assert turn.transcript == FRANCE
    assert turn.prompt == FRANCE
    assert turn.answer.startswith("(simulated answer)")
    assert turn.transcript_id in sim.jobs
    assert turn.stt_backend == "assemblyai" and turn.llm_model == "gpt-5.4-mini"
    assert turn.polls >= 1 and turn.prompt_tokens > 0 and turn.completion_tokens > 0
    assert 0 < turn.upload_s < turn.stt_s < turn.total_s
    assert 0 < turn.ttft_s < turn.llm_s < turn.total_s
    assert (home / turn.audio_path).read_bytes() == sample.read_bytes()
    assert turn.audio_sha256 == vnb.Audio(sample).sha256
    assert turn.started_at.tzname() == "UTC"


def test_prompt_template_shapes_the_prompt(sim, home, sample):
    s = vnb.Session("t", home=str(home), prompt_template="Answer briefly: {transcript}")
    assert s.ask_audio(sample).prompt == f"Answer briefly: {FRANCE}"


def test_bad_template_is_rejected(home):
    with pytest.raises(vnb.ConfigError, match="{transcript}"):
        vnb.Session("t", home=str(home), prompt_template="no placeholder")


def test_home_defaults_to_voicenb_home_then_working_dir(sim, tmp_path, monkeypatch, sample):
    vnb.Session("x").ask_audio(sample)
    assert (tmp_path / "voicenb-data" / "history.sqlite").exists()
    monkeypatch.setenv("VOICENB_HOME", str(tmp_path / "elsewhere"))
    vnb.Session("x").ask_audio(sample)
    assert (tmp_path / "elsewhere" / "history.sqlite").exists()


def test_the_session_remembers_its_turns(session, samples):
    session.ask_audio(samples[0])
    second = session.ask_audio(samples[1])
    assert "I remember 1 earlier question" in second.answer


def test_memory_survives_a_new_session_object(sim, home, samples):
    vnb.Session("m", home=str(home)).ask_audio(samples[0])
    again = vnb.Session("m", home=str(home)).ask_audio(samples[1])
    assert "I remember 1 earlier question" in again.answer


# -- nothing lost ----------------------------------------------------------------------------


def test_missing_file_is_recorded_before_raising(session):
    with pytest.raises(vnb.AudioError, match="not found"):
        session.ask_audio("missing.wav")
    row = session.history.iloc[-1]
    assert row["status"] == "error" and "not found" in row["error"]
    assert row["audio_path"] == "missing.wav"


def test_audio_is_saved_before_any_request(session, sim, sample, home):
    sim.inject("503", "/v2/upload", times=100)
    with pytest.raises(vnb.ServiceError):
        session.ask_audio(sample, )
    row = session.history.iloc[-1]
    assert row["status"] == "error"
    assert (home / row["audio_path"]).read_bytes() == sample.read_bytes()


def test_service_error_is_recorded_then_retry_reuses_the_upload(session, sim, sample):
    sim.fail_audio(sample, "Transcoding failed (simulated).")
    with pytest.raises(vnb.TranscriptionError):
        session.ask_audio(sample)
    row = session.history.iloc[-1]
    assert row["status"] == "error" and row["transcript_id"] in sim.jobs
    assert "Transcoding failed" in row["error"]
    sim.clear_failures()
    [turn] = session.retry_failed(progress=False)
    assert turn.status == "ok" and turn.transcript == FRANCE
    assert sim.stats["uploads"] == 1  # the upload was reused
    assert sim.stats["transcripts"] == 2


def test_model_error_is_recorded_then_retry_only_asks_again(sim, home, sample):
    s = vnb.Session("e", home=str(home), settings=vnb.Settings(max_retries=0))
    sim.inject("500", "/v1/chat/completions", times=5)
    with pytest.raises(vnb.ServiceError):
        s.ask_audio(sample)
    row = s.history.iloc[-1]
    assert row["status"] == "error" and row["transcript"] == FRANCE and pd.isna(row["answer"])
    sim.clear_faults()
    [turn] = s.retry_failed(progress=False)
    assert turn.ok and turn.answer
    assert (sim.stats["uploads"], sim.stats["transcripts"]) == (1, 1)


def test_retry_failed_leaves_ok_turns_alone(session, sim, samples):
    session.ask_audio(samples[0])
    assert session.retry_failed(progress=False) == []
    assert sim.stats["uploads"] == 1


def test_silence_is_never_sent(session, sim, make_wav):
    with pytest.raises(vnb.AudioError, match="No speech detected"):
        session.ask_audio(make_wav("quiet.wav", 1.0, tone=False))
    row = session.history.iloc[-1]
    assert row["status"] == "error" and "No speech detected" in row["error"]
    assert sim.stats["uploads"] == 0 and sim.stats["chat_completions"] == 0


def test_empty_transcript_is_never_sent_to_the_model(session, sim, make_wav):
    clip = make_wav("hum.wav", 1.0)
    sim.register(clip, "")
    with pytest.raises(vnb.TranscriptionError, match="No speech detected"):
        session.ask_audio(clip)
    assert session.history.iloc[-1]["status"] == "error"
    assert sim.stats["chat_completions"] == 0


def test_keyboard_interrupt_mid_turn_leaves_it_interrupted_then_resume_finishes(
        session, sim, sample):
    def stop(_token):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        session.ask_audio(sample, on_token=stop)
    row = session.history.iloc[-1]
    assert row["status"] == "interrupted" and row["transcript"] == FRANCE
    [turn] = session.resume(progress=False)
    assert turn.ok and turn.answer.startswith("(simulated answer)")
    assert sim.stats["uploads"] == 1 and sim.stats["transcripts"] == 1


def test_a_turn_of_a_dead_process_reads_as_interrupted(session, home, sample):
    store = vnb.HistoryStore(home)
    n = store.start_turn("demo", status="transcribing")
    with store.engine.begin() as db:
        db.execute(sa.text("UPDATE turn_state SET owner = :owner WHERE turn = :turn"),
                   dict(owner=f"{socket.gethostname()}:999999:1", turn=n))
    assert session.history.set_index("turn").loc[n, "status"] == "interrupted"


def test_a_live_turn_is_not_interrupted(home):
    store = vnb.HistoryStore(home)
    n = store.start_turn("demo", status="answering")
    assert store.dataframe().set_index("turn").loc[n, "status"] == "answering"


# -- batch ------------------------------------------------------------------------------------


def test_ask_many_answers_in_order_and_records_failures(session, sim, samples):
    sim.fail_audio(samples[2], "Audio too noisy (simulated).")
    turns = session.ask_many([samples[0], "missing.wav", samples[1], samples[2]],
                             progress=False)
    assert [t.status for t in turns] == ["ok", "error", "ok", "error"]
    assert [t.turn for t in turns] == [1, 2, 3, 4]
    assert turns[2].transcript == "How far away is the moon?"
    assert "I remember 1 earlier question" in turns[2].answer
    assert "Audio too noisy" in turns[3].error
    assert len(session.history) == 4


def test_ask_many_with_model_failures_never_raises(sim, home, samples):
    s = vnb.Session("b", home=str(home), settings=vnb.Settings(max_retries=0))
    sim.inject("500", "/v1/chat/completions", times=1)
    turns = s.ask_many(samples, progress=False)
    assert [t.status for t in turns] == ["error", "ok", "ok"]
    sim.clear_faults()
    assert [t.status for t in s.retry_failed(progress=False)] == ["ok"]
    assert sim.stats["uploads"] == 3


def test_ask_many_with_the_whisper_backend(sim, home, samples):
    s = vnb.Session("w", home=str(home), stt="openai")
    turns = s.ask_many(samples[:2], progress=False)
    assert [t.transcript for t in turns] == [FRANCE, "How far away is the moon?"]
    assert {t.stt_backend for t in turns} == {"openai"}


def test_load_history_across_sessions(sim, home, samples):
    vnb.Session("a", home=str(home)).ask_audio(samples[0])
    vnb.Session("b", home=str(home)).ask_audio(samples[1])
    df = vnb.load_history(home=str(home))
    assert list(df["session"]) == ["a", "b"]
    assert list(vnb.load_history(home=str(home), session="b")["transcript"]) == [
        "How far away is the moon?"]


def test_a_newer_schema_is_refused_with_advice(home):
    vnb.HistoryStore(home).close()
    db = sqlite3.connect(home / "history.sqlite")
    db.execute("PRAGMA user_version = 99")
    db.commit()
    db.close()
    with pytest.raises(vnb.ConfigError, match="newer voicenb"):
        vnb.HistoryStore(home)


# -- analysis ---------------------------------------------------------------------------------


def test_summary_has_latency_percentiles_statuses_and_tokens(session, samples):
    session.ask_many(samples + ["missing.wav"], progress=False)
    s = vnb.summary(session.history)
    assert list(s.latency.columns) == ["count", "p50", "p90", "max", "mean"]
    assert s.latency.loc["stt_s", "count"] == 3
    assert s.latency.loc["total_s", "p50"] <= s.latency.loc["total_s", "max"]
    assert s.by_status.to_dict() == {"ok": 3, "error": 1}
    assert s.tokens.loc["completion_tokens", "total"] == session.history[
        "completion_tokens"].sum()
    assert "latency" in repr(s) and "<table" in s._repr_html_()


def test_summary_refuses_other_frames():
    with pytest.raises(vnb.ConfigError, match="not a voicenb history"):
        vnb.summary(pd.DataFrame({"a": [1]}))


def test_plot_latency_stacks_every_stage_per_turn(session, samples):
    import matplotlib

    matplotlib.use("Agg")
    session.ask_many(samples, progress=False)
    ax = vnb.plot_latency(session.history)
    names = [t.get_text() for t in ax.get_legend().get_texts()]
    assert names == ["first-call set-up", "waiting for other turns", "upload", "transcription",
                     "time to first token", "rest of the answer", "voicenb (audio, history)"]
    assert len(ax.patches) == len(names) * 3
    assert [t.get_text() for t in ax.get_xticklabels()] == ["#1", "#2", "#3"]


def test_history_exports_to_csv(session, sample, tmp_path):
    session.ask_audio(sample)
    path = tmp_path / "history.csv"
    session.history.to_csv(path, index=False)
    back = pd.read_csv(path)
    assert list(back.columns) == list(NAMES) and back.loc[0, "transcript"] == FRANCE


def test_no_key_reaches_the_history_the_audio_or_an_export(tmp_path, samples):
    aai_key, oai_key = "aai-SECRET-7f3e9b1c2d", "sk-SECRET-0a9b8c7d6e"
    home = tmp_path / "home"
    with vnb.sim.running(assemblyai_key=aai_key, openai_key=oai_key) as sim:
        s = vnb.Session("secret", home=str(home), settings=vnb.Settings(max_retries=0))
        s.ask_many(samples, progress=False)
        wrong = vnb.Session("wrong", home=str(home), settings=vnb.Settings(
            assemblyai_api_key=aai_key + "x", openai_api_key=oai_key + "x", max_retries=0))
        with pytest.raises(vnb.AuthenticationError) as info:
            wrong.ask_audio(samples[0])
        assert aai_key not in str(info.value)
        sim.inject("500", "/v1/chat/completions")
        s.ask_many(samples[:1], progress=False)
        s.history.to_csv(tmp_path / "export.csv")
        s.history.to_json(tmp_path / "export.json", date_format="iso")
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "history.sqlite" for p in files)
    for path in files:
        data = path.read_bytes()
        for key in (aai_key, oai_key):
            assert key.encode() not in data, f"{key} found in {path}"
            assert key[:-2].encode() not in data, f"part of {key} found in {path}"
