"""Talk back through a network that fails, against the simulators over loopback: a speech
stream that drops mid-answer (a WebSocket session cut with no close frame or closed 1011, an
HTTP body cut) carries on from the first words not yet received, and an answer whose chat
stream is cut is asked for its rest once; the person hears every word, none twice."""

from __future__ import annotations

import io
import os
import shutil
import wave

import pytest

import voicenb as vnb
from voicenb import llm
from voicenb._talkback import MAX_RESUMES, Speaker, StreamSpeaker
from voicenb.tts import assemblyai

from tests.test_tts_assemblyai import Page as _Page

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None and not os.environ.get("CI"),
    reason="the simulator speaks with espeak-ng (apt-get install espeak-ng)")

ANSWER = ("Paris is the capital of France. It lies on the river Seine, in the north. "
          "About two million people live in the city itself.")
#: a whole word of the simulator's speech is shorter than this; a sentence is longer
ONE_WORD_S = 0.7
#: the pause after a sentence, the longest stretch of silence in the simulator's speech
PAUSE_S = 0.4


class Page(_Page):
    """The browser's player (tests/test_tts_assemblyai.py), with all its audio end to end."""

    def wait_all_sent(self, timeout: float = 60.0) -> None:
        self.wait(lambda: self.count is not None, timeout)

    def pcm(self) -> bytes:
        out = b""
        for clip in self.clips:
            with wave.open(io.BytesIO(clip)) as w:
                out += w.readframes(w.getnframes())
        return out


def read_aloud(voice: assemblyai.Voice, text: str = ANSWER) -> tuple[vnb.Spoken, Page]:
    """Read ``text`` through ``voice``'s session and play all of it."""
    page = Page()
    speaker = StreamSpeaker(page.send, voice, on_all_sent=page.all_sent)
    speaker.feed(text)  # one Generate: the session's later frames are its audio
    speaker.finish()
    page.wait_all_sent()
    speaker.playing(len(page.clips) - 1)  # the player started each clip it was sent
    speaker.ended()
    return speaker.result(timeout=30), page


def seconds(pcm: bytes) -> float:
    return len(pcm) / 2 / assemblyai.SAMPLE_RATE


@pytest.fixture
def tts_sim(sim):
    sim.tts.speed = None  # audio as fast as it is made: the fault is by frames, not time
    return sim


@pytest.fixture
def voice(tts_sim):
    v = assemblyai.Voice(vnb.Settings().resolved())
    yield v
    v.close()


@pytest.fixture
def heard_whole(tts_sim):
    """The answer's speech read through a session that did not fail."""
    v = assemblyai.Voice(vnb.Settings().resolved())
    try:
        return read_aloud(v)
    finally:
        v.close()


# -- the speech session drops mid-answer --------------------------------------------------------


@pytest.mark.parametrize("fault", [dict(kind="drop"), dict(kind="close", code=1011)],
                         ids=["dropped", "closed-1011"])
def test_a_speech_session_cut_mid_answer_carries_on_with_every_word_and_none_twice(
        tts_sim, voice, heard_whole, fault):
    whole, whole_page = heard_whole
    tts_sim.tts.faults.plan(after_frames=40, **fault)  # ~36 Audio frames into the answer
    spoken, page = read_aloud(voice)

    assert tts_sim.tts.stats["faults"] == 1 and voice.connects == 2
    assert spoken.error is None and spoken.reconnects == 1
    assert spoken.spoken_chars == len(ANSWER) == whole.spoken_chars
    assert spoken.words_heard == whole.words_heard == len(ANSWER.split())
    # The person heard the uninterrupted speech up to the cut, then the rest of it from the
    # first word not wholly received: a word cut in two is heard again whole, nothing else.
    ref, got = whole_page.pcm(), page.pcm()
    same = next((i for i, (a, b) in enumerate(zip(ref, got)) if a != b), min(len(ref),
                                                                            len(got)))
    assert 0 < same < len(ref)  # audio had begun, and did not end, before the cut
    assert ref.endswith(got[same:])
    assert -PAUSE_S < seconds(got) - seconds(ref) < ONE_WORD_S


def test_a_speech_session_that_keeps_dropping_stops_speaking_and_keeps_what_was_heard(
        tts_sim, voice):
    tts_sim.tts.faults.plan("drop", after_frames=12, times=-1)  # every session, each time
    spoken, page = read_aloud(voice)

    assert voice.connects == MAX_RESUMES + 1
    assert spoken.reconnects == MAX_RESUMES
    assert spoken.error and f"dropped {MAX_RESUMES + 1} times" in spoken.error
    assert page.count == len(page.clips) > 0
    assert 0 < spoken.spoken_chars < len(ANSWER) and not spoken.interrupted


def test_a_dropped_session_is_recorded_in_the_turn_with_all_of_its_answer_heard(
        tts_sim, voice, tmp_path):
    session = vnb.Session("talk", home=str(tmp_path / "home"))
    page = Page()
    speaker = StreamSpeaker(page.send, voice, on_all_sent=page.all_sent)
    tts_sim.tts.faults.plan("drop", after_frames=40)
    turn = session.ask_text("What is the capital of France?", on_token=speaker.feed)
    speaker.finish()
    page.wait_all_sent()
    speaker.playing(len(page.clips) - 1)  # the player started each clip it was sent
    speaker.ended()
    spoken = speaker.result(timeout=30)
    turn = session.record_speech(turn.turn, spoken_chars=spoken.spoken_chars,
                                 tts_model=spoken.tts_model, tts_backend=spoken.backend,
                                 words_heard=spoken.words_heard)

    assert spoken.reconnects == 1 and spoken.error is None
    assert turn.status == "ok" and turn.spoken_chars == len(turn.answer)
    assert turn.words_heard == len(turn.answer.split())


# -- a sentence's speech body is cut -----------------------------------------------------------


@pytest.mark.parametrize("backend, path", [("assemblyai", "/v1/speech"),
                                           ("openai", "/v1/audio/speech")])
def test_a_sentence_whose_speech_is_cut_midway_is_asked_again_and_said_once(
        sim, backend, path, recwarn):
    def say() -> tuple[vnb.Spoken, list[bytes]]:
        page = Page()
        speaker = Speaker(page.send, backend=backend, on_all_sent=page.all_sent)
        speaker.feed(ANSWER)
        speaker.finish()
        page.wait_all_sent()
        speaker.ended()
        return speaker.result(timeout=30), page.clips

    sim.tts.speed = None  # AssemblyAI as fast as it is made
    whole, whole_clips = say()
    sim.inject("cut", path, after=2)  # the next body stops after two of its chunks
    spoken, clips = say()

    assert [h.kind for h in sim.app.fault_log] == ["cut"]
    assert spoken.error is None and spoken.sentences == whole.sentences == 3
    assert clips == whole_clips  # each sentence once, whole


# -- the answer's chat stream is cut --------------------------------------------------------------


def test_an_answer_stream_cut_midway_is_shown_and_spoken_whole_and_once(sim, voice):
    whole = vnb.ask("What is the capital of France?").text
    sim.inject("cut", "/v1/chat/completions", after=6)  # the role, then five words
    shown: list[str] = []
    page = Page()
    speaker = StreamSpeaker(page.send, voice, on_all_sent=page.all_sent)

    def on_token(piece: str) -> None:
        shown.append(piece)
        speaker.feed(piece)

    answer = vnb.ask("What is the capital of France?", on_token=on_token)
    speaker.finish()
    page.wait_all_sent()
    speaker.playing(len(page.clips) - 1)  # the player started each clip it was sent
    speaker.ended()
    spoken = speaker.result(timeout=30)

    assert answer.text == "".join(shown) == whole and answer.retries == 1
    assert sim.stats["chat_completions"] == 3  # the whole one, the cut one, its rest
    assert spoken.text == whole and spoken.spoken_chars == len(whole)
    assert spoken.words_heard == len(whole.split())
    assert answer.prompt_tokens > 0 and answer.completion_tokens >= len(whole.split())


def test_a_continuation_that_repeats_the_end_of_what_was_said_is_not_said_twice():
    said = "Paris is the capital of France. It lies on the "
    assert llm._unrepeated(said, "It lies on the river Seine.") == "river Seine."
    assert llm._unrepeated(said, "river Seine.") == "river Seine."
    assert llm._unrepeated(said, said + "river Seine.") == "river Seine."
    assert llm._unrepeated(said, "the river") == "the river"  # too short to be a repeat


def test_an_answer_cut_twice_is_an_error_recorded_with_what_was_said(sim, tmp_path):
    session = vnb.Session("talk", home=str(tmp_path / "home"))
    sim.inject("cut", "/v1/chat/completions", after=6, times=2)
    shown: list[str] = []
    with pytest.raises(vnb.ServiceError, match="cut off, and again") as caught:
        session.ask_text("What is the capital of France?", on_token=shown.append)

    said = "".join(shown)
    assert said and caught.value.said == said  # each piece shown once, the rest never came
    row = session.history.iloc[-1]
    assert row.status == "error" and said in row.error and "Ask again" in row.error
