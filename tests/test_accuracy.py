"""Word error rate: the normalisation, the counts, corpus WER and its intervals, each checked
against values worked out by hand."""

from __future__ import annotations

import pytest

import voicenb as vnb
from voicenb.accuracy import (
    Errors,
    bootstrap_wer,
    corpus_wer,
    normalise,
    paired_difference,
    word_errors,
)


@pytest.mark.parametrize("text, expected", [
    ("What is the capital of France?", "what is the capital of france"),
    ("Twenty-one", "twenty one"),
    ("21", "twenty one"),
    ("It costs 1,200 dollars.", "it costs one thousand two hundred dollars"),
    ("I'm 'here'", "i'm here"),
    ("the 2nd of May", "the 2nd of may"),
    ("3.5 kg", "3 5 kg"),
    ("ＷＩＤＥ  text", "wide text"),
    (None, ""),
])
def test_normalisation(text, expected):
    assert normalise(text) == expected


def test_errors_are_counted_word_by_word():
    # the cat sat on the mat / the cat sit on mat: "sat"->"sit", "the" deleted
    e = word_errors("The cat sat on the mat.", "the cat sit on mat")
    assert (e.substitutions, e.deletions, e.insertions, e.reference_words) == (1, 1, 0, 6)
    assert e.errors == 2 and e.wer == pytest.approx(2 / 6)
    assert word_errors("the cat sat", "the cat sat down").insertions == 1
    assert word_errors("21 apples", "twenty-one apples").errors == 0
    assert word_errors("", "hello") == Errors(0, 0, 1, 0) and Errors(0, 0, 1, 0).wer is None
    assert word_errors("two words", None) == Errors(0, 2, 0, 2)


def test_corpus_wer_sums_errors_over_words_rather_than_averaging_rates():
    clips = [Errors(1, 1, 0, 6), Errors(0, 0, 0, 2)]
    assert corpus_wer(clips) == pytest.approx(2 / 8)  # a mean of rates would be 1/6
    assert corpus_wer([]) is None and corpus_wer([Errors(0, 0, 2, 0)]) is None


def test_the_bootstrap_interval_matches_the_resampling_distribution():
    # Two clips of 5 words, one all wrong: a resample has both good (p=1/4, WER 0), one of
    # each (1/2, 0.5) or both bad (1/4, 1.0), so the 2.5th and 97.5th percentiles are 0 and 1.
    assert bootstrap_wer([Errors(0, 0, 0, 5), Errors(5, 0, 0, 5)]) == (0.0, 1.0)
    same = [Errors(1, 0, 0, 4)] * 10  # every clip alike: no spread
    assert bootstrap_wer(same) == (0.25, 0.25)
    assert bootstrap_wer([Errors(0, 0, 0, 0)]) is None
    assert bootstrap_wer(same) == bootstrap_wer(same)  # seeded: repeatable


def test_a_paired_difference_cancels_what_the_clips_share():
    base = [Errors(i % 3, 0, 0, 5) for i in range(12)]
    worse = [Errors(e.substitutions + 1, 0, 0, 5) for e in base]  # one more error a clip
    diff, (lo, hi) = paired_difference(worse, base)
    assert diff == pytest.approx(0.2) and (lo, hi) == (pytest.approx(0.2), pytest.approx(0.2))
    assert paired_difference(base, base) == (0.0, (0.0, 0.0))
    with pytest.raises(vnb.ConfigError, match="same clips"):
        paired_difference(base, base[:3])
