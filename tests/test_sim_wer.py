"""The simulator's ``word_error_rate``: registered text misheard at a set rate, the same way
every time, on every transcription path (AssemblyAI REST and Sync, OpenAI, streaming). All
over real loopback HTTP and websockets against voicenb.sim."""

from __future__ import annotations

import pytest
import requests

import voicenb as vnb
from voicenb.accuracy import corpus_wer, word_errors
from voicenb.sim.__main__ import main as sim_main
from voicenb.stt.streaming import RealtimeTranscriber

#: (backend, VOICENB_ASSEMBLYAI_API): the three request/response transcription paths
PATHS = {"rest": ("assemblyai", "async"), "sync": ("assemblyai", "sync"),
         "openai": ("openai", None)}
#: more registered clips next to the shipped samples, so a corpus has enough words to
#: measure a rate on (12 clips, 90 words with the three samples)
EXTRA_TEXTS = (
    "Which planet in our solar system has the most moons?",
    "Explain how a rainbow forms after the rain.",
    "What should I cook for dinner tonight?",
    "Who wrote the novel Pride and Prejudice?",
    "How many bones are there in the human body?",
    "Remind me why the sky looks blue during the day.",
    "Translate good morning into Spanish please.",
    "What is the tallest mountain in Africa?",
    "Give me three tips for sleeping better.",
)


@pytest.fixture
def wer_sim():
    """The simulators at rate 0, quick to answer (the tests set the rate they need)."""
    with vnb.sim.running(processing_fixed=0.02, processing_factor=0.0) as s:
        yield s


@pytest.fixture
def corpus(wer_sim, samples, make_wav) -> list[tuple[object, str]]:
    """(clip, reference) for the shipped samples and the extra registered clips."""
    clips = [(path, wer_sim.registry.text(vnb.Audio(path).sha256)) for path in samples]
    for i, text in enumerate(EXTRA_TEXTS):
        clip = make_wav(f"extra{i}.wav", seconds=1.0 + 0.1 * i)  # a different length each
        wer_sim.register(clip, text)
        clips.append((clip, text))
    return clips


def _heard(clip, path: str, monkeypatch) -> str:
    backend, api = PATHS[path]
    if api is not None:
        monkeypatch.setenv("VOICENB_ASSEMBLYAI_API", api)
    return vnb.transcribe(clip, backend=backend, progress=False).text


@pytest.mark.parametrize("path", PATHS)
def test_rate_zero_gives_the_registered_text_exactly(wer_sim, samples, path, monkeypatch):
    assert _heard(samples[0], path, monkeypatch) == "What is the capital of France?"


@pytest.mark.parametrize("path", PATHS)
def test_corpus_wer_at_rate_0_2_is_close_to_0_2(wer_sim, corpus, path, monkeypatch):
    wer_sim.word_error_rate = 0.2
    errors = [word_errors(ref, _heard(clip, path, monkeypatch)) for clip, ref in corpus]
    words = sum(e.reference_words for e in errors)
    # Each word is wrong with probability 0.2, one error each, so the error count is about
    # Binomial(words, 0.2): sd = sqrt(0.2 * 0.8 / words) = 0.042 for 90 words. 0.08-0.35 is
    # about -2.8 to +3.6 sd (jiwer's alignment can merge two neighbouring mistakes into one
    # error, never split one in two, so the low side gets less room): another seed or
    # wording stays inside, a rate that is ignored (0 errors) cannot.
    assert words >= 80
    assert 0.08 <= corpus_wer(errors) <= 0.35


def test_the_same_clip_gets_the_same_transcript_every_time(wer_sim, samples, monkeypatch):
    wer_sim.word_error_rate = 0.3
    first = _heard(samples[0], "rest", monkeypatch)
    _heard(samples[1], "rest", monkeypatch)  # another clip in between changes nothing
    assert _heard(samples[0], "rest", monkeypatch) == first
    assert first != "What is the capital of France?"


def test_two_simulators_with_the_same_seed_make_the_same_mistakes(samples, monkeypatch):
    heard = []
    for _ in range(2):
        with vnb.sim.running(word_error_rate=0.3, seed=7, processing_fixed=0.02):
            heard.append([_heard(s, "sync", monkeypatch) for s in samples])
    assert heard[0] == heard[1]


def test_each_service_makes_its_own_mistakes(wer_sim, samples, monkeypatch):
    wer_sim.word_error_rate = 0.3
    by_path = {path: [_heard(s, path, monkeypatch) for s in samples] for path in PATHS}
    assert by_path["rest"] != by_path["openai"]
    assert by_path["rest"] != by_path["sync"] != by_path["openai"]


def test_the_rest_words_list_joins_to_the_misheard_text(wer_sim, samples, monkeypatch):
    wer_sim.word_error_rate = 0.3
    monkeypatch.setenv("VOICENB_ASSEMBLYAI_API", "async")
    transcript = vnb.transcribe(samples[1], backend="assemblyai", progress=False)
    body = requests.get(f"{wer_sim.url}/v2/transcript/{transcript.id}",
                        headers={"Authorization": wer_sim.assemblyai.key}, timeout=5).json()
    assert " ".join(w["text"] for w in body["words"]) == body["text"] == transcript.text
    assert body["text"] != "How far away is the moon?"


def test_a_new_rate_applies_to_the_next_transcript(wer_sim, samples, monkeypatch):
    wer_sim.word_error_rate = 0.5
    assert _heard(samples[0], "openai", monkeypatch) != "What is the capital of France?"
    wer_sim.word_error_rate = 0.0
    assert _heard(samples[0], "openai", monkeypatch) == "What is the capital of France?"


def test_mistakes_keep_the_final_punctuation_and_the_capital(wer_sim, corpus, monkeypatch):
    wer_sim.word_error_rate = 0.4
    for clip, ref in corpus:
        text = _heard(clip, "sync", monkeypatch)
        assert text[-1] == ref[-1] and text[0].isupper()


def test_streaming_final_turns_are_misheard_too(samples):
    with vnb.sim.running(word_error_rate=0.5, streaming_realtime_slack_s=None):
        finals = []
        with RealtimeTranscriber(on_turn=finals.append, pace=False) as rt:
            rt.send(vnb.Audio(samples[0]).pcm16k() + b"\0\0" * 16000)
        again = []
        with RealtimeTranscriber(on_turn=again.append, pace=False) as rt:
            rt.send(vnb.Audio(samples[0]).pcm16k() + b"\0\0" * 16000)
    assert len(finals) == 1 and finals[0].text != "What is the capital of France?"
    assert [t.text for t in again] == [t.text for t in finals]


def test_unregistered_audio_keeps_its_placeholder(wer_sim, make_wav, monkeypatch):
    wer_sim.word_error_rate = 1.0
    text = _heard(make_wav("unknown.wav", seconds=1.3), "openai", monkeypatch)
    assert text.startswith("(simulated transcript of 1.3 seconds of unregistered audio")


def test_a_rate_outside_0_to_1_is_refused(wer_sim, capsys):
    with pytest.raises(ValueError, match="between 0 and 1"):
        wer_sim.word_error_rate = 1.5
    with pytest.raises(SystemExit):
        sim_main(["--word-error-rate", "-0.1"])
    assert "--word-error-rate must be between 0 and 1" in capsys.readouterr().err
