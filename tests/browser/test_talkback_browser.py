"""Talk back in real Chromium: session.live(speak="espeak"). The fake microphone asks a
question; the answer is read aloud in the page as it streams (the test sees the first sentence
start playing, not a sleep); a second question starting mid-answer stops it. The history shows
both turns, the first barged_in with the part of the answer that was heard."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import voicenb as vnb
from voicenb.audio import pcm_to_wav

from . import harness

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"

pytestmark = pytest.mark.skipif(
    not (Path(harness.CHROMIUM).exists() and shutil.which("espeak-ng"))
    and not os.environ.get("CI"),
    reason="Debian's chromium and espeak-ng are not installed (.ci/run installs them)")


def _microphone(path: Path) -> Path:
    """A question, 4 s of silence (the answer starts being read), a second question that
    speaks over the answer, then silence."""
    first, second = (vnb.Audio(p).pcm16k() for p in vnb.sim.samples()[:2])
    silence = bytes(2 * 16000)
    path.write_bytes(pcm_to_wav(first + silence * 4 + second + silence * 12))
    return path


def test_an_answer_is_read_aloud_and_stops_when_spoken_over(tmp_path):
    home = tmp_path / "home"
    mic = _microphone(tmp_path / "mic.wav")
    # the page resamples the microphone, so the simulator hears any speech as this question
    with vnb.sim.running(unknown_text="What is the capital of France?"):
        harness.write_notebook(tmp_path / "talk.ipynb", [
            "import voicenb as vnb\ns = vnb.Session('talk')\nlive = s.live(speak='espeak')\nlive"])
        log = tmp_path / "jupyter.log"
        jupyter = harness.Jupyter(tmp_path, {**os.environ, "VOICENB_HOME": str(home)}, log)
        try:
            with harness.chromium(mic) as browser:
                page = browser.new_page(viewport={"width": 1100, "height": 800})
                try:
                    seen = _converse(page, jupyter)
                except Exception as exc:
                    ARTIFACTS.mkdir(exist_ok=True)
                    page.screenshot(path=str(ARTIFACTS / "talkback-failure.png"),
                                    full_page=True)
                    shutil.copy(log, ARTIFACTS / "talkback-jupyter.log")
                    raise AssertionError(f"{exc}\nscreenshot: {ARTIFACTS}/talkback-failure.png"
                                         ) from exc
        finally:
            jupyter.stop()
    df = vnb.load_history(str(home), session="talk")
    first, second = df.iloc[0], df.iloc[1]
    assert first["transcript"] == "What is the capital of France?"
    assert first["status"] == "barged_in", df[["status", "spoken_chars", "error"]]
    assert 0 < first["spoken_chars"] < len(first["answer"])
    assert first["tts_model"] == "espeak" and first["tts_ttfb_s"] > 0
    assert first["stt_s"] < first["first_token_s"] < first["first_audio_s"]
    assert second["transcript"] == first["transcript"] and second["status"] in ("ok",
                                                                                "barged_in")
    assert second["first_audio_s"] > 0 and second["spoken_chars"] > 0
    assert seen["stopped_ms"] < 100, seen
    print(f"\nvoice to voice {first['first_audio_s']:.2f} s (final transcript "
          f"{first['stt_s']:.2f}, first token {first['first_token_s']:.2f}, espeak first "
          f"sentence {first['tts_ttfb_s']:.2f}); heard {first['spoken_chars']} of "
          f"{len(first['answer'])} characters; stop took {seen['stopped_ms']:.1f} ms in the "
          f"page ({seen['reason']})")


def _converse(page, jupyter) -> dict:
    harness.start_live(page, jupyter, "talk.ipynb")
    # the first sentence of the answer plays in the page
    page.wait_for_function("window.__voicenbSpeaker && window.__voicenbSpeaker.state === "
                           "'playing'", timeout=60_000)
    ARTIFACTS.mkdir(exist_ok=True)
    page.locator(".jp-Cell").first.screenshot(path=str(ARTIFACTS / "talkback-speaking.png"))
    # the second question stops it
    page.wait_for_function("window.__voicenbSpeaker.state === 'hushed'", timeout=30_000)
    hushed = page.evaluate("""() => {
        const h = window.__voicenbSpeaker.history;
        const a = h.find((x) => x.stoppedAt !== null);
        return {stopped_ms: a.stoppedAt - a.hushAt, reason: a.reason};
    }""")
    page.locator(".jp-Cell").first.screenshot(path=str(ARTIFACTS / "talkback-hushed.png"))
    # the second turn is answered (and read aloud) too
    page.wait_for_function(
        "document.querySelector('.voicenb-live-status').textContent.includes('turn 2: done')",
        timeout=90_000)
    page.locator(".jp-Cell").first.screenshot(path=str(ARTIFACTS / "talkback-done.png"))
    page.click(".voicenb-live-button")  # stop
    return hushed
