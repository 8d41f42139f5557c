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


def test_sdk_get_by_id(sdk, sim, sample, async_api):
    import voicenb as vnb

    t = vnb.transcribe(sample)
    fetched = sdk.Transcript.get_by_id(t.id)
    assert fetched.text == t.text


# -- the official openai SDK ------------------------------------------------------------------

openai = pytest.importorskip("openai")


@pytest.fixture
def oai(sim):
    return openai.OpenAI()  # reads OPENAI_BASE_URL and OPENAI_API_KEY set by the simulator


def test_openai_sdk_chat_without_streaming(oai):
    r = oai.chat.completions.create(model="gpt-4o-mini",
                                    messages=[{"role": "user", "content": "Hi there"}])
    assert r.choices[0].message.content.startswith("(simulated answer)")
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_openai_sdk_chat_streaming_with_usage(oai):
    stream = oai.chat.completions.create(model="gpt-4o-mini", stream=True,
                                         stream_options={"include_usage": True},
                                         messages=[{"role": "user", "content": "Hi there"}])
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("(simulated answer)")
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


def test_openai_sdk_streaming_helper(oai):
    with oai.chat.completions.stream(model="gpt-4o-mini",
                                     messages=[{"role": "user", "content": "Hi"}]) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.content.startswith("(simulated answer)")


def test_openai_sdk_lists_models(oai):
    assert "gpt-4o-mini" in {m.id for m in oai.models.list()}


def test_openai_sdk_transcribes(oai, sample):
    with open(sample, "rb") as fh:
        r = oai.audio.transcriptions.create(model="whisper-1", file=fh)
    assert r.text == "What is the capital of France?"


def test_openai_sdk_transcribes_as_text(oai, sample):
    with open(sample, "rb") as fh:
        r = oai.audio.transcriptions.create(model="whisper-1", file=fh, response_format="text")
    assert r.strip() == "What is the capital of France?"


def test_openai_sdk_wrong_key_is_refused(sim):
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(api_key="wrong").models.list()


def test_openai_sdk_unknown_model_is_not_found(oai):
    with pytest.raises(openai.NotFoundError):
        oai.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])


def test_sdk_lists_transcripts_newest_first(sdk, samples):
    done = [sdk.Transcriber().transcribe(str(p)) for p in samples[:2]]
    listed = sdk.Transcriber().list_transcripts()  # parsed by the SDK's own models
    assert [t.id for t in listed.transcripts] == [t.id for t in reversed(done)]
    assert listed.transcripts[0].audio_url == done[1].audio_url
    assert listed.page_details.result_count == 2
