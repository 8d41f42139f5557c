"""Batch transcription against a realistic simulated AssemblyAI, side by side:

- voicenb: ``AssemblyAI().transcribe_many`` (a new client, so nothing learned beforehand);
- the official SDK: ``Transcriber().transcribe_group`` with its default settings;
- the seed article's way: one file at a time, upload -> submit -> poll every second.

The simulator's latency model: uploads at ``bandwidth`` bytes/s per connection, processing
``fixed + factor * audio seconds``, at most ``limit`` jobs processing at once (the rest stay
queued). The floor is the best any client could do: each job submitted the moment its own
upload ends, processed first come first served within the limit.
"""

from __future__ import annotations

import argparse
import heapq
import statistics
import tempfile
import time
from pathlib import Path

import requests

import voicenb as vnb

from ._common import clips, pct, sim_jobs, sim_process, table

SCENARIOS = {
    # AssemblyAI processes 200 jobs at once on a paid account, 5 on a free one.
    "paid": dict(limit=200, fixed=1.5, factor=0.1, bandwidth=4e6),
    "free": dict(limit=5, fixed=1.5, factor=0.1, bandwidth=4e6),
}


def floor(paths: list[Path], limit: int, fixed: float, factor: float, bandwidth: float) -> float:
    arrivals = sorted((p.stat().st_size / bandwidth, fixed + factor * vnb.Audio(p).duration)
                      for p in paths)
    slots: list[float] = []
    end = 0.0
    for arrive, work in arrivals:
        start = arrive if len(slots) < limit else max(arrive, heapq.heappop(slots))
        heapq.heappush(slots, start + work)
        end = max(end, start + work)
    return end


def seed_way(paths: list[Path], url: str, key: str, interval: float = 1.0) -> list[str]:
    """The article's loop: one file at a time, poll on a fixed interval."""
    headers = {"authorization": key}
    texts = []
    for path in paths:
        with open(path, "rb") as fh:
            upload_url = requests.post(f"{url}/v2/upload", headers=headers,
                                       data=fh.read()).json()["upload_url"]
        tid = requests.post(f"{url}/v2/transcript", headers=headers,
                            json={"audio_url": upload_url}).json()["id"]
        while True:
            job = requests.get(f"{url}/v2/transcript/{tid}", headers=headers).json()
            if job["status"] in ("completed", "error"):
                texts.append(job["text"])
                break
            time.sleep(interval)
    return texts


def run(n: int = 100, scenario: str = "paid", seed_n: int = 10, sdk: bool = True) -> dict:
    model = SCENARIOS[scenario]
    r: dict = {"n": n, "scenario": scenario, **model}
    with tempfile.TemporaryDirectory() as tmp, sim_process(
            processing_fixed=model["fixed"], processing_factor=model["factor"],
            concurrency=model["limit"], upload_bandwidth=model["bandwidth"]) as env:
        paths = clips(Path(tmp), n)
        r["floor_s"] = floor(paths, model["limit"], model["fixed"], model["factor"],
                             model["bandwidth"])

        polls0 = sim_jobs(env)[1].get("polls", 0)
        t0 = time.monotonic()
        ts = vnb.AssemblyAI().transcribe_many(paths, progress=False)
        r["voicenb_s"] = time.monotonic() - t0
        assert all(t.ok for t in ts), [t.error for t in ts if not t.ok]
        log, stats = sim_jobs(env)
        jobs = [log[t.id] for t in ts]
        # poll lag: the client's transcribe_s minus the service's time for the job (queue +
        # processing), i.e. what passed between "completed" and the client returning it
        r["lag"] = [t.transcribe_s - (j["finished"] - j["created"]) for t, j in zip(ts, jobs)]
        r["polls_per_job"] = (stats["polls"] - polls0) / n
        r["polls_per_s"] = statistics.mean(j["polls"] / (j["finished"] - j["created"])
                                           for j in jobs)
        r["polls_per_processing_s"] = statistics.mean(j["polls"] / j["processing_s"]
                                                      for j in jobs)

        if sdk:
            import assemblyai as aai

            aai.settings.api_key = env["ASSEMBLYAI_API_KEY"]
            aai.settings.base_url = env["ASSEMBLYAI_BASE_URL"]
            polls0 = sim_jobs(env)[1]["polls"]
            t0 = time.monotonic()
            group = aai.Transcriber().transcribe_group([str(p) for p in paths])
            r["sdk_s"] = time.monotonic() - t0
            assert all(t.status == "completed" for t in group.transcripts)
            r["sdk_polls_per_job"] = (sim_jobs(env)[1]["polls"] - polls0) / n

        if seed_n:
            t0 = time.monotonic()
            texts = seed_way(paths[:seed_n], env["ASSEMBLYAI_BASE_URL"],
                             env["ASSEMBLYAI_API_KEY"])
            r["seed_per_clip_s"] = (time.monotonic() - t0) / seed_n
            assert all(texts)
    return r


def report(r: dict) -> str:
    lag = r["lag"]
    rows = [("measure", "value"),
            (f"scenario '{r['scenario']}': {r['n']} clips, {r['limit']} processing at once, "
             f"{r['fixed']} s + {r['factor']} x audio", ""),
            ("floor (ideal client)", f"{r['floor_s']:.2f} s"),
            ("voicenb transcribe_many wall", f"{r['voicenb_s']:.2f} s"),
            ("ratio voicenb / floor", f"{r['voicenb_s'] / r['floor_s']:.2f}")]
    if "sdk_s" in r:
        rows += [("official SDK transcribe_group wall", f"{r['sdk_s']:.2f} s"),
                 ("ratio voicenb / SDK", f"{r['voicenb_s'] / r['sdk_s']:.2f}")]
    if "seed_per_clip_s" in r:
        rows += [("seed article's way (sequential, 1 s polls), per clip",
                  f"{r['seed_per_clip_s']:.2f} s (x{r['n']} = {r['seed_per_clip_s'] * r['n']:.0f}"
                  " s)"),
                 ("ratio voicenb / seed way (projected)",
                  f"{r['voicenb_s'] / (r['seed_per_clip_s'] * r['n']):.3f}")]
    rows += [("poll lag median / p90", f"{statistics.median(lag):.3f} s / {pct(lag, 90):.3f} s"),
             ("polls per job (voicenb)", f"{r['polls_per_job']:.1f}"),
             ("polls per job per second at the service (queued + processing)",
              f"{r['polls_per_s']:.2f}"),
             ("polls per job per second of processing", f"{r['polls_per_processing_s']:.2f}")]
    if "sdk_polls_per_job" in r:
        rows.append(("polls per job (SDK)", f"{r['sdk_polls_per_job']:.1f}"))
    return table(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=100)
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="paid")
    args = parser.parse_args(argv)
    print(report(run(args.n, args.scenario)))


if __name__ == "__main__":
    main()
