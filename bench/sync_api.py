"""Time to transcript for recorded questions: AssemblyAI's async API vs its Sync API.

The same questions (2 to 10 s, 16 kHz WAV) go through both paths, one at a time, against the
simulator in another process, set to the vendor's published figures:

- Sync API: ~134 ms of processing after the last byte (AssemblyAI's Sync STT announcement).
- async API: processing at a real-time factor of 0.008 (AssemblyAI's FAQ, "How long does it
  take to transcribe a file?") plus a fixed 3 s of queueing and start-up per job. AssemblyAI
  publishes no figure for short files (only "the vast majority ... under 45 seconds"); 3 s is
  an assumption at the fast end of what short files see, so the ratio is conservative.

Printed: time to transcript per path (median, p90), their ratio, and the client's own time on
the sync path (wall time minus the service's ``request_time_ms``), for a whole clip and for a
clip uploaded while it was recorded (then only the wait after the last byte counts); and
TCP_NODELAY as the OS reports it on the client's pooled sockets and on the simulator's end
(with Nagle's algorithm on either side, a small write can wait ~40 ms for an acknowledgement).
"""

from __future__ import annotations

import math
import os
import socket
import statistics
import time

import requests

import voicenb as vnb
from voicenb.audio import pcm_to_wav
from voicenb.stt import get_backend

from ._common import pct, sim_process, table

SYNC_PROCESSING_S = 0.134
ASYNC = dict(processing_fixed=3.0, processing_factor=0.008, sync_processing=SYNC_PROCESSING_S)


def question(seconds: float, rate: int = 16000) -> bytes:
    """A clip of ``seconds`` of a warbling tone (not silent, not registered)."""
    frames = b"".join(int(6000 * math.sin(2 * math.pi * (300 + 50 * math.sin(i / 800)) * i
                                          / rate)).to_bytes(2, "little", signed=True)
                      for i in range(int(seconds * rate)))
    return pcm_to_wav(frames, rate)


def _served(env: dict[str, str]) -> list[dict]:
    return requests.get(env["ASSEMBLYAI_BASE_URL"] + "/sim/sync", timeout=10).json()["served"]


def _nodelay(values: list[int]) -> str:
    """TCP_NODELAY=1, =0, or =0/1 when the sockets differ; '?' when none was seen."""
    return "TCP_NODELAY=" + "/".join(str(v) for v in sorted(set(values))) if values else "?"


def run(n: int = 20, fixed: float = 3.0) -> dict:
    lengths = [2 + 8 * i / max(n - 1, 1) for i in range(n)]
    clips = [question(s) for s in lengths]
    with sim_process(**{**ASYNC, "processing_fixed": fixed}) as env:
        os.environ["VOICENB_ASSEMBLYAI_API"] = "async"
        async_backend = get_backend("assemblyai")
        os.environ["VOICENB_ASSEMBLYAI_API"] = "auto"
        sync_backend = get_backend("assemblyai")
        sync_backend.transcribe(clips[0])  # warm both: imports, connections
        async_backend.transcribe(clips[0])
        out: dict[str, list[float]] = {"async": [], "sync": [], "sync_ids": [], "live": [],
                                       "live_ids": []}
        for clip in clips:
            t0 = time.monotonic()
            t = async_backend.transcribe(clip)
            out["async"].append(time.monotonic() - t0)
            assert t.backend == "assemblyai"
            t0 = time.monotonic()
            t = sync_backend.transcribe(clip)
            out["sync"].append(time.monotonic() - t0)
            out["sync_ids"].append(t.id)
            assert t.backend == "assemblyai-sync"
            live = sync_backend.open_live()
            pcm = vnb.Audio(clip).pcm16k()
            for i in range(0, len(pcm), 3200):  # 100 ms chunks, as the recorder sends them
                live.write(pcm[i:i + 3200])
            t = live.result()  # stt_s: from the end of the recording to the transcript
            out["live"].append(t.stt_s)
            out["live_ids"].append(t.id)
        client = [int(bool(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)))
                  for s in sync_backend.sync_http.sockets()]
        served = _served(env)
    service = {r["session_id"]: r["request_ms"] / 1000 for r in served}
    own = [w - service[i] for w, i in zip(out["sync"], out["sync_ids"])]
    live_own = [w - service[i] for w, i in zip(out["live"], out["live_ids"])]
    sockets = (f"client {_nodelay(client)}, "
               f"server {_nodelay([r.get('tcp_nodelay', 0) for r in served])}")
    return {"n": n, "async": out["async"], "sync": out["sync"], "live": out["live"],
            "own": own, "live_own": live_own, "fixed": fixed, "sockets": sockets}


def report(r: dict) -> str:
    ms = 1000
    a, s, live = (statistics.median(r[k]) for k in ("async", "sync", "live"))
    return table([
        ("measure", "value"),
        ("questions (2-10 s), each through both paths", f"{r['n']}"),
        (f"async API (upload, submit, poll; {r['fixed']:.1f} s + RTF 0.008): median / p90",
         f"{a * ms:.0f} / {pct(r['async'], 90) * ms:.0f} ms"),
        ("Sync API, whole clip (one request, ~134 ms service): median / p90",
         f"{s * ms:.0f} / {pct(r['sync'], 90) * ms:.0f} ms"),
        ("Sync API, uploaded while recorded: end of recording -> transcript, median",
         f"{live * ms:.0f} ms"),
        ("ratio async / sync (time to transcript)", f"{a / s:.1f}"),
        ("client overhead on the sync path (wall - service's request_time_ms), median",
         f"{statistics.median(r['own']) * ms:.1f} ms"),
        ("client overhead, uploaded while recorded, median",
         f"{statistics.median(r['live_own']) * ms:.1f} ms"),
        ("socket options (as the OS reports them)", r["sockets"]),
    ])


if __name__ == "__main__":
    print(report(run()))
