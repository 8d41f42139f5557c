from __future__ import annotations

import platform
import shutil
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
