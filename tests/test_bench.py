"""The benchmarks run at tiny sizes so they never rot. No timing is asserted here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_benchmarks_run_and_print_their_ratios():
    out = subprocess.run([sys.executable, "-m", "bench", "--quick"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "ratio voicenb / SDK" in out.stdout
    assert "ratio voicenb / baseline (memory)" in out.stdout
    assert "ratio vnb.ask / SDK" in out.stdout
    assert "ratio voicenb / read_sql_query" in out.stdout
    assert "ratio HistoryStore.dataframe / read_sql" in out.stdout
    assert "ratio session / bare calls" in out.stdout
    assert "ratio voicenb / floor" in out.stdout
    assert "ratio async / sync (time to transcript)" in out.stdout
    assert "ratio experiment / floor" in out.stdout
    assert "ratio sequential / experiment" in out.stdout
    assert "voice to voice (history first_audio_s" in out.stdout
    assert "voicenb overhead (voice to voice - the services' delays)" in out.stdout
    assert "barge-in stop in the page (hushAt -> stoppedAt)" in out.stdout
    assert "ratio whisper / sphinx (WER)" in out.stdout
    assert "ratio heard / registered (end of speech -> final, median)" in out.stdout
    assert "ratio pieces / whole file (peak memory)" in out.stdout
    assert "ratio voicenb / service (first audio)" in out.stdout
    assert "ratio experiment / floor (s2s)" in out.stdout
    assert "questions lost, words lost, duplicate turns" in out.stdout
