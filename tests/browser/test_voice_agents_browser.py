"""A spoken conversation with each speech-to-speech backend in real Chromium:
session.live(backend="openai-realtime" | "assemblyai-agent") against the simulators. The fake
microphone asks a question; the service's answer plays in the page as it arrives; a second
question spoken over it stops it (the service is told how much was heard). The history holds
both turns, the first barged_in with the part that was heard."""

from __future__ import annotations

import os
import shutil

import pytest

import voicenb as vnb

from . import harness
from .test_talkback_browser import ARTIFACTS, _microphone, pytestmark  # noqa: F401 - the
# same microphone (a question, then a second one over the answer), artifacts and skip rule


@pytest.mark.parametrize("backend", ["openai-realtime", "assemblyai-agent"])
def test_a_spoken_conversation_with_an_interruption(tmp_path, backend):
    home = tmp_path / "home"
    mic = _microphone(tmp_path / "mic.wav")
    name = backend.replace("-", "_")
    # the page resamples the microphone: the simulators hear any speech as this question
    with vnb.sim.running(unknown_text="What is the capital of France?") as sim:
        harness.write_notebook(tmp_path / "talk.ipynb", [
            f"import voicenb as vnb\ns = vnb.Session('talk')\n"
            f"live = s.live(backend={backend!r})\nlive"])
        log = tmp_path / "jupyter.log"
        jupyter = harness.Jupyter(tmp_path, {**os.environ, "VOICENB_HOME": str(home)}, log)
        try:
            with harness.chromium(mic) as browser:
                page = browser.new_page(viewport={"width": 1100, "height": 800})
                try:
                    _converse(page, jupyter, name)
                except Exception as exc:
                    ARTIFACTS.mkdir(exist_ok=True)
                    page.screenshot(path=str(ARTIFACTS / f"{name}-failure.png"),
                                    full_page=True)
                    shutil.copy(log, ARTIFACTS / f"{name}-jupyter.log")
                    raise AssertionError(f"{exc}\nscreenshot: "
                                         f"{ARTIFACTS}/{name}-failure.png") from exc
        finally:
            jupyter.stop()
        service = sim.realtime if backend == "openai-realtime" else sim.agent
        stats = dict(service.stats)
    df = vnb.load_history(str(home), session="talk")
    first, second = df.iloc[0], df.iloc[1]
    assert (df["live_backend"] == backend).all()
    assert first["transcript"] == "What is the capital of France?"
    assert first["answer"].startswith("(simulated answer)")
    assert first["status"] == "barged_in", df[["status", "spoken_chars", "error"]]
    assert 0 < first["spoken_chars"] < len(first["answer"])
    assert 0 < first["first_audio_s"] < 5
    assert second["status"] in ("ok", "barged_in") and second["spoken_chars"] > 0
    assert first["cost_usd"] > 0
    if backend == "openai-realtime":  # the service was told where the person stopped it
        assert stats["truncates"] >= 1 and stats["cancels"] >= 1, stats
    else:  # it had made the whole answer before it was spoken over (4x real time):
        # the page stopped playing it; the agent detects barge-in only mid-reply
        assert stats["replies"] + stats.get("interrupted", 0) >= 2, stats
    print(f"\n{backend}: voice to voice {first['first_audio_s']:.2f} s; heard "
          f"{first['spoken_chars']} of {len(first['answer'])} characters")


def _converse(page, jupyter, name: str) -> None:
    harness.start_live(page, jupyter, "talk.ipynb")
    page.wait_for_function("window.__voicenbSpeaker && window.__voicenbSpeaker.state === "
                           "'playing'", timeout=60_000)
    ARTIFACTS.mkdir(exist_ok=True)
    page.locator(".jp-Cell").first.screenshot(path=str(ARTIFACTS / f"{name}-speaking.png"))
    page.wait_for_function("window.__voicenbSpeaker.state === 'hushed'", timeout=30_000)
    page.locator(".jp-Cell").first.screenshot(path=str(ARTIFACTS / f"{name}-hushed.png"))
    page.wait_for_function(
        "document.querySelector('.voicenb-live-status').textContent.includes('turn 2: done')",
        timeout=90_000)
    page.locator(".jp-Cell").first.screenshot(path=str(ARTIFACTS / f"{name}-done.png"))
    page.click(".voicenb-live-button")  # stop
