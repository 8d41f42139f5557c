"""The :class:`Audio` value: a clip from a path or bytes, checked before any request is made.

Format is sniffed from the first bytes, duration comes from the WAV header or PyAV, the
sha256 is computed by streaming, and 16 kHz mono PCM is decoded on demand (PyAV), so WebM
from a browser works wherever WAV does.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import os
import tempfile
import wave
from pathlib import Path
from collections.abc import Iterator
from typing import BinaryIO, Union

from ._errors import AudioError

#: AssemblyAI accepts uploads up to 2.2 GB; checked before a byte is sent.
ASSEMBLYAI_MAX_BYTES = 2_200_000_000
_CHUNK = 1 << 20

AudioLike = Union["Audio", str, os.PathLike, bytes, bytearray, memoryview]


def _sniff(head: bytes) -> str | None:
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"\x1aE\xdf\xa3":
        return "webm"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "mp3"
    if head[4:8] == b"ftyp":
        return "m4a"
    if head[:4] in (b"FORM",) and head[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    return None


class Audio:
    """A clip of audio from a path, bytes, or another ``Audio``.

    >>> a = Audio("question.wav")          # doctest: +SKIP
    >>> a.format, round(a.duration, 1)     # doctest: +SKIP
    ('wav', 2.4)

    Construction validates: a missing path, a directory, an empty file, bytes that are not
    audio, a WAV with no frames or a truncated header each raise :class:`AudioError`
    naming the clip and the reason.
    """

    def __init__(self, source: AudioLike, *, name: str | None = None) -> None:
        self.path: Path | None = None
        self._data: bytes | None = None
        if isinstance(source, Audio):
            self.path, self._data = source.path, source._data
            self.name = name or source.name
            self.format, self.size = source.format, source.size
            for cached in ("_duration", "_sha256"):
                if cached in source.__dict__:
                    self.__dict__[cached] = source.__dict__[cached]
            return
        if isinstance(source, (bytes, bytearray, memoryview)):
            self._data = bytes(source)
            self.name = name or "<bytes>"
            self.size = len(self._data)
            if self.size == 0:
                raise AudioError("The audio bytes are empty: record or load some audio first.",
                                 source=self.name)
            head = self._data[:64]
        elif isinstance(source, (str, os.PathLike)):
            self.path = Path(source).expanduser()
            self.name = name or str(source)
            if not self.path.exists():
                raise AudioError(f"Audio file not found: {self.name!r}. Check the path.",
                                 source=self.name)
            if self.path.is_dir():
                raise AudioError(f"{self.name!r} is a directory, not an audio file. "
                                 "Pass one file, or a list of files to transcribe_many().",
                                 source=self.name)
            try:
                self.size = self.path.stat().st_size
                with open(self.path, "rb") as fh:
                    head = fh.read(64)
            except OSError as exc:
                raise AudioError(f"Cannot read {self.name!r}: {exc.strerror or exc}.",
                                 source=self.name) from exc
            if self.size == 0:
                raise AudioError(f"{self.name!r} is empty (0 bytes): record or pick another file.",
                                 source=self.name)
        else:
            raise AudioError(
                f"Cannot make audio from {type(source).__name__}: pass a file path, bytes or "
                "voicenb.Audio.")
        fmt = _sniff(head)
        if fmt is None:
            raise AudioError(
                f"{self.name!r} is not an audio file voicenb recognises (wav, webm, ogg, mp3, "
                "m4a, flac, aiff). Convert it, e.g. `ffmpeg -i in.xyz out.wav`.", source=self.name)
        self.format = fmt
        if fmt == "wav":
            self._check_wav()

    # -- reading ---------------------------------------------------------------------------

    def open(self) -> BinaryIO:
        """A fresh binary file object over the audio (the file itself, never a copy)."""
        if self._data is not None:
            return io.BytesIO(self._data)
        assert self.path is not None
        return open(self.path, "rb")

    def read(self) -> bytes:
        """All the bytes. Prefer :meth:`open` for large files."""
        if self._data is not None:
            return self._data
        assert self.path is not None
        return self.path.read_bytes()

    @property
    def sha256(self) -> str:
        """Hex sha256 of the bytes, computed in 1 MiB steps (once)."""
        # A plain attribute cache: functools.cached_property takes a class-wide lock on
        # Python < 3.12, which serialises a whole batch's threads.
        if "_sha256" not in self.__dict__:
            self.__dict__["_sha256"] = self._hash()
        return self.__dict__["_sha256"]

    @property
    def duration(self) -> float:
        """Length in seconds (WAV header, else container metadata, else by decoding)."""
        if "_duration" not in self.__dict__:
            self.__dict__["_duration"] = (self._wav_params()[1] if self.format == "wav"
                                          else self._av_duration())
        return self.__dict__["_duration"]

    def _hash(self) -> str:
        digest = hashlib.sha256()
        with self.open() as fh:
            for block in iter(lambda: fh.read(_CHUNK), b""):
                digest.update(block)
        return digest.hexdigest()

    def pcm16k(self) -> bytes:
        """16 kHz mono signed 16-bit little-endian PCM, decoded and resampled with PyAV."""
        return b"".join(self.pcm16k_blocks())

    def pcm16k_blocks(self, seconds: float = 60.0) -> Iterator[bytes]:
        """The same PCM as :meth:`pcm16k` in blocks of ``seconds`` (the last one shorter),
        decoded as the file is read, so a two-hour recording never sits in memory whole."""
        import av

        size = max(2, int(seconds * 16000) * 2)
        out = bytearray()
        try:
            with self.open() as fh, av.open(fh, mode="r") as container:
                stream = next((s for s in container.streams if s.type == "audio"), None)
                if stream is None:
                    raise AudioError(f"{self.name!r} has no audio stream.", source=self.name)
                resampler = av.AudioResampler(format="s16", layout="mono", rate=16000)
                frames = itertools.chain(container.decode(stream), [None])
                for frame in frames:
                    for res in resampler.resample(frame):
                        out += bytes(res.planes[0])[: res.samples * 2]
                    while len(out) >= size:
                        yield bytes(out[:size])
                        del out[:size]
        except AudioError:
            raise
        except Exception as exc:  # PyAV raises many types for corrupt input
            raise AudioError(f"Cannot decode {self.name!r}: {exc}. The file may be corrupt.",
                             source=self.name) from exc
        if out:
            yield bytes(out)

    def is_silent(self, threshold: int = 64) -> bool:
        """True when no 16 kHz sample rises above ``threshold`` (of 32767, about -54 dBFS):
        a muted or unplugged microphone, not quiet speech."""
        if self.format == "wav":  # 16-bit PCM is read as it is: no decoder, ~50x faster
            try:
                with self.open() as fh, wave.open(fh, "rb") as w:
                    if w.getsampwidth() == 2 and w.getcomptype() == "NONE":
                        return pcm_is_silent(w.readframes(w.getnframes()), threshold)
            except (wave.Error, EOFError):
                pass  # float or 8-bit samples, an odd header: PyAV reads those
        return pcm_is_silent(self.pcm16k(), threshold)

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Copy the audio into ``folder`` as ``<sha256>.<format>`` (once; atomically)."""
        folder = Path(folder)
        dest = folder / f"{self.sha256}.{self.format}"
        if dest.exists() and dest.stat().st_size == self.size:
            return dest
        folder.mkdir(parents=True, exist_ok=True)
        # A temporary name of its own per call: two threads (or processes) saving the same
        # clip each write a whole file, and the last rename wins with identical bytes.
        fd, tmp = tempfile.mkstemp(prefix=f"{self.sha256}.", suffix=".part", dir=folder)
        try:
            with self.open() as src, os.fdopen(fd, "wb") as out:
                for block in iter(lambda: src.read(_CHUNK), b""):
                    out.write(block)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return dest

    def check_size(self, limit: int, service: str) -> None:
        """Raise :class:`AudioError` before upload when the clip is over ``service``'s limit."""
        if self.size > limit:
            raise AudioError(
                f"{self.name!r} is {self.size / 1e6:,.1f} MB, over the limit of {service}, "
                f"{limit / 1e6:,.0f} MB. Split it or compress it (e.g. to 64 kbit/s Opus) first.",
                source=self.name)

    # -- validation helpers ----------------------------------------------------------------

    def _wav_params(self) -> tuple[int, float]:
        try:
            with self.open() as fh, wave.open(fh, "rb") as w:
                frames, rate = w.getnframes(), w.getframerate()
        except (wave.Error, EOFError, ValueError) as exc:
            raise AudioError(f"{self.name!r} has a broken WAV header ({exc}). "
                             "Re-export the file.", source=self.name) from exc
        if rate <= 0:
            raise AudioError(f"{self.name!r} has a WAV header with sample rate 0.",
                             source=self.name)
        return frames, frames / rate

    def _check_wav(self) -> None:
        frames, _ = self._wav_params()
        if frames == 0:
            raise AudioError(f"{self.name!r} is a WAV file with no audio frames: the recording "
                             "is empty.", source=self.name)

    def _av_duration(self) -> float:
        import av

        try:
            with self.open() as fh, av.open(fh, mode="r") as container:
                stream = next((s for s in container.streams if s.type == "audio"), None)
                if stream is None:
                    raise AudioError(f"{self.name!r} has no audio stream.", source=self.name)
                if stream.duration and stream.time_base:
                    return float(stream.duration * stream.time_base)
                if container.duration:
                    return container.duration / 1_000_000
                # Browser WebM carries no duration: count decoded samples.
                samples, rate = 0, stream.rate or 1
                for frame in container.decode(stream):
                    samples += frame.samples
                    rate = frame.sample_rate or rate
                return samples / rate
        except AudioError:
            raise
        except Exception as exc:
            raise AudioError(f"Cannot read {self.name!r} as {self.format}: {exc}. The file may "
                             "be truncated or corrupt.", source=self.name) from exc

    def __len__(self) -> int:
        return self.size

    def __repr__(self) -> str:
        return f"Audio({self.name!r}, format={self.format!r}, size={self.size})"


def pcm_is_silent(pcm: bytes, threshold: int = 64) -> bool:
    """True when no sample of 16-bit mono PCM rises above ``threshold`` (see
    :meth:`Audio.is_silent`)."""
    import array

    samples = array.array("h", pcm[: len(pcm) // 2 * 2])
    return not samples or max(max(samples), -min(samples)) <= threshold


def pcm_to_wav(pcm: bytes, rate: int = 16000, channels: int = 1) -> bytes:
    """16-bit PCM (mono unless ``channels`` says otherwise) -> the bytes of a WAV file."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return out.getvalue()


def as_audio(source: AudioLike) -> Audio:
    return source if isinstance(source, Audio) else Audio(source)
