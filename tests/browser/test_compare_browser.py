"""compare.ipynb in real Chromium (JupyterLab): Run All, then the compare table, the plot and
the side-by-side turns table are on the page, and a clip in that table plays. Screenshots of
each go to test-artifacts/compare-*.png."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from . import harness

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"

pytestmark = pytest.mark.skipif(
    not Path(harness.CHROMIUM).exists() and not os.environ.get("CI"),
    reason="Debian's chromium is not installed (.ci/run installs it; CI never skips)")


def test_compare_notebook_shows_tables_plots_and_playable_clips(tmp_path):
    root = tmp_path / "repo"
    shutil.copytree(ROOT / "notebooks", root / "notebooks",
                    ignore=shutil.ignore_patterns("voicenb-data", "*.csv", "*.parquet"))
    env = {**os.environ, "VOICENB_HOME": str(root / "voicenb-data")}
    ARTIFACTS.mkdir(exist_ok=True)
    with harness.notebook_run(root, env, "notebooks/compare.ipynb", "compare") as page:
        page.get_by_text("compare.parquet (60, ").wait_for(timeout=240_000)
        table = page.locator(".vnb-turns")
        table.scroll_into_view_if_needed()
        assert table.locator("audio").count() == 3
        headers = table.locator("th").all_inner_texts()
        assert headers[:3] == ["clip", "audio", "reference"] and len(headers) == 8
        table.screenshot(path=str(ARTIFACTS / "compare-show.png"))
        played = harness.play_first_audio(page)
        assert played[0] > 0.1 and played[1] > 1.0, played
        plot = page.locator(".jp-OutputArea-output img").first
        plot.scroll_into_view_if_needed()
        plot.screenshot(path=str(ARTIFACTS / "compare-plot.png"))
        compare = page.locator(".jp-RenderedHTMLCommon table").nth(1)
        compare.scroll_into_view_if_needed()
        compare.screenshot(path=str(ARTIFACTS / "compare-table.png"))
        assert "simulated" in compare.inner_text()
