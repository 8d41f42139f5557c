"""The official assemblyai SDK works against the simulator unchanged: that is its fidelity check."""

from __future__ import annotations

import pytest

aai = pytest.importorskip("assemblyai")


@pytest.fixture
def sdk(sim):
    aai.settings.api_key = sim.assemblyai.key
    aai.settings.base_url = sim.url
    aai.settings.polling_interval = 0.1
    yield aai
    aai.settings.api_key = None
    aai.settings.base_url = "https://api.assemblyai.com"
    aai.settings.polling_interval = 3.0


def test_sdk_transcribes_a_local_file(sdk, sim, sample):
    transcript = sdk.Transcriber().transcribe(str(sample))
    assert transcript.status == aai.TranscriptStatus.completed
    assert transcript.text == "What is the capital of France?"
    assert transcript.words[0].text == "What"
    assert sim.stats["uploads"] == 1


def test_sdk_sends_speech_models_and_options(sdk, sim, sample):
    config = sdk.TranscriptionConfig(speech_models=["universal-2"], language_code="en_us",
                                     punctuate=True)
    transcript = sdk.Transcriber(config=config).transcribe(str(sample))
    assert transcript.status == aai.TranscriptStatus.completed
    assert sim.jobs[transcript.id].options["speech_models"] == ["universal-2"]


def test_sdk_transcribe_group(sdk, samples):
    group = sdk.Transcriber().transcribe_group([str(p) for p in samples])
    texts = sorted(t.text for t in group.transcripts)  # the SDK does not keep input order
    assert texts == sorted(["What is the capital of France?", "How far away is the moon?",
                     "Tell me a short joke about computers."])


def test_sdk_sees_status_error(sdk, sim, sample):
    sim.fail_audio(sample, "Transcoding failed (simulated).")
    transcript = sdk.Transcriber().transcribe(str(sample))
    assert transcript.status == aai.TranscriptStatus.error
    assert transcript.error == "Transcoding failed (simulated)."


def test_sdk_wrong_key_is_refused(sdk, sample):
    aai.settings.api_key = "wrong"
    with pytest.raises(aai.types.TranscriptError, match="Authentication error"):
        sdk.Transcriber().transcribe(str(sample))


def test_sdk_get_by_id(sdk, sim, sample):
    import voicenb as vnb

    t = vnb.transcribe(sample)
    fetched = sdk.Transcript.get_by_id(t.id)
    assert fetched.text == t.text
