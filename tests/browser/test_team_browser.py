"""A team's history in real Chromium: turns recorded on one machine (this process, its own
home) against a real PostgreSQL server, read in a notebook on another (JupyterLab with
another home and VOICENB_HISTORY_URL): the table, a clip that plays although the notebook's
machine never had its file, and no password anywhere on the page. Screenshot:
test-artifacts/team-history.png."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import voicenb as vnb

from . import harness

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"

pytestmark = pytest.mark.skipif(
    not Path(harness.CHROMIUM).exists() and not os.environ.get("CI"),
    reason="Debian's chromium is not installed (.ci/run installs it; CI never skips)")

CELLS = [
    "import voicenb as vnb\n"
    "df = vnb.load_history()  # VOICENB_HISTORY_URL: the team's server\n"
    "df[['session', 'turn', 'status', 'transcript']]",
    "vnb.show(df)",
    "vnb.Session('study')",
]


def test_a_notebook_on_another_machine_reads_and_plays_the_teams_turns(
        tmp_path, sim, samples, postgres_server, postgres_url):
    laptop = vnb.Session("study", home=tmp_path / "laptop", history=postgres_url)
    laptop.ask_many(samples[:2], progress=False)
    root = tmp_path / "desk"
    root.mkdir()
    harness.write_notebook(root / "team.ipynb", CELLS)
    env = {**os.environ, **sim.env(), "VOICENB_HOME": str(root / "voicenb-data"),
           "VOICENB_HISTORY_URL": postgres_url}
    with harness.notebook_run(root, env, "team.ipynb", "team", width=1300) as page:
        page.get_by_text("Session('study', history='postgresql://voicenb:***@")\
            .wait_for(timeout=120_000)
        table = page.locator(".vnb-turns")
        assert table.locator("audio").count() == 2
        assert "How far away is the moon?" in table.inner_text()
        played = harness.play_first_audio(page)
        assert played[0] > 0.1 and played[1] > 1.0, played
        page.screenshot(path=str(ARTIFACTS / "team-history.png"), full_page=True)
        assert postgres_server.password not in page.content()
        assert len(list((root / "voicenb-data" / "audio").iterdir())) == 2  # fetched
