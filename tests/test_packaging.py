"""pyproject.toml and environment.yml stay in step; the repo has what a fresh clone needs."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# PyPI name -> conda-forge name, where they differ
CONDA_NAMES: dict[str, str] = {}
#: runtime dependencies that environment.yml takes from PyPI (its pip: list), not conda-forge
PIP_ONLY = {"assemblyai"}  # AssemblyAI's SDK is published on PyPI


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[;]", requirement, maxsplit=1)[0].strip().lower()


def _pins(requirements) -> dict[str, str]:
    return {_name(r): r[len(_name(r)):].strip() for r in requirements}


def test_environment_yml_lists_every_runtime_dependency_with_the_same_pin():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = _pins(d for d in env["dependencies"] if isinstance(d, str))
    pip = _pins(r for d in env["dependencies"] if isinstance(d, dict) for r in d.get("pip", [])
                if not r.startswith("-"))
    runtime = _pins(project["dependencies"])
    for name, pin in runtime.items():
        where, listed = ("pip", pip) if name in PIP_ONLY else ("conda", conda)
        listed_name = name if name in PIP_ONLY else CONDA_NAMES.get(name, name)
        assert listed_name in listed, f"{name} is in pyproject.toml but not environment.yml " \
                                      f"({where})"
        assert listed[listed_name] == pin, f"{name}: pyproject {pin!r} vs environment.yml"
    extras = set(conda) - set(runtime) - {"python", "pip", "jupyterlab"}
    assert not extras, f"environment.yml has packages pyproject.toml lacks: {extras}"


def test_python_requirement_matches():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert f"python{project['requires-python']}" in env["dependencies"]


def test_ci_script_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and "make test" in ci


def test_sample_clips_ship_with_their_text():
    import voicenb as vnb

    assert len(vnb.sim.samples()) >= 3
    index = (ROOT / "voicenb" / "sim" / "samples" / "samples.json").read_text()
    for clip in vnb.sim.samples():
        assert clip.name in index
