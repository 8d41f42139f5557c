"""A team's history on a real PostgreSQL server (tests/_postgres.py): sessions, experiments
and analysis unchanged, the audio reachable from every machine, turns of a machine that
stopped found by its lease. The kill -9 / resume and four-writer contract runs on both
engines in test_crash.py."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import pandas as pd
import pytest
import sqlalchemy as sa

import voicenb as vnb
from voicenb import _store
from voicenb.history import NAMES


def test_a_session_on_a_server_records_and_reads_back_like_sqlite(sim, samples, tmp_path,
                                                                   postgres_url):
    on_server = vnb.Session("team", home=tmp_path / "a", history=postgres_url)
    on_file = vnb.Session("team", home=tmp_path / "f")
    for session in (on_server, on_file):
        session.ask_audio(samples[0])
        session.ask_text("And of Italy?")
    server, file = on_server.history, on_file.history
    assert tuple(server.columns) == NAMES and len(server) == 2
    assert (server.dtypes == file.dtypes).all()
    same = ["turn", "status", "transcript", "prompt", "answer", "audio_sha256", "stt_backend"]
    pd.testing.assert_frame_equal(server[same], file[same])
    assert on_server.turn(1).transcript == "What is the capital of France?"
    # and every reader: load_history, the URL in the environment, summary, the plot
    df = vnb.load_history(tmp_path / "b", history=postgres_url)
    assert df["answer"].tolist() == server["answer"].tolist()
    assert vnb.summary(df).by_status.to_dict() == {"ok": 2}
    assert vnb.plot_latency(df) is not None
    assert "***" in repr(on_server) and "postgresql://voicenb:***@127.0.0.1" in repr(on_server)


def test_the_history_url_comes_from_settings_or_the_environment(sim, samples, tmp_path,
                                                                  postgres_url, monkeypatch):
    vnb.Session("s", home=tmp_path, settings=vnb.Settings(history_url=postgres_url)) \
        .ask_text("Hello?")
    monkeypatch.setenv("VOICENB_HISTORY_URL", postgres_url)
    vnb.Session("e", home=tmp_path).ask_text("Hello again?")
    assert vnb.load_history(tmp_path)["session"].tolist() == ["e", "s"]
    assert not (tmp_path / "history.sqlite").exists()


def test_a_teammate_plays_and_retries_turns_recorded_on_another_machine(sim, samples,
                                                                        tmp_path, postgres_url):
    laptop = vnb.Session("study", home=tmp_path / "laptop", history=postgres_url)
    sim.fail_audio(samples[1], "Audio too noisy (simulated).")
    assert laptop.ask_audio(samples[0]).ok
    with pytest.raises(vnb.TranscriptionError):
        laptop.ask_audio(samples[1])  # recorded as an error turn
    assert laptop.ask_audio(samples[0]).ok  # the same clip again: stored once
    sim.clear_failures()

    desk = tmp_path / "desk"  # another machine: nothing of the laptop's folder
    df = vnb.load_history(desk, history=postgres_url)
    assert not list((desk / "audio").iterdir())
    player = vnb.play(df.iloc[0])
    assert player.data == open(samples[0], "rb").read()  # fetched into desk/audio
    assert (desk / "audio").joinpath(df["audio_path"].iloc[0].rsplit("/", 1)[1]).is_file()
    [retried] = vnb.Session("study", home=desk, history=postgres_url).retry_failed(
        progress=False)
    assert retried.ok and retried.transcript == "How far away is the moon?"
    engine = sa.create_engine(_store.store_url(postgres_url, desk))
    with engine.connect() as db:
        stored = db.execute(sa.text("SELECT sha256, size FROM audio ORDER BY size")).all()
    engine.dispose()
    assert len(stored) == 2  # two clips, three turns
    third = vnb.load_history(tmp_path / "third", history=postgres_url)
    assert vnb.show(third)._repr_html_().count(
        "<audio") == 3


def test_an_experiment_runs_and_compares_on_a_server(sim, tmp_path, postgres_url):
    exp = vnb.Experiment("models", audio=vnb.sim.samples()[:2], home=tmp_path,
                         history=postgres_url, variants={"mini": dict(model="gpt-4o-mini"),
                                                         "4o": dict(model="gpt-4o")})
    df = exp.run(progress=False)
    assert len(df) == 4 and (df["status"] == "ok").all()
    assert set(exp.compare().index) == {"mini", "4o"}
    again = vnb.Experiment("models", audio=vnb.sim.samples()[:2], home=tmp_path / "other",
                           history=postgres_url, variants={"mini": dict(model="gpt-4o-mini"),
                                                           "4o": dict(model="gpt-4o")})
    before = sim.stats["requests"]
    again.run(progress=False)  # another machine: nothing left to do, nothing re-billed
    assert sim.stats["requests"] == before


FAR = textwrap.dedent("""
    import socket, sys, time
    socket.gethostname = lambda: "laptop-2"  # this process is another machine
    import voicenb._store as store
    store.LEASE_RENEW_S = 0.3
    import voicenb as vnb
    history = vnb.HistoryStore(sys.argv[1], history=sys.argv[2])
    print(history.start_turn("far", status="transcribing"), flush=True)
    time.sleep(600)
""")


def test_a_turn_of_a_machine_that_stopped_is_found_by_its_lease(tmp_path, postgres_url,
                                                                 monkeypatch):
    """No pid can be checked on another host: its process renews a lease while it has turns
    in progress, and a lease not renewed for LEASE_S (by the database's clock) has ended."""
    monkeypatch.setattr(_store, "LEASE_S", 2.0)
    proc = subprocess.Popen([sys.executable, "-c", FAR, str(tmp_path / "far"), postgres_url],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "1"
        store = vnb.HistoryStore(tmp_path / "here", history=postgres_url)
        time.sleep(3 * _store.LEASE_S)  # without renewals the lease would have ended
        assert store.dataframe()["status"].tolist() == ["transcribing"]
        assert store.mark_interrupted() == 0
        assert store.rows("far")[0]["owner"].startswith("laptop-2:")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    killed = time.monotonic()
    while store.dataframe()["status"].tolist() != ["interrupted"]:
        assert time.monotonic() - killed < 10 * _store.LEASE_S, "the lease never ended"
        time.sleep(0.1)
    assert time.monotonic() - killed > _store.LEASE_S - 0.5  # not before it could expire
    assert store.mark_interrupted() == 1
    assert store.rows("far")[0]["status"] == "interrupted"


def test_a_wrong_password_or_no_server_is_a_clear_error_without_the_password(
        tmp_path, postgres_server):
    password = postgres_server.password
    wrong = postgres_server.url.replace(postgres_server.url.split(":")[2].split("@")[0],
                                        "not-the-password")
    with pytest.raises(vnb.ServiceError, match="password authentication failed") as info:
        vnb.HistoryStore(tmp_path, history=wrong)
    assert "not-the-password" not in str(info.value) and password not in str(info.value)
    closed = postgres_server.url.replace(f":{postgres_server.port}/", ":9/")
    with pytest.raises(vnb.ServiceError, match="Cannot open the history") as info:
        vnb.HistoryStore(tmp_path, history=closed)
    assert password not in str(info.value) and "***" in str(info.value)


def test_a_history_url_voicenb_cannot_use_says_what_to_write(tmp_path):
    with pytest.raises(vnb.ConfigError, match="SQLite or PostgreSQL, not 'mysql'"):
        vnb.HistoryStore(tmp_path, history="mysql://u:p@host/db")
    store = vnb.HistoryStore(tmp_path, history=f"sqlite:///{tmp_path}/elsewhere.sqlite")
    assert store.path == tmp_path / "elsewhere.sqlite" and not store.shared


def test_a_server_without_the_postgres_extra_names_the_install(tmp_path):
    """``voicenb[postgres]`` is an extra: without psycopg, the URL says what to install."""
    script = textwrap.dedent("""
        import sys
        sys.modules["psycopg"] = None  # as if the extra were not installed
        import voicenb as vnb
        try:
            vnb.HistoryStore(sys.argv[1], history="postgresql://u:secret-pw@127.0.0.1/db")
        except vnb.MissingDependencyError as exc:
            print(exc)
    """)
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True,
                         text=True, timeout=60)
    assert "pip install 'voicenb[postgres]'" in out.stdout, out.stderr
    assert "secret-pw" not in out.stdout + out.stderr
