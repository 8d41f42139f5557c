"""What a Session turn adds on top of the services: Session.ask_audio vs the bare calls.

Both run against the simulators in another process. The service time of a turn is what the
simulator spent: the paced upload, the job (queue + processing) and the answer (time to first
token + tokens / rate). What is left of the wall time is the client's: poll lag, requests,
and for the session also saving the audio, the silence check and the history writes.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import voicenb as vnb

from ._common import clips, sim_jobs, sim_process, table

MODEL = dict(processing_fixed=1.0, processing_factor=0.1, upload_bandwidth=4e6, ttft=0.3,
             token_rate=100)


def _service_s(path: Path, job: dict, completion_tokens: int) -> float:
    return (path.stat().st_size / MODEL["upload_bandwidth"] + job["finished"] - job["created"]
            + MODEL["ttft"] + (completion_tokens - 1) / MODEL["token_rate"])


def run(n: int = 20) -> dict:
    with tempfile.TemporaryDirectory() as tmp, sim_process(**MODEL) as env:
        os.environ["VOICENB_ASSEMBLYAI_API"] = "async"  # the path with the most client work
        paths = clips(Path(tmp) / "clips", n)
        session = vnb.Session("bench", home=str(Path(tmp) / "home"))
        bare_client = vnb.AssemblyAI()
        session.ask_audio(paths[0])  # warm both: imports, connections, the poll estimate
        bare_client.transcribe(paths[0])
        vnb.ask("warm up")
        ours, bare, own = [], [], []
        for path in paths:
            t0 = time.monotonic()
            turn = session.ask_audio(path)
            wall = time.monotonic() - t0
            log, _ = sim_jobs(env)
            ours.append(wall - _service_s(path, log[turn.transcript_id], turn.completion_tokens))
            own.append(wall - (turn.stt_s + turn.llm_s))

            t0 = time.monotonic()
            t = bare_client.transcribe(path)
            a = vnb.ask(t.text)
            wall = time.monotonic() - t0
            log, _ = sim_jobs(env)
            bare.append(wall - _service_s(path, log[t.id], a.completion_tokens))
    return {"n": n, "ours": statistics.median(ours), "bare": statistics.median(bare),
            "own": statistics.median(own)}


def report(r: dict) -> str:
    ms = 1000
    return table([
        ("measure", "value"),
        (f"per-turn wall - service time, median of {r['n']}: Session.ask_audio",
         f"{r['ours'] * ms:.0f} ms"),
        ("the bare calls (AssemblyAI().transcribe + vnb.ask)", f"{r['bare'] * ms:.0f} ms"),
        ("ratio session / bare calls", f"{r['ours'] / r['bare']:.2f}"),
        ("session's own work (wall - stt_s - llm_s): save, checks, history",
         f"{r['own'] * ms:.1f} ms"),
    ])


if __name__ == "__main__":
    print(report(run()))
