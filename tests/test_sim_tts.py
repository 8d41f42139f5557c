"""AssemblyAI's text to speech, simulated: the official SDK (assemblyai 1.8.2), unchanged,
against ``sim.tts`` over real loopback sockets: HTTP speech, server-sent events with word
timings, and WebSocket sessions, whose word timings are where the words' samples are."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest

import voicenb as vnb
from voicenb.sim.__main__ import env_from_line

aai = pytest.importorskip("assemblyai")
av = pytest.importorskip("av")
ws_client = pytest.importorskip("websockets.sync.client")

TEXT = "Hello there, friend. How are you today?"
LONG = " ".join(["This is a long answer that the listener will interrupt."] * 6)


@pytest.fixture
def tts(sim):
    """The simulator with its text to speech unpaced (a test that needs pacing sets
    ``sim.tts.speed``), and an SDK client pointed at it (the global settings untouched)."""
    sim.tts.speed, sim.tts.ttfb = None, 0.0
    return sim


@pytest.fixture
def client(tts):
    return aai.Client(settings=aai.Settings(api_key=tts.assemblyai.key,
                                            tts_base_url=tts.tts.url))


@pytest.fixture
def speaker(client):
    return aai.TextToSpeech(client=client)


def decode(audio: bytes, encoding: str, container: str | None, rate: int) -> tuple[np.ndarray,
                                                                                 int]:
    """Samples and rate, decoded by PyAV (FFmpeg): nothing of the simulator's own."""
    if encoding == "pcm_s16le" and container == "raw":
        return np.frombuffer(audio, dtype="<i2"), rate
    raw = {"pcm_mulaw": "mulaw", "pcm_alaw": "alaw"}.get(encoding) if container == "raw" \
        else None
    options = {"sample_rate": str(rate), "ch_layout": "mono"} if raw else {}
    with av.open(io.BytesIO(audio), format=raw, options=options) as clip:
        stream = clip.streams.audio[0]
        samples = np.concatenate([f.to_ndarray().reshape(-1) for f in clip.decode(stream)])
        rate = stream.rate
    if samples.dtype.kind == "f":
        samples = (samples * 32767).astype(np.int16)
    return samples.astype(np.int16), rate


def events(sim, body: dict, key: str | None = None) -> tuple[httpx.Response, list[dict]]:
    """``POST /v1/speech/events`` (the SDK has no client for it), parsed."""
    reply = httpx.post(f"{sim.tts.url}/v1/speech/events", json=body, timeout=30,
                       headers={"Authorization": key or sim.assemblyai.key})
    parsed = []
    for block in reply.text.split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in lines:
            parsed.append({"event": lines["event"], **json.loads(lines["data"])})
    return reply, parsed


# -- POST /v1/speech -----------------------------------------------------------------------


@pytest.mark.parametrize("encoding,container,rate", [
    ("pcm_s16le", "wav", 24000), ("pcm_s16le", "raw", 8000), ("pcm_s16le", "raw", 16000),
    ("pcm_s16le", "raw", 22050), ("pcm_s16le", "raw", 44100), ("pcm_s16le", "raw", 48000),
    ("pcm_mulaw", "raw", 8000), ("pcm_alaw", "wav", 16000), ("mp3", None, 24000)])
def test_synthesize_returns_speech_in_the_format_asked(speaker, encoding, container, rate):
    config = aai.TTSConfig(encoding=encoding, container=container, sample_rate=rate)
    result = speaker.synthesize(TEXT, config)
    samples, decoded_rate = decode(result.audio, encoding, container, rate)
    assert decoded_rate == rate == result.sample_rate
    assert (result.encoding, result.container) == (encoding, container)
    assert result.model == "assemblyai-tts-1" and result.voice_id == "aai-jane"
    assert result.billed_characters == len(TEXT) and result.request_id
    seconds = len(samples) / rate
    assert 1.5 < seconds < 8
    assert seconds == pytest.approx(result.audio_duration_ms / 1000, abs=0.08)  # mp3 padding
    assert np.sqrt(np.mean(samples.astype(float) ** 2)) > 300  # not silence


def test_the_same_speech_at_every_rate_and_in_every_encoding(speaker):
    reference = speaker.synthesize(TEXT, aai.TTSConfig(sample_rate=8000))
    base = np.frombuffer(reference.audio, "<i2").astype(float)
    for encoding in ("pcm_mulaw", "pcm_alaw"):
        audio = speaker.synthesize(TEXT, aai.TTSConfig(sample_rate=8000, encoding=encoding))
        samples, _ = decode(audio.audio, encoding, "raw", 8000)
        assert np.corrcoef(samples.astype(float), base)[0, 1] > 0.999
    durations = {rate: speaker.synthesize(TEXT, aai.TTSConfig(sample_rate=rate)).audio_duration_ms
                 for rate in (16000, 24000, 48000)}
    assert max(durations.values()) - min(durations.values()) <= 10


def test_the_speech_is_heard_as_its_text(speaker):
    from voicenb.stt.local import _installed, whisper_model_ready

    if not (_installed("faster_whisper") and whisper_model_ready()):
        pytest.skip("faster-whisper and its model are not installed")
    from voicenb.stt import get_backend

    wav = speaker.synthesize("What is the capital of France?",
                             aai.TTSConfig(container="wav", sample_rate=16000)).audio
    heard = get_backend("whisper").transcribe(vnb.Audio(wav, name="speech.wav"),
                                              progress=False).text
    assert heard.strip().lower().rstrip("?.") == "what is the capital of france"


def test_voices_sound_different(speaker):
    clips = {voice: speaker.synthesize("Good morning.", aai.TTSConfig(voice_id=voice)).audio
             for voice in ("aai-jane", "aai-michael", "aai-alba")}
    assert len(set(clips.values())) == 3


def test_stream_sends_the_same_audio_in_chunks_after_the_headers(speaker, client):
    whole = speaker.synthesize(TEXT).audio
    with speaker.stream(TEXT) as speech:
        info = speech.info
        chunks = list(speech)
    assert len(chunks) > 5 and b"".join(chunks) == whole
    assert info.content_type == "audio/pcm;rate=24000;channels=1"
    assert info.billed_characters == len(TEXT) and info.audio_duration_ms is None


def test_stream_headers_wait_for_the_first_audio_and_it_comes_faster_than_real_time(
        speaker, tts):
    tts.tts.speed, tts.tts.ttfb = 4.0, 0.3
    t0 = time.monotonic()
    with speaker.stream(TEXT) as speech:
        first_headers = time.monotonic() - t0
        audio = speech.read()
    total = time.monotonic() - t0
    seconds = len(audio) / 2 / 24000
    assert 0.3 <= first_headers < 0.3 + 1.0
    assert seconds / 4 * 0.8 < total - first_headers < seconds  # ~4x real time


def test_a_streamed_wav_has_unknown_sizes_and_a_buffered_one_exact_sizes(speaker):
    config = aai.TTSConfig(container="wav")
    buffered = speaker.synthesize(TEXT, config).audio
    with speaker.stream(TEXT, config) as speech:
        streamed = speech.read()
    assert streamed[4:8] == streamed[40:44] == b"\xff\xff\xff\xff"
    assert int.from_bytes(buffered[40:44], "little") == len(buffered) - 44
    assert streamed[44:] == buffered[44:]


def test_text_with_nothing_to_speak_bills_nothing(speaker):
    result = speaker.synthesize("\u2014 \U0001F642")
    assert (result.audio, result.audio_duration_ms, result.billed_characters) == (b"", 0, 0)


# -- refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize("text,options,status,code,param", [
    (TEXT, {"voice_id": "aai-nobody"}, 404, "voice_not_found", "voice_id"),
    (TEXT, {"language": "klingon"}, 400, "invalid_parameter", "language"),
    (TEXT, {"sample_rate": 11025}, 400, "invalid_parameter", "sample_rate"),
    (TEXT, {"encoding": "opus"}, 400, "invalid_parameter", "encoding"),
    (TEXT, {"encoding": "mp3", "container": "wav"}, 400, "invalid_parameter", "container"),
    (TEXT, {"bit_rate": 64000}, 400, "invalid_parameter", "bit_rate"),
    (TEXT, {"encoding": "mp3", "bit_rate": 44000}, 400, "invalid_parameter", "bit_rate"),
    (TEXT, {"encoding": "mp3", "sample_rate": 8000, "bit_rate": 128000}, 400,
     "invalid_parameter", "bit_rate"),
    (TEXT, {"model_id": "assemblyai-tts-9"}, 400, "invalid_parameter", "model_id"),
    ("", {}, 400, "invalid_parameter", "text"),
    ("a" * 5001, {}, 400, "text_too_long", "text"),
])
def test_refusals_come_as_the_sdks_error(speaker, text, options, status, code, param):
    with pytest.raises(aai.TTSError) as refused:
        speaker.synthesize(text, aai.TTSConfig(**options))
    error = refused.value
    assert (error.status_code, error.error_code, error.param) == (status, code, param)
    assert error.retryable is False and error.request_id


def test_every_bad_field_is_listed(speaker):
    with pytest.raises(aai.TTSError) as refused:
        speaker.synthesize(TEXT, aai.TTSConfig(sample_rate=1, language="latin",
                                               bit_rate=32000))
    assert sorted(e["param"] for e in refused.value.errors) == ["bit_rate", "language",
                                                                "sample_rate"]


def test_text_over_the_limit_says_the_limit(speaker):
    with pytest.raises(aai.TTSError) as refused:
        speaker.synthesize("a" * 5001)
    assert refused.value.body["limit"] == 5000


def test_a_wrong_key_and_no_key_are_refused(tts):
    wrong = aai.TextToSpeech(client=aai.Client(settings=aai.Settings(
        api_key="wrong", tts_base_url=tts.tts.url)))
    with pytest.raises(aai.TTSError) as refused:
        wrong.synthesize(TEXT)
    assert (refused.value.status_code, refused.value.error_code) == (401, "unauthorized")
    reply = httpx.post(f"{tts.tts.url}/v1/speech", json={"text": TEXT}, timeout=10)
    assert (reply.status_code, reply.json()["code"]) == (401, "missing_authorization")


def test_a_bearer_key_works_too(tts):
    reply = httpx.post(f"{tts.tts.url}/v1/speech", json={"text": "Hi.", "stream": False},
                       headers={"Authorization": f"Bearer {tts.assemblyai.key}"}, timeout=10)
    assert reply.status_code == 200 and reply.headers["X-TTS-Voice-Id"] == "aai-jane"


def test_injected_faults_come_in_the_envelope_the_sdk_retries_on(speaker, tts):
    tts.inject("429", "/v1/speech", retry_after=2)
    with pytest.raises(aai.TTSError) as refused:
        speaker.synthesize(TEXT)
    error = refused.value
    assert (error.status_code, error.error_code, error.retryable, error.retry_after) == (
        429, "rate_limited", True, 2)


def test_a_stream_cut_after_its_first_audio_is_a_retryable_error(speaker, tts):
    tts.inject("cut", "/v1/speech", after=2)
    with pytest.raises(aai.TTSError) as cut:
        with speaker.stream(TEXT) as speech:
            speech.read()
    assert (cut.value.status_code, cut.value.retryable) == (200, True)


# -- POST /v1/speech/events ------------------------------------------------------------------


def test_events_carry_audio_and_words_on_its_timeline(tts):
    reply, stream = events(tts, {"text": TEXT})
    assert reply.headers["content-type"] == "text/event-stream; charset=utf-8"
    kinds = [e["event"] for e in stream]
    assert kinds[0] == "Begin" and kinds[1] == "Audio"
    assert kinds[-3:] == ["FlushDone", "WordBoundaries", "Termination"]
    pcm = b"".join(base64.b64decode(e["audio"]) for e in stream
                   if e["event"] == "Audio")
    audio_ms = len(pcm) / 2 / 24000 * 1000
    done, words, end = stream[-3], stream[-2], stream[-1]
    assert done["audio_duration_ms"] == pytest.approx(audio_ms, abs=1)
    assert [w["word"] for w in words["words"]] == TEXT.split()
    times = [t for w in words["words"] for t in (w["start"], w["end"])]
    assert times == sorted(times) and times[0] >= 0 and times[-1] <= audio_ms
    assert end["total_input_char_length"] == len(TEXT)


@pytest.mark.parametrize("option,param", [
    ({"encoding": "mp3"}, "encoding"), ({"container": "wav"}, "container"),
    ({"bit_rate": 64000}, "bit_rate"), ({"stream": True}, "stream")])
def test_events_refuse_what_has_no_timeline(tts, option, param):
    reply, _ = events(tts, {"text": TEXT, **option})
    body = reply.json()
    assert (reply.status_code, body["code"], body["param"]) == (400, "invalid_parameter",
                                                                param)


# -- word timings match the audio --------------------------------------------------------------


def test_between_two_words_the_audio_is_silent_and_each_word_is_loud(tts):
    _, stream = events(tts, {"text": TEXT, "sample_rate": 16000})
    pcm = np.frombuffer(b"".join(base64.b64decode(e["audio"]) for e in stream
                                 if e["event"] == "Audio"), "<i2")
    words = next(e for e in stream if e["event"] == "WordBoundaries")["words"]

    def span(start_ms: int, end_ms: int) -> np.ndarray:
        return np.abs(pcm[start_ms * 16:end_ms * 16].astype(int))

    for word, following in zip(words, words[1:]):
        assert span(word["end"] + 1, following["start"] - 1).max(initial=0) < 50
    for word in words:
        assert span(word["start"] + 15, word["end"] - 15).max() > 2000, word["word"]


def test_a_word_alone_lasts_as_long_as_it_does_in_a_sentence(tts):
    def durations(text: str) -> dict[str, int]:
        _, stream = events(tts, {"text": text})
        words = next(e for e in stream if e["event"] == "WordBoundaries")["words"]
        return {w["word"]: w["end"] - w["start"] for w in words}

    alone = durations("Paris")
    in_sentence = durations("The capital is Paris")
    assert abs(alone["Paris"] - in_sentence["Paris"]) <= 1


# -- the WebSocket session ---------------------------------------------------------------------


def test_a_session_speaks_llm_tokens_and_times_every_word(client, tts):
    text = "Paris is the capital of France. It is known for the Eiffel Tower."
    order: list[str] = []
    boundaries = []
    with aai.TTSSession(client=client, word_boundaries=True) as session:
        session.on("FlushDone", lambda event: order.append("FlushDone"))
        session.on("WordBoundaries", lambda event: (order.append("WordBoundaries"),
                                                    boundaries.append(event)))
        for at in range(0, len(text), 3):  # as an LLM sends its tokens
            session.generate(text[at:at + 3])
        audio = b"".join(session.audio(session.flush()))
    assert order == ["FlushDone", "WordBoundaries"]
    event = boundaries[0]
    assert event.flush_id == 0 and event.audio_start_ms == 0
    assert [w.word for w in event.words] == text.split()
    assert event.words[-1].end <= len(audio) / 2 / 24000 * 1000
    assert session.termination.total_input_char_length == len(text)
    assert session.termination.audio_duration_seconds == pytest.approx(
        len(audio) / 2 / 24000, abs=0.002)


def test_a_complete_sentence_is_spoken_before_flush(client):
    first_audio = threading.Event()
    with aai.TTSSession(client=client) as session:
        session.on("Audio", lambda event: first_audio.set())
        session.generate("The first sentence is complete. ")
        session.generate("The second is not")
        assert first_audio.wait(10)
        session.flush()


def test_pipelined_requests_come_in_order_on_one_timeline(client):
    done, words = {}, {}
    with aai.TTSSession(client=client, word_boundaries=True) as session:
        session.on("FlushDone", lambda e: done.__setitem__(e.flush_id, e.audio_duration_ms))
        session.on("WordBoundaries", lambda e: words.__setitem__(e.flush_id, e))
        session.generate("One sentence. ")
        first = session.flush()
        session.generate("And another one.")
        second = session.flush()
        a, b = b"".join(session.audio(first)), b"".join(session.audio(second))
    assert (first, second) == (0, 1) and a and b
    assert words[1].audio_start_ms == pytest.approx(done[0], abs=1)
    assert words[1].words[0].start >= words[1].audio_start_ms
    assert done[1] == pytest.approx(len(b) / 2 / 24000 * 1000, abs=1)


def test_cancel_stops_the_request_and_the_session_speaks_again(client, tts):
    tts.tts.speed = 2.0  # slow enough to interrupt
    cancelled, done, words = [], [], []
    with aai.TTSSession(client=client, word_boundaries=True) as session:
        session.on("Cancelled", cancelled.append)
        session.on("FlushDone", lambda e: done.append(e.flush_id))
        session.on("WordBoundaries", lambda e: words.append(e.flush_id))
        session.generate(LONG)
        interrupted = session.flush()
        heard = 0
        for chunk in session.audio(interrupted):
            heard += len(chunk)
            if heard > 24000:  # half a second in
                session.cancel()
                break
        session.generate("Sorry, go ahead.")
        again = session.flush()
        reply = b"".join(session.audio(again))
    assert (interrupted, again) == (0, 2)  # the Cancel took id 1
    assert len(cancelled) == 1 and 0.4 < cancelled[0].audio_duration_seconds < 5
    assert done == [2] and words == [2] and reply
    assert tts.tts.stats["cancels"] == 1 and tts.tts.stats["sessions"] == 1


def test_terminate_speaks_unflushed_text_first(client):
    with aai.TTSSession(client=client) as session:
        session.generate("Said on the way out.")
    assert session.termination.audio_duration_seconds > 0.5
    assert session.termination.total_input_char_length == len("Said on the way out.")


def test_a_bad_frame_ends_the_session_with_3006(client):
    with aai.TTSSession(client=client) as session:
        session._ws.send(b"\x00binary")  # a frame the SDK never sends: through its socket
        with pytest.raises(aai.TTSError) as failed:
            list(session.audio())
        session.close()
    assert failed.value.body["close_code"] == 3006
    assert failed.value.error_code == "invalid_message"


def _raw_session(tts, **params: str):
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return ws_client.connect(f"ws://{tts.tts.url.removeprefix('http://')}/v1/ws?{query}",
                             additional_headers={"Authorization": tts.assemblyai.key},
                             open_timeout=10)


@pytest.mark.parametrize("frame,param", [
    (b"\x01\x02", None), ("not json", None), ("[1, 2]", None), ('{"text": "hi"}', "type"),
    ('{"type": "Speak"}', "type"), ('{"type": "Generate"}', "text"),
    ('{"type": "Generate", "text": 5}', "text")])
def test_every_frame_rule_is_an_error_frame_then_close_3006(tts, frame, param):
    with _raw_session(tts) as ws:
        assert json.loads(ws.recv(timeout=5))["type"] == "Begin"
        ws.send(frame)
        error = json.loads(ws.recv(timeout=5))
        with pytest.raises(Exception):
            ws.recv(timeout=5)
    assert (error["type"], error["error_code"], error["param"]) == ("Error", 3006, param)
    assert ws.close_code == 3006


def test_a_message_over_one_mebibyte_is_closed_1009_without_an_error_frame(tts):
    with _raw_session(tts) as ws:
        ws.recv(timeout=5)
        ws.send(json.dumps({"type": "Generate", "text": "a" * (2**20)}))
        received = []
        with pytest.raises(Exception):
            while True:
                received.append(ws.recv(timeout=5))
    assert received == [] and ws.close_code == 1009


def test_a_session_with_a_wrong_key_is_refused(tts):
    session = aai.TTSSession(api_key="wrong", client=aai.Client(settings=aai.Settings(
        api_key="wrong", tts_base_url=tts.tts.url)))
    with pytest.raises(aai.TTSError) as refused:
        session.connect()
    assert refused.value.body["close_code"] == 1008
    assert refused.value.error_code == "unauthorized"


def test_a_token_in_the_query_opens_a_session(tts):
    session = aai.TTSSession(token=tts.assemblyai.key, client=aai.Client(
        settings=aai.Settings(api_key=None, tts_base_url=tts.tts.url),
        api_key_required=False))
    assert session.connect().configuration["voice_id"] == "aai-jane"
    session.close()


@pytest.mark.parametrize("config,param,code", [
    ({"sample_rate": 11025}, "sample_rate", "invalid_parameter"),
    ({"encoding": "mp3"}, "encoding", "invalid_parameter"),
    ({"voice_id": "aai-nobody"}, "voice_id", "voice_not_found")])
def test_a_session_with_bad_parameters_is_refused(client, config, param, code):
    with pytest.raises(aai.TTSError) as refused:
        aai.TTSSession(aai.TTSConfig(**config), client=client).connect()
    error = refused.value
    assert (error.body["close_code"], error.param, error.error_code) == (3006, param, code)


def test_begin_echoes_the_session_and_its_limits(client):
    config = aai.TTSConfig(voice_id="aai-paul", language="German", sample_rate=16000,
                           encoding="mulaw")
    session = aai.TTSSession(config, client=client, inactivity_timeout=30)
    begin = session.connect().configuration
    session.close()
    assert {k: begin[k] for k in ("voice_id", "language", "sample_rate", "encoding",
                                  "inactivity_timeout", "word_boundaries", "model")} == {
        "voice_id": "aai-paul", "language": "german", "sample_rate": 16000,
        "encoding": "pcm_mulaw", "inactivity_timeout": 30, "word_boundaries": False,
        "model": "assemblyai-tts-1"}
    assert begin["limits"]["max_generate_text_length"] == 2000


def test_word_boundaries_are_on_by_default_on_the_wire(tts):
    with _raw_session(tts) as ws:
        begin = json.loads(ws.recv(timeout=5))
    assert begin["configuration"]["word_boundaries"] is True


def test_an_idle_session_is_closed_after_its_inactivity_timeout(client):
    errors = []
    session = aai.TTSSession(client=client, inactivity_timeout=5)
    session.on("Error", errors.append)
    session.connect()
    deadline = time.monotonic() + 8
    while not errors and time.monotonic() < deadline:
        time.sleep(0.1)
    session.close()
    assert errors and errors[0].error_code == "inactivity_timeout"
    assert errors[0].body["close_code"] == 3006


def test_a_restart_ends_open_sessions_with_a_retryable_error(client, tts):
    session = aai.TTSSession(client=client)
    session.connect()
    assert tts.tts.drop_sessions() == 1
    with pytest.raises(aai.TTSError) as ended:
        list(session.audio())
    session.close()
    assert ended.value.retryable is True and ended.value.body["close_code"] == 1012
    assert session.connect().id  # the same session object connects again
    session.close()


def test_an_async_session_and_client_work_too(client):
    import asyncio

    async def main() -> tuple[bytes, bytes]:
        async with aai.AsyncTTSSession(client=client) as session:
            spoken = b"".join([chunk async for chunk in session.speak("Hi there.")])
        from assemblyai.async_client import AsyncClient

        async with aai.AsyncTextToSpeech(client=AsyncClient(settings=client.settings)
                                         ) as speaker:
            whole = (await speaker.synthesize("Hi there.")).audio
        return spoken, whole

    spoken, whole = asyncio.run(main())
    assert spoken and whole


# -- wiring ------------------------------------------------------------------------------------


def test_the_sdk_finds_the_simulator_from_the_environment(sim):
    assert sim.env()["ASSEMBLYAI_TTS_BASE_URL"] == sim.tts.url == sim.url
    assert aai.Settings().tts_base_url == sim.tts.url  # ASSEMBLYAI_TTS_BASE_URL, read by it
    assert vnb.sim.serves(sim.tts.url)


def test_the_session_path_without_an_upgrade_says_so(tts):
    reply = httpx.get(f"{tts.tts.url}/v1/ws", timeout=10)
    assert (reply.status_code, reply.json()["code"]) == (426, "upgrade_required")


def test_the_command_line_prints_the_tts_url():
    proc = subprocess.Popen([sys.executable, "-m", "voicenb.sim", "--port", "0", "--no-hear"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        env = env_from_line(proc.stdout.readline())
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert env["ASSEMBLYAI_TTS_BASE_URL"] == env["ASSEMBLYAI_BASE_URL"]
