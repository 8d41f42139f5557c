"""Live conversation soak: ``python -m bench.live_soak --questions 200``.

Spoken questions go through one live streaming conversation (voicenb's
``RealtimeTranscriber`` against the simulator, at real-time pace, as a microphone feeds
it) while the simulator cuts the connection (no close frame) at a random time 5 to 20 s into
every session (seeded). Each question is one of the shipped sample clips, then 2 s of
silence. The same conversation without cuts runs first, as the baseline.

It prints the questions lost, words lost and duplicate turns (all should be 0); reconnect time
(the cut, at the simulator, to the new session's first audio frame accepted) median and p90;
how far the stream trails the speaker at the end; the turns' end of speech -> final
transcript, with cuts against without (the ratio); and memory: the audio the client holds
and the process's resident size, at a quarter of the run and at its end.

Exits 1 if a question or a word was lost or a turn came twice.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from difflib import SequenceMatcher

import voicenb as vnb
from voicenb.stt.streaming import RealtimeTranscriber

from ._common import machine, pct, table

CHUNK_S = 0.1
GAP_S = 2.0


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def conversation(sim, questions: int, cut: tuple[float, float] | None, seed: int) -> dict:
    paths = vnb.sim.samples()
    said = json.loads((paths[0].parent / "samples.json").read_text())  # their text
    clips = [vnb.Audio(p).pcm16k() for p in paths]
    texts = [said[p.name] for p in paths]
    faults = sim.streaming.faults
    faults.clear()
    faults.log.clear()
    if cut is not None:
        faults.cut_every(*cut, seed=seed)
    first_session = len(sim.streaming.received)
    finals: list = []
    rt = RealtimeTranscriber(on_turn=finals.append)
    expected: list[str] = []
    memory: dict[str, float] = {}
    held = 0
    silence = bytes(int(CHUNK_S * 16000) * 2)
    step = len(silence)
    rt.start()
    clock = time.monotonic()
    try:
        for q in range(questions):
            pcm = clips[q % len(clips)]
            expected.append(texts[q % len(texts)])
            for i in range(0, len(pcm) + int(GAP_S / CHUNK_S) * step, step):
                rt.send(pcm[i:i + step] if i < len(pcm) else silence)
                clock += CHUNK_S
                time.sleep(max(0.0, clock - time.monotonic()))
                held = max(held, len(rt.sent.pcm))
            if q == questions // 4:
                memory["rss_quarter_mib"] = _rss_mib()
        trailing = rt._fed / 32000 - rt.sent.sent_s
    finally:
        rt.close()
    memory["rss_end_mib"] = _rss_mib()
    got = [t.text for t in finals]
    match = SequenceMatcher(a=expected, b=got, autojunk=False)
    paired = sum(block.size for block in match.get_matching_blocks())
    lost = len(expected) - paired
    words_lost = 0
    for tag, a0, a1, b0, b1 in match.get_opcodes():
        if tag in ("replace", "delete"):
            heard = " ".join(got[b0:b1]).lower().split()
            for text in expected[a0:a1]:
                words_lost += sum(1 for w in text.lower().split() if w not in heard)
    # reconnect time: each cut (at the simulator) -> the next session's first frame
    sessions = sim.streaming.received[first_session:]
    firsts = sorted(r.first_audio_at for r in sessions[1:] if r.first_audio_at)
    reconnect = []
    for at, _kind in list(faults.log):
        after = [f for f in firsts if f > at]
        if after:
            reconnect.append(after[0] - at)
    faults.clear()
    return {"questions": questions, "finals": len(got), "lost": lost,
            "words_lost": words_lost, "duplicates": max(0, len(got) - paired),
            "cuts": len(faults.log) if cut else 0, "reconnects": rt.reconnects,
            "reconnect_s": reconnect, "trailing_s": trailing,
            "stt_s": [t.stt_s for t in finals if t.stt_s is not None],
            "held_mib": held / 2**20, **memory}


def run(questions: int = 200, cut: tuple[float, float] = (5.0, 20.0), seed: int = 1,
        baseline: int | None = None) -> dict:
    with vnb.sim.running() as sim:
        base = conversation(sim, baseline or max(3, questions // 10), None, seed)
        soak = conversation(sim, questions, cut, seed)
    return {"base": base, "soak": soak, "cut": cut}


def report(r: dict) -> str:
    base, soak = r["base"], r["soak"]
    rc = soak["reconnect_s"] or [float("nan")]
    ratio = statistics.median(soak["stt_s"]) / statistics.median(base["stt_s"])
    rows = [("measure", "with cuts", "without (baseline)"),
            ("questions said / final turns", f"{soak['questions']} / {soak['finals']}",
             f"{base['questions']} / {base['finals']}"),
            ("questions lost, words lost, duplicate turns",
             f"{soak['lost']}, {soak['words_lost']}, {soak['duplicates']}",
             f"{base['lost']}, {base['words_lost']}, {base['duplicates']}"),
            (f"cuts (every session, {r['cut'][0]:g}-{r['cut'][1]:g} s in) / reconnects",
             f"{soak['cuts']} / {soak['reconnects']}", "0 / 0"),
            ("reconnect: cut -> first frame accepted, median / p90 (ms)",
             f"{statistics.median(rc) * 1000:.0f} / {pct(rc, 90) * 1000:.0f}", ""),
            ("stream behind the speaker at the end (s)", f"{soak['trailing_s']:.2f}",
             f"{base['trailing_s']:.2f}"),
            ("end of speech -> final turn, median (s); ratio",
             f"{statistics.median(soak['stt_s']):.3f}; {ratio:.2f}x",
             f"{statistics.median(base['stt_s']):.3f}"),
            ("client audio held, max (MiB)", f"{soak['held_mib']:.2f}",
             f"{base['held_mib']:.2f}"),
            ("process RSS at 1/4, end (MiB)",
             f"{soak.get('rss_quarter_mib', 0):.0f}, {soak['rss_end_mib']:.0f}", "")]
    return (f"## Live conversation soak ({machine()})\n\n" + table(rows))


def ok(r: dict) -> bool:
    s = r["soak"]
    return s["lost"] == 0 and s["words_lost"] == 0 and s["duplicates"] == 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.live_soak")
    parser.add_argument("--questions", type=int, default=200)
    parser.add_argument("--cut", default="5-20", help="seconds into each session it is cut "
                                                      "(low-high, default 5-20)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    low, high = (float(x) for x in args.cut.split("-", 1))
    r = run(args.questions, (low, high), args.seed)
    print(report(r))
    return 0 if ok(r) else 1


if __name__ == "__main__":
    sys.exit(main())
