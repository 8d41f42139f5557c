"""Universal-Streaming v3: the client against the simulated websocket, and `voicenb listen`."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

import pytest

import voicenb as vnb
from voicenb.audio import pcm_to_wav
from voicenb.stt.streaming import RealtimeTranscriber, _close_error

SILENCE = b"\0\0" * 16000  # one second


@pytest.fixture
def pcm(samples):
    """Two questions with silence around them, as 16 kHz PCM."""
    a, b = (vnb.Audio(p).pcm16k() for p in samples[:2])
    return SILENCE[:16000] + a + SILENCE + SILENCE[:8000] + b + SILENCE


def test_final_turns_are_the_formatted_ones_with_timings(sim, pcm):
    finals, partials, begun = [], [], []
    with RealtimeTranscriber(on_turn=finals.append, on_partial=partials.append,
                             on_begin=begun.append) as rt:
        rt.send(pcm)
    assert [t.text for t in finals] == ["What is the capital of France?",
                                        "How far away is the moon?"]
    assert all(t.formatted and t.end_of_turn for t in finals)
    assert [t.turn_order for t in finals] == [0, 1]
    assert all(t.stt_s > 0 for t in finals)  # measured from the end of speech, as sent
    assert finals[0].start_s < finals[0].end_s < finals[1].start_s
    assert partials and partials[0].text.islower() and not partials[0].end_of_turn
    assert begun == [rt.session_id]
    assert rt.terminated and sim.streaming.stats["terminated"] == 1


def test_unformatted_finals_when_format_turns_is_off(sim, samples):
    finals = []
    with RealtimeTranscriber(on_turn=finals.append, format_turns=False,
                             speech_model="universal-streaming-english") as rt:
        rt.send(vnb.Audio(samples[0]).pcm16k() + SILENCE)
    assert [t.text for t in finals] == ["what is the capital of france"]


def test_universal_streaming_finals_are_the_formatted_copies(sim, samples):
    finals = []
    with RealtimeTranscriber(on_turn=finals.append,
                             speech_model="universal-streaming-english") as rt:
        rt.send(vnb.Audio(samples[1]).pcm16k() + SILENCE)
    assert [t.text for t in finals] == ["How far away is the moon?"]
    assert finals[0].formatted and 0 < finals[0].end_of_turn_confidence < 1
    assert sim.streaming.received[-1].params["format_turns"] == "true"


def test_pieces_of_any_size_are_rechunked_into_valid_frames(sim, samples):
    finals = []
    with RealtimeTranscriber(on_turn=finals.append, chunk_ms=50) as rt:
        data = vnb.Audio(samples[1]).pcm16k() + SILENCE
        for i in range(0, len(data), 777):  # odd sizes, smaller than a frame
            rt.send(data[i:i + 777])
    assert [t.text for t in finals] == ["How far away is the moon?"]
    assert sim.streaming.stats["closed_with_error"] == 0


def test_audio_is_sent_no_faster_than_real_time(sim, samples):
    rt = RealtimeTranscriber().start()
    rt.send(vnb.Audio(samples[0]).pcm16k())
    rt.close()
    # The simulator closes with 3007 when audio arrives faster than real time; it did not.
    assert rt.terminated and rt.audio_sent_s == pytest.approx(1.98, abs=0.1)


def test_a_backlog_is_caught_up_so_the_stream_does_not_trail_the_speaker(sim, samples):
    """Audio queued at once (a backlog, e.g. what the page captured while the kernel was
    busy) goes at once, up to AHEAD_S ahead of the session's clock. Paced from its first
    frame instead, every later word reached the service AHEAD_S after it was spoken."""
    from voicenb.stt.streaming import AHEAD_S

    pcm = vnb.Audio(samples[0]).pcm16k()
    backlog = int(AHEAD_S * 16000) * 2
    rt = RealtimeTranscriber().start()
    rt.send(pcm[:backlog])
    for i in range(backlog, len(pcm) - 3200, 3200):  # then 100 ms at a time, as a mic gives it
        time.sleep(0.1)
        rt.send(pcm[i:i + 3200])
    queued_at, queued_s = time.monotonic(), (i + 3200) / 32000
    while rt.audio_sent_s < queued_s - 1e-6 and time.monotonic() < queued_at + 5:
        time.sleep(0.005)
    trailing = time.monotonic() - queued_at
    rt.close()
    assert trailing < AHEAD_S / 2, f"the stream trails the speaker by {trailing:.2f} s"
    assert rt.terminated and sim.streaming.stats["closed_with_error"] == 0


def test_terminate_is_sent_when_the_caller_fails_midway(sim, samples):
    with pytest.raises(KeyboardInterrupt):
        with RealtimeTranscriber() as rt:
            rt.send(vnb.Audio(samples[0]).pcm16k()[:16000])
            raise KeyboardInterrupt
    assert sim.streaming.stats["terminated"] == 1


def test_stream_file_sends_a_whole_file(sim, samples):
    finals = []
    rt = RealtimeTranscriber(on_turn=finals.append).start()
    rt.stream_file(samples[2])
    assert [t.text for t in finals] == ["Tell me a short joke about computers."]


def test_parameters_are_encoded_as_the_spec_writes_them(sim):
    rt = RealtimeTranscriber(speaker_labels=True, keyterms_prompt=["voicenb", "Paris"],
                             end_of_turn_confidence_threshold=0.6,
                             speech_model="universal-streaming-english")
    query = rt.url.split("?", 1)[1]
    assert "speaker_labels=true" in query and "True" not in query
    assert "keyterms_prompt=%5B%22voicenb%22%2C+%22Paris%22%5D" in query
    assert "end_of_turn_confidence_threshold=0.6" in query


def test_frame_size_outside_the_limits_is_a_config_error(sim):
    with pytest.raises(vnb.ConfigError, match="between 50 and 1000"):
        RealtimeTranscriber(chunk_ms=20)


def test_wrong_key_is_an_authentication_error(sim):
    with pytest.raises(vnb.AuthenticationError) as info:
        RealtimeTranscriber(api_key="wrong-key-123456").start()
    assert info.value.status_code == 1008
    assert "wrong-key-123456" not in str(info.value)


def test_too_many_sessions_is_a_rate_limit_error():
    with vnb.sim.running(max_streaming_sessions=0):
        with pytest.raises(vnb.RateLimitError) as info:
            RealtimeTranscriber().start()
    assert info.value.status_code == 3009


def test_unreachable_service_says_so():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(vnb.ServiceError, match="Cannot reach AssemblyAI streaming"):
        RealtimeTranscriber(api_key="k", url=f"ws://127.0.0.1:{port}").start()


@pytest.mark.parametrize("code,reason,kind", [
    (1008, "Unauthorized Connection: Missing Authorization header", vnb.AuthenticationError),
    (1008, "Unauthorized Connection: Too many concurrent sessions", vnb.RateLimitError),
    (3009, "Unauthorized Connection: Too many concurrent sessions", vnb.RateLimitError),
    (4001, "Not Authorized", vnb.AuthenticationError),
    (3007, "Input duration violation: 20 ms. Expected between 50 and 1000 ms",
     vnb.ServiceError),
    (3008, "Session Expired: Maximum session duration exceeded", vnb.ServiceTimeoutError),
    (3005, "Session Cancelled: An error occurred", vnb.ServiceError),
])
def test_close_codes_become_typed_errors_with_the_reason(code, reason, kind):
    error = _close_error(code, reason)
    assert isinstance(error, kind) and error.status_code == code and reason in str(error)


# -- the simulator's own checks, with a bare websocket client ----------------------------------


def _raw(sim, frames: list[bytes], pause: float = 0.0) -> tuple[list[dict], int | None]:
    from websockets.asyncio.client import connect

    async def main():
        out = []
        async with connect(f"{sim.streaming.url}/v3/ws?sample_rate=16000",
                           additional_headers={"Authorization": sim.assemblyai.key}) as ws:
            out.append(json.loads(await ws.recv()))
            for frame in frames:
                await ws.send(frame)
                if pause:
                    await asyncio.sleep(pause)
            await ws.send(json.dumps({"type": "Terminate"}))
            try:
                async for message in ws:
                    out.append(json.loads(message))
            except Exception:
                pass
            return out, ws.close_code

    return asyncio.run(main())


def test_sim_closes_3007_on_a_frame_shorter_than_50_ms(sim):
    messages, code = _raw(sim, [b"\0\0" * 320])  # 20 ms
    assert code == 3007
    assert messages[-1]["type"] == "Error" and "Input duration violation" in messages[-1]["error"]


def test_sim_closes_3007_when_audio_comes_faster_than_real_time(sim):
    messages, code = _raw(sim, [b"\0\0" * 16000] * 4)  # 4 s of audio at once
    assert code == 3007 and "Transmission Rate" in messages[-1]["error"]


def test_sim_begins_and_terminates(sim):
    messages, code = _raw(sim, [b"\0\0" * 1600] * 3, pause=0.1)
    assert messages[0]["type"] == "Begin" and messages[0]["id"]
    assert messages[-1]["type"] == "Termination" and code == 1000


# -- voicenb listen ------------------------------------------------------------------------------


def test_listen_answers_each_turn_of_a_file(sim, pcm, tmp_path):
    clip = tmp_path / "two questions.wav"
    clip.write_bytes(pcm_to_wav(pcm))
    home = tmp_path / "home"
    out = subprocess.run([sys.executable, "-m", "voicenb.cli", "listen", "--input", str(clip),
                          "--home", str(home), "--session", "live"], capture_output=True,
                         text=True, timeout=120, env=os.environ.copy())
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "Me: What is the capital of France?"
    assert lines[1].startswith("Bot: (simulated answer)")
    assert lines[2] == "Me: How far away is the moon?"
    assert "I remember 1 earlier question" in lines[3]
    assert sim.streaming.stats["terminated"] == 1
    assert sim.streaming.received[-1].params["speech_model"] == "u3-rt-pro"  # the default
    df = vnb.load_history(str(home), session="live")
    assert df["status"].tolist() == ["ok", "ok"]
    assert set(df["stt_backend"]) == {"assemblyai-streaming"}
    assert df["stt_s"].notna().all() and (df["stt_s"] > 0).all()
    assert all((home / p).exists() for p in df["audio_path"])  # each turn's audio is kept
    assert df["audio_s"].between(1.0, 4.0).all()


def test_listen_without_a_microphone_library_says_what_to_install(sim, tmp_path):
    out = subprocess.run([sys.executable, "-m", "voicenb.cli", "listen", "--home",
                          str(tmp_path / "h")], capture_output=True, text=True, timeout=60,
                         env=os.environ.copy())
    try:
        import sounddevice  # noqa: F401
        has_sd = True
    except (ImportError, OSError):
        has_sd = False
    if has_sd:  # pragma: no cover - a machine with PortAudio and a microphone
        pytest.skip("sounddevice works here: the microphone path is not an error")
    assert out.returncode == 2
    assert "pip install 'voicenb[mic]'" in out.stderr or "PortAudio" in out.stderr
    assert "Traceback" not in out.stderr


def test_delay_from_final_turn_to_first_answer_token(sim, samples, tmp_path, capsys):
    import queue

    session = vnb.Session("delay", home=str(tmp_path / "home"))
    session.chat  # voicenb listen and session.live() connect to the model before you speak
    finals: queue.Queue = queue.Queue()
    first: list[float] = []
    with RealtimeTranscriber(on_turn=finals.put) as rt:
        rt.send(vnb.Audio(samples[0]).pcm16k() + SILENCE * 3)  # still streaming meanwhile
        turn = finals.get(timeout=30)
        session.ask_text(turn.text, stt_backend="assemblyai-streaming", stt_s=turn.stt_s,
                         on_token=lambda _t: first.append(time.monotonic()) if not first
                         else None)
    delay = first[0] - turn.received
    assert delay > 0
    with capsys.disabled():
        print(f"\nfinal Turn -> first answer token: {delay * 1000:.0f} ms "
              f"(simulated time to first token {sim.openai.ttft * 1000:.0f} ms)")
