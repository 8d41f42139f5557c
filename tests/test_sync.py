"""AssemblyAI's Sync API: which clips take it, the simulator's documented limits and errors,
the official SDK's SyncTranscriber against the simulator, and live upload while recording."""

from __future__ import annotations

import io
import json
import socket
import threading
import time
import wave

import pytest
import requests

import voicenb as vnb
from voicenb.audio import Audio, pcm_to_wav
from voicenb.stt import get_backend

QUESTION = "What is the capital of France?"


def _wav(seconds: float, rate: int = 16000, width: int = 2, channels: int = 1,
         tone: bool = False) -> bytes:
    frames = int(seconds * rate)
    if tone:
        import math

        one = [int(8000 * math.sin(2 * math.pi * 440 * i / rate)) for i in range(frames)]
        data = b"".join(v.to_bytes(2, "little", signed=True) * channels for v in one)
    else:
        data = b"\x01\x00" * frames * channels if width == 2 else b"\x80" * frames * channels
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(data)
    return out.getvalue()


def _post(sim, audio: bytes, audio_type: str = "audio/wav", config: dict | None = None,
          model: str = "universal-3-5-pro", key: str | None = None,
          path: str = "/v1/transcribe") -> requests.Response:
    files = [("audio", ("audio.wav", audio, audio_type))]
    if config is not None:
        files.insert(0, ("config", (None, json.dumps(config), "application/json")))
    headers = {"Authorization": key or sim.assemblyai.key, "X-AAI-Model": model}
    return requests.post(sim.url + path, files=files, headers=headers, timeout=10)


# -- which API a clip takes -------------------------------------------------------------------


def test_a_short_question_takes_the_sync_api_in_one_request(sim, sample):
    t = vnb.transcribe(sample)
    assert t.text == QUESTION
    assert (t.backend, t.speech_model, t.polls) == ("assemblyai-sync", "universal-3-5-pro", 0)
    assert sim.stats["sync_transcripts"] == 1
    assert sim.stats["uploads"] == sim.stats["transcripts"] == sim.stats["polls"] == 0


def test_audio_over_120_seconds_takes_the_async_api(sim):
    t = vnb.transcribe(_wav(121))
    assert t.backend == "assemblyai" and t.speech_model == "assemblyai-stt-3-7"
    assert sim.stats["sync_transcripts"] == 0 and sim.stats["transcripts"] == 1


def test_options_the_sync_api_does_not_take_go_async(sim, sample):
    t = vnb.transcribe(sample, speaker_labels=True)
    assert t.backend == "assemblyai" and sim.stats["sync_transcripts"] == 0
    t = vnb.transcribe(sample, keyterms_prompt=["Paris"])
    assert t.backend == "assemblyai-sync"
    assert sim.sync.served[-1].config == {"keyterms_prompt": ["Paris"]}


def test_a_redirected_rest_url_without_a_sync_url_never_uses_the_sync_api(sim, sample,
                                                                          monkeypatch):
    monkeypatch.delenv("ASSEMBLYAI_SYNC_URL")
    assert vnb.Settings().resolved().assemblyai_sync_url is None
    assert vnb.transcribe(sample).backend == "assemblyai"
    assert sim.stats["sync_transcripts"] == 0


def test_a_sync_model_the_api_refuses_is_a_setting_to_fix(sim, sample, monkeypatch):
    monkeypatch.setenv("VOICENB_SYNC_MODEL", "universal-2")
    with pytest.raises(vnb.ConfigError, match="VOICENB_SYNC_MODEL"):
        vnb.transcribe(sample)


def test_the_api_can_be_pinned(sim, sample, monkeypatch):
    monkeypatch.setenv("VOICENB_ASSEMBLYAI_API", "async")
    assert vnb.transcribe(sample).backend == "assemblyai"
    monkeypatch.setenv("VOICENB_ASSEMBLYAI_API", "sync")
    with pytest.raises(vnb.ConfigError, match="does not take"):
        vnb.transcribe(_wav(121))  # pinned to sync: never sent elsewhere behind your back
    monkeypatch.setenv("VOICENB_ASSEMBLYAI_API", "fast")
    with pytest.raises(vnb.ConfigError, match="auto, sync, async"):
        vnb.transcribe(sample)
    monkeypatch.delenv("ASSEMBLYAI_SYNC_URL")
    monkeypatch.setenv("VOICENB_ASSEMBLYAI_API", "sync")
    with pytest.raises(vnb.ConfigError, match="ASSEMBLYAI_SYNC_URL"):
        vnb.transcribe(sample)


def test_wav_the_api_decodes_is_sent_as_is_and_other_audio_as_16k_pcm(sim, sample):
    vnb.transcribe(_wav(1.0, rate=44100, channels=2, tone=True))
    assert sim.sync.served[-1].content_type == "audio/wav"
    vnb.transcribe(_wav(1.0, width=1))  # 8-bit: the API refuses it, so voicenb decodes it
    served = sim.sync.served[-1]
    assert served.content_type == "audio/pcm"
    assert served.config == {"sample_rate": 16000, "channels": 1} and served.audio_ms == 1000


def test_a_clip_the_service_cannot_use_is_a_transcription_error(sim, sample):
    sim.fail_audio(sample, "File does not appear to contain audio.")
    with pytest.raises(vnb.TranscriptionError, match="does not appear to contain audio"):
        vnb.transcribe(sample)


def test_the_history_records_the_api_and_the_model_that_ran(sim, sample, tmp_path):
    s = vnb.Session("sync", home=tmp_path)
    s.ask_audio(sample)
    s.ask_audio(_wav(121, tone=True))
    rows = s.history[["stt_backend", "speech_model", "upload_s", "polls"]]
    assert rows.iloc[0].tolist()[:2] == ["assemblyai-sync", "universal-3-5-pro"]
    assert rows.iloc[1].tolist()[:2] == ["assemblyai", "assemblyai-stt-3-7"]
    assert rows.iloc[0]["polls"] == 0 and rows.iloc[1]["polls"] >= 1


def test_a_sync_turn_never_says_it_is_uploading(sim, sample, tmp_path):
    statuses = []
    s = vnb.Session("labels", home=tmp_path)
    s.ask_audio(sample, on_status=lambda turn, status: statuses.append(status))
    assert "uploading" not in statuses and "transcribing" in statuses
    statuses.clear()
    s.ask_audio(_wav(121, tone=True), on_status=lambda turn, status: statuses.append(status))
    assert "uploading" in statuses  # over 120 s: the async API, upload first


def test_a_transient_sync_error_is_retried(sim, sample):
    sim.inject("429", "/v1/transcribe", retry_after=0)
    sim.inject("503", "/v1/transcribe")
    sim.inject("500", "/v1/transcribe")
    assert vnb.transcribe(sample).text == QUESTION
    assert sim.stats["fault:429"] == sim.stats["fault:503"] == sim.stats["fault:500"] == 1


def test_a_failed_inference_is_sent_again_once_only(sim, sample):
    # The error guide: 500 and 504 are safe to retry once (the clip may have been billed).
    sim.inject("500", "/v1/transcribe", times=5)
    with pytest.raises(vnb.ServiceError) as info:
        vnb.transcribe(sample)
    assert info.value.status_code == 500 and info.value.code == "inference_error"
    assert sim.stats["fault:500"] == 2


# -- the simulator: documented limits and error bodies ---------------------------------------


@pytest.mark.parametrize("audio, audio_type, config, status, code", [
    (_wav(0.05), "audio/wav", None, 400, "audio_too_short"),
    (_wav(121), "audio/wav", None, 413, "audio_too_large"),
    (_wav(1, width=1), "audio/wav", None, 415, "unsupported_media_type"),
    (_wav(1, rate=11025), "audio/wav", None, 415, "unsupported_media_type"),
    (b"RIFF\x00\x00", "audio/wav", None, 400, "bad_audio"),
    (b"\x00" * 3201, "audio/pcm", {"sample_rate": 16000, "channels": 1}, 400, "bad_audio"),
    (b"\x00" * 3200, "audio/pcm", None, 400, "bad_audio"),
    (b"ID3abc", "audio/mpeg", None, 415, "unsupported_media_type"),
    (_wav(1), "audio/wav", {"speaker_labels": True}, 400, "bad_request"),
])
def test_the_simulator_refuses_as_documented(sim, audio, audio_type, config, status, code):
    r = _post(sim, audio, audio_type, config)
    assert r.status_code == status
    assert set(r.json()) == {"error_code", "message"} and r.json()["error_code"] == code


def test_auth_model_and_missing_audio_errors(sim):
    r = _post(sim, _wav(1), key="wrong")
    assert r.status_code == 401 and set(r.json()) == {"detail"}
    r = _post(sim, _wav(1), model="assemblyai-stt-3-7")
    assert r.status_code == 400 and r.json()["error_code"] == "bad_request"
    r = requests.post(sim.url + "/v1/transcribe", files={"x": ("a", b"1")}, timeout=10,
                      headers={"Authorization": sim.assemblyai.key,
                               "X-AAI-Model": "universal-3-5-pro"})
    assert r.status_code == 400 and "audio" in r.json()["message"]
    sim.inject("429", "/v1/transcribe", times=1)
    r = _post(sim, _wav(1))
    assert r.status_code == 429 and set(r.json()) == {"detail"} and r.headers["Retry-After"]


def test_audio_that_contains_the_boundary_string_is_kept_whole(sim):
    boundary = "b0undary"
    pcm = (b"\x10\x00" * 4000 + b"--" + boundary.encode() + b"\x00\x00") * 2  # even length
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"config\"\r\n\r\n"
            f"{{\"sample_rate\": 16000, \"channels\": 1}}\r\n--{boundary}\r\n"
            "Content-Disposition: form-data; name=\"audio\"; filename=\"a.pcm\"\r\n"
            "Content-Type: audio/pcm\r\n\r\n").encode() + pcm + f"\r\n--{boundary}--\r\n".encode()
    r = requests.post(sim.url + "/v1/transcribe", data=body, timeout=10, headers={
        "Authorization": sim.assemblyai.key, "X-AAI-Model": "universal-3-5-pro",
        "Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 200, r.text
    assert r.json()["audio_duration_ms"] == len(pcm) * 1000 // 32000


def test_a_refusal_before_the_body_ends_closes_the_connection(sim):
    big = b"\x00" * (41 * 1000 * 1000)
    with requests.Session() as http:
        r = http.post(sim.url + "/v1/transcribe", files={"audio": ("a.wav", big, "audio/wav")},
                      headers={"Authorization": sim.assemblyai.key,
                               "X-AAI-Model": "universal-3-5-pro"}, timeout=30)
        assert r.status_code == 413 and r.json()["error_code"] == "audio_too_large"
        assert http.get(sim.url + "/v1/warm", timeout=10).status_code == 200  # not confused


def test_the_unprefixed_paths_are_served_too(sim, sample):
    assert requests.get(sim.url + "/warm", timeout=10).status_code == 200
    assert _post(sim, open(sample, "rb").read(), path="/transcribe").json()["text"] == QUESTION


def test_the_live_endpoint_needs_the_config_part_first(sim):
    boundary = "b0undary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"audio\"; filename=\"a.pcm\""
            f"\r\nContent-Type: audio/pcm\r\n\r\n").encode() + b"\x00" * 3200 + (
        f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"config\"\r\n\r\n"
        f"{{\"sample_rate\": 16000, \"channels\": 1}}\r\n--{boundary}--\r\n").encode()
    r = requests.post(sim.url + "/v1/transcribe/live", data=body, timeout=10, headers={
        "Authorization": sim.assemblyai.key, "X-AAI-Model": "universal-3-5-pro",
        "Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 400 and "config" in r.json()["message"]


def test_a_response_has_the_sdks_fields(sim, sample):
    body = _post(sim, open(sample, "rb").read(), config={"timestamps": True}).json()
    assert set(body) == {"text", "words", "confidence", "audio_duration_ms", "session_id",
                         "request_time_ms"}
    assert body["text"] == QUESTION
    assert all(set(w) == {"text", "start", "end", "confidence"} for w in body["words"])
    plain = _post(sim, open(sample, "rb").read()).json()
    assert all(set(w) == {"text", "confidence"} for w in plain["words"])


# -- the official SDK ---------------------------------------------------------------------------


@pytest.fixture
def sdk(sim):
    aai = pytest.importorskip("assemblyai")
    from assemblyai.sync import SyncTranscriber

    settings = aai.Settings(api_key=sim.assemblyai.key, base_url=sim.url,
                            sync_base_url=sim.url)
    client = aai.Client(settings=settings)
    with SyncTranscriber(client=client) as transcriber:
        yield aai, transcriber


def test_the_official_sync_transcriber_works_against_the_simulator(sim, sdk, sample):
    aai, transcriber = sdk
    assert transcriber.warm() is True and sim.stats["sync_warm"] == 1
    assert transcriber.transcribe(str(sample)).text == QUESTION
    pcm = Audio(sample).pcm16k()
    config = aai.SyncTranscriptionConfig(sample_rate=16000, channels=1)
    chunks = (pcm[i:i + 3200] for i in range(0, len(pcm), 3200))
    live = transcriber.transcribe_live(chunks, config)
    assert live.text == QUESTION and live.audio_duration_ms == len(pcm) // 32
    with transcriber.open_live(config) as session:
        for i in range(0, len(pcm), 3200):
            session.write(pcm[i:i + 3200])
    assert session.result().text == QUESTION
    assert [r.path for r in sim.sync.served] == ["/v1/transcribe/live"] * 3


def test_the_sdk_reads_the_simulators_errors(sim, sdk):
    aai, transcriber = sdk
    with pytest.raises(aai.types.SyncTranscriptError) as info:
        transcriber.transcribe(_wav(0.05))
    assert (info.value.status_code, info.value.error_code) == (400, "audio_too_short")


# -- live upload while recording ------------------------------------------------------------------


def test_a_live_upload_fed_while_recording_answers_right_after_the_last_chunk(sim, sample):
    backend = get_backend("assemblyai")
    assert backend.warm() and sim.stats["sync_warm"] == 1
    pcm = Audio(sample).pcm16k()
    upload = backend.open_live()
    fed = threading.Event()

    def record() -> None:  # 100 ms chunks at twice real time, like a microphone would
        for i in range(0, len(pcm), 3200):
            upload.write(pcm[i:i + 3200])
            time.sleep(0.05)
        fed.set()

    threading.Thread(target=record).start()
    fed.wait(30)
    t = upload.result()
    assert t.text == QUESTION and t.backend == "assemblyai-sync"
    assert t.audio_s == pytest.approx(len(pcm) / 32000)
    assert sim.sync.served[-1].path == "/v1/transcribe/live"


def test_a_live_upload_runs_with_nagle_off_at_both_ends(sim, sample):
    # With Nagle's algorithm on, the simulator's answer waited ~40 ms behind its head for a
    # delayed acknowledgement (bench.sync_api); the options are read from the real sockets.
    backend = get_backend("assemblyai")
    upload = backend.open_live()
    upload.write(Audio(sample).pcm16k())
    assert upload.result().text == QUESTION
    client = [s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
              for s in backend.sync_http.sockets()]
    assert client and 0 not in client
    assert sim.sync.served[-1].tcp_nodelay == 1


def test_an_aborted_live_upload_leaves_no_transcript(sim):
    upload = get_backend("assemblyai").open_live()
    upload.write(b"\x00\x01" * 16000)
    upload.abort()
    deadline = time.monotonic() + 5
    while upload._thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not upload._thread.is_alive()
    assert sim.stats["sync_transcripts"] == 0
    with pytest.raises(vnb.ServiceError, match="aborted"):
        upload.result()
    with pytest.raises(vnb.VoicenbError, match="open another"):
        upload.write(b"\x00\x01")


def test_an_upload_aborted_after_close_keeps_nothing(sim, sample):
    upload = get_backend("assemblyai").open_live()
    upload.write(vnb.Audio(sample).pcm16k())
    upload.close()
    upload.abort()
    with pytest.raises(vnb.ServiceError, match="aborted"):
        upload.result()


def test_an_upload_left_open_aborts_itself_when_no_audio_comes(sim):
    from voicenb.stt.sync import LiveUpload

    backend = get_backend("assemblyai")
    upload = LiveUpload(backend.sync_http, "universal-3-5-pro", idle_s=0.2)
    upload.write(b"\x00\x01" * 16000)
    upload._thread.join(10)  # no more audio, no close(): the page went away
    assert not upload._thread.is_alive() and sim.stats["sync_transcripts"] == 0


def test_closing_the_recorder_mid_recording_drops_its_upload(sim, tmp_path):
    rec = vnb.Session("closing", home=tmp_path).recorder()
    rec.begin()
    rec.feed(b"\x00\x01" * 16000)
    upload = rec._live
    rec.close()
    upload._thread.join(10)
    assert not upload._thread.is_alive() and sim.stats["sync_transcripts"] == 0


def test_live_upload_is_off_when_the_sync_api_is(sim, monkeypatch):
    monkeypatch.setenv("VOICENB_ASSEMBLYAI_API", "async")
    assert get_backend("assemblyai").open_live() is None


def test_pcm_to_wav_round_trips_for_the_simulator(sample):
    pcm = Audio(sample).pcm16k()
    assert Audio(pcm_to_wav(pcm)).pcm16k() == pcm


def test_every_backend_records_the_model_that_ran(sim, sample):
    assert vnb.transcribe(sample, backend="sphinx").speech_model == "pocketsphinx en-us"
    assert vnb.transcribe(sample, backend="openai").speech_model == "whisper-1"
