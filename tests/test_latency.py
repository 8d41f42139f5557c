"""Every second of a turn is in a named column: the top-level stages add up to total_s, for
single, batch, typed, streamed, rerun and recorder turns alike; the plot draws exactly that;
a store written by the first schema upgrades in place; every turn's audio is playable."""

from __future__ import annotations

import sqlite3

import pandas as pd
import pytest

import voicenb as vnb
from voicenb.history import NAMES, TOP


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
