"""Talk back through AssemblyAI's text to speech in real Chromium: session.live(speak=
"assemblyai") against the simulator, which speaks AssemblyAI's WebSocket protocol in
espeak-ng's voice. The answer's tokens go into one session as they stream, its audio plays
in the page as it arrives, and a second question spoken over it sends Cancel on the same
session. The history holds exactly the words whose timings fell before the stop."""

from __future__ import annotations

import json
import os
import shutil

import requests

import voicenb as vnb
from voicenb._talkback import _BLANKED, _cut

from . import harness
from .test_talkback_browser import ARTIFACTS, _microphone, pytestmark  # noqa: F401 - the
# same microphone (a question, then a second one over the answer), artifacts and skip rule


def test_an_assemblyai_answer_is_read_aloud_and_keeps_exactly_the_words_heard(tmp_path):
    home = tmp_path / "home"
    mic = _microphone(tmp_path / "mic.wav")
    # audio made at twice real time: the sentence being heard is made (and its words timed)
    # by the time it is spoken over, the ones after it are still being made (Cancel)
    with vnb.sim.running(unknown_text="What is the capital of France?", tts_speed=2.0) as sim:
        harness.write_notebook(tmp_path / "talk.ipynb", [
            "import voicenb as vnb\ns = vnb.Session('talk')\n"
            "live = s.live(speak='assemblyai')\nlive"])
        log = tmp_path / "jupyter.log"
        jupyter = harness.Jupyter(tmp_path, {**os.environ, "VOICENB_HOME": str(home)}, log)
        try:
            with harness.chromium(mic) as browser:
                page = browser.new_page(viewport={"width": 1100, "height": 800})
                try:
                    played, sessions = _converse(page, jupyter, sim)
                except Exception as exc:
                    ARTIFACTS.mkdir(exist_ok=True)
                    page.screenshot(path=str(ARTIFACTS / "talkback-aai-failure.png"),
                                    full_page=True)
                    shutil.copy(log, ARTIFACTS / "talkback-aai-jupyter.log")
                    raise AssertionError(f"{exc}\nscreenshot: "
                                         f"{ARTIFACTS}/talkback-aai-failure.png") from exc
        finally:
            jupyter.stop()
        df = vnb.load_history(str(home), session="talk")
        first, second = df.iloc[0], df.iloc[1]
        assert first["status"] == "barged_in", df[["status", "spoken_chars", "error"]]
        assert (first["tts_backend"], first["tts_model"], first["tts_voice"]) == (
            "assemblyai", "assemblyai-tts-1", "aai-jane")
        assert first["stt_s"] < first["first_token_s"] < first["first_audio_s"]
        expected = _words_before(sim, first["answer"], played)
        heard = first["answer"][:first["spoken_chars"]].split()
        assert heard == expected, (heard, expected, json.dumps(played))
        assert first["words_heard"] == len(expected) > 0
        assert len(expected) < len(first["answer"].split())
        assert second["status"] in ("ok", "barged_in") and second["spoken_chars"] > 0
        # one session for the conversation: the barge-in was a Cancel, not a reconnect
        assert sessions == 1 and sim.tts.stats["cancels"] >= 1
    print(f"\nvoice to voice {first['first_audio_s']:.2f} s (AssemblyAI first audio "
          f"{first['tts_ttfb_s']:.2f} s after the first token); heard "
          f"{first['words_heard']} words: {' '.join(heard)!r}")


def _converse(page, jupyter, sim) -> tuple[dict, int]:
    """Run the conversation; the page's report of the first answer (the seconds it played
    of each clip, and each clip's length), and the voice sessions the conversation used."""
    harness.start_live(page, jupyter, "talk.ipynb")
    page.wait_for_function("window.__voicenbSpeaker && window.__voicenbSpeaker.state === "
                           "'playing'", timeout=60_000)
    ARTIFACTS.mkdir(exist_ok=True)
    page.locator(".jp-Cell").first.screenshot(path=str(ARTIFACTS / "talkback-aai-speaking.png"))
    page.wait_for_function("window.__voicenbSpeaker.state === 'hushed'", timeout=30_000)
    report = page.evaluate("""() => {
        const sp = window.__voicenbSpeaker;
        const hushed = sp.sent.find((m) => m.type === 'hushed');
        const a = sp.history.find((h) => h.id === hushed.answer);
        const lengths = {};
        for (const [seq, s] of Object.entries(a.sentences)) lengths[seq] = s.duration;
        return {played: hushed.played, lengths};
    }""")
    page.locator(".jp-Cell").first.screenshot(path=str(ARTIFACTS / "talkback-aai-hushed.png"))
    page.wait_for_function(
        "document.querySelector('.voicenb-live-status').textContent.includes('turn 2: done')",
        timeout=90_000)
    page.locator(".jp-Cell").first.screenshot(path=str(ARTIFACTS / "talkback-aai-done.png"))
    sessions = sim.tts.stats["sessions"]
    page.click(".voicenb-live-button")  # stop
    return report, sessions


def _words_before(sim, answer: str, report: dict) -> list[str]:
    """The answer's words whose end, by the service's word timings, came before the point
    where the page stopped. Each sentence of the answer was one request on the session; the
    service's server-sent-events route says the same synthesis's timings and length."""
    lengths = {int(k): v for k, v in report["lengths"].items() if v is not None}
    played = {int(k): float(v) for k, v in report["played"].items()}
    starts, at = {}, 0.0
    for seq in sorted(lengths):
        starts[seq] = at
        at += lengths[seq]
    stop_ms = max(starts[seq] + seconds for seq, seconds in played.items()) * 1000
    count, offset_ms = 0, 0.0
    for sentence, _chars in _cut(answer, True)[0]:
        events = _events(sim, sentence.translate(_BLANKED))
        for _word, end in events["words"]:
            if offset_ms + end > stop_ms:
                return answer.split()[:count]
            count += 1
        offset_ms += events["ms"]
    return answer.split()[:count]


def _events(sim, text: str) -> dict:
    response = requests.post(f"{sim.tts.url}/v1/speech/events", json={"text": text},
                             headers={"Authorization": sim.assemblyai.key}, timeout=30)
    response.raise_for_status()
    out: dict = {"words": [], "ms": 0}
    for block in response.text.split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        data = json.loads(lines["data"]) if "data" in lines else {}
        if lines.get("event") == "WordBoundaries":
            out["words"] = [(w["word"], w["end"] - data["audio_start_ms"])
                            for w in data["words"]]
        elif lines.get("event") == "FlushDone":
            out["ms"] = data["audio_duration_ms"]
    return out
