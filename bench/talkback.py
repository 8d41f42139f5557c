"""Talking back in real Chromium: voice-to-voice latency, voicenb's share of it, and the time
to stop an answer spoken over.

The real path: JupyterLab, Debian's Chromium (tests/browser/harness.py) whose fake microphone
plays a WAV of ``n`` questions, ``session.live(speak=...)``. Every other question starts
while the previous answer is still being read aloud (a barge-in); the others wait until it
ended. The simulators run in this process (the kernel, the page and the Jupyter server each
have their own), set to published figures:

- AssemblyAI Universal-3 Pro streaming (``u3-rt-pro``, voicenb's default): the turn ends
  after ``min_turn_silence`` = 100 ms of silence when the words end with . ? or ! (the
  simulator's rule and the model's default: https://www.assemblyai.com/docs/voice-agents/
  u3-pro-partials). AssemblyAI publishes "sub-300ms time to complete transcript latency"
  (https://assemblyai.com/docs/streaming/universal-3-pro); the simulator adds no model time
  on top of the 100 ms, so its ``stt_s`` is that much shorter than the real service's. It is
  a service delay here either way: it is subtracted, measured.
- gpt-4o-mini: ``ttft`` = 0.4 s and ``token_rate`` = 60 a second. OpenAI publishes neither:
  0.4 s is an ASSUMPTION near third-party medians (Artificial Analysis measures 0.39 s for
  OpenAI's GPT-4o: https://artificialanalysis.ai/models/gpt-4o-2024-05-13/providers), 60
  tokens/s a user's measurement of gpt-4o-mini (59 t/s: https://community.openai.com/t/
  inference-speed-of-different-models/1307310). The simulator streams a word per token.
- AssemblyAI's text to speech (``speak="assemblyai"``, voicenb's default when its key is
  set): one WebSocket session per conversation; the answer's tokens go in as they stream and
  each complete sentence ends a request. The simulator answers a request's first audio
  ``tts_ttfb`` = 0.15 s after its first complete sentence is in (an ASSUMPTION: AssemblyAI
  publishes no first-audio figure we found) and makes audio at 4x real time (``tts_speed``,
  an ASSUMPTION), in espeak-ng's voice. ``tts_ttfb_s`` is the answer's first text sent ->
  its first audio, so it includes waiting for the first sentence: that share is subtracted
  as the LLM's, and the rest as the speech service's.
- OpenAI speech (``speak="openai"``, sentence by sentence over HTTP, until OpenAI shuts its
  speech models down on 2027-01-06; skipped from then): the simulator waits ``ttft`` (its
  only speech knob: the same 0.4 s, an ASSUMPTION: OpenAI publishes no first-byte figure),
  then synthesises its beeps and answers at once; voicenb reads the whole WAV of a sentence
  before the page gets it. ``speak="espeak"`` synthesises on this machine instead.

Per turn, from the history (kernel clock): ``first_audio_s`` is voice to voice (end of the
speech as the kernel sent it -> the page says the first sentence started sounding). The
services' delays within it: ``stt_s`` (end of speech -> final transcript), the LLM's time to
its first complete sentence (``ttft + i / token_rate``, ``i`` the index of the simulator's
token that completes the sentence ``voicenb._talkback.sentences`` cuts), and ``tts_ttfb_s``
(request -> first byte; for the simulator also its synthesis). voicenb's overhead is what is
left; it includes the page's 10 ms scheduling lead (``SPEAKER_LEAD`` in speaker.js, voicenb's
choice), shown separately. The page measures the same turn from the microphone: it logs every
100 ms chunk it captures, so the end of speech is known on its clock, before the chunk travels
to the kernel; page voice to voice ends when the page sends ``playing``.

Barge-in: the page's own record (``hushAt`` -> ``stoppedAt``: stop decided -> the last
sounding source ended), the kernel's ``live.barge_stops`` (the service's ``SpeechStarted``
-> the page's ``hushed`` back in the kernel: a round trip through the page), and from the
microphone (onset of the new question in the page's log -> ``stoppedAt``), which includes
detecting the speech.

``python -m bench.talkback`` runs four conversations (~6 min): AssemblyAI's streamed speech,
the headline, and OpenAI's sentence-by-sentence speech on the same questions (their delays are
services', set and subtracted), then the voice-to-voice ratio of the two in this run;
espeak-ng (its synthesis, ~30 ms a sentence, is subtracted as the speech service's share); and
AssemblyAI with the page's voice check answered "no voice" by the benchmark's hook, so that the
service's SpeechStarted alone stops the answers (in the others the page's check, ~0.2 s after
the onset, usually wins). ``--quick`` (in ``python -m bench --quick``): two questions spoken
by AssemblyAI, ~30 s.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import voicenb as vnb
from voicenb._talkback import sentences
from voicenb.audio import pcm_to_wav
from voicenb.sim._openai import tokens_of

from ._common import pct, table

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
sys.path.insert(0, str(ROOT))
from tests.browser import harness  # the browser tests' Jupyter and Chromium

TTFT_S = 0.4
TOKEN_RATE = 60.0
TTS_TTFB_S = 0.15  # AssemblyAI's first audio after a complete sentence (assumed, see above)
TTS_SPEED = 4.0
MIN_TURN_SILENCE_S = 0.100  # u3-rt-pro's default, as the simulator applies it
SPEAKER_LEAD_S = 0.010  # speaker.js
QUESTION = "What is the capital of France?"
RATE = 16000
FRAME = 320  # 20 ms, the simulator's detector frame
SPEECH_LEVEL = 300  # peak amplitude the simulator's detector counts as speech
LEAD_S = 1.0  # silence before the first question
#: silence after a question whose answer is spoken over: the next starts ~1 s into it
BARGE_GAP_S = 2.5
#: silence after a question whose answer is heard to the end (sim beeps / espeak-ng)
#: (the AssemblyAI simulator says each word on its own, with pauses: its answers run longer)
AFTER_GAP_S = {"openai": 7.5, "espeak": 12.0, "assemblyai": 20.0}
TAIL_S = 12.0

# Logs each microphone chunk the page hands to the player's voice check (every chunk the
# kernel gets): performance.now(), its length and the peak of each 20 ms frame; with
# __benchPageCheck false it answers "no voice" for the check.
HOOK = """() => {
  const sp = window.__voicenbSpeaker;
  const log = window.__benchMic = [];
  const hear = sp.hear;
  sp.hear = (pcm) => {
    const peaks = [];
    for (let i = 0; i < pcm.length; i += FRAME) {
      let p = 0;
      for (let j = i; j < Math.min(i + FRAME, pcm.length); j++) p = Math.max(p, Math.abs(pcm[j]));
      peaks.push(p);
    }
    log.push([performance.now(), pcm.length, peaks]);
    return window.__benchPageCheck ? hear(pcm) : false;
  };
}""".replace("FRAME", str(FRAME))

COLLECT = """() => {
  const sp = window.__voicenbSpeaker;
  return {mic: window.__benchMic, sent: sp.sent, history: sp.history.map((h) => ({
    id: h.id, reason: h.reason, hushAt: h.hushAt, stoppedAt: h.stoppedAt,
    first: h.sentences[0] || null}))};
}"""


def microphone(path: Path, n: int, speak: str, barge: str) -> list[bool]:
    """A WAV of ``n`` questions; returns, per question, whether the next one speaks over
    its answer: every other one from the first, or (``barge="kernel"``) all but the last."""
    samples = vnb.sim.samples()
    silence = bytes(2 * RATE)
    pcm = bytearray(bytes(int(2 * RATE * LEAD_S)))
    barged = []
    for i in range(n):
        pcm += vnb.Audio(samples[i % 2]).pcm16k()  # two clips with no long inner pause
        spoken_over = (i % 2 == 0 or barge == "kernel") and i < n - 1
        gap = BARGE_GAP_S if spoken_over else AFTER_GAP_S[speak]
        pcm += bytes(int(2 * RATE * gap))
        barged.append(spoken_over)
    pcm += silence * int(TAIL_S)
    path.write_bytes(pcm_to_wav(bytes(pcm), RATE))
    return barged


def first_sentence_s(answer: str) -> tuple[float, int]:
    """The simulator's time to the token that completes the answer's first sentence (the
    sentence the speaker sends first), and that token's index."""
    first, _ = sentences(answer, final=False)
    covered = answer.index(first[0]) + len(first[0]) + 1  # its whitespace completes it
    pieces, upto = tokens_of(answer), 0
    for i, piece in enumerate(pieces):
        upto += len(piece)
        if upto >= covered:
            return TTFT_S + i / TOKEN_RATE, i
    return TTFT_S + (len(pieces) - 1) / TOKEN_RATE, len(pieces) - 1


def speech_segments(mic: list) -> list[tuple[float, float]]:
    """(onset, end) in ms on the page's clock of each stretch of speech in the captured
    chunks: 20 ms frames over the simulator's level, pauses under 0.6 s joined."""
    loud = []
    for at, length, peaks in mic:
        for i, peak in enumerate(peaks):
            end = at - (length - min((i + 1) * FRAME, length)) / RATE * 1000
            if peak > SPEECH_LEVEL:
                loud.append(end)
    segments: list[list[float]] = []
    for end in loud:
        if segments and end - segments[-1][1] < 600:
            segments[-1][1] = end
        else:
            segments.append([end - FRAME / RATE * 1000, end])
    return [(a, b) for a, b in segments]


def _converse(page, jupyter, seconds: float, name: str, barge: str) -> tuple[dict, str]:
    page.goto(jupyter.lab("talk.ipynb"))
    page.wait_for_selector(".jp-Cell .jp-InputArea-editor", timeout=90_000)
    time.sleep(2)
    page.locator(".jp-Cell .jp-InputArea-editor").first.click()
    page.keyboard.press("Shift+Enter")
    page.wait_for_selector(".voicenb-live-button", timeout=90_000)
    page.wait_for_function("window.__voicenbSpeaker !== undefined", timeout=30_000)
    page.evaluate(HOOK)
    page.evaluate(f"window.__benchPageCheck = {'false' if barge == 'kernel' else 'true'}")
    page.click(".voicenb-live-button")
    # the microphone has played all but the tail, and the last answer is done (counting
    # chunks, not turns: the service may cut a question with a pause in it in two)
    chunks = int((seconds - TAIL_S) * 10)
    page.wait_for_function(
        f"window.__benchMic.length >= {chunks} && document.querySelector("
        f"'.voicenb-live-status').textContent.includes(': done')",
        timeout=int((seconds + 90) * 1000))
    page.click(".voicenb-live-button")  # stop, before the fake microphone plays it again
    data = page.evaluate(COLLECT)
    cell = page.locator(".jp-Cell").nth(1)
    cell.locator(".jp-InputArea-editor").click()
    page.keyboard.press("Shift+Enter")
    out = cell.locator(".jp-OutputArea-output").filter(has_text="BARGE")
    out.wait_for(timeout=60_000)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"talkback-bench-{name}.png"), full_page=True)
    return data, out.inner_text()


def run(n: int = 10, speak: str = "openai", barge: str = "both") -> dict:
    """Converse ``n`` questions in Chromium; the per-turn figures. ``barge="kernel"`` turns
    the page's own voice check off (the hook answers for it), so that only the service's
    SpeechStarted stops an answer: that path's stop time, measured on its own."""
    with tempfile.TemporaryDirectory() as tmp_name, vnb.sim.running(
            ttft=TTFT_S, token_rate=TOKEN_RATE, unknown_text=QUESTION, tts_ttfb=TTS_TTFB_S,
            tts_speed=TTS_SPEED) as sim:
        tmp = Path(tmp_name)
        home = tmp / "home"
        mic = tmp / "mic.wav"
        barged = microphone(mic, n, speak, barge)
        seconds = vnb.Audio(mic).duration
        harness.write_notebook(tmp / "talk.ipynb", [
            f"import voicenb as vnb\ns = vnb.Session('talk')\nlive = s.live(speak={speak!r})\nlive",
            "import json\nprint('BARGE', json.dumps(live.barge_stops))"])
        log = tmp / "jupyter.log"
        jupyter = harness.Jupyter(tmp, {**os.environ, "VOICENB_HOME": str(home)}, log)
        try:
            with harness.chromium(mic) as browser:
                page = browser.new_page(viewport={"width": 1100, "height": 900})
                try:
                    data, printed = _converse(page, jupyter, seconds, f"{speak}-{barge}",
                                              barge)
                except Exception:
                    ARTIFACTS.mkdir(exist_ok=True)
                    page.screenshot(path=str(ARTIFACTS / "talkback-bench-failure.png"),
                                    full_page=True)
                    shutil.copy(log, ARTIFACTS / "talkback-bench-jupyter.log")
                    raise
            sessions = _sessions(sim)  # before the kernel goes
        finally:
            jupyter.stop()
        df = vnb.load_history(str(home), session="talk")
    barge_stops = json.loads(printed.split("BARGE", 1)[1].strip().splitlines()[0])
    return {**analyse(df, data, barge_stops, barged, n, speak, barge),
            "sessions": sessions}


def _sessions(sim: vnb.sim.Simulator, wait_s: float = 10.0) -> tuple[int, int]:
    """Streaming sessions opened and terminated, once every one is (or after ``wait_s``):
    Stop flushes the audio still queued, at real-time pace, before it terminates."""
    deadline = time.monotonic() + wait_s
    while True:
        stats = dict(sim.streaming.stats)
        if stats["terminated"] >= stats["sessions"] or time.monotonic() > deadline:
            return stats["sessions"], stats["terminated"]
        time.sleep(0.1)


def analyse(df, data: dict, barge_stops: list[float], barged: list[bool], n: int,
            speak: str, barge: str) -> dict:
    turns = []
    for _, row in df.sort_values("turn").iterrows():
        llm, index = first_sentence_s(row["answer"])
        tts = row["tts_ttfb_s"]
        if speak == "assemblyai":  # its first text went in at the first token, not the
            tts -= index / TOKEN_RATE  # first sentence: that wait is the LLM's, above
        service = row["stt_s"] + llm + tts
        turns.append({
            "turn": int(row["turn"]), "status": row["status"], "v2v": row["first_audio_s"],
            "stt": row["stt_s"], "llm": llm, "tts": tts, "service": service,
            "overhead": row["first_audio_s"] - service,
            # transcript -> first token, beyond the service's ttft: the request's set-up and
            # HTTP, and the turn's bookkeeping before it
            "before_llm": row["first_token_s"] - row["stt_s"] - TTFT_S,
            "after_tts": row["first_audio_s"] - row["first_token_s"] - index / TOKEN_RATE - tts})
    # answers are numbered like the turns (each turn gets its speaker); a turn is matched to
    # the speech that ended last before its answer played, so a question the service cut in
    # two (a pause in it) cannot shift the rest
    playing = {m["answer"]: m["at"] for m in data["sent"]
               if m["type"] == "playing" and m["seq"] == 0}
    segments = speech_segments(data["mic"])
    page = []
    for turn in turns:
        at = playing.get(turn["turn"])
        ended = [end for _, end in segments if at is not None and end < at]
        if ended and _number(turn["v2v"]):
            turn["page_v2v"] = (at - ended[-1]) / 1000
            turn["page_overhead"] = turn["page_v2v"] - turn["service"]
            turn["to_kernel"] = turn["page_v2v"] - turn["v2v"]
            page.append(turn)
    stops = []
    for h in data["history"]:
        if h["hushAt"] is None or h["stoppedAt"] is None:
            continue
        stop = {"answer": h["id"], "reason": h["reason"],
                "stop_ms": h["stoppedAt"] - h["hushAt"]}
        # the speech that stopped it: the first to begin after the answer began sounding
        began = playing.get(h["id"])
        onsets = [onset for onset, _ in segments
                  if began is not None and began < onset < h["stoppedAt"]]
        if onsets:
            stop["onset_ms"] = h["stoppedAt"] - onsets[0]
        stops.append(stop)
    in_page = [h["first"] for h in data["history"] if h["first"] and "when" in h["first"]]
    return {"n": n, "speak": speak, "barge": barge, "turns": turns, "page": page,
            "stops": stops, "barge_stops": barge_stops, "planned_barges": sum(barged),
            "page_decode": [f["when"] - f["receivedAt"] - SPEAKER_LEAD_S for f in in_page],
            "page_late": [f["reportedAt"] - f["when"] for f in in_page
                          if f.get("reportedAt") is not None]}


def available() -> bool:
    """Debian's Chromium and espeak-ng are here (.ci/run installs them)."""
    return Path(harness.CHROMIUM).exists() and shutil.which("espeak-ng") is not None


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _ms(values: list[float], scale: float = 1000) -> str:
    values = [v for v in values if _number(v)]  # a turn spoken over before it sounded: NaN
    if not values:
        return "n/a"
    return f"{statistics.median(values) * scale:.0f} / {pct(values, 90) * scale:.0f} ms"


def report(r: dict) -> str:
    t, page = r["turns"], r["page"]

    def col(key: str, rows: list[dict] = t) -> list[float]:
        return [x[key] for x in rows]

    tts = {"openai": "OpenAI speech (simulator: 0.4 s, then its synthesis)",
           "assemblyai": f"AssemblyAI session (simulator: {TTS_TTFB_S} s after a sentence)",
           "espeak": "espeak-ng on this machine (whole sentence)"}[r["speak"]]
    stops = r["stops"]
    reasons = ", ".join(f"{k} {sum(s['reason'] == k for s in stops)}"
                        for k in sorted({s["reason"] for s in stops})) or "none"
    barged = sum(x["status"] == "barged_in" for x in t)
    heard = "page or service" if r["barge"] == "both" else "the service alone"
    title = (f"talk back in Chromium, speak={r['speak']!r}, barge-in heard by {heard}: "
             "questions / turns / spoken over")
    llm = (f"  LLM: request -> first sentence complete (ttft {TTFT_S} s + tokens / "
           f"{TOKEN_RATE:.0f}/s)")
    return table([
        ("measure", "median / p90"),
        (title, f"{r['n']} / {len(t)} / {barged} (planned {r['planned_barges']})"),
        ("voice to voice (history first_audio_s: end of speech sent -> first answer audio)",
         _ms(col("v2v"))),
        ("  streaming STT: end of speech -> final transcript (stt_s; u3-rt-pro sim, 100 ms)",
         _ms(col("stt"))),
        (llm, _ms(col("llm"))),
        (f"  TTS first byte (tts_ttfb_s: {tts})", _ms(col("tts"))),
        ("voicenb overhead (voice to voice - the services' delays)", _ms(col("overhead"))),
        ("  of it: transcript -> first token, beyond ttft (request, SSE, bookkeeping)",
         _ms(col("before_llm"))),
        ("  of it: TTS first byte -> page says playing (WAV, comm, decode, lead, report)",
         _ms(col("after_tts"))),
        ("  of it, in the page: sentence received -> scheduled (decode), plus 10 ms lead",
         _ms(r["page_decode"]) + " + 10 ms"),
        ("voice to voice from the microphone (page clock: captured end of speech -> playing)",
         _ms(col("page_v2v", page)) if page else "n/a"),
        ("voicenb overhead from the microphone (page voice to voice - services' delays)",
         _ms(col("page_overhead", page)) if page else "n/a"),
        ("  of it: before the kernel streams the end of speech (page - history voice to voice)",
         _ms(col("to_kernel", page)) if page else "n/a"),
        (f"barge-in stop in the page (hushAt -> stoppedAt), {len(stops)} stops ({reasons})",
         _ms([s["stop_ms"] for s in stops], 1)),
        ("barge-in stop, kernel (SpeechStarted -> page's hushed back; live.barge_stops)",
         _ms(r["barge_stops"])),
        ("barge-in from the microphone: onset of new speech -> playback stopped",
         _ms([s.get("onset_ms") for s in stops], 1)),
        ("streaming sessions opened / terminated (Stop, then up to 10 s; kernel still up)",
         "{} / {}".format(*r["sessions"])),
    ])


def skipped(why: str) -> str:
    """The table's labels, for a machine without the browser."""
    return table([("measure", "median / p90"), *((label, f"skipped: {why}") for label in (
        "voice to voice (history first_audio_s: end of speech sent -> first answer audio)",
        "voicenb overhead (voice to voice - the services' delays)",
        "barge-in stop in the page (hushAt -> stoppedAt)"))])


def quick() -> str:
    """Two questions, the second over the first answer (``python -m bench --quick``)."""
    if not available():
        return skipped(f"no {harness.CHROMIUM} or espeak-ng")
    return report(run(2, "assemblyai"))


def compare(streamed: dict, sentences: dict) -> str:
    """AssemblyAI's streamed speech against OpenAI's sentence by sentence, same run."""
    def median(r: dict, key: str) -> float:
        return statistics.median(x[key] for x in r["turns"] if _number(x[key]))

    a, o = median(streamed, "v2v"), median(sentences, "v2v")
    return table([
        ("voice to voice, median (end of speech -> first answer audio)", "ms"),
        ("  AssemblyAI, streamed on one session", f"{a * 1000:.0f}"),
        ("  OpenAI, sentence by sentence over HTTP", f"{o * 1000:.0f}"),
        ("  AssemblyAI sooner by", f"{(o - a) * 1000:.0f}"),
        ("ratio AssemblyAI / OpenAI (voice to voice)", f"{a / o:.2f}"),
        ("voicenb overhead, AssemblyAI / OpenAI (median ms)",
         f"{median(streamed, 'overhead') * 1000:.0f} / "
         f"{median(sentences, 'overhead') * 1000:.0f}"),
    ])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.talkback")
    parser.add_argument("-n", type=int, default=10, help="questions (default 10)")
    parser.add_argument("--quick", action="store_true", help="2 questions, AssemblyAI only")
    args = parser.parse_args(argv)
    if args.quick:
        print(quick())
        return
    # the page and the service both listening for barge-in (as shipped): AssemblyAI's
    # session, then OpenAI's speech while it lives, then espeak-ng; then the service's
    # SpeechStarted alone
    results = {}
    runs = [("assemblyai", "both", args.n), ("openai", "both", args.n),
            ("espeak", "both", args.n), ("assemblyai", "kernel", max(3, args.n * 2 // 3))]
    for speak, barge, n in runs:
        if speak == "openai" and vnb.tts.today() >= vnb.tts.SHUTDOWN[vnb.tts.DEFAULT_MODEL]:
            print("OpenAI speech: skipped, its speech models were shut down on "
                  f"{vnb.tts.SHUTDOWN[vnb.tts.DEFAULT_MODEL]}\n")
            continue
        results[speak, barge] = run(n, speak, barge)
        print(report(results[speak, barge]))
        print()
    if ("openai", "both") in results:
        print(compare(results["assemblyai", "both"], results["openai", "both"]))


if __name__ == "__main__":
    main()
