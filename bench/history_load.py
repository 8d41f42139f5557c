"""Loading a 100,000-turn history as a DataFrame: HistoryStore vs pandas.read_sql_query.

The baseline reads the same table with pandas' own SQL reader (untyped); voicenb's load also
types every column (UTC timestamps, nullable integers, strings) and checks for dead turns.
"""

from __future__ import annotations

import sqlite3
import statistics
import tempfile
import time

import pandas as pd
import sqlalchemy as sa

import voicenb as vnb
from voicenb._store import turns
from voicenb.history import NAMES

from ._common import table


def fill(store: vnb.HistoryStore, n: int) -> None:
    now = time.time()
    rows = [("bench", i, now + i, "ok" if i % 20 else "error", None if i % 20 else "boom",
             f"audio/{i:064x}.wav", 2.5, f"{i:064x}", "assemblyai", f"id-{i}",
             "What is the capital of France?", 0.93, 0.05, 1.6, 4, 1.7, "gpt-5.4-mini",
             "What is the capital of France?", "Paris is the capital of France. " * 4, 0.3,
             1.2, 42, 31, 3.0, 0.0, 0.0, 0.1, "assemblyai-stt-3-7",
             None if i % 3 else "bench-exp", None if i % 3 else "a + mini",
             "What is the capital of France?", 0.0, 0.000123, "stt+llm",
             1.65, None if i % 3 else 2.1, None if i % 3 else "espeak",
             None if i % 3 else 0.03, None if i % 3 else 120,
             None if i % 3 else "espeak", None if i % 3 else "en", None,
             None if i % 3 else "cascade", None, None, None, None if i % 3 else 0)
            for i in range(1, n + 1)]
    assert len(rows[0]) == len(NAMES), "a new history column: give it a value here"
    with store._write() as db:  # one transaction, executemany (SQLAlchemy Core, any engine)
        db.execute(sa.insert(turns), [dict(zip(NAMES, row)) for row in rows])


def run(n: int = 100_000, repeat: int = 3) -> dict:
    with tempfile.TemporaryDirectory() as home:
        store = vnb.HistoryStore(home)
        fill(store, n)
        ours, base = [], []
        for _ in range(repeat):
            t0 = time.perf_counter()
            df = store.dataframe()
            ours.append(time.perf_counter() - t0)
            assert len(df) == n
            t0 = time.perf_counter()
            db = sqlite3.connect(store.path)
            raw = pd.read_sql_query(f"SELECT {', '.join(NAMES)} FROM turns ORDER BY session, "
                                    "turn", db)
            db.close()
            base.append(time.perf_counter() - t0)
            assert len(raw) == n
        store.close()
    return {"n": n, "ours": statistics.median(ours), "base": statistics.median(base)}


def report(r: dict) -> str:
    return table([
        ("measure", "value"),
        (f"{r['n']:,}-turn history -> DataFrame: vnb.load_history", f"{r['ours']:.3f} s"),
        ("pandas.read_sql_query, untyped", f"{r['base']:.3f} s"),
        ("ratio voicenb / read_sql_query", f"{r['ours'] / r['base']:.2f}"),
    ])


if __name__ == "__main__":
    print(report(run()))
