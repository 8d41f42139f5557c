"""Concurrency hazards found in review, each pinned by a test: widget workers that strand or
reorder recordings, the live widget's stop racing its feed, streaming buffers that grow with
silence, two threads saving one clip, the chat created twice, and reading that writes."""

from __future__ import annotations

import random
import socket
import sqlite3
import threading
import time

import pytest

import voicenb as vnb
from voicenb.stt.streaming import MAX_TURN_S, RealtimeTranscriber, _SentAudio
from voicenb.widgets._worker import Worker

RATE = 16000


# -- the widgets' worker ----------------------------------------------------------------------


def test_a_job_handed_over_as_the_idle_worker_leaves_still_runs():
    """The worker leaves after idle_timeout; a submit landing at that moment must start a
    new thread or be taken by the leaving one, never sit in a queue nobody reads."""
    ran: list[int] = []
    worker = Worker(ran.append, name="t", idle_timeout=0.0005)
    rng = random.Random(1)
    for i in range(400):
        worker.submit(i)
        time.sleep(rng.uniform(0, 0.002))  # straddles the idle timeout again and again
    assert worker.wait(10), f"stranded after {len(ran)} of 400"
    assert ran == list(range(400))


def test_concurrent_submits_run_one_at_a_time_in_each_submitters_order():
    running, most, lock = [0], [0], threading.Lock()
    ran: list[tuple[int, int]] = []

    def job(item: tuple[int, int]) -> None:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.0002)
        ran.append(item)
        with lock:
            running[0] -= 1

    worker = Worker(job, name="t", idle_timeout=0.001)
    start = threading.Barrier(8)

    def submitter(t: int) -> None:
        start.wait()
        for k in range(40):
            worker.submit((t, k))
            if k % 7 == 0:
                time.sleep(0.002)  # let the worker go idle now and then

    threads = [threading.Thread(target=submitter, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert worker.wait(10)
    assert most[0] == 1  # never two workers at once
    assert len(ran) == 320
    for t in range(8):
        assert [k for s, k in ran if s == t] == list(range(40))


def test_the_worker_thread_leaves_when_idle_and_comes_back():
    worker = Worker(lambda _job: None, name="t", idle_timeout=0.01)
    worker.submit(1)
    assert worker.wait(5)
    deadline = time.monotonic() + 5
    while worker.alive and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not worker.alive
    worker.submit(2)
    assert worker.wait(5)


def test_a_failing_job_does_not_strand_the_next(caplog):
    ran: list[int] = []

    def job(i: int) -> None:
        if i == 0:
            raise RuntimeError("boom")
        ran.append(i)

    worker = Worker(job, name="t", idle_timeout=0.01)
    worker.submit(0)
    worker.submit(1)
    assert worker.wait(5) and ran == [1]
    assert "boom" in caplog.text


def test_recordings_straddling_the_recorders_idle_exit_all_become_turns(sim, samples,
                                                                       tmp_path):
    session = vnb.Session("idle", home=str(tmp_path / "home"))
    from voicenb.widgets import Recorder

    rec = Recorder(session, idle_timeout=0.001)
    for clip in samples * 2:
        rec.submit(clip)
        assert rec.wait(30)
        time.sleep(0.002)  # the worker has left (or is leaving) when the next comes
    assert session.history["status"].tolist() == ["ok"] * 6


# -- the live widget ------------------------------------------------------------------------


def test_stop_racing_feed_never_breaks_the_feed(sim, tmp_path):
    live = vnb.Session("race", home=str(tmp_path / "home")).live()
    errors: list[BaseException] = []
    done = threading.Event()

    def feed() -> None:
        while not done.is_set():
            time.sleep(0.01)  # 10 ms chunks at real-time pace, as a browser sends them
            try:
                live.feed(b"\0\0" * 160)
            except vnb.VoicenbError:
                pass
            except BaseException as exc:  # an AttributeError from a half-stopped session
                errors.append(exc)
                return

    feeder = threading.Thread(target=feed)
    feeder.start()
    for _ in range(20):
        time.sleep(0.03)
        live.stop()
    done.set()
    feeder.join(10)
    live.stop()
    assert errors == []
    stats = sim.streaming.stats
    assert stats["sessions"] >= 5 and stats["terminated"] == stats["sessions"]


# -- streaming buffers ----------------------------------------------------------------------


def test_an_hour_of_silence_holds_bounded_memory_in_the_streaming_client():
    """No final turn ever comes in silence, so nothing used to be let go (115 MB an hour)."""
    with vnb.sim.running(streaming_realtime_slack_s=None) as sim:
        rt = RealtimeTranscriber(chunk_ms=1000, pace=False).start()
        minute = b"\0\0" * RATE * 60
        most = 0
        for _ in range(60):
            rt.send(minute)
            most = max(most, rt.sent.nbytes)
        rt.close(timeout=120)
        most = max(most, rt.sent.nbytes)
    assert rt.audio_sent_s == pytest.approx(3600)
    assert sim.streaming.stats["turns"] == 0
    limit = MAX_TURN_S * 1.25 * RATE * 2 * 1.01  # what a turn may span, plus its marks
    assert most <= limit, f"{most / 1e6:.1f} MB held"


def test_sent_audio_maps_times_and_cuts_turns_in_constant_space():
    sent = _SentAudio(RATE, keep_s=10)
    frame = b"\1\0" * 1600  # 100 ms
    t0 = 1000.0
    for i in range(36_000):  # an hour in 100 ms frames
        sent.add(frame, t0 + i * 0.1)
    assert sent.sent_s == pytest.approx(3600)
    assert len(sent.pcm) <= 12.5 * RATE * 2 and len(sent.mark_s) <= 126
    assert sent.sent_at(3599.95) == pytest.approx(t0 + 3599.9)
    wav = sent.take(3595.0, 3597.0, margin=0.0)
    assert vnb.Audio(wav).duration == pytest.approx(2.0)
    assert sent.from_s == pytest.approx(3597.0)


# -- saving audio, the chat, reading the history ----------------------------------------------


def test_two_threads_saving_the_same_clip_both_succeed(make_wav, tmp_path):
    clip = vnb.Audio(make_wav("long.wav", 20.0))
    for attempt in range(15):
        folder = tmp_path / f"audio{attempt}"
        barrier, errors, saved = threading.Barrier(2), [], []

        def save() -> None:
            barrier.wait()
            try:
                saved.append(vnb.Audio(clip).save(folder))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=save) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert saved[0] == saved[1] and saved[0].read_bytes() == clip.read()
        assert [p.name for p in folder.iterdir()] == [saved[0].name]  # no .part left


def test_the_chat_is_created_once_however_many_threads_ask(sim, tmp_path):
    session = vnb.Session("chat", home=str(tmp_path / "home"))
    barrier, chats = threading.Barrier(8), []

    def get() -> None:
        barrier.wait()
        chats.append(session.chat)

    threads = [threading.Thread(target=get) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(chats) == 8 and all(chat is chats[0] for chat in chats)


def test_reading_the_history_never_writes(tmp_path):
    store = vnb.HistoryStore(tmp_path / "home")
    store.start_turn("s", status="transcribing")
    raw = sqlite3.connect(store.path)
    gone = f"{socket.gethostname()}:999999999:?"  # a process of this host that is gone
    raw.execute("UPDATE turn_state SET owner = ?", (gone,))
    raw.commit()
    before = store.path.stat().st_mtime_ns, raw.execute("PRAGMA data_version").fetchone()
    df = store.dataframe()
    vnb.load_history(tmp_path / "home")
    assert df["status"].tolist() == ["interrupted"]
    assert "Session.resume()" in df["error"].iloc[0]
    assert raw.execute("SELECT status FROM turns").fetchall() == [("transcribing",)]
    assert raw.execute("PRAGMA data_version").fetchone() == before[1]
    raw.close()
