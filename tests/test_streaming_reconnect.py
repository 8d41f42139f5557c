"""A live conversation survives the network: the streaming client against the simulator's
socket faults (cut without a close frame, 1011, 3005, a stall, refused reconnects, a session
that reaches its end), over real loopback sockets, spoken at real-time pace."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

import voicenb as vnb
from voicenb import AuthenticationError, ServiceError
from voicenb.sim._sockets import SocketFaults, parse_fault
from voicenb.stt import streaming
from voicenb.stt.streaming import RealtimeTranscriber, create_temporary_token

QUIET = b"\0\0" * 16000  # one second
TEXTS = ["What is the capital of France?", "How far away is the moon?",
         "Tell me a short joke about computers."]


@pytest.fixture
def said(samples):
    """The three questions, each then two seconds of silence, and when each begins (s)."""
    pcm, starts = bytearray(QUIET[:8000]), []
    for path in samples:
        starts.append(len(pcm) / 32000)
        pcm += vnb.Audio(path).pcm16k() + QUIET * 2
    return bytes(pcm), starts


def speak(rt: RealtimeTranscriber, pcm: bytes, chunk_s: float = 0.1) -> None:
    """Feed ``pcm`` as a microphone does: a chunk every ``chunk_s``, in real time."""
    step, clock = int(chunk_s * 16000) * 2, time.monotonic()
    for i in range(0, len(pcm), step):
        rt.send(pcm[i:i + step])
        clock += chunk_s
        time.sleep(max(0.0, clock - time.monotonic()))


def converse(pcm: bytes, **kw) -> tuple[RealtimeTranscriber, list, list]:
    finals, told = [], []
    rt = RealtimeTranscriber(on_turn=finals.append,
                             on_reconnecting=lambda n, e: told.append(("reconnecting", n, e)),
                             on_reconnected=lambda s, d: told.append(("reconnected", s, d)),
                             **kw)
    with rt:
        speak(rt, pcm)
    return rt, finals, told


@pytest.mark.parametrize("fault", [dict(kind="drop"), dict(kind="close", code=1011),
                                   dict(kind="close", code=3005)],
                         ids=["cut", "1011", "3005"])
def test_a_drop_mid_question_loses_no_word_and_repeats_no_turn(sim, said, fault):
    pcm, starts = said
    # mid-way through the second question (the session opened just before the audio)
    sim.streaming.faults.plan(after_s=starts[1] + 0.8, **fault)
    rt, finals, told = converse(pcm)
    assert [t.text for t in finals] == TEXTS
    assert [t.turn_order for t in finals] == [0, 1, 2]
    assert [t.reconnects for t in finals] == [0, 1, 0]
    assert rt.reconnects == 1 and len(rt.session_ids) == 2 == sim.streaming.stats["sessions"]
    assert [kind for kind, *_ in told] == ["reconnecting", "reconnected"]
    assert told[1][1] == rt.session_ids[1]
    # the turns' times are the whole stream's, in order, whatever session heard them
    assert finals[0].end_s < finals[1].start_s < finals[1].end_s < finals[2].start_s
    assert starts[1] - 0.5 < finals[1].start_s < starts[1] + 0.6
    # each final turn carries its own audio: the replayed question whole
    assert vnb.Audio(finals[1].audio).duration > 1.0


def test_a_drop_between_questions_replays_no_silence(sim, said):
    pcm, starts = said
    sim.streaming.faults.plan("drop", after_s=starts[1] - 0.6)  # after the first turn
    rt, finals, _ = converse(pcm)
    assert [t.text for t in finals] == TEXTS
    assert rt.reconnects == 1
    # the new session heard only what it needed: the stream caught up with the speaker
    assert rt.audio_sent_s == pytest.approx(len(pcm) / 32000, abs=0.2)


def test_reconnects_refused_for_a_while_then_carry_on(sim, said):
    pcm, starts = said
    sim.streaming.faults.plan("drop", after_s=starts[1] + 0.5, refuse_s=1.0)
    rt, finals, told = converse(pcm)
    assert [t.text for t in finals] == TEXTS
    tries = [n for kind, n, _ in told if kind == "reconnecting"]
    assert len(tries) >= 2 and tries == list(range(1, len(tries) + 1))
    assert all("503" in str(e) for kind, _, e in told[1:-1] if kind == "reconnecting")
    assert sim.streaming.faults.stats["refuse"] == len(tries) - 1
    assert rt.reconnects == 1 and [t.reconnects for t in finals] == [0, 1, 0]


def test_many_cuts_keep_every_turn_once(sim, said):
    pcm, _ = said
    sim.streaming.faults.cut_every(1.0, 2.5, seed=3)
    rt, finals, _ = converse(pcm)
    assert [t.text for t in finals] == TEXTS
    assert [t.turn_order for t in finals] == [0, 1, 2]
    assert rt.reconnects >= 3 and sum(t.reconnects for t in finals) <= rt.reconnects
    assert sim.streaming.faults.stats["drop"] == rt.reconnects


def test_a_stalled_connection_is_given_up_and_replaced(sim, said, monkeypatch):
    pcm, starts = said
    monkeypatch.setattr(RealtimeTranscriber, "keepalive_s", 0.5)
    sim.streaming.faults.plan("stall", for_s=30, after_s=starts[1] + 0.5)
    rt, finals, told = converse(pcm)
    assert [t.text for t in finals] == TEXTS
    assert rt.reconnects == 1 and sim.streaming.faults.stats["stall"] == 1
    assert "stopped answering" in str(told[0][2])


def test_a_wrong_key_is_not_retried(sim, said):
    pcm, starts = said
    sim.streaming.faults.plan("drop", after_s=starts[1] + 0.5)
    told = []
    rt = RealtimeTranscriber(on_reconnecting=lambda n, e: told.append(n)).start()
    speak(rt, pcm[: int((starts[1] + 0.2) * 32000) // 2 * 2])
    sim.streaming.key = "revoked"  # the key stops working before the reconnect
    with pytest.raises(AuthenticationError, match="ASSEMBLYAI_API_KEY"):
        speak(rt, pcm[int((starts[1] + 0.2) * 32000) // 2 * 2:])
        rt.close()
    assert told == [1]  # one try, refused for the key: no more
    assert sim.streaming.stats["sessions"] == 1


def test_it_gives_up_after_its_tries_with_the_cause(sim, said, monkeypatch):
    pcm, starts = said
    monkeypatch.setattr(streaming, "RECONNECT_TRIES", 3)
    sim.streaming.faults.plan("drop", after_s=starts[1] + 0.5, refuse_s=60)
    told = []
    rt = RealtimeTranscriber(on_reconnecting=lambda n, e: told.append(n)).start()
    with pytest.raises(ServiceError, match="503"):
        speak(rt, pcm)
        rt.close()
    assert told == [1, 2, 3]


def test_no_reconnect_when_asked_not_to(sim, said):
    pcm, starts = said
    sim.streaming.faults.plan("drop", after_s=starts[1] + 0.5)
    rt = RealtimeTranscriber(reconnect=False).start()
    with pytest.raises(ServiceError, match="1006"):
        speak(rt, pcm)
        rt.close()
    assert rt.reconnects == 0


def test_a_session_near_its_end_is_rolled_over_between_turns(sim, said):
    pcm, _ = said
    # rolled over in the silence after the second question, 0.8 s before the session ends
    sim.streaming.max_session_s = 8
    rt, finals, told = converse(pcm)
    assert [t.text for t in finals] == TEXTS
    assert rt.rollovers == 1 and rt.reconnects == 0 and not told  # nobody was told
    assert [t.reconnects for t in finals] == [0, 0, 0]
    assert sim.streaming.stats["closed_with_error"] == 0  # no session reached its end
    assert sim.streaming.stats["terminated"] == rt.rollovers + 1


def test_a_token_function_gives_each_session_its_token(sim, said):
    pcm, starts = said
    sim.streaming.faults.plan("drop", after_s=starts[1] + 0.5)
    tokens = []

    def token() -> str:
        tokens.append(create_temporary_token(60))
        return tokens[-1]

    rt, finals, _ = converse(pcm, token=token)
    assert [t.text for t in finals] == TEXTS
    assert len(tokens) == 2 and rt.reconnects == 1
    assert all(tok not in repr(rt) and tok not in rt.url for tok in tokens)
    assert [r.auth for r in sim.streaming.received] == ["token", "token"]


def test_a_single_token_cannot_reconnect_and_says_what_to_do(sim, said):
    pcm, starts = said
    sim.streaming.faults.plan("drop", after_s=starts[1] + 0.5)
    rt = RealtimeTranscriber(token=create_temporary_token(60)).start()
    with pytest.raises(ServiceError, match="token= a function"):
        speak(rt, pcm)
        rt.close()
    assert rt.reconnects == 0


def test_the_live_widget_says_reconnecting_and_records_the_turns(sim, said, tmp_path):
    pcm, starts = said
    session = vnb.Session("drops", home=tmp_path)
    widget = session.live(speak=False)
    statuses = []
    widget.observe(lambda change: statuses.append(change["new"]), names="status")
    sim.streaming.faults.plan("drop", after_s=starts[1] + 0.8)
    step = 3200
    clock = time.monotonic()
    for i in range(0, len(pcm), step):
        widget.feed(pcm[i:i + step])
        clock += 0.1
        time.sleep(max(0.0, clock - time.monotonic()))
    widget.stop()
    assert widget.wait(60)
    rows = session.history
    assert list(rows["transcript"]) == TEXTS
    assert list(rows["status"]) == ["ok"] * 3
    assert list(rows["reconnects"]) == [0, 1, 0]
    assert any(s.startswith("reconnecting") for s in statuses)
    assert not statuses[-1].startswith("reconnecting")


# -- the simulator's knobs --------------------------------------------------------------------

def test_fault_specs_read_as_the_cli_writes_them():
    assert parse_fault("streaming:close=1011@40f") == (
        "streaming", {"kind": "close", "times": 1, "code": 1011, "after_frames": 40})
    assert parse_fault("drop@2s,refuse=3") == (
        None, {"kind": "drop", "times": 1, "refuse_s": 3.0, "after_s": 2.0})
    assert parse_fault("drop@5-20s") == (None, {"kind": "drop", "every": (5.0, 20.0)})
    assert parse_fault("stall=3@5sx*")[1] == {"kind": "stall", "times": -1, "for_s": 3.0,
                                              "after_s": 5.0}
    for bad in ("explode@1s", "drop@5m", "drop=3@1s", "drop@1s,later=2"):
        with pytest.raises(ValueError):
            parse_fault(bad)


def test_planned_faults_strike_the_sessions_they_name():
    faults = SocketFaults()
    faults.plan("close", code=3005, after_frames=3, times=2)
    first, second, third = faults.session(), faults.session(), faults.session()
    assert [first.due(), first.due()] == [None, None]
    assert first.due().code == 3005 and first.due() is None  # once per session
    assert [second.due() for _ in range(3)][-1].kind == "close"
    assert all(third.due() is None for _ in range(10))
    assert faults.stats["close"] == 2


def test_the_cli_plans_socket_faults_and_refuses_bad_ones(tmp_path):
    bad = subprocess.run([sys.executable, "-m", "voicenb.sim", "--port", "0",
                          "--socket-fault", "explode@1s"], capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and "unknown socket fault 'explode'" in bad.stderr
    proc = subprocess.Popen([sys.executable, "-m", "voicenb.sim", "--port", "0",
                             "--socket-fault", "streaming:drop@0.5s"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        from voicenb.sim.__main__ import env_from_line

        env = env_from_line(proc.stdout.readline())
        from websockets.sync.client import connect
        from websockets.exceptions import ConnectionClosed

        url = env["ASSEMBLYAI_STREAMING_URL"] + "/v3/ws?sample_rate=16000"
        with connect(url, additional_headers={"Authorization": env["ASSEMBLYAI_API_KEY"]},
                     proxy=None) as ws:
            assert json.loads(ws.recv(5))["type"] == "Begin"
            with pytest.raises(ConnectionClosed):
                for _ in range(40):
                    ws.send(QUIET[:3200])
                    time.sleep(0.1)
            assert ws.close_code in (None, 1006)  # cut: no close frame
    finally:
        proc.terminate()
        proc.wait(30)


def test_a_replay_starts_at_the_speech_not_at_the_last_words_sound_running_on():
    from voicenb.stt.streaming import _SentAudio

    tone = b"".join((int(8000 * ((i // 8) % 2 * 2 - 1))).to_bytes(2, "little", signed=True)
                    for i in range(1600))  # 100 ms, loud
    sent = _SentAudio(16000)
    # a turn's words, its final word's sound running on 40 ms past its timing, a pause,
    # then the next question (cut off by the drop)
    sent.add(tone * 10 + tone[:1280] + QUIET[:16000] + tone * 5, 0.0)
    sent.take(0.0, 1.0)  # the final turn said its words ended at 1.0 s
    assert sent.after_turn
    pcm, start = sent.unheard()
    assert start == pytest.approx(1.04 + 0.5 - 0.3, abs=0.021)  # 0.3 s before the question
    assert len(pcm) == pytest.approx((0.3 + 0.5) * 32000, abs=700)
    # a click in the pause (20 ms) is not where speech begins
    clicked = _SentAudio(16000)
    clicked.add(tone * 10 + QUIET[:16000] + tone[:640] + QUIET[:16000] + tone * 5, 0.0)
    clicked.take(0.0, 1.0)
    assert clicked.unheard()[1] == pytest.approx(1.0 + 0.5 + 0.02 + 0.5 - 0.3, abs=0.021)
    # before any final turn, speech at the very start is replayed from the start
    fresh = _SentAudio(16000)
    fresh.add(tone * 3 + QUIET[:8000], 0.0)
    assert fresh.unheard()[1] == 0.0
    # silence alone is not replayed
    quiet = _SentAudio(16000)
    quiet.add(QUIET, 0.0)
    assert quiet.unheard() == (b"", 1.0)
