"""The recorder in real Chromium, in JupyterLab 4 and Notebook 7, with a fake microphone,
with both engines (anywidget PCM streaming, and ipywebrtc).

Chromium plays tests/data/question.wav as the microphone. The simulators hear the recording
(not in their registry) as ``TRANSCRIPT``, which carries an HTML payload that must be shown as
text and never run. On failure a screenshot and the Jupyter log are kept under
test-artifacts/ and named in the failure message.
"""

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
TRANSCRIPT = 'What is the capital of France? <img src=x onerror="window.__xss=1">'
CELL = ("import voicenb as vnb\n"
        "s = vnb.Session('browser')\n"
        "rec = s.recorder(engine={engine!r})\n"
        "rec")

pytestmark = pytest.mark.skipif(
    not Path(harness.CHROMIUM).exists() and not os.environ.get("CI"),
    reason="Debian's chromium is not installed (.ci/run installs it; CI never skips)")


@pytest.fixture(params=["anywidget", "ipywebrtc"])
def stack(tmp_path, request):
    """Simulators, a Jupyter server whose kernels point at them, and Chromium."""
    home = tmp_path / "home"
    with vnb.sim.running(unknown_text=TRANSCRIPT) as sim:
        env = {**os.environ, "VOICENB_HOME": str(home)}
        harness.write_notebook(tmp_path / "rec.ipynb", [CELL.format(engine=request.param)])
        log = tmp_path / "jupyter.log"
        jupyter = harness.Jupyter(tmp_path, env, log)
        try:
            with harness.chromium(MIC) as browser:
                yield sim, jupyter, browser, home, log
        finally:
            jupyter.stop()


def _record_a_turn(page, url: str, name: str, log: Path) -> dict:
    """Open the notebook, run the cell, record ~3 s, stop; return what the page shows."""
    try:
        page.goto(url)
        page.wait_for_selector(".jp-Cell .jp-InputArea-editor", timeout=90_000)
        page.wait_for_function(
            "document.querySelector('.jp-Notebook') !== null", timeout=30_000)
        time.sleep(2)  # let the kernel connect
        page.click(".jp-Cell .jp-InputArea-editor")
        page.keyboard.press("Shift+Enter")
        page.wait_for_selector("button.voicenb-record", timeout=90_000)
        page.wait_for_selector(".voicenb-status[data-state=idle]", timeout=30_000)
        page.click("button.voicenb-record")
        page.wait_for_selector(".voicenb-status[data-state=recording]", timeout=30_000)
        time.sleep(3)
        page.click("button.voicenb-record")
        stopped = time.monotonic()
        page.wait_for_function(
            "document.querySelector('.voicenb-answer').textContent.startsWith('GPT: ')",
            timeout=90_000)
        first_answer = time.monotonic() - stopped
        page.wait_for_selector(".voicenb-status[data-state=ok]", timeout=90_000)
        return {
            "first_answer_s": first_answer,
            "transcript": page.inner_text(".voicenb-transcript"),
            "answer": page.inner_text(".voicenb-answer"),
            "xss": page.evaluate("window.__xss"),
            "images": page.locator(".voicenb-recorder img").count(),
            "status": page.inner_text(".voicenb-status"),
            # what a person sees to press or play: our button alone, no player
            "controls": page.locator(".jp-OutputArea button:visible, .jp-OutputArea "
                                     "audio:visible, .jp-OutputArea video:visible").count(),
        }
    except Exception as exc:
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / f"{name}-failure.png"
        page.screenshot(path=str(shot), full_page=True)
        kept_log = ARTIFACTS / f"{name}-jupyter.log"
        shutil.copy(log, kept_log)
        raise AssertionError(f"{name}: {exc}\nscreenshot: {shot}\nserver log: {kept_log}") \
            from exc


def _check(seen: dict, home: Path) -> None:
    assert seen["transcript"] == f"You: {TRANSCRIPT}"
    assert seen["answer"].startswith("GPT: (simulated answer)")
    assert seen["xss"] is None, "the HTML in the transcript was executed"
    assert seen["images"] == 0, "the HTML in the transcript became an element"
    df = vnb.load_history(str(home))
    assert df["status"].tolist() == ["ok"]
    assert df["transcript"].tolist() == [TRANSCRIPT]
    assert df["audio_path"].iloc[0].endswith((".webm", ".wav"))
    assert Path(df["audio_path"].iloc[0]).stat().st_size > 1000
    assert seen["controls"] == 2, "our Record button and the turn's play button, nothing else"
    print(f"stop -> first answer text on the page: {seen['first_answer_s']:.2f} s")


def test_recorder_in_jupyterlab(stack):
    sim, jupyter, browser, home, log = stack
    page = browser.new_page(viewport={"width": 1100, "height": 800})
    seen = _record_a_turn(page, jupyter.lab("rec.ipynb"), "jupyterlab", log)
    _check(seen, home)
    # one clip, one transcript: through AssemblyAI's Sync API, while recording for anywidget
    assert sim.stats["sync_transcripts"] == 1 and sim.stats["chat_completions"] == 1
    ARTIFACTS.mkdir(exist_ok=True)
    engine = "webrtc" if page.locator(".widget-toggle-button").count() else "anywidget"
    page.locator(".jp-Cell").first.screenshot(path=str(ARTIFACTS / f"recorder-{engine}.png"))


def test_recorder_in_notebook7(stack):
    sim, jupyter, browser, home, log = stack
    page = browser.new_page(viewport={"width": 1100, "height": 800})
    seen = _record_a_turn(page, jupyter.notebook7("rec.ipynb"), "notebook7", log)
    _check(seen, home)
