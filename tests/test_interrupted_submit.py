"""Ctrl-C while a transcript is being submitted, then a rerun at once: the clip is paid for once.

Each interruption lands at a known point of the submit (POST /v2/transcript): the simulator
holds the request there (``sim.assemblyai.hold``) and the main thread gets SIGINT, as from
Ctrl-C, or a callback raises KeyboardInterrupt at the stage it is told of. Creations are
counted at the simulator.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

import pytest

import voicenb as vnb
from voicenb.stt import Checkpoint

#: about the async API (upload, submit, poll): short clips would take the Sync API
pytestmark = pytest.mark.usefixtures("async_api")


@pytest.fixture
def session(tmp_path):
    return vnb.Session("ctrl-c", home=str(tmp_path / "home"))


@pytest.fixture(autouse=True)
def ctrl_c_raises():
    """SIGINT raises KeyboardInterrupt in the main thread, as in a script or a kernel."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


class Helper:
    """Steps run in a thread while the main thread is busy in voicenb; whatever happens,
    every hold is released at the end, so that the main thread never waits forever."""

    def __init__(self, steps: Callable[[], None], *holds: Any) -> None:
        self.error: BaseException | None = None
        self.holds = holds
        self.thread = threading.Thread(target=self._run, args=(steps,), daemon=True)
        self.thread.start()

    def _run(self, steps: Callable[[], None]) -> None:
        try:
            steps()
        except BaseException as exc:  # reported by check()
            self.error = exc
        finally:
            for hold in self.holds:
                hold.release()

    def check(self) -> None:
        self.thread.join(60)
        assert not self.thread.is_alive()
        if self.error is not None:
            raise self.error


def ctrl_c() -> None:
    """SIGINT to the main thread (a lock wait or a socket read there is interrupted)."""
    signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)


def interrupt_when(hold) -> Helper:
    """Ctrl-C the main thread once ``hold`` has caught its request."""
    def steps() -> None:
        hold.wait_arrived()
        ctrl_c()

    return Helper(steps)  # the hold stays: the test releases it when it chooses


def rerun_while_held(submit, listing) -> Helper:
    """Let the rerun read the account's transcripts while the interrupted POST is still held
    (so the list cannot show it), and only then let that POST create its transcript."""
    def steps() -> None:
        listing.wait_arrived()
        listing.release()
        listing.wait_finished()
        submit.release()

    return Helper(steps, submit, listing)


@pytest.mark.parametrize("run", ["ask_audio", "ask_many"])
def test_ctrl_c_while_the_service_holds_the_submit_then_a_rerun_at_once_pays_once(
        sim, sample, session, run):
    submit, listing = sim.assemblyai.hold("submit"), sim.assemblyai.hold("list")
    interrupting = interrupt_when(submit)
    with pytest.raises(KeyboardInterrupt):
        if run == "ask_audio":
            session.ask_audio(sample)
        else:  # the answering loop is interrupted; the POST is a worker thread's
            session.ask_many([sample], progress=False)
    interrupting.check()
    assert session.history["status"].tolist() == ["interrupted"]
    helper = rerun_while_held(submit, listing)
    turns = session.resume(progress=False)
    helper.check()
    assert [t.transcript for t in turns] == ["What is the capital of France?"]
    assert sim.stats["transcripts"] == 1
    assert sim.stats["uploads"] == 1


def test_ctrl_c_after_the_service_created_the_transcript_then_a_rerun_pays_once(
        sim, sample, session):
    created = sim.assemblyai.hold("created")  # created; its answer is held back
    interrupting = interrupt_when(created)
    with pytest.raises(KeyboardInterrupt):
        session.ask_audio(sample)
    interrupting.check()
    with created:
        turns = session.resume(progress=False)  # its answer still held: found in the list
    assert [t.transcript for t in turns] == ["What is the capital of France?"]
    created.wait_finished()
    assert sim.stats["transcripts"] == 1


def test_ctrl_c_before_the_submit_is_sent_then_a_rerun_pays_once(sim, sample, session):
    def on_status(turn: int, status: str) -> None:
        if status == "transcribing":  # uploaded and recorded; the POST not yet sent
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        session.ask_audio(sample, on_status=on_status)
    assert sim.stats["transcripts"] == 0
    turns = session.resume(progress=False)
    assert [t.transcript for t in turns] == ["What is the capital of France?"]
    assert sim.stats["transcripts"] == 1
    assert sim.stats["uploads"] == 1


def test_ctrl_c_after_the_answer_before_the_id_is_recorded_then_a_rerun_pays_once(sim, sample):
    client, kept = vnb.AssemblyAI(), {}

    def on_stage(stage: str, value: object) -> None:  # what a history would write down
        if stage == "uploaded":
            kept["upload_url"] = value
        elif stage == "submitted":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        client.transcribe(sample, on_stage=on_stage)
    assert sim.stats["transcripts"] == 1
    t = client.transcribe(sample, resume=Checkpoint(upload_url=kept["upload_url"]))
    assert t.text == "What is the capital of France?"
    assert sim.stats["transcripts"] == 1
    assert sim.stats["uploads"] == 1


SCRIPT = """
import sys, voicenb as vnb
s = vnb.Session("ctrl-c", home=sys.argv[1])
s.resume(progress=False) if sys.argv[2] == "resume" else s.ask_audio(sys.argv[2])
"""


def test_ctrl_c_in_a_script_mid_submit_then_running_it_again_pays_once(sim, sample, tmp_path):
    # The script ends once the service has answered its submit (the POST is not cut off),
    # so the run after it finds the transcript among the account's newest.
    import subprocess
    import sys

    home = str(tmp_path / "home")
    with sim.assemblyai.hold("submit") as submit:
        proc = subprocess.Popen([sys.executable, "-c", SCRIPT, home, str(sample)],
                                stderr=subprocess.PIPE, text=True)
        try:
            submit.wait_arrived()
        finally:
            proc.send_signal(signal.SIGINT)
    assert proc.wait(60) != 0 and "KeyboardInterrupt" in proc.stderr.read()
    rerun = subprocess.run([sys.executable, "-c", SCRIPT, home, "resume"],
                           capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert vnb.Session("ctrl-c", home=home).history["status"].tolist() == ["ok"]
    assert sim.stats["transcripts"] == 1
    assert sim.stats["uploads"] == 1
