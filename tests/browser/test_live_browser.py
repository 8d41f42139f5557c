"""session.live() in real Chromium: the fake microphone streams to the v3 simulator through
the AudioWorklet, and a turn is answered and recorded."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

import voicenb as vnb

from . import harness

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
MIC = ROOT / "tests" / "data" / "question.wav"
HEARD = 'What is the capital of France? <img src=x onerror="window.__xss=1">'

pytestmark = pytest.mark.skipif(
    not Path(harness.CHROMIUM).exists() and not os.environ.get("CI"),
    reason="Debian's chromium is not installed (.ci/run installs it; CI never skips)")


def test_live_widget_streams_the_microphone_and_answers_a_turn(tmp_path):
    home = tmp_path / "home"
    with vnb.sim.running(unknown_text=HEARD) as sim:
        harness.write_notebook(tmp_path / "live.ipynb", [
            "import voicenb as vnb\ns = vnb.Session('live')\nlive = s.live()\nlive"])
        log = tmp_path / "jupyter.log"
        jupyter = harness.Jupyter(tmp_path, {**os.environ, "VOICENB_HOME": str(home)}, log)
        try:
            with harness.chromium(MIC) as browser:
                page = browser.new_page(viewport={"width": 1100, "height": 800})
                try:
                    harness.start_live(page, jupyter, "live.ipynb")
                    page.wait_for_selector(".voicenb-live-status[data-state=listening]",
                                           timeout=30_000)
                    page.wait_for_function(
                        "document.querySelector('.voicenb-live-answer').textContent"
                        ".startsWith('GPT: (simulated answer)')", timeout=60_000)
                    page.wait_for_function(
                        "document.querySelector('.voicenb-live-status').textContent"
                        ".includes('done')", timeout=60_000)
                    said = page.inner_text(".voicenb-live-transcript")
                    xss = page.evaluate("window.__xss")
                    images = page.locator(".voicenb-live img").count()
                    page.click(".voicenb-live-button")  # stop: Terminate
                    deadline = time.monotonic() + 30
                    while (sim.streaming.stats["terminated"] < 1
                           and time.monotonic() < deadline):
                        time.sleep(0.2)
                    ARTIFACTS.mkdir(exist_ok=True)
                    page.locator(".jp-Cell").first.screenshot(path=str(ARTIFACTS / "live.png"))
                except Exception as exc:
                    ARTIFACTS.mkdir(exist_ok=True)
                    shot = ARTIFACTS / "live-failure.png"
                    page.screenshot(path=str(shot), full_page=True)
                    shutil.copy(log, ARTIFACTS / "live-jupyter.log")
                    raise AssertionError(f"{exc}\nscreenshot: {shot}\nserver log: "
                                         f"{ARTIFACTS / 'live-jupyter.log'}") from exc
        finally:
            jupyter.stop()
        assert sim.streaming.stats["terminated"] == 1  # Stop ended the session properly
    assert said == f"You: {HEARD}"
    assert xss is None and images == 0
    df = vnb.load_history(str(home), session="live")
    assert len(df) >= 1
    first = df.iloc[0]
    assert first["status"] == "ok" and first["transcript"] == HEARD
    assert first["stt_backend"] == "assemblyai-streaming" and first["stt_s"] > 0
    assert (home / first["audio_path"]).exists()
