from __future__ import annotations

import os
import shutil
import wave
from datetime import date
from pathlib import Path

import pytest

import voicenb as vnb
from tests._postgres import postgres_server, postgres_url  # noqa: F401 - a real server

VENDOR_PREFIXES = ("ASSEMBLYAI_", "OPENAI_", "VOICENB_",
                   # a front end's marks: kernels started by the tests are headless
                   "JPY_SESSION_NAME", "VSCODE_", "COLAB_")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """No real key, URL or voicenb setting leaks into a test; the working dir has no .env."""
    for name in list(os.environ):
        if name.startswith(VENDOR_PREFIXES):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    yield


@pytest.fixture(autouse=True)
def speech_models_alive(monkeypatch):
    """OpenAI shuts its speech models down on 2027-01-06 (vnb.tts.SHUTDOWN): tests run on a
    day before it, whatever the calendar says, unless they move the clock themselves."""
    from voicenb import tts

    monkeypatch.setattr(tts, "today", lambda: date(2026, 12, 1))
    monkeypatch.setattr(tts, "_shutdown_warned", set())


@pytest.fixture
def sim():
    """The simulators on a free local port, with the variables voicenb reads set."""
    with vnb.sim.running(processing_fixed=0.2, processing_factor=0.05) as s:
        yield s


@pytest.fixture
def async_api(monkeypatch):
    """Short clips take AssemblyAI's Sync API by default; tests of the async API (upload,
    submit, poll, resume) pin it with ``pytestmark = pytest.mark.usefixtures("async_api")``."""
    monkeypatch.setenv("VOICENB_ASSEMBLYAI_API", "async")


@pytest.fixture
def samples():
    return vnb.sim.samples()


@pytest.fixture
def sample(samples):
    return samples[0]


def write_wav(path: Path, seconds: float = 1.0, *, rate: int = 16000, tone: bool = True) -> Path:
    """A mono 16-bit WAV: a 440 Hz tone, or silence."""
    import math

    n = int(seconds * rate)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        frames = bytearray()
        for i in range(n):
            v = int(8000 * math.sin(2 * math.pi * 440 * i / rate)) if tone else 0
            frames += v.to_bytes(2, "little", signed=True)
        w.writeframes(bytes(frames))
    return path


@pytest.fixture
def make_wav(tmp_path):
    def make(name: str = "clip.wav", seconds: float = 1.0, **kw) -> Path:
        return write_wav(tmp_path / name, seconds, **kw)

    return make


@pytest.fixture
def copy_sample(tmp_path, sample):
    def copy(name: str) -> Path:
        dest = tmp_path / name
        shutil.copy(sample, dest)
        return dest

    return copy


@pytest.fixture
def encode(tmp_path):
    """Re-encode an audio file with PyAV (e.g. to the WebM/Opus a browser records)."""
    def encode(source: Path, fmt: str = "webm", codec: str = "libopus") -> bytes:
        import av

        out = tmp_path / f"encoded.{fmt}"
        with av.open(str(source)) as src, av.open(str(out), "w", format=fmt) as dst:
            stream = dst.add_stream(codec, rate=48000)
            for frame in src.decode(audio=0):
                frame.pts = None
                for packet in stream.encode(frame):
                    dst.mux(packet)
            for packet in stream.encode(None):
                dst.mux(packet)
        return out.read_bytes()

    return encode
