"""The package stays readable: Session is a table of contents over the private turn pipeline,
no function grows past a screen, and nothing reaches into another module's private parts."""

from __future__ import annotations

import ast
from pathlib import Path

import voicenb

PACKAGE = Path(voicenb.__file__).parent
MAX_FUNCTION_LINES = 60


def _modules() -> list[tuple[Path, ast.Module]]:
    return [(p, ast.parse(p.read_text())) for p in sorted(PACKAGE.rglob("*.py"))]


def test_session_reads_as_a_short_table_of_contents():
    assert len((PACKAGE / "session.py").read_text().splitlines()) < 300


def test_no_function_is_longer_than_a_screen():
    long = [f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} "
            f"({node.end_lineno - node.lineno + 1} lines)"
            for path, tree in _modules() for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert long == []


def test_the_turn_pipeline_knows_backends_only_by_their_protocol():
    for name in ("session.py", "_turns.py"):
        source = (PACKAGE / name).read_text()
        for private in ("AssemblyAI", "_client", "._start", ".finish(", "._batch",
                        "SIZE_LIMITS", '== "assemblyai"'):
            assert private not in source, f"{name} uses {private}"


def test_settings_are_read_only_through_settings():
    """Environment variables are read in _config.py alone."""
    readers = [str(path.relative_to(PACKAGE)) for path, tree in _modules()
               for node in ast.walk(tree)
               if isinstance(node, ast.Attribute) and node.attr == "_from_environment"
               or isinstance(node, ast.Name) and node.id == "_from_environment"]
    assert set(readers) <= {"_config.py"}
