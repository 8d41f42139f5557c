"""The speech-to-text backend protocol: every backend offers the same surface (transcribe,
transcribe_many, on_stage, resume, max_bytes), so the turn pipeline needs nothing else."""

from __future__ import annotations

import pytest

import voicenb as vnb
from voicenb.stt import Backend, Checkpoint, get_backend

#: about the async API (upload, submit, poll): short clips would take the Sync API
pytestmark = pytest.mark.usefixtures("async_api")

FRANCE = "What is the capital of France?"


@pytest.mark.parametrize("name", ["assemblyai", "openai", "sphinx"])
def test_every_backend_offers_the_protocol(sim, name):
    backend = get_backend(name)
    assert isinstance(backend, Backend)
    assert backend.backend == name
    assert backend.max_bytes is None or backend.max_bytes > 20_000_000
    assert backend.uploads is (name == "assemblyai")


def test_assemblyai_reports_each_stage_as_it_happens(sim, sample):
    stages = []
    t = get_backend("assemblyai").transcribe(sample, on_stage=lambda s, v: stages.append((s, v)))
    assert [s for s, _ in stages] == ["started", "uploaded", "submitted", "done"]
    assert stages[1][1].startswith(sim.url) and stages[2][1] == t.id
    assert stages[3][1] is t and t.text == FRANCE


def test_a_one_request_backend_reports_started_and_done(sim, sample):
    stages = []
    t = get_backend("openai").transcribe(sample, on_stage=lambda s, v: stages.append((s, v)),
                                         resume=Checkpoint("ignored", "ignored"))
    assert stages == [("started", None), ("done", t)] and t.text == FRANCE


def test_resuming_a_submitted_transcript_waits_for_it_without_paying_again(sim, sample):
    client = get_backend("assemblyai")
    first = client.transcribe(sample)
    before = dict(sim.stats)
    again = client.transcribe(sample, resume=Checkpoint(first.audio_url, first.id))
    assert again.id == first.id and again.text == FRANCE
    assert sim.stats["uploads"] == before["uploads"]
    assert sim.stats["transcripts"] == before["transcripts"]


def test_a_transcript_the_service_failed_is_submitted_again_from_its_upload(sim, sample):
    client = get_backend("assemblyai")
    sim.fail_audio(sample, "Transcoding failed (simulated).")
    stages = []
    with pytest.raises(vnb.TranscriptionError):
        client.transcribe(sample, on_stage=lambda s, v: stages.append((s, v)))
    upload_url, failed_id = stages[1][1], stages[2][1]
    assert stages[-1][0] == "done" and stages[-1][1].id == failed_id
    before = dict(sim.stats)
    stages.clear()
    with pytest.raises(vnb.TranscriptionError):  # still failing, but from the same upload
        client.transcribe(sample, resume=Checkpoint(upload_url, failed_id),
                          on_stage=lambda s, v: stages.append((s, v)))
    assert [s for s, _ in stages] == ["started", "submitted", "done"]
    assert sim.stats["uploads"] == before["uploads"]
    assert sim.stats["transcripts"] == before["transcripts"] + 1


def test_a_batch_reports_stages_per_item_and_keeps_input_order(sim, samples):
    seen: dict[int, list[str]] = {}
    for name in ("assemblyai", "openai"):
        seen.clear()
        out = get_backend(name).transcribe_many(
            [*samples, "missing.wav"], progress=False,
            on_stage=lambda i, s, v: seen.setdefault(i, []).append(s))
        assert [t.ok for t in out] == [True, True, True, False]
        assert all(stages[0] == "started" and stages[-1] == "done"
                   for stages in seen.values())
        assert sorted(seen) == [0, 1, 2, 3]
