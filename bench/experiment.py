"""``vnb.Experiment``: 200 clips x 3 variants against the simulator, side by side with the
floor and with the same variants run one after another through ``Session.ask_many``.

The variants are the issue's: two share AssemblyAI (so each clip is transcribed once for
both: "aai + mini" and "aai + terse", a system prompt) and one transcribes with OpenAI and
answers with gpt-4o, so two speech-to-text groups run at once and three answers follow each
clip. The clips are copies of the three sample clips (registered, so the simulator knows
their text); each copy is its own clip, uploaded and transcribed on its own.

The simulator runs in its own process with the services' timings and limits:

- AssemblyAI (async API, pinned): upload at ``bandwidth`` bytes/s, processing ``fixed +
  factor x audio seconds``, at most ``stt_limit`` jobs processing at once (the rest queued);
- OpenAI: ``ttft`` before the first token (and per transcription), ``token_rate`` tokens/s.
  The simulator has no concurrency limit for OpenAI; the floor ASSUMES ``llm_limit`` answers
  at once (voicenb's default ``llm_concurrency``), and transcriptions without a limit.

Floor (a lower bound on any client's wall time with those limits): each transcript arrives
at the earliest the service can give it (every clip submitted at once; AssemblyAI first come
first served within ``stt_limit``; OpenAI's after ``ttft``, its uploads unpaced), and releases one
answer per variant of its group. Answer ``i`` takes the service ``d_i = ttft +
completion_tokens_i / token_rate`` (tokens read from the history rows). With ``r_i`` the
release times and at most ``llm_limit`` answers at once::

    floor = max( max_i (r_i + d_i),  max_a (a + sum(d_i for r_i >= a) / llm_limit) )

(no answer ends before it is released plus its own time; the work released at or after ``a``
cannot start before ``a`` and shares ``llm_limit`` slots).

Sequential: each variant after the other through a fresh ``vnb.Session(...).ask_many(clips)``
with the same settings and system prompt and ``max_history=0`` (transcription concurrent,
answers one after another in order). Both timed runs start warm (a one-clip experiment
first: imports, connections), as in a notebook that has asked something before.
"""

from __future__ import annotations

import argparse
import heapq
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import voicenb as vnb

from ._common import clips, sim_jobs, sim_process, table

VARIANTS = {
    "aai + mini": dict(stt="assemblyai", model="gpt-5.4-mini"),
    "aai + terse": dict(stt="assemblyai", model="gpt-5.4-mini", system="Answer in one sentence."),
    "openai + 4o": dict(stt="openai", model="gpt-4o"),
}
#: a short clip takes AssemblyAI about 1.7 s; 32 jobs at once (voicenb's concurrency=32);
#: OpenAI: 0.3 s to the first token, 100 tokens/s; 16 answers at once assumed
FULL = dict(n=200, fixed=1.5, factor=0.1, bandwidth=4e6, stt_limit=32, ttft=0.3,
            token_rate=100.0, llm_limit=16)
QUICK = dict(n=12, fixed=0.2, factor=0.05, bandwidth=4e6, stt_limit=32, ttft=0.05,
             token_rate=1000.0, llm_limit=16)


def stt_arrivals(paths: list[Path], m: dict) -> dict[str, list[float]]:
    """Each clip's earliest transcript, by backend (seconds from the start)."""
    jobs = [(p.stat().st_size / m["bandwidth"], m["fixed"] + m["factor"] * vnb.Audio(p).duration)
            for p in paths]
    slots: list[float] = []
    aai = [0.0] * len(jobs)
    for k in sorted(range(len(jobs)), key=lambda k: jobs[k][0]):
        arrive, work = jobs[k]
        start = arrive if len(slots) < m["stt_limit"] else max(arrive, heapq.heappop(slots))
        heapq.heappush(slots, start + work)
        aai[k] = start + work
    return {"assemblyai": aai, "openai": [m["ttft"]] * len(paths)}


def floor(arrivals: dict[str, list[float]], df, m: dict) -> tuple[float, float]:
    """(floor of the pipeline, LLM work alone / llm_limit) for the rows of ``df``."""
    answers = []  # (release, service time)
    for backend, turn, tokens in zip(df["stt_backend"], df["turn"], df["completion_tokens"]):
        answers.append((arrivals[backend][int(turn) - 1], m["ttft"] + tokens / m["token_rate"]))
    answers.sort()
    bound = max(r + d for r, d in answers)
    after = 0.0
    for r, d in reversed(answers):  # r + work released at or after r, over the limit
        after += d
        bound = max(bound, r + after / m["llm_limit"])
    return bound, sum(d for _, d in answers) / m["llm_limit"]


def run(quick: bool = False, n: int | None = None) -> dict:
    m = dict(QUICK if quick else FULL)
    if n is not None:
        m["n"] = n
    r: dict = {**m}
    with tempfile.TemporaryDirectory() as tmp, sim_process(
            processing_fixed=m["fixed"], processing_factor=m["factor"],
            concurrency=m["stt_limit"], upload_bandwidth=m["bandwidth"], ttft=m["ttft"],
            token_rate=m["token_rate"]) as env:
        os.environ["VOICENB_ASSEMBLYAI_API"] = "async"  # restored when the sim block ends
        paths = clips(Path(tmp) / "clips", m["n"])

        exp = vnb.Experiment("bench", audio=paths, variants=VARIANTS, home=str(Path(tmp) / "exp"))
        with warnings.catch_warnings():  # the simulator's models have no published price
            warnings.simplefilter("ignore", RuntimeWarning)
            # warm (imports: openai's alone take ~0.6 s; connections), as the sequential
            # runs after it are: one clip through every variant, in another store
            vnb.Experiment("warm", audio=paths[:1], variants=VARIANTS,
                           home=str(Path(tmp) / "warm")).run(progress=False)
            stats0 = sim_jobs(env)[1]
            t0 = time.monotonic()
            df = exp.run(llm_concurrency=m["llm_limit"], progress=False)
            r["experiment_s"] = time.monotonic() - t0
        assert (df["status"] == "ok").all(), df["error"].dropna().tolist()[:3]
        assert len(df) == m["n"] * len(VARIANTS)
        log, stats = sim_jobs(env)
        r["aai_jobs"] = stats.get("transcripts", 0) - stats0.get("transcripts", 0)
        r["openai_transcriptions"] = (stats.get("audio_transcriptions", 0)
                                      - stats0.get("audio_transcriptions", 0))
        r["audio_files"] = len(list((Path(tmp) / "exp" / "audio").iterdir()))
        jobs = [j for j in log.values() if j["created"] >= t0]  # not the warm-up's
        r["first_submit_s"] = min(j["created"] for j in jobs) - t0
        r["last_transcript_s"] = max(j["finished"] for j in jobs) - t0
        r["wait_s"] = statistics.median(df["wait_s"])
        r["overhead_s"] = statistics.median(df["overhead_s"])
        r["llm_s"] = statistics.median(df["llm_s"])
        arrivals = stt_arrivals(paths, m)
        r["floor_s"], r["llm_work_s"] = floor(arrivals, df, m)
        r["stt_floor_s"] = max(arrivals["assemblyai"])

        t0 = time.monotonic()
        for name, spec in VARIANTS.items():
            turns = vnb.Session(f"seq-{name}", home=str(Path(tmp) / "seq"), max_history=0,
                                **spec).ask_many(paths, progress=False)
            assert all(t.status == "ok" for t in turns), [t.error for t in turns][:3]
        r["sequential_s"] = time.monotonic() - t0
    return r


def report(r: dict) -> str:
    stt = (f"AssemblyAI (async API): {r['fixed']} s + {r['factor']} x audio, "
           f"{r['stt_limit']} jobs at once")
    llm = (f"OpenAI: ttft {r['ttft']} s, {r['token_rate']:.0f} tokens/s, "
           f"{r['llm_limit']} answers at once (assumed)")
    return table([
        ("measure", "value"),
        (f"{r['n']} clips x {len(VARIANTS)} variants ({', '.join(VARIANTS)})", ""),
        (stt, ""),
        (llm, ""),
        ("vnb.Experiment.run wall", f"{r['experiment_s']:.2f} s"),
        ("floor (services' own time at their limits)", f"{r['floor_s']:.2f} s"),
        ("ratio experiment / floor", f"{r['experiment_s'] / r['floor_s']:.2f}"),
        ("sequential: each variant through Session.ask_many, wall", f"{r['sequential_s']:.2f} s"),
        ("ratio sequential / experiment", f"{r['sequential_s'] / r['experiment_s']:.1f}"),
        ("floor parts: AssemblyAI alone / LLM work / llm_limit",
         f"{r['stt_floor_s']:.2f} s / {r['llm_work_s']:.2f} s"),
        ("experiment: first AssemblyAI submit / last transcript at the service",
         f"{r['first_submit_s']:.2f} s / {r['last_transcript_s']:.2f} s"),
        ("experiment, median per turn: wait_s / llm_s / overhead_s",
         f"{r['wait_s']:.3f} / {r['llm_s']:.3f} / {r['overhead_s']:.3f} s"),
        ("AssemblyAI jobs / OpenAI transcriptions / audio files saved",
         f"{r['aai_jobs']} / {r['openai_transcriptions']} / {r['audio_files']}"),
    ])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.experiment")
    parser.add_argument("-n", type=int, default=None, help="clips (default 200; 12 quick)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, fast timings")
    args = parser.parse_args(argv)
    print(report(run(args.quick, args.n)))


if __name__ == "__main__":
    main()
