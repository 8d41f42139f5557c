"""Speech-to-speech live backends: voicenb's own share of the time to the first answer audio,
and an experiment's wall time against its floor.

1. **Overhead.** A conversation per backend (``openai-realtime``, ``assemblyai-agent``) against
   the simulators in this process: each sample question said at real-time pace, then silence
   until its answer was heard out (by the clock). The simulator notes when it sent each event
   (``sim.realtime.sent``, ``sim.agent.sent``, on this process's monotonic clock), and the
   player notes when each answer's first audio reached it. Per turn, from the service's end of
   speech event (``input_audio_buffer.speech_stopped``, ``input.speech.stopped``): the
   service's own time to its first audio (the event sent) and voicenb's (the audio at the
   player: the socket, the SDK or JSON parsing, base64, the driver). The difference is
   voicenb's overhead; the ratio of the two is printed.
2. **Experiment.** ``n`` clips through three variants at once: the recorded pipeline
   (AssemblyAI + the model) and both speech-to-speech services, ``live_concurrency`` clips at
   a time per service. Its floor: for each service, each clip's unavoidable time (its audio,
   the turn detector's wait from the end of the clip to its end-of-speech event, the
   service's time to first audio and the answer's audio heard out, or the ``gap_s`` of
   silence the conversation leaves after the clip if that is longer), packed onto ``live_concurrency`` slots (longest
   first); the experiment's floor is the slowest service's (the pipeline runs beside them).
   The ratio wall / floor is printed.

The simulators' delays are their knobs (``realtime_ttfa`` 0.5 s, ``sim.agent.ttfa`` 0.3 s,
speech made at 2x and 4x real time): assumptions, not the vendors' figures.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from typing import Any

import voicenb as vnb
from voicenb.live._driver import ClockPlayer, Driver, _ClockSpeaker

from ._common import table

BACKENDS = ("openai-realtime", "assemblyai-agent")
STOPPED = {"input_audio_buffer.speech_stopped", "input.speech.stopped"}
AUDIO = {"response.output_audio.delta", "reply.audio"}
GAP_S = 1.5


class _TimedPlayer(ClockPlayer):
    """Plays by the clock, noting when each answer's first audio reached it."""

    def __init__(self) -> None:
        super().__init__()
        self.first_audio: list[float] = []

    def new_answer(self, backend: str, model: str | None, voice: str | None) -> Any:
        player = self

        class Timed(_ClockSpeaker):
            def audio(self, pcm: bytes) -> None:
                if self._start is None and pcm:
                    player.first_audio.append(time.monotonic())
                super().audio(pcm)

        return Timed(backend=backend, model=model, voice=voice)


def _service(sim: Any, backend: str) -> Any:
    return sim.realtime if backend == "openai-realtime" else sim.agent


def overhead(sim: Any, backend: str, clips: list[Any]) -> dict[str, Any]:
    """One conversation saying ``clips``: per turn, the service's and voicenb's end of
    speech -> first audio, and the turn detector's wait after the clip."""
    service = _service(sim, backend)
    service.sent.clear()
    session = vnb.Session("bench", home=tempfile.mkdtemp())
    player = _TimedPlayer()
    driver = Driver(session, backend, player=player).start()
    ends: list[float] = []
    try:
        for clip in clips:
            step, pcm = 3200, vnb.Audio(clip).pcm16k()
            clock = time.monotonic()
            for i in range(0, len(pcm), step):
                driver.send(pcm[i:i + step])
                clock += len(pcm[i:i + step]) / 32_000
                time.sleep(max(0.0, clock - time.monotonic()))
            ends.append(clock)
            began, deadline = time.monotonic(), time.monotonic() + 60
            while time.monotonic() < deadline and not (
                    any(t > clock for t in driver.ended) and not driver._pending
                    and time.monotonic() - began > GAP_S):
                driver.send(bytes(step))
                time.sleep(0.1)
    finally:
        driver.stop()
        driver.wait(30)
    stops, firsts = [], []
    last_stop = None
    for at, kind in list(service.sent):
        if kind in STOPPED:
            last_stop = at
        elif kind in AUDIO and last_stop is not None:
            stops.append(last_stop)
            firsts.append(at)
            last_stop = None
    n = min(len(stops), len(player.first_audio), len(ends))
    return {
        "backend": backend, "turns": n,
        "service": [firsts[i] - stops[i] for i in range(n)],
        "voicenb": [player.first_audio[i] - stops[i] for i in range(n)],
        "detect": [stops[i] - ends[i] for i in range(n)],
    }


def _pack(durations: list[float], slots: int) -> float:
    """The makespan of ``durations`` on ``slots`` parallel slots, longest first."""
    loads = [0.0] * slots
    for d in sorted(durations, reverse=True):
        loads[loads.index(min(loads))] += d
    return max(loads)


def experiment(sim: Any, clips: list[Any], *, concurrency: int,
               detect: dict[str, float], first: dict[str, float]) -> dict[str, Any]:
    home = tempfile.mkdtemp()
    out_s = {b: _service(sim, b).stats["audio_out_s"] for b in BACKENDS}
    exp = vnb.Experiment("bench-s2s", audio=clips, home=home,
                         variants={"pipeline": {}, "realtime": {"live": "openai-realtime"},
                                   "agent": {"live": "assemblyai-agent"}})
    t0 = time.monotonic()
    df = exp.run(progress=False, live_concurrency=concurrency)
    wall = time.monotonic() - t0
    floors = {}
    for backend in BACKENDS:
        spoken = _service(sim, backend).stats["audio_out_s"] - out_s[backend]
        per_answer = spoken / len(clips)
        # after its clip, a conversation waits for the answer heard out, gap_s at least
        durations = [vnb.Audio(c).duration + max(GAP_S, detect[backend] + first[backend]
                                                 + per_answer) for c in clips]
        floors[backend] = _pack(durations, concurrency)
    pipeline = df.loc[df["variant"] == "pipeline", "total_s"].max()
    floor = max([*floors.values(), float(pipeline)])
    return {"clips": len(clips), "wall": wall, "floor": floor, "floors": floors,
            "ok": int((df["status"] == "ok").sum()), "rows": len(df)}


def run(n: int = 12, concurrency: int = 4, quick: bool = False) -> dict[str, Any]:
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "notebooks" / "samples"
    samples = sorted(folder.glob("*.wav"))[:n]
    with vnb.sim.running() as sim:
        sim.registry.load_dir(folder)  # the notebook's twelve questions, with their text
        turns = samples[:2] if quick else samples[:4]
        over = {b: overhead(sim, b, turns) for b in BACKENDS}
        detect = {b: statistics.median(r["detect"]) for b, r in over.items()}
        first = {b: statistics.median(r["service"]) for b, r in over.items()}
        exp = experiment(sim, samples, concurrency=concurrency, detect=detect, first=first)
    return {"overhead": over, "experiment": exp, "concurrency": concurrency}


def _ms(values: list[float], q: float) -> str:
    if not values:
        return "-"
    values = sorted(values)
    return f"{values[min(len(values) - 1, int(q * len(values)))] * 1000:.0f}"


def report(r: dict[str, Any]) -> str:
    rows: list[tuple[str, ...]] = [(
        "backend", "turns", "service first audio p50 (ms)", "voicenb first audio p50 (ms)",
        "voicenb overhead p50 (ms)", "voicenb overhead p90 (ms)",
        "ratio voicenb / service (first audio)")]
    for backend, o in r["overhead"].items():
        extra = [v - s for v, s in zip(o["voicenb"], o["service"])]
        ratio = statistics.median(o["voicenb"]) / statistics.median(o["service"]) \
            if o["service"] else float("nan")
        rows.append((backend, str(o["turns"]), _ms(o["service"], 0.5),
                     _ms(o["voicenb"], 0.5), _ms(extra, 0.5), _ms(extra, 0.9),
                     f"{ratio:.3f}"))
    e = r["experiment"]
    second = table([
        ("clips", "variants", "live_concurrency", "ok rows", "wall (s)", "floor (s)",
         "ratio experiment / floor (s2s)"),
        (str(e["clips"]), "3", str(r["concurrency"]), f"{e['ok']}/{e['rows']}",
         f"{e['wall']:.1f}", f"{e['floor']:.1f}", f"{e['wall'] / e['floor']:.2f}")])
    floors = ", ".join(f"{b} {f:.1f} s" for b, f in e["floors"].items())
    return ("## Speech to speech: first answer audio, and an experiment's wall time\n\n"
            + table(rows) + "\n\n" + second + f"\n\nfloors: {floors} (simulated services)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.voice_agents")
    parser.add_argument("--clips", type=int, default=12)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    print(report(run(n=args.clips, concurrency=args.concurrency, quick=args.quick)))


if __name__ == "__main__":
    main()
