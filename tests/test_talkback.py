"""Talk back: an answer is spoken sentence by sentence while it streams (espeak-ng, or OpenAI's
audio.speech against the simulator), stops on barge-in, and says how much of it was heard."""

from __future__ import annotations

import io
import os
import shutil
import threading
import time
import wave

import pytest

import voicenb as vnb
from voicenb import tts
from voicenb._talkback import Speaker, sentences
from voicenb.sim._openai import speech_audio

needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None and not os.environ.get("CI"),
    reason="espeak-ng is not installed (apt-get install espeak-ng)")

# one answer, as three sentences; each takes the space after it
S = ["Paris is the capital of France. ", "It lies on the river Seine, in the north. ",
     "About two million people live in the city itself."]
TEXT = "".join(S)
#: the simulator's speech: a 0.12 s beep and a 0.06 s gap a word, at 24 kHz
SIM_FRAMES_A_WORD = 2880 + 1440


def tokens(text: str) -> list[str]:
    """Word-sized pieces, as a model streams them."""
    return [word + " " for word in text.split(" ")[:-1]] + [text.split(" ")[-1]]


class Player:
    """Stands in for the browser: keeps each clip it is sent, in order, and when."""

    def __init__(self) -> None:
        self.clips: list[tuple[int, bytes]] = []
        self.at: list[float] = []
        self.counts: list[int] = []  # what on_all_sent said (the player's "said" message)
        self.cond = threading.Condition()

    def send(self, seq: int, wav: bytes) -> None:
        with self.cond:
            self.clips.append((seq, wav))
            self.at.append(time.monotonic())
            self.cond.notify_all()

    def all_sent(self, count: int) -> None:
        with self.cond:
            self.counts.append(count)
            self.cond.notify_all()

    def wait_all_sent(self, timeout: float = 30.0) -> list[int]:
        with self.cond:
            self.cond.wait_for(lambda: self.counts, timeout)
            return self.counts

    def speaker(self, **kw) -> Speaker:
        return Speaker(self.send, on_all_sent=self.all_sent, **kw)

    def wait_for(self, n: int, timeout: float = 30.0) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: len(self.clips) >= n, timeout)

    def seconds(self, seq: int) -> float:
        with wave.open(io.BytesIO(self.clips[seq][1])) as w:
            return w.getnframes() / w.getframerate()

    def play_all(self, speaker: Speaker) -> None:
        for seq, _ in self.clips:
            speaker.playing(seq)
        speaker.ended()


def feed(speaker: Speaker, text: str) -> None:
    for piece in tokens(text):
        speaker.feed(piece)


# -- cutting streamed text into sentences -------------------------------------------------------


def test_a_sentence_ends_at_punctuation_followed_by_whitespace():
    assert sentences("Paris is the capital. Is it big? Yes, it is! And", final=False) == (
        ["Paris is the capital.", "Is it big? Yes, it is!"], "And")


def test_decimals_and_a_dot_with_nothing_after_it_yet_do_not_end_a_sentence():
    assert sentences("Pi is about 3.14 and e is 2.71. Next", final=False) == (
        ["Pi is about 3.14 and e is 2.71."], "Next")
    assert sentences("The ticket costs 3.", final=False) == ([], "The ticket costs 3.")


def test_abbreviations_and_initials_do_not_end_a_sentence_but_i_does():
    text = "I met Dr. Smith, e.g. at the U.S. embassy with J. K. Rowling. Neither did I. Then"
    assert sentences(text, final=False) == (
        ["I met Dr. Smith, e.g. at the U.S. embassy with J. K. Rowling.", "Neither did I."],
        "Then")


def test_list_numbers_and_short_pieces_are_joined_to_the_next():
    text = "Steps:\n1. Open the box.\n2. Take it out.\nYes. That is all of it.\n"
    assert sentences(text, final=False) == (
        ["Steps:\n1. Open the box.", "2. Take it out.", "Yes. That is all of it."], "")


def test_a_line_break_ends_a_sentence():
    assert sentences("A heading without a dot\nThe body line follows\nand", final=False) == (
        ["A heading without a dot", "The body line follows"], "and")


def test_final_makes_the_rest_the_last_sentence_if_it_says_anything():
    assert sentences("That is the answer. ok", final=True) == (["That is the answer.", "ok"], "")
    assert sentences("Yes.", final=True) == (["Yes."], "")
    assert sentences("That is the answer.\n---", final=True) == (["That is the answer."], "---")
    assert sentences("   ", final=True) == ([], "   ")


def test_a_run_on_sentence_is_cut_at_a_comma():
    text = ", ".join(["apples and pears"] * 40)
    found, rest = sentences(text, final=False)
    assert found and all(len(s) <= 300 and s.endswith(",") for s in found)
    assert " ".join(found + [rest]) == text


def test_cutting_as_it_streams_gives_the_sentences_of_the_whole_text():
    text = ("Dr. Who arrived at 3.30 p.m. today.\nHe said: \u201cHello there.\u201d Then"
            " he left!\n\n1. First point\n2. Second point, longer\nThe end")
    streamed, rest = [], ""
    for ch in text:
        found, rest = sentences(rest + ch, final=False)
        streamed += found
    found, rest = sentences(rest, final=True)
    assert streamed + found == sentences(text, final=True)[0] == [
        "Dr. Who arrived at 3.30 p.m. today.", "He said: \u201cHello there.\u201d",
        "Then he left!", "1. First point", "2. Second point, longer", "The end"]


# -- speaking as it streams (espeak-ng) --------------------------------------------------------


@needs_espeak
def test_each_sentence_is_sent_as_a_wav_while_the_answer_still_streams():
    player = Player()
    speaker = player.speaker(backend="espeak")
    feed(speaker, S[0])
    # the first sentence reaches the player before the rest of the answer is even fed
    assert player.wait_for(1, timeout=20)
    feed(speaker, S[1] + S[2])
    finished_at = time.monotonic()
    speaker.finish()
    assert player.wait_all_sent() == [3]
    assert player.at[0] < finished_at
    assert [seq for seq, _ in player.clips] == [0, 1, 2]
    for seq, _ in player.clips:
        assert player.seconds(seq) > 1.0
    player.play_all(speaker)
    spoken = speaker.result(timeout=10)
    assert (spoken.text, spoken.spoken_chars, spoken.sentences) == (TEXT, len(TEXT), 3)
    assert not spoken.interrupted and spoken.error is None
    assert spoken.tts_model == "espeak" and 0 < spoken.tts_ttfb_s < 5
    assert spoken.first_audio_at is not None and spoken.first_audio_at > finished_at - 5


@needs_espeak
def test_barge_in_stops_the_speaking_and_counts_what_was_heard():
    player = Player()
    speaker = player.speaker(backend="espeak")
    feed(speaker, S[0] + S[1])
    assert player.wait_for(2)
    speaker.playing(0)
    speaker.playing(1)
    speaker.cancel()
    assert player.counts == [2]  # told before cancel() returns
    feed(speaker, S[2] + " And one more sentence that is never spoken.")
    speaker.finish()
    d0, d1 = player.seconds(0), player.seconds(1)
    speaker.hushed({"0": d0, "1": d1 / 3})  # as the browser reports it, through JSON
    spoken = speaker.result(timeout=5)
    time.sleep(0.5)  # espeak-ng says a sentence in ~15 ms: a stray one would be here by now
    assert [seq for seq, _ in player.clips] == [0, 1] and player.counts == [2]
    assert spoken.interrupted and spoken.sentences == 2
    assert spoken.spoken_chars == len(S[0]) + int(len(S[1]) * (d1 / 3) / d1)
    assert spoken.spoken_chars == 32 + 14
    assert spoken.text.startswith(TEXT)


@needs_espeak
def test_a_player_that_ran_dry_mid_answer_does_not_end_the_turn():
    player = Player()
    speaker = player.speaker(backend="espeak")
    feed(speaker, S[0])
    assert player.wait_for(1)
    speaker.playing(0)
    speaker.ended()  # played all it had; the model is still writing
    results = []
    waiter = threading.Thread(target=lambda: results.append(speaker.result(timeout=30)))
    waiter.start()
    feed(speaker, S[1] + S[2])
    speaker.finish()
    assert player.wait_for(3)
    time.sleep(0.2)
    assert waiter.is_alive()
    speaker.playing(1)
    speaker.playing(2)
    speaker.ended()
    waiter.join(5)
    assert results[0].spoken_chars == len(TEXT) and not results[0].interrupted


@needs_espeak
def test_without_player_reports_result_gives_up_counting_only_what_it_said_it_played():
    player = Player()
    speaker = player.speaker(backend="espeak")
    feed(speaker, TEXT)
    speaker.finish()
    assert player.wait_for(3)
    started = time.monotonic()
    spoken = speaker.result(timeout=0.3)
    assert 0.3 <= time.monotonic() - started < 2
    assert (spoken.sentences, spoken.spoken_chars, spoken.interrupted) == (3, 0, False)
    assert spoken.first_audio_at is None
    speaker.playing(0)  # the first sentence started, then the page went quiet
    started = time.monotonic()
    spoken = speaker.result(idle=0.2)
    audio = sum(sent.seconds for sent in speaker._sent)  # all still to play from sentence 0
    assert audio + 0.2 < time.monotonic() - started < audio + 1.5
    assert spoken.spoken_chars == speaker._sent[0].chars


@needs_espeak
def test_a_barge_in_after_the_whole_answer_played_interrupts_nothing():
    player = Player()
    speaker = player.speaker(backend="espeak")
    feed(speaker, TEXT + "\n")
    speaker.finish()
    assert player.wait_for(3)
    player.play_all(speaker)
    speaker.cancel()
    speaker.hushed({0: 0.1})
    spoken = speaker.result(timeout=5)
    assert (spoken.interrupted, spoken.spoken_chars) == (False, len(TEXT) + 1)


def test_with_nothing_to_say_result_returns_at_once():
    player = Player()
    speaker = player.speaker(backend="espeak")
    speaker.feed("  \n")
    speaker.finish()
    assert player.counts == [0]
    started = time.monotonic()
    spoken = speaker.result(timeout=10)
    assert time.monotonic() - started < 0.5
    assert (spoken.sentences, spoken.spoken_chars, spoken.tts_model, spoken.error) == (
        0, 0, None, None)


@needs_espeak
def test_an_unknown_espeak_voice_is_reported_not_raised():
    player = Player()
    speaker = player.speaker(backend="espeak", voice="robot")
    feed(speaker, TEXT)
    speaker.finish()
    spoken = speaker.result(timeout=10)
    assert spoken.sentences == 0 and player.clips == []
    assert spoken.error.startswith("Speaking stopped at sentence 1: espeak-ng could not")
    assert "espeak-ng --voices" in spoken.error


@needs_espeak
def test_a_player_that_cannot_be_sent_to_stops_the_speaking():
    def broken(seq: int, wav: bytes) -> None:
        raise ConnectionError("comm closed")

    speaker = Speaker(broken, backend="espeak")
    feed(speaker, TEXT)
    speaker.finish()
    spoken = speaker.result(timeout=10)
    assert spoken.sentences == 0 and spoken.spoken_chars == 0
    assert "could not be sent it (ConnectionError: comm closed)" in spoken.error


def test_an_unknown_backend_is_refused_at_once():
    with pytest.raises(vnb.ConfigError, match="openai, espeak, auto"):
        Speaker(Player().send, backend="festival")


# -- OpenAI audio.speech, against the simulator ------------------------------------------------


def test_openai_sends_each_sentence_as_wav_and_times_the_first_byte():
    player = Player()
    with vnb.sim.running(ttft=0.3) as sim:
        speaker = player.speaker(backend="openai")
        feed(speaker, TEXT)
        speaker.finish()
        assert player.wait_all_sent() == [3]
        player.play_all(speaker)
        spoken = speaker.result(timeout=10)
        assert sim.stats["audio_speech"] == 3
    assert spoken.tts_model == "gpt-4o-mini-tts" and 0.3 <= spoken.tts_ttfb_s < 3
    assert (spoken.spoken_chars, spoken.sentences, spoken.error) == (len(TEXT), 3, None)
    for (seq, wav), sentence in zip(player.clips, S, strict=True):
        with wave.open(io.BytesIO(wav)) as w:
            assert (w.getframerate(), w.getnchannels()) == (24000, 1)
            assert w.getnframes() == SIM_FRAMES_A_WORD * len(sentence.split())
        assert len(wav) == 44 + 2 * SIM_FRAMES_A_WORD * len(sentence.split())


def test_openai_voice_and_model_are_chosen():
    player = Player()
    with vnb.sim.running():
        speaker = player.speaker(backend="openai", voice="coral", model="tts-1")
        feed(speaker, S[0])
        speaker.finish()
        assert player.wait_for(1)
        spoken = speaker.result(timeout=0.2)
    assert spoken.tts_model == "tts-1" and spoken.sentences == 1


def test_feed_never_waits_for_synthesis():
    player = Player()
    with vnb.sim.running(ttft=1.0):  # each sentence takes a second to say
        speaker = player.speaker(backend="openai")
        started = time.monotonic()
        feed(speaker, TEXT)
        speaker.finish()
        assert time.monotonic() - started < 0.5
        assert player.clips == []
        assert player.wait_for(3)


def test_a_sentence_being_synthesised_at_barge_in_is_never_sent():
    player = Player()
    with vnb.sim.running(ttft=0.5) as sim:
        speaker = player.speaker(backend="openai")
        feed(speaker, S[0])
        assert player.wait_for(1)
        feed(speaker, S[1])  # its request is under way for half a second
        time.sleep(0.1)
        speaker.cancel()
        feed(speaker, S[2])
        speaker.finish()
        time.sleep(1.0)
        assert sim.stats["audio_speech"] == 2  # it was said, and thrown away
    assert [seq for seq, _ in player.clips] == [0] and player.counts == [1]
    speaker.playing(0)  # the player started the one sentence sent, then said no more
    spoken = speaker.result(timeout=0.2)
    assert (spoken.interrupted, spoken.sentences, spoken.spoken_chars) == (True, 1, len(S[0]))


def test_a_speech_error_is_reported_and_nothing_more_is_said(sim):
    sim.inject("500", "/v1/audio/speech", times=5)
    player = Player()
    speaker = player.speaker(backend="openai", settings=vnb.Settings(max_retries=0))
    feed(speaker, TEXT)
    speaker.finish()
    spoken = speaker.result(timeout=10)
    assert spoken.error.startswith("Speaking stopped at sentence 1: OpenAI speech failed "
                                   "with 500")
    assert (spoken.sentences, spoken.spoken_chars, spoken.tts_model) == (
        0, 0, "gpt-4o-mini-tts")
    assert sim.stats["fault:500"] == 1 and player.clips == []
    assert player.wait_all_sent() == [0]


def test_a_speech_error_mid_answer_keeps_what_was_said(sim):
    player = Player()
    speaker = player.speaker(backend="openai", settings=vnb.Settings(max_retries=0))
    feed(speaker, S[0])
    assert player.wait_for(1)
    sim.inject("500", "/v1/audio/speech", times=5)
    feed(speaker, S[1] + S[2])
    speaker.finish()
    assert player.wait_all_sent() == [1]
    player.play_all(speaker)
    spoken = speaker.result(timeout=10)
    assert spoken.error.startswith("Speaking stopped at sentence 2:")
    assert (spoken.sentences, spoken.spoken_chars, spoken.interrupted) == (1, len(S[0]), False)
    assert sim.stats["audio_speech"] == 1 and sim.stats["fault:500"] == 1


def test_an_unknown_openai_voice_names_the_voices(sim):
    speaker = Speaker(Player().send, backend="openai", voice="robot")
    feed(speaker, TEXT)
    speaker.finish()
    spoken = speaker.result(timeout=10)
    assert "'robot'" in spoken.error and "alloy" in spoken.error


def test_a_wav_streamed_with_placeholder_sizes_is_rewritten_with_real_ones():
    # OpenAI streams WAV before its length is known: 0xFFFFFFFF as the RIFF and data sizes
    real = speech_audio("one two three", "wav")
    streamed = real[:4] + b"\xff" * 4 + real[8:40] + b"\xff" * 4 + real[44:] + b"\x00"
    wav, seconds = tts._clean_wav(streamed, "OpenAI")
    assert wav == real and seconds == pytest.approx(3 * SIM_FRAMES_A_WORD / 24000)


def test_something_that_is_not_wav_is_a_service_error():
    with pytest.raises(vnb.ServiceError, match="not a PCM WAV file"):
        tts._clean_wav(b"ID3 not a wav at all", "OpenAI")


@needs_espeak
def test_a_worker_that_idled_out_is_restarted_by_the_next_sentence(monkeypatch):
    from voicenb import _talkback

    monkeypatch.setattr(_talkback, "IDLE_EXIT_S", 0.1)  # the model pauses longer than this
    player = Player()
    speaker = player.speaker(backend="espeak")
    feed(speaker, S[0])
    assert player.wait_for(1)
    time.sleep(0.5)
    assert speaker._worker is None  # it exited...
    feed(speaker, S[1])
    speaker.finish()
    assert player.wait_for(2)  # ...and the next sentence started another
    assert [seq for seq, _ in player.clips] == [0, 1]


@needs_espeak
def test_a_failing_on_all_sent_does_not_stop_the_answer():
    def broken(count: int) -> None:
        raise RuntimeError("widget gone")

    player = Player()
    speaker = Speaker(player.send, backend="espeak", on_all_sent=broken)
    feed(speaker, TEXT)
    speaker.finish()
    assert player.wait_for(3)
    player.play_all(speaker)
    spoken = speaker.result(timeout=10)
    assert (spoken.sentences, spoken.spoken_chars, spoken.error) == (3, len(TEXT), None)


@needs_espeak
def test_ended_after_all_were_sent_counts_a_sentence_the_player_skipped():
    player = Player()
    speaker = player.speaker(backend="espeak")
    feed(speaker, TEXT)
    speaker.finish()
    assert player.wait_all_sent() == [3]
    speaker.playing(0)
    speaker.playing(1)  # sentence 2 would not decode in the browser: no "playing" for it
    speaker.ended()
    started = time.monotonic()
    spoken = speaker.result(timeout=10)
    assert time.monotonic() - started < 1
    assert (spoken.spoken_chars, spoken.interrupted) == (len(TEXT), False)
