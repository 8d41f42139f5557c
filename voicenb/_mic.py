"""The microphone of the machine the kernel runs on, through sounddevice (PortAudio): for
``voicenb listen``, and for the recorder when the page cannot have a microphone."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._errors import ConfigError, MissingDependencyError

RATE = 16000


class Microphone:
    """16 kHz mono 16-bit PCM in ~100 ms blocks, handed to a callback on PortAudio's thread."""

    def __init__(self, sd: Any, device: int | None = None) -> None:
        self._sd, self._device, self._stream = sd, device, None

    def start(self, callback: Callable[[bytes], None]) -> None:
        def on_audio(indata: Any, frames: int, when: Any, status: Any) -> None:  # noqa: ARG001
            callback(bytes(indata))

        self._stream = self._sd.RawInputStream(samplerate=RATE, channels=1, dtype="int16",
                                               blocksize=RATE // 10, device=self._device,
                                               callback=on_audio)
        self._stream.start()

    def stop(self) -> None:
        if self._stream is not None:
            self._stream.stop()
            self._stream.close()
            self._stream = None


def microphone(device: int | None = None) -> Microphone:
    """This machine's microphone; raises :class:`ConfigError` saying what to install."""
    try:
        import sounddevice as sd
    except ImportError:
        raise MissingDependencyError("sounddevice", "mic", "Listening to the microphone") \
            from None
    except OSError as exc:  # the package is there but PortAudio is not
        raise ConfigError(f"The microphone needs the PortAudio library ({exc}). Install it "
                          "(Debian/Ubuntu: apt-get install libportaudio2; macOS: brew install "
                          "portaudio).") from None
    return Microphone(sd, device)
