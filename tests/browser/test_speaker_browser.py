"""The talk-back player (static/speaker.js) in real Chromium, driven from a kernel.

A test-only widget, :class:`SpeakerProbe`, bundles capture.js and speaker.js with a small
render that creates the player and an "Enable sound" button (the click is the user gesture
browsers require before a page makes sound). The notebook imports it from this file; once the
button is clicked, the kernel plays three answers of espeak-ng sentences as the synthesis
engine would, and writes every message the page sent back to a JSON file:

1. four sentences, the last one sent after the others finished: "playing" for each, in order,
   back to back on the AudioContext clock, then "ended";
2. three sentences, hushed by the kernel in the middle of the second: "hushed" with what was
   played, the page silent within 100 ms, and a sentence that comes after the hush not played;
3. two sentences, and loud microphone chunks fed to the player's hear() from the page: it
   stops with reason "voice" (quiet, echo-like chunks and a single loud one do not stop it).

Screenshots go to test-artifacts/speaker-*.png.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import anywidget
import pytest

from voicenb.widgets.recorder import bundle

from . import harness

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
MIC = ROOT / "tests" / "data" / "question.wav"
SENTENCES = ["Paris is the capital of France.",
             "It lies on the river Seine.",
             "About two million people live there.",
             "That is all."]

pytestmark = pytest.mark.skipif(
    not Path(harness.CHROMIUM).exists() and not os.environ.get("CI"),
    reason="Debian's chromium is not installed (.ci/run installs it; CI never skips)")

PROBE_RENDER = """
function render({ model, el }) {
  const button = document.createElement("button");
  button.className = "speaker-probe-unlock jupyter-button";
  button.textContent = "Enable sound";
  const status = document.createElement("div");
  status.className = "speaker-probe-status";
  el.append(button, status);
  const speaker = createSpeaker(model, { onChange: show });
  function show() {
    const seq = speaker.seq === null ? "" : ", sentence " + speaker.seq;
    status.textContent = "answer " + (speaker.answer ?? "-") + ": " + speaker.state + seq;
    status.dataset.state = speaker.state;
  }
  button.onclick = () => speaker.unlock().then(() => {
    button.disabled = true;
    model.send({ type: "probe-ready" });
  });
  show();
  return () => speaker.close();
}
export default { render };
"""

# Fed to the player from the page while answer 3 plays: echo-like chunks, one loud chunk
# alone, then two loud ones; returns what happened and how long the stop took.
FEED_VOICE = """async () => {
  const s = window.__voicenbSpeaker;
  const tone = (amp) => {
    const a = new Int16Array(1600);  // 100 ms at 16 kHz, as capture.js hands them over
    for (let i = 0; i < a.length; i++) a[i] = Math.round(amp * Math.sin(2 * Math.PI * 220 * i / 16000));
    return a;
  };
  const echo = [0, 1, 2, 3].map(() => s.hear(tone(300)));  // RMS 212, about -44 dBFS
  const click = [s.hear(tone(9000)), s.hear(tone(300))];
  const stateBefore = s.state;
  const first = s.hear(tone(9000));  // RMS 6364, about -14 dBFS
  const t0 = performance.now();
  const second = s.hear(tone(9000));
  const info = s.history[s.history.length - 1];
  while (info.stoppedAt === null && performance.now() - t0 < 2000) {
    await new Promise((r) => setTimeout(r, 2));
  }
  return { echo, click, stateBefore, first, second, answer: info.id, reason: info.reason,
           stopMs: info.stoppedAt - t0 };
}"""


class SpeakerProbe(anywidget.AnyWidget):
    """The player alone, in a widget; on the page's "probe-ready" it runs :meth:`scenario`
    on a thread (the kernel must stay idle to receive the page's messages) and writes what
    it heard to ``out``."""

    _esm = bundle("capture.js", "speaker.js") + PROBE_RENDER

    def __init__(self, out: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.out = Path(out)
        self.heard: list[dict[str, Any]] = []
        self._changed = threading.Condition()
        self.on_msg(self._on_msg)

    def _on_msg(self, _widget: Any, content: dict[str, Any], _buffers: list[Any]) -> None:
        with self._changed:
            self.heard.append({**content, "t": time.monotonic()})
            self._changed.notify_all()
        if content.get("type") == "probe-ready":
            threading.Thread(target=self._run, daemon=True).start()

    def expect(self, kind: str, answer: int, timeout: float = 20, **fields: Any) -> dict:
        """The first message of this kind for this answer (and these fields), waiting."""
        def found() -> dict | None:
            return next((m for m in self.heard if m.get("type") == kind
                         and m.get("answer") == answer
                         and all(m.get(k) == v for k, v in fields.items())), None)

        with self._changed:
            if not self._changed.wait_for(found, timeout):
                raise TimeoutError(f"no {kind} {fields} for answer {answer}: {self.heard}")
            return found()

    def say(self, answer: int, seq: int, wav: bytes) -> None:
        self.send({"type": "say", "answer": answer, "seq": seq}, [wav])

    def _run(self) -> None:
        result: dict[str, Any] = {}
        try:
            result = self.scenario()
        except Exception:  # noqa: BLE001 - any failure must reach the test, not die here
            result["error"] = traceback.format_exc()
        result["heard"] = self.heard
        self.out.write_text(json.dumps(result))

    def scenario(self) -> dict[str, Any]:
        import voicenb as vnb

        clips = [vnb.speak(text, backend="espeak") for text in SENTENCES]
        wavs, seconds = [c.read() for c in clips], [c.duration for c in clips]
        # 1: sentences arrive while earlier ones play; the last one after all have finished
        for seq in range(3):
            self.say(1, seq, wavs[seq])
            time.sleep(0.2)
        self.expect("playing", 1, seq=2)
        time.sleep(seconds[2] + 0.4)
        self.say(1, 3, wavs[3])
        self.send({"type": "said", "answer": 1, "count": 4})
        self.expect("ended", 1)
        # 2: hushed by the kernel 0.4 s into the second sentence; one more comes too late
        for seq in range(3):
            self.say(2, seq, wavs[seq])
        self.expect("playing", 2, seq=1)
        time.sleep(0.4)
        self.send({"type": "hush", "answer": 2})
        self.expect("hushed", 2)
        self.say(2, 3, wavs[3])
        time.sleep(0.8)
        # 3: the page feeds the microphone chunks (FEED_VOICE) once sentence 0 plays
        self.say(3, 0, wavs[2])
        self.say(3, 1, wavs[1])
        self.send({"type": "said", "answer": 3, "count": 2})
        self.expect("hushed", 3, timeout=30)
        return {"seconds": seconds}


def _speaker_state(answer: int, state: str, seq: int | None = None) -> str:
    seq_test = "" if seq is None else f" && s.seq === {seq}"
    return (f"(() => {{ const s = window.__voicenbSpeaker; return s && s.answer === {answer}"
            f" && s.state === {state!r}{seq_test}; }})()")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict[str, Any]:
    """One notebook, one page, the three answers: what the kernel heard and what the page's
    player recorded."""
    root = tmp_path_factory.mktemp("speaker")
    out = root / "heard.json"
    source = (f"import sys\nsys.path.insert(0, {str(ROOT / 'tests')!r})\n"
              "from browser.test_speaker_browser import SpeakerProbe\n"
              f"probe = SpeakerProbe({str(out)!r})\nprobe")
    harness.write_notebook(root / "speaker.ipynb", [source])
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ASSEMBLYAI_", "OPENAI_", "VOICENB_"))}
    env["VOICENB_HOME"] = str(root / "home")
    log = root / "jupyter.log"
    ARTIFACTS.mkdir(exist_ok=True)
    jupyter = harness.Jupyter(root, env, log)
    try:
        with harness.chromium(MIC) as browser:
            page = browser.new_page(viewport={"width": 1000, "height": 600})
            cell = page.locator(".jp-Cell").first
            try:
                page.goto(jupyter.lab("speaker.ipynb"))
                page.wait_for_selector(".jp-Cell .jp-InputArea-editor", timeout=90_000)
                time.sleep(2)  # let the kernel connect
                page.click(".jp-Cell .jp-InputArea-editor")
                page.keyboard.press("Shift+Enter")
                page.click(".speaker-probe-unlock", timeout=60_000)
                page.wait_for_function(_speaker_state(1, "playing", 1), timeout=30_000)
                cell.screenshot(path=str(ARTIFACTS / "speaker-playing.png"))
                page.wait_for_function(_speaker_state(2, "hushed"), timeout=30_000)
                cell.screenshot(path=str(ARTIFACTS / "speaker-hushed.png"))
                page.wait_for_function(_speaker_state(3, "playing", 0), timeout=30_000,
                                       polling=10)
                voice = page.evaluate(FEED_VOICE)
                deadline = time.monotonic() + 30
                while not out.exists() and time.monotonic() < deadline:
                    time.sleep(0.2)
                cell.screenshot(path=str(ARTIFACTS / "speaker-voice.png"))
                history = page.evaluate("window.__voicenbSpeaker.history")
                result = json.loads(out.read_text())
            except Exception as exc:
                shot = ARTIFACTS / "speaker-failure.png"
                page.screenshot(path=str(shot), full_page=True)
                shutil.copy(log, ARTIFACTS / "speaker-jupyter.log")
                raise AssertionError(f"{exc}\nscreenshot: {shot}\nserver log: "
                                     f"{ARTIFACTS / 'speaker-jupyter.log'}") from exc
    finally:
        jupyter.stop()
    assert "error" not in result, result["error"]
    return {**result, "voice": voice, "history": {a["id"]: a for a in history}}


def _messages(run: dict[str, Any], answer: int) -> list[tuple]:
    return [(m["type"], m.get("seq")) for m in run["heard"] if m.get("answer") == answer]


def test_each_sentence_reports_playing_in_order_then_ended(run):
    assert _messages(run, 1) == [("playing", 0), ("playing", 1), ("playing", 2),
                                 ("playing", 3), ("ended", None)]
    sentences = run["history"][1]["sentences"]
    for s in sentences.values():  # sent when the clock reached its start, not when scheduled
        assert -0.003 <= s["reportedAt"] - s["when"] < 0.03


def test_sentences_play_back_to_back(run):
    s = run["history"][1]["sentences"]
    for a, b in [("0", "1"), ("1", "2")]:
        assert abs(s[b]["when"] - (s[a]["when"] + s[a]["duration"])) < 0.03
        # the audio thread ended each one when scheduled: it really played that long
        assert abs(s[a]["endedAt"] - (s[a]["when"] + s[a]["duration"])) < 0.05


def test_a_late_sentence_starts_as_soon_as_it_is_decoded(run):
    s = run["history"][1]["sentences"]
    assert s["3"]["when"] > s["2"]["when"] + s["2"]["duration"] + 0.2  # it did come late
    assert s["3"]["when"] - s["3"]["receivedAt"] < 0.15


def test_a_kernel_hush_stops_within_100_ms_and_reports_what_was_played(run):
    seconds = run["seconds"]
    hushed = next(m for m in run["heard"] if m["type"] == "hushed" and m["answer"] == 2)
    assert hushed["reason"] == "kernel"
    assert set(hushed["played"]) == {"0", "1"}
    assert abs(hushed["played"]["0"] - seconds[0]) < 0.01
    assert 0.2 < hushed["played"]["1"] < seconds[1] - 0.2  # the cut sentence, partly
    info = run["history"][2]
    assert info["stoppedAt"] - info["hushAt"] < 100
    # the sentence sent after the hush was never played
    assert _messages(run, 2) == [("playing", 0), ("playing", 1), ("hushed", None)]
    assert "3" not in info["sentences"]


def test_the_person_speaking_stops_playback(run):
    voice = run["voice"]
    assert voice["echo"] == [False] * 4 and voice["click"] == [False, False]
    assert voice["stateBefore"] == "playing"
    assert voice["first"] is False and voice["second"] is True
    assert voice["answer"] == 3 and voice["reason"] == "voice"
    assert voice["stopMs"] < 100
    hushed = next(m for m in run["heard"] if m["type"] == "hushed" and m["answer"] == 3)
    assert hushed["reason"] == "voice" and 0 < hushed["played"]["0"] < run["seconds"][2]
    assert ("ended", None) not in _messages(run, 3)
