"""Fault soak: ``python -m bench.soak --turns 1000``.

Turns go through ``Session.ask_many`` against the simulators (in this process, so their
ledger can be read) while about ``--fault-rate`` of all requests fail at random, in every
way the simulator knows (429 with Retry-After, 500, 502, 503, dropped connections, answers
slower than the client's timeout, malformed JSON, responses cut midway, answer streams cut
midway), each kind also injected once on each route, and ``--error-rate`` of transcripts end
with status ``error``. Then the faults stop and ``retry_failed()`` runs.

It prints what was injected, how the turns ended before and after the retry, and the work
done twice: uploads, transcripts and answers that were repeated although the client had
heard they succeeded (should all be 0). Work repeated because its answer never reached the
client (a response cut midway) is shown apart: no client can avoid that one.

Exits 1 if a turn was lost, left mid-stage, not brought to ok, or anything was done twice.
"""

from __future__ import annotations

import argparse
import array
import math
import sys
import tempfile
import time
import wave
from collections import Counter
from pathlib import Path

import voicenb as vnb

from ._common import machine, table

ROUTES = ("/v2/upload", "/v2/transcript", "/v1/chat/completions")


def question_clips(folder: Path, n: int) -> list[Path]:
    """``n`` different short clips (a tone each, of its own length)."""
    folder.mkdir(parents=True, exist_ok=True)
    rate, out = 16000, []
    tone = array.array("h", (int(8000 * math.sin(2 * math.pi * 440 * k / rate))
                             for k in range(rate // 2 + 7 * n)))
    for i in range(n):
        path = folder / f"question {i:05d}.wav"
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(rate)
            w.writeframes(tone[: rate // 2 + 7 * i].tobytes())
        out.append(path)
    return out


def run(turns: int = 1000, fault_rate: float = 0.1, error_rate: float = 0.1, seed: int = 1,
        read_timeout: float = 2.0) -> dict:
    slow_s = 2 * read_timeout
    settings = vnb.Settings(read_timeout=read_timeout, backoff=0.05, max_retries=3,
                            poll_timeout=300)
    with tempfile.TemporaryDirectory() as tmp:
        clips = question_clips(Path(tmp) / "clips", turns)
        with vnb.sim.running(processing_fixed=0.1, processing_factor=0.02, ttft=0.01,
                             token_rate=2000, fault_rate=fault_rate, seed=seed) as sim:
            sim.app.slow_delay = slow_s
            sim.assemblyai.error_rate = error_rate
            for kind in vnb.sim.FAULT_KINDS:
                for route in ROUTES:
                    sim.inject(kind, route, delay=slow_s)
                sim.inject(kind, "/v2/transcript/", method="GET", delay=slow_s)
            for i, clip in enumerate(clips):
                sim.register(clip, f"Question {i}: what is {i} times {i}?")
            session = vnb.Session("soak", home=str(Path(tmp) / "home"), stt="assemblyai",
                                  model="gpt-5.4-mini", settings=settings)
            t0 = time.monotonic()
            before = session.ask_many(clips, progress=False)
            faulty_s = time.monotonic() - t0
            faults = {k.removeprefix("fault:"): v for k, v in sim.stats.items()
                      if k.startswith("fault:")}
            by_route = Counter((h.kind, _route(h.method, h.path)) for h in sim.app.fault_log)
            sim.clear_faults()
            sim.assemblyai.error_rate = 0.0
            t1 = time.monotonic()
            session.retry_failed(progress=False)
            retry_s = time.monotonic() - t1
            after = session.history
            stats = dict(sim.stats)
            ledger = sim.assemblyai.ledger()
            cut_answers = sum(1 for h in sim.app.fault_log
                              if h.kind == "cut" and h.path == "/v1/chat/completions")
    per_clip = [ledger.get(sha, Counter()) for sha in after["audio_sha256"]]
    ok_after = int((after["status"] == "ok").sum())
    errors_before = Counter(_reason(t.error) for t in before if t.status == "error")
    return {
        "turns": turns, "fault_rate": fault_rate, "error_rate": error_rate, "seed": seed,
        "faults": faults, "faults_by_route": by_route,
        "before": Counter(t.status for t in before), "errors_before": errors_before,
        "lost": turns - len(after), "ok_after": ok_after,
        "statuses_after": Counter(after["status"]),
        "uploads": stats.get("uploads", 0), "transcripts": stats.get("transcripts", 0),
        "chat_completions": stats.get("chat_completions", 0), "requests": stats["requests"],
        "dup_uploads": sum(max(0, c["uploads_heard"] - 1) for c in per_clip),
        "dup_transcripts": sum(max(0, c["transcripts_ok"] - 1) for c in per_clip),
        "dup_answers": stats.get("chat_completions", 0) - cut_answers - ok_after,
        "unheard_uploads": sum(c["uploads"] - c["uploads_heard"] for c in per_clip),
        "unheard_transcripts": sum(c["transcripts"] - c["transcripts_heard"] for c in per_clip),
        "failed_transcripts": sum(c["transcripts_heard"] - c["transcripts_heard_ok"]
                                  for c in per_clip),
        "cut_answers": cut_answers,
        "faulty_s": faulty_s, "retry_s": retry_s,
    }


def _route(method: str, path: str) -> str:
    return f"{method} /v2/transcript/{{id}}" if path.startswith("/v2/transcript/") \
        else f"{method} {path}"


def _reason(error: str | None) -> str:
    """An error message without the parts that differ from turn to turn."""
    text = (error or "").split(" (transcript ")[0].split(": '")[0]
    return text[:90]


def healthy(r: dict) -> bool:
    return (r["lost"] == 0 and set(r["before"]) <= {"ok", "error"}
            and r["ok_after"] == r["turns"]
            and r["dup_uploads"] == r["dup_transcripts"] == r["dup_answers"] == 0)


def report(r: dict) -> str:
    faults = sorted(r["faults"].items(), key=lambda kv: (-kv[1], kv[0]))
    out = [f"## Fault soak: {r['turns']} turns, fault rate {r['fault_rate']:.0%} of requests, "
           f"transcript error rate {r['error_rate']:.0%}, seed {r['seed']}", ""]
    out.append(table([("fault injected", "count"), *[(k, str(v)) for k, v in faults],
                      ("all", str(sum(r["faults"].values())))]))
    out.append("")
    kinds = [k for k, _ in faults]
    routes = sorted({route for _, route in r["faults_by_route"]})
    out.append(table([("route", *kinds), *[
        (route, *[str(r["faults_by_route"].get((k, route), 0)) for k in kinds])
        for route in routes]]))
    out.append("")
    out.append(table([
        ("measure", "value"),
        ("turns", str(r["turns"])),
        ("ok / error after ask_many (faults on)",
         f"{r['before'].get('ok', 0)} / {r['before'].get('error', 0)}"),
        ("other statuses after ask_many (lost or stuck)",
         str(sum(v for k, v in r["before"].items() if k not in ("ok", "error")))),
        ("turns missing from the history", str(r["lost"])),
        ("ok after retry_failed (faults off)", f"{r['ok_after']} of {r['turns']}"),
        ("duplicate uploads (upload URL already known)", str(r["dup_uploads"])),
        ("duplicate transcriptions (a good transcript already created, heard or not)",
         str(r["dup_transcripts"])),
        ("duplicate answers (an answer already received)", str(r["dup_answers"])),
        ("uploads / transcripts / chat completions served",
         f"{r['uploads']} / {r['transcripts']} / {r['chat_completions']}"),
        ("  repeated because a cut kept the response from the client",
         f"{r['unheard_uploads']} / {r['unheard_transcripts']} / {r['cut_answers']}"),
        ("  transcripts repeated because the service failed them",
         str(r["failed_transcripts"])),
        ("HTTP requests served", str(r["requests"])),
        ("wall time: ask_many with faults", f"{r['faulty_s']:.1f} s"),
        ("wall time: retry_failed", f"{r['retry_s']:.1f} s"),
    ]))
    out.append("")
    out.append(table([("why turns failed before the retry", "turns"),
                      *[(k, str(v)) for k, v in r["errors_before"].most_common()]]))
    out.append("")
    out.append(f"healthy: {'yes' if healthy(r) else 'NO'}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=1000)
    parser.add_argument("--fault-rate", type=float, default=0.1,
                        help="fraction of requests that fail (default 0.1)")
    parser.add_argument("--error-rate", type=float, default=0.1,
                        help="fraction of transcripts that end with status error (default 0.1)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--read-timeout", type=float, default=2.0,
                        help="the client's read timeout; slow answers take twice this")
    args = parser.parse_args(argv)
    print(f"# voicenb fault soak, {machine()}\n")
    r = run(args.turns, args.fault_rate, args.error_rate, args.seed, args.read_timeout)
    print(report(r))
    return 0 if healthy(r) else 1


if __name__ == "__main__":
    sys.exit(main())
