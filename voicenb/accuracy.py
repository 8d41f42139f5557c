"""How accurate a transcript is: word error rate after one documented normalisation, summed
over a corpus, with bootstrap intervals (the accuracy part of comparing speech-to-text
variants on the same clips).

Normalisation, applied to reference and transcript alike before words are compared:

1. Unicode NFKC, then lower case;
2. whole numbers standing alone in digits become words (``21`` -> ``twenty one``; a
   thousands separator is allowed: ``1,200``; decimals and words with digits such as ``2nd``
   stay as they are; a year is read as a number: ``1999`` -> ``one thousand nine hundred
   ninety nine``, not ``nineteen ninety nine``), and hyphens between words become spaces, so
   ``21`` and ``twenty-one`` match;
3. every other character that is not a letter, a digit, an apostrophe inside a word or a
   space is dropped (``France?`` -> ``france``), and runs of spaces collapse.

Errors are counted by ``jiwer`` (substitutions + deletions + insertions against the words of
the reference). A corpus's WER is its errors summed over its reference words, not a mean of
per-clip rates, so a long clip weighs as much as its words. Intervals resample clips (the
unit that was sampled), 2,000 times, with a fixed seed: the same data gives the same interval.
"""

from __future__ import annotations

import random
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from ._errors import ConfigError

__all__ = ["normalise", "word_errors", "Errors", "corpus_wer", "bootstrap_wer",
           "paired_difference"]

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen "
         "fourteen fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**9, "billion"), (10**6, "million"), (1000, "thousand"))
#: a whole number standing alone: not part of a word (2nd, R2), a decimal or a longer number
_NUMBER = re.compile(r"(?<![\w.,])(?:\d{1,3}(?:,\d{3})+|\d+)(?!\w|[.,]\d)")
_DROP = re.compile(r"[^\w\s']|_")
_APOSTROPHE = re.compile(r"(?<!\w)'|'(?!\w)")
#: resamples behind every interval, and the seed that makes them repeatable
RESAMPLES = 2000
SEED = 0


def _words(n: int) -> str:
    """``n`` (0 <= n < 10**12) in English words, without "and"."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        rest = n % 100
        return _ONES[n // 100] + " hundred" + ("" if rest == 0 else " " + _words(rest))
    for size, name in _SCALES:
        if n >= size:
            rest = n % size
            return _words(n // size) + f" {name}" + ("" if rest == 0 else " " + _words(rest))
    raise AssertionError(n)  # pragma: no cover - the scales cover every n >= 1000


def _spell(match: re.Match[str]) -> str:
    n = int(match.group().replace(",", ""))
    return f" {_words(n)} " if n < 10**12 else match.group()


def normalise(text: str | None) -> str:
    """``text`` as words are compared (see the module's documentation)."""
    text = unicodedata.normalize("NFKC", text or "").lower().replace("\u2019", "'")
    text = _NUMBER.sub(_spell, text)
    text = re.sub(r"(?<=\w)-(?=\w)", " ", text)
    text = _APOSTROPHE.sub(" ", _DROP.sub(" ", text))
    return " ".join(text.split())


@dataclass(frozen=True)
class Errors:
    """Word errors of one transcript against its reference."""

    substitutions: int
    deletions: int
    insertions: int
    reference_words: int

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def wer(self) -> float | None:
        """Errors per reference word (None for an empty reference)."""
        return self.errors / self.reference_words if self.reference_words else None


def word_errors(reference: str | None, hypothesis: str | None) -> Errors:
    """Count the word errors of ``hypothesis`` against ``reference``, both normalised."""
    import jiwer

    ref, hyp = normalise(reference).split(), normalise(hypothesis).split()
    if not ref:
        return Errors(0, 0, len(hyp), 0)
    if not hyp:
        return Errors(0, len(ref), 0, len(ref))
    out = jiwer.process_words(" ".join(ref), " ".join(hyp))
    return Errors(out.substitutions, out.deletions, out.insertions, len(ref))


def corpus_wer(errors: Sequence[Errors]) -> float | None:
    """Errors summed over reference words summed (None when there are no reference words)."""
    words = sum(e.reference_words for e in errors)
    return sum(e.errors for e in errors) / words if words else None


def _resamples(n: int) -> list[list[int]]:
    rng = random.Random(SEED)
    return [[rng.randrange(n) for _ in range(n)] for _ in range(RESAMPLES)]


def _interval(values: list[float], level: float) -> tuple[float, float]:
    values.sort()
    tail = (1 - level) / 2
    lo = values[int(tail * (len(values) - 1))]
    hi = values[int(round((1 - tail) * (len(values) - 1)))]
    return lo, hi


def bootstrap_wer(errors: Sequence[Errors], level: float = 0.95
                  ) -> tuple[float, float] | None:
    """A percentile bootstrap interval for :func:`corpus_wer`, resampling clips."""
    if corpus_wer(errors) is None:
        return None
    rates = [corpus_wer([errors[i] for i in sample]) for sample in _resamples(len(errors))]
    return _interval([r for r in rates if r is not None], level)


def paired_difference(errors: Sequence[Errors], baseline: Sequence[Errors],
                      level: float = 0.95) -> tuple[float, tuple[float, float]] | None:
    """Corpus WER of ``errors`` minus that of ``baseline`` on the same clips (same order),
    and its bootstrap interval: both are resampled with the same clips each time, so what
    the clips share cancels out. None without reference words."""
    if len(errors) != len(baseline):
        raise ConfigError("A paired comparison needs the same clips in the same order: "
                          f"{len(errors)} transcripts against {len(baseline)}.")
    a, b = corpus_wer(errors), corpus_wer(baseline)
    if a is None or b is None:
        return None
    diffs = []
    for sample in _resamples(len(errors)):
        ra = corpus_wer([errors[i] for i in sample])
        rb = corpus_wer([baseline[i] for i in sample])
        if ra is not None and rb is not None:
            diffs.append(ra - rb)
    return a - b, _interval(diffs, level)
