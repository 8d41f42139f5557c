"""A spoken conversation in real Chromium through a connection that is cut twice: once while
a question is being said, once while an answer is being read aloud. session.live() against
the simulators: the page says it is reconnecting, and every question is answered once, its
audio whole."""

from __future__ import annotations

import time

import voicenb as vnb
from voicenb.audio import pcm_to_wav

from . import harness
from .test_talkback_browser import ARTIFACTS, pytestmark  # noqa: F401 - artifacts, skip rule

# the page resamples the microphone, so the simulator hears any speech as this question
HEARD = "What is the capital of France?"


def _microphone(path):
    """Three questions, each then 6 s of silence (its answer is read meanwhile)."""
    clips = [vnb.Audio(p).pcm16k() for p in vnb.sim.samples()]
    silence = bytes(2 * 16000)
    path.write_bytes(pcm_to_wav(b"".join(c + silence * 6 for c in clips)))
    return path, [len(c) / 32000 for c in clips]


def _status(page) -> str:
    return page.inner_text(".voicenb-live-status")


def test_a_conversation_survives_cuts_mid_question_and_mid_answer(tmp_path):
    home = tmp_path / "home"
    mic, lengths = _microphone(tmp_path / "mic.wav")
    statuses: list[str] = []
    with vnb.sim.running(unknown_text=HEARD) as sim:
        cells = ["import voicenb as vnb\ns = vnb.Session('drops')\n"
                 "live = s.live(speak='espeak')\nlive"]
        with harness.live_page(tmp_path, home, cells, mic, "live-drops") as page:
            page.wait_for_selector(".voicenb-live-status[data-state=listening]",
                                   timeout=30_000)
            # 1. mid-question: the second question's words are showing
            page.wait_for_function(
                "document.querySelector('.voicenb-live-status').textContent"
                ".includes('turn 1: done')", timeout=60_000)
            page.wait_for_function(
                "document.querySelector('.voicenb-live-partial')"
                ".textContent.trim().length > 0", timeout=30_000)
            sim.streaming.faults.refuse(1.5)  # and the first tries are refused
            assert sim.streaming.drop_sessions() == 1
            page.wait_for_function(
                "document.querySelector('.voicenb-live-status').textContent"
                ".startsWith('reconnecting')", timeout=10_000, polling=20)
            statuses.append(_status(page))
            ARTIFACTS.mkdir(exist_ok=True)
            page.locator(".jp-Cell").first.screenshot(path=str(ARTIFACTS /
                                                               "live-reconnecting.png"))
            # 2. mid-answer: the second answer is being read aloud
            page.wait_for_selector(".voicenb-live-status[data-state=speaking]",
                                   timeout=60_000)
            assert sim.streaming.drop_sessions() == 1
            page.wait_for_function(
                "document.querySelector('.voicenb-live-status').textContent"
                ".includes('turn 3: done')", timeout=90_000)
            statuses.append(_status(page))
            page.locator(".jp-Cell").first.screenshot(path=str(ARTIFACTS / "live-drops.png"))
            page.click(".voicenb-live-button")  # stop
            deadline = time.monotonic() + 30
            while sim.streaming.stats["terminated"] < 1 and time.monotonic() < deadline:
                time.sleep(0.2)
        sessions = sim.streaming.stats["sessions"]
    assert statuses[0].startswith("reconnecting") and "every word is kept" in statuses[0]
    assert sessions == 3  # the first, and one after each cut (the refused ones never open)
    df = vnb.load_history(str(home), session="drops")
    first3 = df.iloc[:3]
    # answered (read out, or spoken over by the next question: the answers are long)
    assert set(first3["status"]) <= {"ok", "barged_in"}, df[["status", "error"]]
    assert list(first3["transcript"]) == [HEARD] * 3
    assert all(a.startswith("(simulated answer)") for a in first3["answer"])
    # the question cut mid-way was heard whole: its saved audio holds all of it
    for length, audio_s in zip(lengths, first3["audio_s"]):
        assert audio_s >= length - 0.35, (lengths, list(first3["audio_s"]))
    # a cut counts on the turn it interrupted, or on the next one said (mid-answer)
    assert list(first3["reconnects"]) == [0, 1, 1], list(first3["reconnects"])
    assert int(df["reconnects"].fillna(0).sum()) == 2
