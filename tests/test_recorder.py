"""The recorder widget without a browser: queueing, status, escaping, headless display."""

from __future__ import annotations

import json

import pytest

import voicenb as vnb

PAYLOAD = '<img src=x onerror="alert(1)">'


@pytest.fixture
def session(sim, tmp_path):
    return vnb.Session("rec", home=str(tmp_path / "home"))


def test_a_submitted_recording_becomes_a_turn(session, sample):
    rec = session.recorder()
    rec.submit(sample.read_bytes())
    assert rec.wait(30)
    assert session.history["status"].tolist() == ["ok"]
    assert "data-state='ok'" in rec.status.value
    assert "What is the capital of France?" in rec.view.transcript.value
    assert "(simulated answer)" in rec.view.answer.value
    assert "What is the capital of France?" in rec.turns.value


def test_recordings_made_during_a_turn_queue_in_order(session, samples):
    rec = session.recorder()
    for clip in samples:
        rec.submit(clip.read_bytes())
    assert rec.wait(60)
    assert session.history["transcript"].tolist() == [
        "What is the capital of France?", "How far away is the moon?",
        "Tell me a short joke about computers."]


def test_the_browser_recording_arrives_through_the_audio_trait(session, sample):
    rec = session.recorder()
    rec.audio_recorder.audio.value = sample.read_bytes()  # what the front end does on stop
    assert rec.wait(30)
    assert session.history["status"].tolist() == ["ok"]


def test_transcript_and_answer_are_escaped(session, sim, make_wav):
    clip = make_wav("tone.wav", 1.0)
    sim.register(clip, PAYLOAD)
    rec = session.recorder()
    rec.submit(clip)
    assert rec.wait(30)
    for html in (rec.view.transcript.value, rec.view.answer.value, rec.turns.value):
        assert "<img" not in html
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in rec.view.transcript.value


def test_a_failed_turn_shows_the_error_and_the_widget_goes_on(session, sample, make_wav):
    rec = session.recorder()
    rec.submit(make_wav("silence.wav", 1.0, tone=False))
    rec.submit(sample)
    assert rec.wait(30)
    assert session.history["status"].tolist() == ["error", "ok"]
    assert "No speech detected" in rec.turns.value


def test_the_record_button_drives_the_recorder_and_the_status(session):
    rec = session.recorder()
    rec.button.value = True
    assert rec.audio_recorder.recording is True
    assert "data-state='recording'" in rec.status.value
    assert rec.button.description == "Stop"
    rec.audio_recorder.recording = False  # the front end stops when it has the audio
    assert rec.button.value is False and rec.button.description == "Record"


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
