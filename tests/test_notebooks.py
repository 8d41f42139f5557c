"""Every notebook runs top to bottom headless, offline and without keys; they are committed clean."""

from __future__ import annotations

import json
import shutil
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


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_without_outputs(path):
    nb = json.loads(path.read_text())
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
    assert "You said: What is the capital of France?" in text
    assert "image/png" in text  # the latency plot
    import voicenb as vnb

    df = vnb.load_history(workdir / "voicenb-data", session="demo")
    assert df["status"].tolist() == ["ok"]


def test_batch_builds_the_table_of_all_twelve(workdir):
    nb, _ = _run(workdir / "batch.ipynb", workdir)
    text = _text(nb)
    assert "100% of transcripts match the spoken text exactly" in text
    assert "(12, 12)" in text


def test_history_analyses_every_session_and_exports(workdir):
    _run(workdir / "demo.ipynb", workdir)
    nb, _ = _run(workdir / "history.ipynb", workdir)
    assert "turns in 1 sessions" in _text(nb)
    assert (workdir / "history-export.csv").exists()
