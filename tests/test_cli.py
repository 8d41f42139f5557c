"""`voicenb transcribe` against `python -m voicenb.sim`, both as real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import voicenb as vnb
from voicenb.sim.__main__ import env_from_line


@pytest.fixture
def sim_process():
    proc = subprocess.Popen([sys.executable, "-m", "voicenb.sim", "--port", "0"],
                            stdout=subprocess.PIPE, text=True)
    try:
        env = env_from_line(proc.stdout.readline())  # one line a shell can eval
        assert len(env) == len(vnb.sim.ENV_VARS) == 8
        yield env
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def voicenb(*args, env):
    return subprocess.run([sys.executable, "-m", "voicenb.cli", *args], capture_output=True,
                          text=True, env={**os.environ, **env}, timeout=60)


def test_sim_prints_the_variables_to_export(sim_process):
    assert sim_process["ASSEMBLYAI_BASE_URL"].startswith("http://127.0.0.1:")
    assert sim_process["ASSEMBLYAI_API_KEY"]


def test_transcribe_prints_one_line_per_file(sim_process, samples):
    out = voicenb("transcribe", *map(str, samples[:2]), env=sim_process)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines == [f"{samples[0]}\tWhat is the capital of France?",
                     f"{samples[1]}\tHow far away is the moon?"]


def test_transcribe_json_prints_one_object_per_file(sim_process, samples):
    out = voicenb("transcribe", "--json", *map(str, samples), env=sim_process)
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["text"] for r in rows][0] == "What is the capital of France?"
    assert all(r["status"] == "completed" and r["id"] for r in rows)
    assert len(rows) == 3


def test_transcribe_exits_1_when_a_file_failed(sim_process, sample):
    out = voicenb("transcribe", str(sample), "missing.wav", env=sim_process)
    assert out.returncode == 1
    assert "missing.wav\tERROR: Audio file not found" in out.stdout
    assert "What is the capital of France?" in out.stdout


def test_transcribe_without_a_key_exits_2_with_advice(sample):
    out = voicenb("transcribe", str(sample), env={})
    assert out.returncode == 2
    assert "ASSEMBLYAI_API_KEY" in out.stderr
    assert "Traceback" not in out.stderr


def test_ask_prints_me_and_bot_lines_and_records_turns(sim_process, samples, tmp_path):
    home = tmp_path / "home"
    out = voicenb("ask", str(samples[0]), str(samples[1]), "--session", "cli", "--home",
                  str(home), env=sim_process)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "Me:  What is the capital of France?"
    assert lines[1].startswith("Bot: (simulated answer)")
    assert lines[2] == "Me:  How far away is the moon?"
    assert "I remember 1 earlier question" in lines[3]
    history = voicenb("history", "--home", str(home), env=sim_process)
    assert history.returncode == 0
    assert "What is the capital of France?" in history.stdout
    assert history.stdout.count(" ok ") == 2


def test_ask_exits_1_when_a_turn_failed(sim_process, sample, tmp_path):
    out = voicenb("ask", str(sample), "missing.wav", "--home", str(tmp_path / "h"),
                  env=sim_process)
    assert out.returncode == 1
    assert "ERROR (missing.wav): Audio file not found" in out.stdout


def test_history_exports_csv(sim_process, sample, tmp_path):
    home = tmp_path / "home"
    voicenb("ask", str(sample), "--home", str(home), "--session", "s1", env=sim_process)
    csv = tmp_path / "out.csv"
    out = voicenb("history", "--home", str(home), "--session", "s1", "--csv", str(csv),
                  env=sim_process)
    assert out.stdout.strip() == f"wrote 1 turns to {csv}"
    import pandas as pd

    assert pd.read_csv(csv)["transcript"].tolist() == ["What is the capital of France?"]


def test_ask_and_history_on_a_postgresql_server(sim_process, samples, tmp_path,
                                                postgres_server, postgres_url):
    """Two machines' commands (two homes), one server: --history, or VOICENB_HISTORY_URL."""
    voicenb("ask", str(samples[0]), "--home", str(tmp_path / "a"), "--session", "team",
            "--history", postgres_url, env=sim_process)
    voicenb("ask", str(samples[1]), "--home", str(tmp_path / "b"), "--session", "team",
            env={**sim_process, "VOICENB_HISTORY_URL": postgres_url})
    out = voicenb("history", "--history", postgres_url, "--home", str(tmp_path / "c"),
                  env=sim_process)
    lines = out.stdout.splitlines()
    assert len(lines) == 2 and "What is the capital of France? -> (simulated" in lines[0]
    csv = tmp_path / "team.csv"
    out = voicenb("history", "--history", postgres_url, "--csv", str(csv), env=sim_process)
    assert out.stdout.strip() == f"wrote 2 turns to {csv}"
    import pandas as pd

    assert pd.read_csv(csv)["turn"].tolist() == [1, 2]
    wrong = postgres_url.replace(postgres_url.split(":")[2].split("@")[0], "nope")
    out = voicenb("history", "--history", wrong, env=sim_process)
    assert out.returncode == 2 and "password authentication failed" in out.stderr
    assert postgres_server.password not in out.stdout + out.stderr
    assert "nope" not in out.stdout + out.stderr


def test_history_lines_fit_a_terminal_and_show_the_error(sim_process, sample, tmp_path):
    home = tmp_path / "home"
    voicenb("ask", str(sample), "missing.wav", "--home", str(home), env=sim_process)
    out = voicenb("history", "--home", str(home), env=sim_process)
    lines = out.stdout.splitlines()
    assert len(lines) == 2 and all(len(line) <= 100 for line in lines)
    assert "What is the capital of France? -> (simulated" in lines[0]
    assert " error " in lines[1] and "Audio file not found" in lines[1]


def test_piping_into_head_ends_quietly(sim_process, samples):
    cmd = (f"{sys.executable} -m voicenb.cli transcribe --json "
           + " ".join(map(str, samples * 20)) + " | head -n 1")
    out = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=120,
                         env={**os.environ, **sim_process})
    assert json.loads(out.stdout)["status"] == "completed"
    assert "Traceback" not in out.stderr and "BrokenPipe" not in out.stderr


def test_help_is_plain_text_and_every_option_is_described():
    out = voicenb("--help", env={})
    assert "``" not in out.stdout and "voicenb history" in out.stdout
    for command in ("transcribe", "ask", "listen", "history"):
        text = voicenb(command, "--help", env={}).stdout
        options = text.split("options:")[1].strip().splitlines()
        described = [line for line in options if line.strip().startswith("-")]
        assert all(len(line.split("  ")) > 1 for line in described if "=" not in line), text


def test_history_shows_a_turn_spoken_over(sim, tmp_path):
    session = vnb.Session("talk", home=str(tmp_path))
    turn = session.ask_text("Tell me about the moon.")
    session.record_speech(turn.turn, spoken_chars=10, interrupted=True)
    out = subprocess.run([sys.executable, "-m", "voicenb.cli", "history", "--home",
                          str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "barged_in" in out.stdout and "Tell me about the moon. -> " in out.stdout
