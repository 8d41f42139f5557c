"""The public surface is exactly the documented one."""

from __future__ import annotations

import re
from pathlib import Path

import voicenb as vnb

README = Path(__file__).resolve().parents[1] / "README.md"

DOCUMENTED = {
    "transcribe", "transcribe_many", "Transcript", "ask", "Chat", "Answer", "speak", "Audio",
    "Session", "Turn", "HistoryStore", "load_history", "summary", "plot_latency", "play",
    "show", "Experiment", "export",
    "AssemblyAI", "RealtimeTranscriber", "Settings", "sim",
    "VoicenbError", "ConfigError", "MissingDependencyError", "AudioError", "ServiceError",
    "AuthenticationError", "RateLimitError", "ServiceTimeoutError", "ModelNotFoundError",
    "TranscriptionError",
}


def test_all_is_exactly_the_documented_api():
    assert set(vnb.__all__) == DOCUMENTED
    assert len(vnb.__all__) == len(set(vnb.__all__))


def test_every_exported_name_exists():
    for name in vnb.__all__:
        assert getattr(vnb, name) is not None


def test_readme_api_table_lists_every_exported_name():
    text = README.read_text(encoding="utf-8")
    table = text.split("<!-- api -->")[1].split("<!-- /api -->")[0]
    listed = set(re.findall(r"`vnb\.(\w+)", table))
    assert listed == DOCUMENTED


def test_errors_form_one_tree():
    for name in DOCUMENTED:
        obj = getattr(vnb, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, vnb.VoicenbError)
    assert issubclass(vnb.ServiceTimeoutError, TimeoutError)
    assert issubclass(vnb.MissingDependencyError, vnb.ConfigError)
