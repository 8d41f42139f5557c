"""Every Python example in the README runs, against the simulators, with no key."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
EXAMPLES = re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_readme_has_examples():
    assert len(EXAMPLES) >= 4


@pytest.fixture(autouse=True)
def repository_files(tmp_path):
    """The examples run from the repository root: the sample questions are at hand."""
    shutil.copytree(Path(__file__).resolve().parents[1] / "notebooks" / "samples",
                    tmp_path / "notebooks" / "samples")


@pytest.mark.parametrize("code", EXAMPLES, ids=[f"example{i}" for i in range(len(EXAMPLES))])
def test_readme_example_runs(code, capsys):
    exec(compile(code, "README.md", "exec"), {"__name__": "__readme__"})
    assert capsys.readouterr().out.strip()  # each example prints what it shows


def test_first_example_prints_what_the_readme_says(capsys):
    exec(compile(EXAMPLES[0], "README.md", "exec"), {})
    assert "What is the capital of France?" in capsys.readouterr().out
