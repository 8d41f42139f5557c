from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
import statistics
from pathlib import Path

import voicenb as vnb


def clips(folder: Path, n: int) -> list[Path]:
    """``n`` copies of the shipped sample clips (registered, so their text is known)."""
    folder.mkdir(parents=True, exist_ok=True)
    samples = vnb.sim.samples()
    out = []
    for i in range(n):
        src = samples[i % len(samples)]
        dest = folder / f"{i:04d}_{src.name}"
        shutil.copy(src, dest)
        out.append(dest)
    return out


@contextmanager
def sim_process(**knobs: object) -> Iterator[dict[str, str]]:
    """``python -m voicenb.sim`` in its own process (a real service is not in your process
    either); sets its variables in os.environ for the block and yields them."""
    from voicenb.sim.__main__ import env_from_line

    # --no-hear: unknown clips get the placeholder at once, as they always have here
    args = [sys.executable, "-m", "voicenb.sim", "--port", "0", "--no-hear"]
    for name, value in knobs.items():
        if value is not None:
            args += [f"--{name.replace('_', '-')}", str(value)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    saved = dict(os.environ)
    try:
        env = env_from_line(proc.stdout.readline())
        os.environ.update(env)
        yield env
    finally:
        os.environ.clear()
        os.environ.update(saved)
        proc.terminate()
        proc.wait(timeout=10)


def sim_jobs(env: dict[str, str]) -> tuple[dict[str, dict], dict[str, int]]:
    """The simulator's record of its jobs and its counters."""
    import requests

    data = requests.get(env["ASSEMBLYAI_BASE_URL"] + "/sim/jobs", timeout=10).json()
    return data["jobs"], data["stats"]


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 \
        else values[0]


def machine() -> str:
    import os

    return f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} cores, {platform.machine()}"


def table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)
