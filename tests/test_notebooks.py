"""Every notebook runs top to bottom headless, offline and without keys; they are committed clean."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

FOLDER = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(FOLDER.glob("*.ipynb"))


def test_the_three_notebooks_are_there():
    assert {p.name for p in NOTEBOOKS} >= {"demo.ipynb", "batch.ipynb", "history.ipynb"}


def test_samples_are_a_dozen_small_clips_with_their_text():
    index = json.loads((FOLDER / "samples" / "samples.json").read_text())
    clips = sorted((FOLDER / "samples").glob("*.wav"))
    assert len(clips) == 12 and sorted(index) == [c.name for c in clips]
    assert sum(c.stat().st_size for c in clips) < 2_000_000


def _committed(path: Path) -> str:
    """The notebook as git tracks it (the index: what a commit takes), or the file outside
    a checkout. Running the demo may leave outputs in the working copy: git strips them."""
    out = subprocess.run(["git", "show", f":./{path.name}"], cwd=path.parent,
                         capture_output=True, text=True)
    return out.stdout if out.returncode == 0 else path.read_text()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_without_outputs(path):
    nb = json.loads(_committed(path))
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert not cell.get("outputs") and cell.get("execution_count") is None, path.name


def _run(path: Path, workdir: Path) -> tuple[nbformat.NotebookNode, float]:
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=180, kernel_name="python3",
                            resources={"metadata": {"path": str(workdir)}})
    t0 = time.monotonic()
    client.execute()  # raises CellExecutionError on any error
    return nb, time.monotonic() - t0


def _text(nb) -> str:
    return json.dumps([c.get("outputs", []) for c in nb.cells])


@pytest.fixture
def workdir(tmp_path):
    """A copy of notebooks/, so runs write their data there and not into the repo."""
    dest = tmp_path / "notebooks"
    shutil.copytree(FOLDER, dest, ignore=shutil.ignore_patterns("voicenb-data", "*.csv"))
    return dest


@pytest.mark.parametrize("name", [p.name for p in NOTEBOOKS])
def test_notebook_runs_headless_without_keys(name, workdir, capsys):
    nb, seconds = _run(workdir / name, workdir)
    text = _text(nb)
    assert "SIMULATED" in text  # it says plainly that the services are simulated
    assert "Traceback" not in text, text[max(0, text.find("Traceback") - 2000):text.find("Traceback") + 300]
    with capsys.disabled():
        print(f"\n{name} ran headless in {seconds:.1f} s")


def test_demo_falls_back_to_a_sample_and_fills_table_and_plot(workdir):
    nb, _ = _run(workdir / "demo.ipynb", workdir)
    text = _text(nb)
    assert "asking a sample question instead" in text
    assert "What is the capital of France?" in text  # in the history table
    assert "image/png" in text  # the latency plot
    assert "<audio" in text  # the latest turn, playable
    import voicenb as vnb

    df = vnb.load_history(workdir / "voicenb-data", session="demo")
    assert df["status"].tolist() == ["ok"]


def test_run_all_in_a_browser_asks_nothing_for_you(workdir, monkeypatch):
    """A kernel a Jupyter server starts for a browser has JPY_SESSION_NAME: the sample
    question is not asked, so the conversation starts with the person's own question."""
    monkeypatch.setenv("JPY_SESSION_NAME", str(workdir / "demo.ipynb"))
    nb, _ = _run(workdir / "demo.ipynb", workdir)
    text = _text(nb)
    assert "asking a sample question" not in text and "Traceback" not in text
    assert "Record a question first." in text
    import voicenb as vnb

    assert vnb.load_history(workdir / "voicenb-data", session="demo").empty


def test_run_all_in_a_browser_says_there_are_no_turns_yet_instead_of_nan(workdir, monkeypatch):
    monkeypatch.setenv("JPY_SESSION_NAME", str(workdir / "demo.ipynb"))
    nb, _ = _run(workdir / "demo.ipynb", workdir)
    summary, plot = (next(c for c in nb.cells if c.source.startswith(call))
                     for call in ("vnb.summary(", "vnb.plot_latency("))
    assert summary.outputs[0]["data"]["text/plain"].startswith("No turns yet: record a question")
    assert plot.outputs == [{"name": "stdout", "output_type": "stream",
                             "text": summary.outputs[0]["data"]["text/plain"] + "\n"}]
    assert "NaN" not in _text(nb)


def test_batch_builds_the_table_of_all_twelve(workdir):
    nb, _ = _run(workdir / "batch.ipynb", workdir)
    text = _text(nb)
    assert "100% of transcripts match the spoken text exactly" in text
    assert "(12, 12)" in text


def test_history_analyses_every_session_and_exports(workdir):
    _run(workdir / "demo.ipynb", workdir)
    _run(workdir / "batch.ipynb", workdir)  # its turns are session turns too
    nb, _ = _run(workdir / "history.ipynb", workdir)
    assert "13 turns in 2 sessions" in _text(nb)
    assert (workdir / "history-export.csv").exists()


def test_compare_runs_every_variant_and_labels_simulated_figures(workdir):
    nb, _ = _run(workdir / "compare.ipynb", workdir)
    text = _text(nb)
    import voicenb as vnb

    df = vnb.load_history(workdir / "voicenb-data", experiment="compare")
    assert len(df) == 12 * 5 and (df["status"] == "ok").all(), df["error"].dropna().tolist()
    assert set(df["simulated"]) == {"stt+llm", "llm"}  # Whisper hears here, for real
    assert df.loc[df["variant"] == "aai + mini", "wer"].mean() > 0  # the simulator misheard
    assert "simulated" in text and "image/png" in text and "<audio" in text
    assert "compare.parquet (60, " in text
    # the export goes into the data folder, which git ignores, not next to the notebook
    assert (workdir / "voicenb-data" / "compare.parquet").exists()
    assert not (workdir / "compare.parquet").exists()


def test_live_asks_a_sample_when_headless_and_says_why_no_voice_table(workdir):
    nb, _ = _run(workdir / "live.ipynb", workdir)
    text = _text(nb)
    assert "asking a sample question instead" in text
    assert "No answer was read aloud" in text  # no page to play it: no voice-to-voice table
    assert "image/png" in text  # the latency plot
    import voicenb as vnb

    df = vnb.load_history(workdir / "voicenb-data", session="live")
    assert df["status"].tolist() == ["ok"]
    assert df["stt_backend"].tolist() == ["assemblyai-streaming"]
    assert df["first_token_s"].notna().all() and df["first_audio_s"].isna().all()


def test_live_run_all_in_a_browser_waits_for_you_to_talk(workdir, monkeypatch):
    monkeypatch.setenv("JPY_SESSION_NAME", str(workdir / "live.ipynb"))
    nb, _ = _run(workdir / "live.ipynb", workdir)
    text = _text(nb)
    assert "Press Start listening and ask a question first." in text
    assert "asking a sample question" not in text and "Traceback" not in text
    import voicenb as vnb

    assert vnb.load_history(workdir / "voicenb-data", session="live").empty


def test_voice_agents_compares_the_cascade_and_both_speech_to_speech_services(workdir):
    nb, _ = _run(workdir / "voice_agents.ipynb", workdir)
    text = _text(nb)
    import voicenb as vnb

    df = vnb.load_history(workdir / "voicenb-data", experiment="voice-agents")
    assert len(df) == 12 * 3 and (df["status"] == "ok").all(), df["error"].dropna().tolist()
    assert set(df["live_backend"].dropna()) == {"openai-realtime", "assemblyai-agent"}
    live = df[df["live_backend"].notna()]
    assert live["first_audio_s"].notna().all() and live["cost_usd"].notna().all()
    assert (live["wer"] > 0).any()  # the simulators misheard, as told
    assert "stt+llm+tts" in set(df["simulated"].dropna())  # one service, all simulated
    assert "image/png" in text and "first_audio_s p50" in text
