"""Peak memory while uploading a big file: voicenb's streamed upload vs reading it whole.

Each client runs in its own process and reports how far its peak RSS grew during the upload,
so the simulator's own memory is not counted.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

import voicenb as vnb

from ._common import table

CHILD = r"""
import os, resource, sys, time
import requests
import voicenb as vnb

mode, path = sys.argv[1], sys.argv[2]
client = vnb.AssemblyAI()
client.upload(vnb.sim.samples()[0])  # warm up imports and the connection pool
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.monotonic()
if mode == "voicenb":
    client.upload(path, progress=False)
else:  # the seed article's way: read the whole file, post the bytes
    with open(path, "rb") as fh:
        data = fh.read()
    requests.post(os.environ["ASSEMBLYAI_BASE_URL"] + "/v2/upload", data=data,
                  headers={"Authorization": os.environ["ASSEMBLYAI_API_KEY"]}).raise_for_status()
elapsed = time.monotonic() - t0
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) * 1024, elapsed)
"""


def big_wav(path: Path, size: int) -> Path:
    """A valid WAV of about ``size`` bytes (sparse: it costs no disk until written)."""
    frames = (size - 44) // 2
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.setnframes(frames)
        w.writeframes(b"\0\0")
    with open(path, "r+b") as fh:
        fh.truncate(44 + frames * 2)
    # rewrite the header so it declares every frame
    with open(path, "r+b") as fh:
        fh.seek(4)
        fh.write((36 + frames * 2).to_bytes(4, "little"))
        fh.seek(40)
        fh.write((frames * 2).to_bytes(4, "little"))
    return path


def run(size: int = 1 << 30) -> dict:
    with tempfile.TemporaryDirectory() as tmp, vnb.sim.running() as sim:
        path = big_wav(Path(tmp) / "big.wav", size)
        out = {"size": size}
        for mode in ("voicenb", "whole"):
            proc = subprocess.run([sys.executable, "-c", CHILD, mode, str(path)],
                                  capture_output=True, text=True, env=os.environ.copy(),
                                  timeout=600)
            if proc.returncode:
                raise RuntimeError(proc.stderr)
            growth, elapsed = proc.stdout.split()
            out[f"{mode}_rss"], out[f"{mode}_s"] = int(growth), float(elapsed)
        out["uploaded"] = sim.stats["upload_bytes"]
    return out


def report(r: dict) -> str:
    mib = 1 << 20
    rows = [("measure", "value"),
            (f"upload {r['size'] / mib:,.0f} MiB: voicenb peak RSS growth",
             f"{r['voicenb_rss'] / mib:,.1f} MiB in {r['voicenb_s']:.1f} s"),
            ("read-whole-file baseline peak RSS growth",
             f"{r['whole_rss'] / mib:,.1f} MiB in {r['whole_s']:.1f} s"),
            ("ratio voicenb / baseline (memory)",
             f"{r['voicenb_rss'] / max(r['whole_rss'], 1):.3f}"),
            ("bytes the simulator received (both runs + warm-ups)", f"{r['uploaded']:,}")]
    return table(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=1024)
    args = parser.parse_args(argv)
    print(report(run(args.mib << 20)))


if __name__ == "__main__":
    main()
