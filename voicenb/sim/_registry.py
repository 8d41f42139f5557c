"""What the simulators 'hear': sha256 of the audio -> the text spoken in it."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..audio import Audio, AudioLike, as_audio, pcm_to_wav
from ._mistakes import mistaken

SAMPLES = Path(__file__).with_name("samples")


class Registry:
    """Known clips and their text; sample audio ships with its text in ``samples.json``.

    Every service hears through it, so ``word_error_rate`` (0 to 1) set here applies to all
    of them: registered text comes back with that rate of word errors, the same each time for
    a given ``seed``, service and clip (see :mod:`voicenb.sim._mistakes`). What the listener
    hears and the placeholder for unknown audio are left as they are.
    """

    def __init__(self, unknown_text: str | None = None,
                 listener: Callable[[Audio], str] | None = None, *,
                 word_error_rate: float = 0.0, seed: int | str | None = 0) -> None:
        #: what unregistered audio is heard as; ``{seconds}`` is replaced by its length
        self.unknown_text = unknown_text or (
            "(simulated transcript of {seconds:.1f} seconds of unregistered audio: pip install "
            "'voicenb[whisper]' to hear your own words offline)")
        #: how unregistered audio is heard when set: a local engine (see Simulator(hear=...))
        self.listener = listener
        self._heard: dict[str, str] = {}  # sha256 -> what the listener heard, once
        self._text: dict[str, str] = {}
        self._pcm: dict[str, bytes] = {}  # sha256 -> 16 kHz PCM, to recognise streamed audio
        self._errors: dict[str, str] = {}
        self._lock = threading.Lock()
        self.word_error_rate = word_error_rate
        # seed=None: mistakes still repeat within this registry, not across simulators
        self.seed = seed if seed is not None else hashlib.sha256(os.urandom(16)).hexdigest()

    @property
    def word_error_rate(self) -> float:
        """The fraction of registered words misheard (0: the registered text exactly)."""
        return self._word_error_rate

    @word_error_rate.setter
    def word_error_rate(self, rate: float) -> None:
        if not 0.0 <= float(rate) <= 1.0:
            raise ValueError(f"word_error_rate must be between 0 and 1, not {rate!r}")
        self._word_error_rate = float(rate)

    def load_dir(self, folder: str | Path) -> int:
        """Register every ``name -> text`` pair of ``folder/samples.json``; return the count."""
        folder = Path(folder)
        index = json.loads((folder / "samples.json").read_text(encoding="utf-8"))
        for name, text in index.items():
            self.register(folder / name, text)
        return len(index)

    def register(self, audio: AudioLike, text: str) -> str:
        """Make the simulators transcribe ``audio`` as ``text``; return its sha256."""
        sha = _sha(audio)
        try:
            pcm = as_audio(audio).pcm16k()
        except Exception:  # registering never fails for want of a decodable clip
            pcm = b""
        with self._lock:
            self._text[sha] = text
            if pcm:
                self._pcm[sha] = pcm
        return sha

    def fail(self, audio: AudioLike, error: str) -> str:
        """Make transcripts of ``audio`` end with status ``error`` and this message."""
        sha = _sha(audio)
        with self._lock:
            self._errors[sha] = error
        return sha

    def clear_failures(self) -> None:
        with self._lock:
            self._errors.clear()

    def text(self, sha: str) -> str | None:
        """The registered text of the clip, exactly (None: not registered)."""
        with self._lock:
            return self._text.get(sha)

    def _misheard(self, sha: str, text: str, service: str) -> str:
        return mistaken(text, self.word_error_rate, seed=self.seed, service=service, clip=sha)

    def hear_pcm(self, pcm: bytes, seconds: float, *, service: str = "",
                 remember: bool = True, resampled: bool = False) -> str:
        """The text of the registered clip this 16 kHz mono PCM comes from (found by its
        samples, with ``service``'s mistakes), or what unregistered audio is heard as
        (``remember=False``: not kept, for the many partial stretches of a stream).

        ``resampled``: the audio went through other sample rates on its way (a client sent
        24 kHz), so no sample is exact: a clip is found by its loudness contour instead."""
        probe = _probe(pcm)
        if probe or resampled:
            with self._lock:
                known = list(self._pcm.items())
            for sha, clip in known:
                if probe and probe in clip:
                    return self._misheard(sha, self._text[sha], service)
            if resampled and (sha := _closest(pcm, known)) is not None:
                return self._misheard(sha, self._text[sha], service)
        return self._unknown(lambda: Audio(pcm_to_wav(pcm)) if pcm else None, seconds,
                             remember=remember)

    def hear(self, sha: str, seconds: float, audio: AudioLike | None = None, *,
             service: str = "") -> str:
        """The registered text (with ``service``'s mistakes at ``word_error_rate``), or what
        unregistered audio is heard as (by the listener, when there is one and the audio is
        given).

        >>> registry = Registry(word_error_rate=0.0)
        >>> registry.hear(registry.register(b"RIFF", "Hello there."), 1.0)
        'Hello there.'
        """
        text = self.text(sha)
        if text is not None:
            return self._misheard(sha, text, service)
        return self._unknown(lambda: as_audio(audio) if audio is not None else None, seconds,
                             sha)

    def _unknown(self, clip: Callable[[], Audio | None], seconds: float,
                 sha: str | None = None, *, remember: bool = True) -> str:
        if self.listener is not None:
            audio = clip()
            if audio is not None:
                if not remember:
                    return self.listener(audio)
                key = sha or audio.sha256
                with self._lock:
                    heard = self._heard.get(key)
                if heard is None:
                    heard = self.listener(audio)
                    with self._lock:
                        self._heard[key] = heard
                return heard
        return self.unknown_text.replace("{seconds:.1f}", f"{seconds:.1f}")

    def error(self, sha: str) -> str | None:
        with self._lock:
            return self._errors.get(sha)


def _probe(pcm: bytes) -> bytes:
    """A short, loud, even-aligned stretch from the middle of ``pcm``: 64 samples that
    identify the clip they came from."""
    import array

    samples = array.array("h", pcm[: len(pcm) // 2 * 2])
    if len(samples) < 256:
        return b""
    middle = len(samples) // 2
    for start in range(middle, len(samples) - 64, 64):
        window = samples[start:start + 64]
        if max(window) - min(window) > 2000:
            return window.tobytes()
    return b""


#: the contour's step (10 ms at 16 kHz) and how alike two contours must be to be one clip
_STEP = 160
_ALIKE = 0.9
#: log loudness below which a 10 ms frame is quiet (an RMS of about 30: no speech)
_QUIET = 3.4


def _contour(pcm: bytes) -> Any:
    """Log loudness every 10 ms, from the first frame with sound to the last: what survives
    resampling, unlike the samples (and the quiet a turn detector adds around speech)."""
    import numpy as np

    x = np.frombuffer(pcm[: len(pcm) // (2 * _STEP) * 2 * _STEP], dtype="<i2")
    frames = x.astype(np.float32).reshape(-1, _STEP)
    contour = np.log1p(np.sqrt((frames ** 2).mean(axis=1)))
    sound = np.flatnonzero(contour > _QUIET)
    return contour[sound[0]:sound[-1] + 1] if sound.size else contour[:0]


def _closest(pcm: bytes, known: list[tuple[str, bytes]]) -> str | None:
    """The registered clip whose contour best matches ``pcm``'s (the shorter slid along the
    longer), if it matches well enough; None otherwise."""
    import numpy as np

    query = _contour(pcm)
    best, best_sha = _ALIKE, None
    for sha, clip in known:
        contour = _contour(clip)
        short, long = sorted((query, contour), key=len)
        if len(short) < 30 or len(short) < len(long) / 2:  # under 0.3 s, or a snippet
            continue
        a = short - short.mean()
        norm_a = np.sqrt((a ** 2).sum())
        for at in range(len(long) - len(short) + 1):
            b = long[at:at + len(short)]
            b = b - b.mean()
            denominator = norm_a * np.sqrt((b ** 2).sum())
            if denominator and (score := float((a * b).sum() / denominator)) > best:
                best, best_sha = score, sha
    return best_sha


def _sha(audio: AudioLike) -> str:
    if isinstance(audio, (bytes, bytearray, memoryview)):
        return hashlib.sha256(bytes(audio)).hexdigest()
    return as_audio(audio).sha256


def samples() -> list[Path]:
    """The sample clips that ship with voicenb (their text is in the registry)."""
    return sorted(SAMPLES.glob("*.wav"))


__all__ = ["Registry", "samples", "Audio"]
