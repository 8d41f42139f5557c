"""Plausible, reproducible recognition mistakes for registered text (``word_error_rate``).

A simulated transcript of a known clip is its registered text exactly, so its word error
rate would be a meaningless 0. With a rate set, each clip gets ``rate x words`` mistakes
(rounded up or down at random, in proportion), at words drawn at random: a substitution (half
the time), a deletion or an insertion (a quarter each), each one error, so jiwer's WER of
every clip, and of a dozen clips together, stays close to the rate (independent per-word
mistakes made the WER of a few short clips swing from half to three times the rate). The
mistakes depend only on (seed, service, clip): the same clip gets the same transcript from
the same service however often and in whatever order it is asked, and each service
(``assemblyai``, ``sync``, ``openai``, ``streaming``) makes its own. Every draw is made
whatever the rate, so the mistakes at a higher rate include those at a lower one.

>>> mistaken("What is the capital of France?", 0.0, seed=0, service="sync", clip="ab")
'What is the capital of France?'
>>> mistaken("What is the capital of France?", 0.5, seed=0, service="sync", clip="ab")
'What the no of?'
"""

from __future__ import annotations

import hashlib
import random

#: what a word is misheard as: short, frequent English words (never the word itself)
COMMON_WORDS = (
    "the", "a", "an", "and", "of", "to", "in", "is", "it", "that", "for", "on", "was",
    "with", "as", "at", "by", "this", "but", "from", "or", "had", "are", "not", "all",
    "were", "when", "we", "there", "can", "been", "has", "more", "if", "will", "so", "no",
    "out", "up", "what", "about", "them", "then", "than", "into", "some", "her", "him",
)
#: (substitution, deletion) thresholds of one draw: 50 %, 25 %, and insertion the rest
_SUBSTITUTE, _DELETE = 0.5, 0.75
_TRAILING = ".,?!;:\u2026"


def _key(word: str) -> str:
    return "".join(ch for ch in word.lower() if ch.isalnum() or ch == "'")


def _rng(seed: int | str | None, service: str, clip: str) -> random.Random:
    # A hash of the parts, not hash(): str hashes change from one process to the next.
    digest = hashlib.sha256(f"{seed}\x00{service}\x00{clip}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _other_word(word: str, pick: float) -> str:
    """A common word in place of ``word``, never one that reads as ``word`` itself."""
    candidates = [w for w in COMMON_WORDS if w != _key(word)]
    return candidates[int(pick * len(candidates))]


def mistaken(text: str, rate: float, *, seed: int | str | None, service: str,
             clip: str) -> str:
    """``text`` as a recogniser with word error rate ``rate`` would get it wrong, the same
    way every time for the same ``seed``, ``service`` and ``clip`` (its sha256 or text).
    Final punctuation stays; a capital at the start stays at the start."""
    words = text.split()
    if rate <= 0 or not words:
        return text
    bare = words[-1].rstrip(_TRAILING)
    end = words[-1][len(bare):] if bare else ""
    if bare:
        words[-1] = bare
    elif len(words) > 1:  # punctuation on its own ("raining ?"): it stays at the end
        end = " " + words.pop()
    rng = _rng(seed, service, clip)
    rounding = rng.random()
    # Three draws for every word, used or not, so one word's fate never shifts another's:
    # the words with the lowest first draw are the ones misheard.
    draws = [(rng.random(), rng.random(), rng.random()) for _ in words]
    count = min(len(words), int(rate * len(words) + rounding))
    misheard = set(sorted(range(len(words)), key=lambda i: draws[i][0])[:count])
    out: list[str] = []
    for i, word in enumerate(words):
        _, kind, pick = draws[i]
        if i not in misheard:
            out.append(word)
        elif kind < _SUBSTITUTE:
            out.append(_other_word(word, pick))
        elif kind < _DELETE:
            if out or i < len(words) - 1:
                continue  # a deletion
            out.append(word)  # ... unless it would leave no word at all
        else:
            out += [word, _other_word(word, pick)]
    if text[:1].isupper() and out[0][:1].islower():
        out[0] = out[0][:1].upper() + out[0][1:]
    return " ".join(out) + end
