"""Kill -9 in mid-turn, resume in a new process; four processes writing one store at once.
Each on both engines: a SQLite file, and a real PostgreSQL server (tests/_postgres.py)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import wave

import pytest
import sqlalchemy as sa

import voicenb as vnb
from tests._postgres import sqlalchemy_url

#: about the async API (upload, submit, poll): short clips would take the Sync API
pytestmark = pytest.mark.usefixtures("async_api")


@pytest.fixture(params=["sqlite", "postgresql"])
def history(request):
    """Where the history is: None (the SQLite file in home), or a fresh PostgreSQL database."""
    return None if request.param == "sqlite" else request.getfixturevalue("postgres_url")


def _env(history) -> dict[str, str]:
    env = os.environ.copy()
    if history:
        env["VOICENB_HISTORY_URL"] = history
    return env

TURN = textwrap.dedent("""
    import sys, voicenb as vnb
    s = vnb.Session("crash", home=sys.argv[1])
    s.ask_audio(sys.argv[2])
""")
RESUME = textwrap.dedent("""
    import sys, voicenb as vnb
    s = vnb.Session("crash", home=sys.argv[1])
    for t in s.resume(progress=False):
        print(t.status, t.transcript, sep="|")
""")


def _row(home, history=None) -> tuple[str | None, str | None]:
    """The last turn's (status, transcript_id); (None, None) before there is one."""
    query = "SELECT status, transcript_id FROM turns ORDER BY turn DESC LIMIT 1"
    if history:
        engine = sa.create_engine(sqlalchemy_url(history), poolclass=sa.pool.NullPool)
        try:
            with engine.connect() as db:
                row = db.execute(sa.text(query)).first()
        except sa.exc.SQLAlchemyError:
            return None, None  # not created yet
        return (row[0], row[1]) if row else (None, None)
    try:
        db = sqlite3.connect(f"file:{home}/history.sqlite?mode=ro", uri=True, timeout=5)
        row = db.execute(query).fetchone()
        db.close()
        return (row[0], row[1]) if row else (None, None)
    except sqlite3.Error:
        return None, None


def _turn(home, clip, history=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", TURN, str(home), str(clip)],
                            env=_env(history))


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _kill_when(home, clip, status: str, history=None) -> None:
    """Kill the turn once its row says ``status`` (and, transcribing, its transcript id)."""
    proc = _turn(home, clip, history)
    try:
        deadline = time.monotonic() + 60
        while True:
            now, transcript_id = _row(home, history)
            if now == status and (status != "transcribing" or transcript_id):
                break
            assert proc.poll() is None, "the turn finished before it could be killed"
            assert time.monotonic() < deadline, f"never reached {status!r}"
            time.sleep(0.02)
    finally:
        _kill(proc)


def _resume(home, history=None) -> list[str]:
    out = subprocess.run([sys.executable, "-c", RESUME, str(home)], capture_output=True,
                         text=True, env=_env(history), timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


@pytest.mark.parametrize("stage,knobs", [
    ("transcribing", {"processing_fixed": 3.0}),  # resume re-polls the same transcript
    ("answering", {"ttft": 3.0}),                 # resume only asks the model again
])
def test_sigkill_mid_turn_then_resume_in_a_new_process(tmp_path, sample, stage, knobs,
                                                       history):
    home = tmp_path / "home"
    with vnb.sim.running(**knobs) as sim:
        _kill_when(home, sample, stage, history)
        assert vnb.load_history(str(home), history=history)["status"].tolist() == \
            ["interrupted"]
        sim.assemblyai.processing_fixed = 0.2
        sim.openai.ttft = 0.05
        # another machine's home would do as well on a server: the audio is in it
        assert _resume(home if not history else tmp_path / "elsewhere", history) == \
            ["ok|What is the capital of France?"]
        assert sim.stats["uploads"] == 1
        assert sim.stats["transcripts"] == 1
    df = vnb.load_history(str(home), history=history)
    assert df["status"].tolist() == ["ok"] and df["answer"].iloc[0].startswith("(simulated")


def _past_the_socket_buffers() -> int:
    """A body size a client killed mid-upload cannot have handed to its kernel: more than
    its send buffer grows to, plus what the simulator's receive buffer takes while the
    simulator reads nothing (that buffer grows only as it is read)."""
    try:
        wmem = int(open("/proc/sys/net/ipv4/tcp_wmem").read().split()[2])
        core = int(open("/proc/sys/net/core/wmem_max").read())
        rmem = int(open("/proc/sys/net/ipv4/tcp_rmem").read().split()[1])
    except OSError:  # not Linux: sizes far above the usual defaults
        return 64 << 20
    return max(wmem, 2 * core) + 2 * rmem + (1 << 20)


@pytest.fixture
def long_sample(tmp_path, sample):
    """The sample said over and over, a clip longer than the socket buffers can hold."""
    with wave.open(str(sample)) as src:
        params, frames = src.getparams(), src.readframes(src.getnframes())
    path = tmp_path / "long.wav"
    with wave.open(str(path), "wb") as out:
        out.setparams(params)
        for _ in range(_past_the_socket_buffers() // len(frames) + 1):
            out.writeframes(frames)
    return path


@pytest.mark.parametrize("point,uploads", [
    ("upload", (0, 1)),    # mid-body, the rest not yet sent: the service has no upload
    ("uploaded", (1, 2)),  # stored, its answer not sent: resume uploads again (bandwidth)
    ("submit", (1, 1)),    # the POST held, nothing created: resume finds what it creates
    ("created", (1, 1)),   # created, its answer not sent: resume finds it in the list
])
def test_sigkill_at_a_known_point_of_the_upload_or_submit_then_resume(
        request, tmp_path, sample, point, uploads, history):
    """The simulator holds the request at ``point`` and the turn is killed there.
    ``uploads``: completed at the service by the killed turn, then in all. A second upload
    costs bandwidth and is allowed; a second transcript costs money: never."""
    home = tmp_path / "home"
    clip = request.getfixturevalue("long_sample") if point == "upload" else sample
    with vnb.sim.running(processing_factor=0.0) as sim:
        sim.registry.register(clip, "What is the capital of France?")
        with sim.assemblyai.hold(point) as hold:
            proc = _turn(home, clip, history)
            try:
                hold.wait_arrived(120)
            finally:
                _kill(proc)
        hold.wait_finished()  # released: it went on to its end, for a client now gone
        assert sim.stats["uploads"] == uploads[0]
        assert sim.stats["transcripts"] == (point in ("submit", "created"))
        assert vnb.load_history(str(home), history=history)["status"].tolist() == \
            ["interrupted"]
        assert _resume(home if not history else tmp_path / "elsewhere", history) == \
            ["ok|What is the capital of France?"]
        assert sim.stats["uploads"] == uploads[1]
        assert sim.stats["transcripts"] == 1


WRITER = textwrap.dedent("""
    import sys, voicenb as vnb
    store = vnb.HistoryStore(sys.argv[1])  # VOICENB_HISTORY_URL, if set, says where
    for i in range(int(sys.argv[3])):
        n = store.start_turn(sys.argv[2], status="transcribing", audio_path=f"{i}.wav")
        store.update(sys.argv[2], n, status="answering", transcript=f"t{i}",
                     upload_url="http://x")
        store.update(sys.argv[2], n, status="ok", answer=f"a{i}", total_s=0.1)
""")


@pytest.mark.parametrize("same_session", [False, True])
def test_four_processes_writing_one_store_lose_nothing(tmp_path, same_session, history):
    home, n = tmp_path / "home", 500
    names = ["one"] * 4 if same_session else ["one", "two", "three", "four"]
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(home), name, str(n)],
                              stderr=subprocess.PIPE, text=True, env=_env(history))
             for name in names]
    errors = [p.communicate(timeout=240)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, errors
    assert not any("locked" in e or "deadlock" in e for e in errors)
    df = vnb.load_history(str(home), history=history)
    assert len(df) == 4 * n
    assert (df["status"] == "ok").all()
    assert not df.duplicated(["session", "turn"]).any()


def test_two_sessions_in_two_processes_against_the_simulator(tmp_path, samples):
    home = tmp_path / "home"
    script = textwrap.dedent("""
        import sys, voicenb as vnb
        vnb.Session(sys.argv[2], home=sys.argv[1]).ask_many(
            [p for p in vnb.sim.samples()] * 5, progress=False)
    """)
    with vnb.sim.running():
        procs = [subprocess.Popen([sys.executable, "-c", script, str(home), name],
                                  stderr=subprocess.PIPE, text=True) for name in ("a", "b")]
        errors = [p.communicate(timeout=240)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    df = vnb.load_history(str(home))
    assert df.groupby("session").size().to_dict() == {"a": 15, "b": 15}
    assert (df["status"] == "ok").all()
