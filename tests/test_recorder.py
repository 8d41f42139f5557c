"""The recorder widget without a browser: push to talk, queueing, status, headless display."""

from __future__ import annotations

import json
import time

import pytest

import voicenb as vnb
from tests._page_player import PagePlayer

PAYLOAD = '<img src=x onerror="alert(1)">'


@pytest.fixture
def session(sim, tmp_path):
    return vnb.Session("rec", home=str(tmp_path / "home"))


def _speak(rec, pcm: bytes) -> bool:
    """What the page does: Record, ~100 ms chunks while you speak, Stop."""
    rec._on_msg(rec, {"type": "start", "rate": 16000}, [])
    for i in range(0, len(pcm), 3200):
        rec._on_msg(rec, {"type": "audio"}, [memoryview(pcm[i:i + 3200])])
    queued = rec.end()
    return queued


def test_speech_streamed_while_recording_becomes_a_turn(session, sample, sim):
    rec = session.recorder()
    assert rec.state == "idle" and rec.capture
    assert _speak(rec, vnb.Audio(sample).pcm16k())
    assert rec.wait(30)
    df = session.history
    assert df["status"].tolist() == ["ok"]
    assert df["transcript"].tolist() == ["What is the capital of France?"]
    assert df["audio_path"].iloc[0].endswith(".wav")  # the kernel keeps the clip
    assert rec.state == "ok" and rec.status.startswith("turn 1: done")
    assert rec.transcript == "What is the capital of France?"
    assert rec.answer.startswith("(simulated answer)")
    [row] = rec.turns
    assert row["turn"] == 1 and row["said"] == rec.transcript and row["audio"]
    # uploaded to the Sync API while recorded: after Stop only the last stretch was waited for
    assert df["stt_backend"].tolist() == ["assemblyai-sync"]
    assert [r.path for r in sim.sync.served] == ["/v1/transcribe/live"]
    assert sim.stats["uploads"] == sim.stats["transcripts"] == 0
    row = df.iloc[0]  # the stages still add up to the turn's total
    stages = sum(row[c] or 0.0 for c in vnb.history.TOP)
    assert stages == pytest.approx(row["total_s"], rel=0.01)


def test_without_the_sync_api_the_recording_is_sent_after_stop(session, sample, sim,
                                                                 monkeypatch):
    monkeypatch.setenv("VOICENB_ASSEMBLYAI_API", "async")
    rec = vnb.Session("rec-async", home=str(session.store.home)).recorder()
    assert _speak(rec, vnb.Audio(sample).pcm16k()) and rec.wait(30)
    assert rec.transcript == "What is the capital of France?"
    assert sim.stats["sync_transcripts"] == 0 and sim.stats["uploads"] == 1


def test_a_click_too_short_to_be_a_question_is_not_sent_anywhere(session, sample, sim):
    rec = session.recorder()
    assert not _speak(rec, vnb.Audio(sample).pcm16k()[:3200])  # 0.1 s
    assert rec.state == "short" and "not transcribed" in rec.status
    assert session.history.empty and sim.stats["uploads"] == 0
    assert sim.stats["sync_transcripts"] == 0


def test_a_silent_recording_is_not_sent_anywhere(session, sim):
    rec = session.recorder()
    assert not _speak(rec, b"\0\0" * 16000)
    assert rec.state == "silent" and "microphone" in rec.status
    assert session.history.empty and sim.stats["uploads"] == 0
    assert sim.stats["sync_transcripts"] == 0


def test_a_submitted_recording_becomes_a_turn(session, sample):
    rec = session.recorder()
    rec.submit(sample.read_bytes())
    assert rec.wait(30)
    assert session.history["status"].tolist() == ["ok"]
    assert rec.state == "ok"


def test_recordings_made_during_a_turn_queue_in_order(session, samples):
    rec = session.recorder()
    for clip in samples:
        rec.submit(clip.read_bytes())
    assert rec.wait(60)
    assert session.history["transcript"].tolist() == [
        "What is the capital of France?", "How far away is the moon?",
        "Tell me a short joke about computers."]
    assert [r["turn"] for r in rec.turns] == [3, 2, 1]  # newest first


def test_transcript_and_answer_are_kept_as_text(session, sim, make_wav):
    """The page shows them with textContent; the kernel never builds markup from them."""
    clip = make_wav("tone.wav", 1.0)
    sim.register(clip, PAYLOAD)
    rec = session.recorder()
    rec.submit(clip)
    assert rec.wait(30)
    assert rec.transcript == PAYLOAD and rec.turns[0]["said"] == PAYLOAD


def test_a_failed_turn_shows_the_error_and_the_widget_goes_on(session, sample, make_wav):
    rec = session.recorder()
    rec.submit(make_wav("silence.wav", 1.0, tone=False))
    rec.submit(sample)
    assert rec.wait(30)
    assert session.history["status"].tolist() == ["error", "ok"]
    assert "No speech detected" in rec.turns[1]["said"]


def test_no_microphone_is_explained_in_words(session):
    rec = session.recorder()
    rec._on_msg(rec, {"type": "error", "message": "the microphone was refused"}, [])
    assert rec.state == "nomic" and not rec.kernel_mic
    assert "the microphone was refused" in rec.status and "submit" in rec.status


def _has_microphone_library() -> bool:
    try:
        import sounddevice  # noqa: F401
    except (ImportError, OSError):
        return False
    return True


@pytest.mark.skipif(_has_microphone_library(), reason="sounddevice works here: the page's "
                    "Record button would use this machine's microphone")
def test_a_local_page_without_a_microphone_says_how_to_record_through_python(session):
    rec = session.recorder()
    why = "this front end gives widgets no microphone"
    rec._on_msg(rec, {"type": "error", "message": why, "local": True}, [])
    assert rec.state == "nomic" and not rec.kernel_mic
    assert why in rec.status and "this computer's microphone" in rec.status
    assert "pip install 'voicenb[mic]'" in rec.status or "PortAudio" in rec.status


def test_the_ipywebrtc_engine_records_through_our_button_only(session, sample, encode):
    rec = session.recorder(engine="ipywebrtc")
    assert rec.audio_recorder.layout.display == "none"  # its dot, download and player
    rec.button.value = True
    assert rec.audio_recorder.recording is True and rec.state == "recording"
    rec.button.value = False
    rec.audio_recorder.audio.value = encode(sample)  # what the front end does on stop
    assert rec.wait(30)
    assert session.history["audio_path"].iloc[0].endswith(".webm")
    assert session.history["status"].tolist() == ["ok"]


def test_an_unknown_engine_is_a_config_error(session):
    with pytest.raises(vnb.ConfigError, match="ipywebrtc"):
        session.recorder(engine="webrtc")


def test_the_widget_displays_headless_without_hanging(sim, tmp_path):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        f"import voicenb as vnb\ns = vnb.Session('h', home={str(tmp_path / 'home')!r})\n"
        "s.recorder()")]
    NotebookClient(nb, timeout=60, kernel_name="python3").execute()
    [output] = nb.cells[0].outputs
    assert "application/vnd.jupyter.widget-view+json" in output["data"]
    assert "Recorder(session='h'" in json.dumps(output["data"]["text/plain"])


@pytest.mark.skipif(not __import__("shutil").which("espeak-ng"), reason="needs espeak-ng")
def test_the_recorder_reads_answers_aloud_and_record_speaks_over_them(session, sample):
    rec = session.recorder(speak="espeak")
    player = PagePlayer(rec)
    rec.submit(sample)
    assert rec.wait(60)
    first = session.turn(1)
    assert first.status == "ok" and first.spoken_chars == len(first.answer)
    assert first.tts_model == "espeak" and first.first_audio_s >= first.first_token_s
    player.answer_ends = False  # the next answer is still being read when Record is pressed
    rec.submit(sample)
    deadline = time.monotonic() + 30
    while "say" not in player.seen[player.seen.index("said") + 1:] \
            and time.monotonic() < deadline:  # the second answer's first sentence plays
        time.sleep(0.05)
    rec.begin()  # Record: the person speaks over the answer
    assert rec.wait(60)
    second = session.turn(2)
    assert second.status == "barged_in" and 0 < second.spoken_chars < len(second.answer)
    rec.end()


def test_speak_needs_the_anywidget_recorder(session):
    with pytest.raises(vnb.ConfigError, match="anywidget recorder"):
        session.recorder(engine="ipywebrtc", speak=True)
