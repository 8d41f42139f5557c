"""What the simulators 'hear': sha256 of the audio -> the text spoken in it."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

from ..audio import Audio, AudioLike, as_audio

SAMPLES = Path(__file__).with_name("samples")


class Registry:
    """Known clips and their text; sample audio ships with its text in ``samples.json``."""

    def __init__(self, unknown_text: str | None = None) -> None:
        #: what unregistered audio is heard as; ``{seconds}`` is replaced by its length
        self.unknown_text = unknown_text or (
            "(simulated transcript of {seconds:.1f} seconds of unregistered audio)")
        self._text: dict[str, str] = {}
        self._errors: dict[str, str] = {}
        self._lock = threading.Lock()

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
        with self._lock:
            self._text[sha] = text
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
        with self._lock:
            return self._text.get(sha)

    def hear(self, sha: str, seconds: float) -> str:
        """The registered text, or the text for unregistered audio."""
        text = self.text(sha)
        return text if text is not None else self.unknown_text.replace(
            "{seconds:.1f}", f"{seconds:.1f}")

    def error(self, sha: str) -> str | None:
        with self._lock:
            return self._errors.get(sha)


def _sha(audio: AudioLike) -> str:
    if isinstance(audio, (bytes, bytearray, memoryview)):
        return hashlib.sha256(bytes(audio)).hexdigest()
    return as_audio(audio).sha256


def samples() -> list[Path]:
    """The sample clips that ship with voicenb (their text is in the registry)."""
    return sorted(SAMPLES.glob("*.wav"))


__all__ = ["Registry", "samples", "Audio"]
