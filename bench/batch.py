"""Batch transcription: voicenb.transcribe_many vs the official SDK's transcribe_group.

Both run against the same simulator in the same process: N clips, each taking
``processing`` seconds to transcribe. Prints wall times, their ratio, poll lag and polls.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import voicenb as vnb

from ._common import clips, pct, table


def run(n: int = 40, processing: float = 1.5, concurrency: int | None = None) -> dict:
    results: dict = {"n": n, "processing": processing}
    with tempfile.TemporaryDirectory() as tmp, vnb.sim.running(
            processing_fixed=processing, processing_factor=0.0, concurrency=concurrency) as sim:
        paths = clips(Path(tmp), n)

        # voicenb, cold: a new client that has not learned anything yet
        client = vnb.AssemblyAI()
        t0 = time.monotonic()
        ts = client.transcribe_many(paths, progress=False)
        results["voicenb_s"] = time.monotonic() - t0
        assert all(t.ok for t in ts), [t.error for t in ts if not t.ok]
        results["lag_cold"] = _lags(ts, sim)
        results["polls_cold"] = statistics.mean(t.polls for t in ts)

        # voicenb, warm: the same client again, now predicting when jobs finish
        t0 = time.monotonic()
        ts = client.transcribe_many(paths, progress=False)
        results["voicenb_warm_s"] = time.monotonic() - t0
        results["lag_warm"] = _lags(ts, sim)
        results["polls_warm"] = statistics.mean(t.polls for t in ts)

        # the official SDK, default settings
        import assemblyai as aai

        aai.settings.api_key = sim.assemblyai.key
        aai.settings.base_url = sim.url
        polls_before = sim.stats["polls"]
        t0 = time.monotonic()
        group = aai.Transcriber().transcribe_group([str(p) for p in paths])
        results["sdk_s"] = time.monotonic() - t0
        assert all(t.status == "completed" for t in group.transcripts)
        results["polls_sdk"] = (sim.stats["polls"] - polls_before) / n
    return results


def _lags(ts, sim) -> list[float]:
    # transcribe_s runs from the end of the upload to the return; the service spends
    # (finished - created) of it processing. What is left is poll lag (+ one submit round trip).
    return [t.transcribe_s - (sim.jobs[t.id].finished - sim.jobs[t.id].created) for t in ts]


def report(r: dict) -> str:
    rows = [("measure", "value")]
    rows.append((f"batch of {r['n']} clips at {r['processing']} s: voicenb wall (cold)",
                 f"{r['voicenb_s']:.2f} s"))
    rows.append(("voicenb wall (warm client)", f"{r['voicenb_warm_s']:.2f} s"))
    rows.append(("official SDK transcribe_group wall", f"{r['sdk_s']:.2f} s"))
    rows.append(("ratio voicenb / SDK (cold)", f"{r['voicenb_s'] / r['sdk_s']:.2f}"))
    rows.append(("ratio voicenb / SDK (warm)", f"{r['voicenb_warm_s'] / r['sdk_s']:.2f}"))
    for label in ("cold", "warm"):
        lags = r[f"lag_{label}"]
        rows.append((f"poll lag, {label}: median / p90",
                     f"{statistics.median(lags):.3f} s / {pct(lags, 90):.3f} s"))
        rows.append((f"polls per job, {label}", f"{r[f'polls_{label}']:.1f}"))
    rows.append(("polls per job, SDK", f"{r['polls_sdk']:.1f}"))
    return table(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=40)
    parser.add_argument("--processing", type=float, default=1.5)
    parser.add_argument("--concurrency", type=int, default=None)
    args = parser.parse_args(argv)
    print(report(run(args.n, args.processing, args.concurrency)))


if __name__ == "__main__":
    main()
