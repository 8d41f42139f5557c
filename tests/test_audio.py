"""Audio: formats, duration, hashing, PCM, and every bad input before any request."""

from __future__ import annotations

import hashlib
import wave

import pytest

import voicenb as vnb


def test_wav_from_path_has_format_duration_and_sha(sample):
    a = vnb.Audio(sample)
    assert a.format == "wav"
    assert a.duration == pytest.approx(1.977, abs=0.01)
    assert a.sha256 == hashlib.sha256(sample.read_bytes()).hexdigest()


def test_audio_from_bytes_equals_audio_from_path(sample):
    a, b = vnb.Audio(sample), vnb.Audio(sample.read_bytes())
    assert (a.sha256, a.duration, a.format) == (b.sha256, b.duration, b.format)
    assert b.name == "<bytes>"


def test_audio_from_audio_keeps_values(sample):
    a = vnb.Audio(sample)
    assert vnb.Audio(a).sha256 == a.sha256


def test_pcm16k_is_16khz_mono_16bit(sample):
    pcm = vnb.Audio(sample).pcm16k()
    assert len(pcm) == pytest.approx(1.977 * 16000 * 2, rel=0.01)


@pytest.mark.parametrize("fmt,codec,name", [("webm", "libopus", "webm"), ("ogg", "libopus", "ogg"),
                                             ("flac", "flac", "flac"), ("mp3", "mp3", "mp3")])
def test_compressed_formats_are_sniffed_measured_and_decoded(encode, sample, fmt, codec, name):
    try:
        data = encode(sample, fmt, codec)
    except Exception as exc:  # pragma: no cover - codec missing from this PyAV build
        pytest.skip(f"PyAV cannot encode {codec}: {exc}")
    a = vnb.Audio(data)
    assert a.format == name
    assert a.duration == pytest.approx(1.98, abs=0.1)
    assert len(a.pcm16k()) == pytest.approx(1.98 * 32000, rel=0.08)


def test_missing_path_is_an_audio_error_naming_the_file(tmp_path):
    with pytest.raises(vnb.AudioError, match="not found: 'nope.wav'"):
        vnb.Audio("nope.wav")


def test_directory_is_rejected(tmp_path):
    with pytest.raises(vnb.AudioError, match="is a directory"):
        vnb.Audio(tmp_path)


def test_empty_file_is_rejected(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(vnb.AudioError, match="empty"):
        vnb.Audio(tmp_path / "empty.wav")


def test_empty_bytes_are_rejected():
    with pytest.raises(vnb.AudioError, match="empty"):
        vnb.Audio(b"")


def test_text_file_is_not_audio(tmp_path):
    (tmp_path / "notes.wav").write_text("hello, this is not audio")
    with pytest.raises(vnb.AudioError, match="not an audio file"):
        vnb.Audio(tmp_path / "notes.wav")


def test_wav_with_no_frames_is_rejected(tmp_path):
    with wave.open(str(tmp_path / "silent.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
    with pytest.raises(vnb.AudioError, match="no audio frames"):
        vnb.Audio(tmp_path / "silent.wav")


def test_truncated_wav_header_is_rejected(tmp_path, sample):
    (tmp_path / "cut.wav").write_bytes(sample.read_bytes()[:30])
    with pytest.raises(vnb.AudioError, match="broken WAV header"):
        vnb.Audio(tmp_path / "cut.wav")


def test_corrupt_compressed_audio_is_an_audio_error():
    data = b"\x1aE\xdf\xa3" + b"\x00garbage" * 50
    with pytest.raises(vnb.AudioError, match="corrupt"):
        vnb.Audio(data).duration


def test_unsupported_type_is_an_audio_error():
    with pytest.raises(vnb.AudioError, match="file path, bytes"):
        vnb.Audio(42)


def test_file_over_the_size_limit_is_rejected_before_upload(sim, tmp_path, make_wav):
    big = make_wav("big.wav", 1.0)
    with open(big, "r+b") as fh:  # sparse: looks 2.3 GB big without using the disk
        fh.truncate(2_300_000_000)
    with pytest.raises(vnb.AudioError, match="over the limit of AssemblyAI uploads, 2,200 MB"):
        vnb.transcribe(big)
    assert sim.stats.get("uploads", 0) == 0
