"""AssemblyAI's text to speech, as voicenb uses it, against the simulator over loopback:
vnb.speak over HTTP, a conversation's WebSocket session (StreamSpeaker: tokens in as they
stream, audio out in clips, Cancel on barge-in, word timings for what was heard), and the
refusals, all checked before anything is paid where they can be."""

from __future__ import annotations

import io
import os
import re
import shutil
import threading
import time
import wave

import pytest

import voicenb as vnb
from voicenb import tts
from voicenb._talkback import StreamSpeaker
from voicenb.tts import assemblyai

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None and not os.environ.get("CI"),
    reason="the simulator speaks with espeak-ng (apt-get install espeak-ng)")

ANSWER = ("Paris is the capital of France. It lies on the river Seine, in the north. "
          "About two million people live in the city itself.")
ONE_SENTENCE = "The river Seine flows through the middle of Paris and out to the sea."


def tokens(text: str) -> list[str]:
    """Word-sized pieces, as a model streams them."""
    words = text.split(" ")
    return [w + " " for w in words[:-1]] + [words[-1]]


def seconds_of(wav: bytes) -> float:
    with wave.open(io.BytesIO(wav)) as w:
        return w.getnframes() / w.getframerate()


class Page:
    """Stands in for the browser's player: keeps the clips it is sent, and the count."""

    def __init__(self) -> None:
        self.clips: list[bytes] = []
        self.count: int | None = None
        self.cond = threading.Condition()

    def send(self, seq: int, wav: bytes) -> None:
        with self.cond:
            assert seq == len(self.clips)
            self.clips.append(wav)
            self.cond.notify_all()

    def all_sent(self, count: int) -> None:
        with self.cond:
            self.count = count
            self.cond.notify_all()

    def wait(self, predicate, timeout: float = 30.0) -> None:
        with self.cond:
            assert self.cond.wait_for(predicate, timeout), "the page waited in vain"


@pytest.fixture
def voice(sim):
    v = assemblyai.Voice(vnb.Settings().resolved())
    yield v
    v.close()


def speak_answer(voice, text: str = ANSWER) -> tuple[StreamSpeaker, Page]:
    page = Page()
    speaker = StreamSpeaker(page.send, voice, on_all_sent=page.all_sent)
    for piece in tokens(text):
        speaker.feed(piece)
    speaker.finish()
    return speaker, page


# -- vnb.speak over HTTP --------------------------------------------------------------------


def test_speak_with_assemblyai_returns_speech_as_a_wav(sim):
    clip = vnb.speak("Paris is the capital of France.", backend="assemblyai")
    assert clip.format == "wav" and 1.0 < clip.duration < 5.0
    assert sim.tts.stats["requests"] == 1
    assert sim.tts.stats["characters_billed"] == len("Paris is the capital of France.")


def test_auto_speaks_with_assemblyai_when_its_key_is_set(sim):
    assert tts.backend_for(vnb.Settings().resolved()) == "assemblyai"
    assert vnb.speak("Hello there.").format == "wav"
    assert sim.tts.stats["requests"] == 1 and sim.stats["speech"] == 0


def test_voice_and_language_are_settings(sim, monkeypatch):
    monkeypatch.setenv("VOICENB_TTS_VOICE", "aai-charles")
    monkeypatch.setenv("VOICENB_TTS_LANGUAGE", "French")
    assert vnb.speak("Bonjour à tous.", backend="assemblyai").duration > 0.5
    assert sim.tts.stats["requests"] == 1


@pytest.mark.parametrize("setting, value, named", [
    ("voice", "aai-jnae", "aai-jane"),            # a built-in voice's family, misspelt
    ("language", "klingon", "portuguese"),
])
def test_an_unknown_voice_or_language_is_refused_before_anything_is_sent(sim, setting, value,
                                                                         named):
    with pytest.raises(vnb.ConfigError, match=named):
        vnb.speak("Hello.", backend="assemblyai", **{setting: value})
    assert sim.tts.stats["requests"] == 0


def test_a_voice_the_service_does_not_know_is_a_config_error(sim):
    with pytest.raises(vnb.ConfigError, match="voice"):
        vnb.speak("Hello.", backend="assemblyai", voice="my-cloned-voice")


def test_a_text_over_the_services_limit_is_said_in_pieces(sim):
    text = " ".join(["The quick brown fox jumps over the lazy dog."] * 130)  # 5,849 chars
    assert len(text) > assemblyai.MAX_CHARS
    parts = assemblyai.pieces(text)
    assert len(parts) == 2 and all(len(p) <= assemblyai.MAX_CHARS for p in parts)
    assert "".join(parts) == text and parts[0].endswith("dog. ")
    sim.tts.speed = None  # as fast as espeak-ng makes it
    clip = vnb.speak(text, backend="assemblyai")
    assert sim.tts.stats["requests"] == 2
    assert sim.tts.stats["characters_billed"] == len(text)
    assert clip.duration > 200


def test_a_rate_limit_is_waited_out_then_reported(sim):
    sim.inject("429", "/v1/speech", retry_after=0)
    assert vnb.speak("Hello.", backend="assemblyai").duration > 0.2
    sim.inject("429", "/v1/speech", retry_after=0, times=assemblyai.RETRIES + 1)
    with pytest.raises(vnb.RateLimitError):
        vnb.speak("Hello.", backend="assemblyai")


def test_a_wrong_key_is_an_authentication_error_without_the_key(sim):
    with pytest.raises(vnb.AuthenticationError) as info:
        vnb.speak("Hello.", settings=vnb.Settings(assemblyai_api_key="not-the-key",
                                                  tts="assemblyai"))
    assert "not-the-key" not in str(info.value)


def test_a_redirected_rest_host_does_not_send_text_to_assemblyais_own(monkeypatch):
    monkeypatch.setenv("ASSEMBLYAI_API_KEY", "a-key")
    monkeypatch.setenv("ASSEMBLYAI_BASE_URL", "http://127.0.0.1:9")
    cfg = vnb.Settings().resolved()
    assert cfg.assemblyai_tts_url is None
    with pytest.raises(vnb.ConfigError, match="ASSEMBLYAI_TTS_BASE_URL"):
        vnb.speak("Hello.", backend="assemblyai")


# -- a conversation's session ----------------------------------------------------------------


def test_an_answer_streams_into_one_session_and_its_audio_comes_back_in_clips(sim, voice):
    speaker, page = speak_answer(voice)
    page.wait(lambda: page.count is not None)
    assert page.count == len(page.clips) >= 3
    speaker.playing(0)
    speaker.ended()
    spoken = speaker.result(timeout=10)
    assert not spoken.interrupted and spoken.error is None
    assert spoken.spoken_chars == len(ANSWER)
    assert spoken.words_heard == len(ANSWER.split())
    assert (spoken.backend, spoken.tts_model, spoken.voice) == (
        "assemblyai", "assemblyai-tts-1", "aai-jane")
    assert 0 < spoken.tts_ttfb_s < 5
    # the answer's three sentences are three requests on one session
    assert sim.tts.stats["sessions"] == 1 and sim.tts.stats["flushes"] == 3
    assert sum(seconds_of(c) for c in page.clips) > 3


def test_the_first_audio_comes_before_the_answer_is_complete(sim, voice):
    page = Page()
    speaker = StreamSpeaker(page.send, voice, on_all_sent=page.all_sent)
    for piece in tokens("Paris is the capital of France. And it is lovely "):
        speaker.feed(piece)
    page.wait(lambda: page.clips)  # the first sentence speaks while the rest is unwritten
    assert page.count is None
    speaker.feed("in the spring.")
    speaker.finish()
    page.wait(lambda: page.count is not None)
    speaker.cancel()


def test_the_session_is_kept_for_the_next_answer(sim, voice):
    for _ in range(2):
        speaker, page = speak_answer(voice, "Yes. That is right, it is.")
        page.wait(lambda: page.count is not None)
        speaker.playing(0)
        speaker.ended()
        assert speaker.result(timeout=10).spoken_chars == len("Yes. That is right, it is.")
    assert sim.tts.stats["sessions"] == 1 and voice.connects == 1


def heard_words(sim, text: str, stop_ms: float) -> list[str]:
    """The words whose end falls before ``stop_ms`` in the audio of ``text``, by the
    service's own timings: its server-sent-events route, the same synthesis as a session's
    request (the SDK has no client for that route; it is plain HTTP)."""
    import json

    import requests

    response = requests.post(f"{sim.tts.url}/v1/speech/events", json={"text": text},
                             headers={"Authorization": sim.assemblyai.key}, timeout=30)
    response.raise_for_status()
    words: list[tuple[str, int]] = []
    for block in response.text.split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if lines.get("event") == "WordBoundaries":
            event = json.loads(lines["data"])
            words = [(w["word"], w["end"] - event["audio_start_ms"]) for w in event["words"]]
    assert words, "the service sent no word timings"
    return [w for w, end in words if end <= stop_ms]


@pytest.mark.parametrize("stop_fraction", [0.15, 0.5, 0.8])
def test_a_barge_in_cancels_and_keeps_exactly_the_words_heard(sim, voice, stop_fraction):
    speaker, page = speak_answer(voice, ONE_SENTENCE)
    page.wait(lambda: page.count is not None)
    durations = [seconds_of(c) for c in page.clips]
    stop = sum(durations) * stop_fraction
    # the page played the clips before the stop whole, and the one at it in part
    played, start = {}, 0.0
    for seq, length in enumerate(durations):
        if start >= stop:
            break
        played[seq] = min(length, stop - start)
        start += length
    speaker.playing(0)
    speaker.hushed(played)
    spoken = speaker.result(timeout=10)
    expected = heard_words(sim, ONE_SENTENCE, stop * 1000)
    assert spoken.interrupted and spoken.words_heard == len(expected)
    assert ONE_SENTENCE[:spoken.spoken_chars].split() == expected
    assert len(expected) < len(ONE_SENTENCE.split())


def test_a_barge_in_mid_answer_sends_cancel_on_the_same_session(sim, voice):
    sim.tts.speed = 1.0  # real time: the answer is still being made when the person speaks
    page = Page()
    speaker = StreamSpeaker(page.send, voice, on_all_sent=page.all_sent)
    for piece in tokens(ANSWER):
        speaker.feed(piece)
    speaker.finish()
    page.wait(lambda: len(page.clips) >= 2)
    speaker.playing(0)
    speaker.hushed({0: seconds_of(page.clips[0])})
    spoken = speaker.result(timeout=10)
    assert spoken.interrupted and spoken.spoken_chars < len(ANSWER)
    assert ANSWER.startswith(ANSWER[:spoken.spoken_chars])
    deadline = time.monotonic() + 5
    while sim.tts.stats["cancels"] < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sim.tts.stats["cancels"] == 1 and voice.cancels == 1
    # and the next answer speaks on the same session
    sim.tts.speed = None
    speaker, page = speak_answer(voice, "Sure. Ask me again.")
    page.wait(lambda: page.count is not None)
    assert page.count >= 1 and sim.tts.stats["sessions"] == 1


def test_markdown_is_not_read_but_the_words_map_back_to_the_answer(sim, voice):
    text = "It is **Paris**, of course. The `capital` city."
    speaker, page = speak_answer(voice, text)
    page.wait(lambda: page.count is not None)
    speaker.playing(0)
    speaker.ended()
    spoken = speaker.result(timeout=10)
    assert spoken.spoken_chars == len(text) and spoken.words_heard == 8


def test_a_session_lost_mid_answer_resumes_and_the_answer_is_spoken_whole(sim, voice):
    sim.tts.speed = 1.0  # real time: the answer is still being made when the service fails
    page = Page()
    speaker = StreamSpeaker(page.send, voice, on_all_sent=page.all_sent)
    for piece in tokens(ANSWER):
        speaker.feed(piece)
    speaker.finish()
    page.wait(lambda: page.clips)
    sim.tts.drop_sessions()  # a service restart: Error, close 1012 (retryable)
    page.wait(lambda: page.count is not None, timeout=60)  # every clip sent
    speaker.playing(0)
    speaker.ended()
    spoken = speaker.result(timeout=10)
    # a new session took the answer up from its first unspoken word (tests/
    # test_talkback_faults.py checks the audio itself)
    assert spoken.error is None and spoken.reconnects == 1
    assert spoken.spoken_chars == len(ANSWER) and not spoken.interrupted
    assert voice.connects == 2 and sim.tts.stats["sessions"] == 2


def test_the_service_ending_an_idle_session_is_not_an_error_for_the_next_answer(sim, voice):
    speaker, page = speak_answer(voice, "Hello there. ")
    page.wait(lambda: page.count is not None)
    speaker.playing(0)
    speaker.ended()
    speaker.result(timeout=10)
    sim.tts.drop_sessions()  # between answers (its hour is up, a restart)
    speaker, page = speak_answer(voice, "Still here. ")
    page.wait(lambda: page.count is not None)
    speaker.playing(0)
    speaker.ended()
    assert speaker.result(timeout=10).error is None
    assert page.count >= 1 and voice.connects == 2


def test_a_session_reading_answers_aloud_records_what_read_them_and_their_cost(sim, sample,
                                                                              tmp_path):
    s = vnb.Session("talk", home=str(tmp_path / "home"), speak="assemblyai")
    turn = s.ask_audio(sample)
    assert (turn.tts_backend, turn.tts_model, turn.tts_voice) == (
        "assemblyai", "assemblyai-tts-1", "aai-jane")
    assert turn.spoken_chars == len(turn.answer)
    assert sim.tts.stats["characters_billed"] == len(turn.answer)
    # synthesis is in the turn's cost: $15 per million characters
    quiet = vnb.Session("quiet", home=str(tmp_path / "home")).ask_audio(sample)
    assert turn.cost_usd == pytest.approx(quiet.cost_usd + len(turn.answer) * 15e-6)
