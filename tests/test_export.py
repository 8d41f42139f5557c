"""vnb.export: Parquet and CSV give the history back as it was; OTLP/JSON holds one trace per
turn, built by the OpenTelemetry SDK, with GenAI attributes and stage spans that add up."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

import voicenb as vnb
from voicenb.export import export
from voicenb.history import NAMES, to_frame

STARTED = 1795458077.901  # 2026-11-23T18:21:17.901Z, as history.sqlite stores it

OK = dict(session="demo", turn=1, started_at=STARTED, status="ok", audio_s=1.98,
          stt_backend="assemblyai", transcript_id="tr-1", transcript="What is the capital?",
          confidence=0.93, upload_s=0.25, transcribe_s=0.5, polls=3, stt_s=0.75,
          llm_model="gpt-4o-mini", prompt="What is the capital?", answer="Paris.",
          ttft_s=0.2, llm_s=0.6, prompt_tokens=12, completion_tokens=21, setup_s=0.1,
          wait_s=0.05, overhead_s=0.02, total_s=1.52, speech_model="universal-3-5-pro")
FAILED = dict(session="demo", turn=2, started_at=STARTED + 5, status="error",
              error="OpenAI answered 429: rate limited", audio_s=1.5, stt_backend="assemblyai",
              transcript="And of Spain?", upload_s=0.2, transcribe_s=0.4, stt_s=0.6,
              llm_model="gpt-4o-mini", setup_s=0.0, wait_s=0.0)
TYPED = dict(session="demo", turn=3, started_at=STARTED + 9, status="ok", stt_backend="text",
             transcript="hello", llm_model="gpt-4o-mini", prompt="hello", answer="Hi!",
             ttft_s=0.05, llm_s=0.17, prompt_tokens=115, completion_tokens=22, setup_s=0.0,
             wait_s=0.0, overhead_s=0.001, total_s=0.171)
NEVER = dict(session="demo", turn=4, started_at=None, status="error",
             error="The audio file 'x.wav' does not exist.")


def _frame(*rows: dict) -> pd.DataFrame:
    return to_frame([tuple(row.get(name) for name in NAMES) for row in rows])


@pytest.fixture
def history() -> pd.DataFrame:
    return _frame(OK, FAILED, TYPED, NEVER)


def _spans(path: Path) -> list[dict]:
    doc = json.loads(path.read_text(encoding="utf-8"))
    return [span for resource in doc["resourceSpans"] for scope in resource["scopeSpans"]
            for span in scope["spans"]]


def _attrs(span: dict) -> dict:
    return {a["key"]: next(iter(a["value"].values())) for a in span.get("attributes", [])}


def _turn(spans: list[dict], number: int) -> dict[str, dict]:
    """The spans of one turn by name."""
    root = next(s for s in spans if s["name"] == "voicenb.turn"
                and _attrs(s)["voicenb.turn"] == str(number))
    return {s["name"]: s for s in spans if s["traceId"] == root["traceId"]}


def _ns(span: dict) -> int:
    return int(span["endTimeUnixNano"]) - int(span["startTimeUnixNano"])


# -- Parquet and CSV ------------------------------------------------------------------------

def test_parquet_gives_back_the_same_frame(history, tmp_path):
    path = export(history, tmp_path / "runs.parquet")
    assert path == tmp_path / "runs.parquet"
    pd.testing.assert_frame_equal(pd.read_parquet(path), history)


def test_parquet_keeps_extra_columns_and_their_dtypes(history, tmp_path):
    df = history.iloc[[0, 2]].copy()  # a subset, with the index it had
    df["label"] = pd.array(["baseline", None], dtype="string")
    df["score"] = pd.array([3, None], dtype="Int64")
    df["kept"] = pd.array([True, None], dtype="boolean")
    pd.testing.assert_frame_equal(pd.read_parquet(export(df, tmp_path / "s.parquet")), df)


def test_csv_has_a_header_iso_times_and_the_same_values(history, tmp_path):
    path = export(history, tmp_path / "runs.csv")
    text = path.read_text(encoding="utf-8")
    assert text.splitlines()[0].split(",")[:3] == ["session", "turn", "started_at"]
    assert "2026-11-23T18:21:17.901000+00:00" in text
    back = pd.read_csv(path, parse_dates=["started_at"]).astype(history.dtypes.to_dict())
    pd.testing.assert_frame_equal(back, history)


def test_csv_keeps_commas_quotes_and_line_breaks_in_text(tmp_path):
    df = _frame(dict(OK, answer='Paris, "the capital".\nSecond line; ünïcode'))
    back = pd.read_csv(export(df, tmp_path / "runs.csv"))
    assert back["answer"][0] == 'Paris, "the capital".\nSecond line; ünïcode'


def test_folders_are_created(history, tmp_path):
    assert export(history, tmp_path / "a" / "b" / "runs.csv").is_file()


def test_an_unknown_suffix_names_the_choices(history, tmp_path):
    with pytest.raises(vnb.ConfigError) as info:
        export(history, tmp_path / "runs.xlsx")
    for choice in (".parquet", ".csv", ".otlp.json", "format="):
        assert choice in str(info.value)
    with pytest.raises(vnb.ConfigError, match="format='otlp'"):
        export(history, tmp_path / "runs.json")  # a table or a trace? It says how to choose
    with pytest.raises(vnb.ConfigError, match="parquet, csv, otlp"):
        export(history, tmp_path / "runs.csv", format="xlsx")


def test_format_overrides_the_suffix(history, tmp_path):
    path = export(history, tmp_path / "runs.txt", format="csv")
    assert path.read_text(encoding="utf-8").startswith("session,turn,")


def test_a_failed_export_leaves_the_old_file_and_no_temporary(history, tmp_path):
    path = export(history, tmp_path / "runs.parquet")
    before = path.read_bytes()
    bad = history.assign(mixed=pd.Series([1, "two", 3.0, None], dtype=object))
    with pytest.raises(vnb.ConfigError, match="Parquet"):
        export(bad, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["runs.parquet"]


def test_a_path_that_cannot_be_written_says_so(history, tmp_path):
    (tmp_path / "runs.csv").mkdir()  # a folder where the file should go
    with pytest.raises(vnb.ConfigError, match="Cannot write .*runs.csv"):
        export(history, tmp_path / "runs.csv")
    assert [p.name for p in tmp_path.iterdir()] == ["runs.csv"]

# -- OpenTelemetry ---------------------------------------------------------------------------

otel = pytest.mark.skipif(importlib.util.find_spec("opentelemetry") is None,
                          reason="pip install 'voicenb[otel]' (in the dev extra)")


@otel
def test_otlp_file_is_otlp_json_with_one_trace_per_started_turn(history, tmp_path):
    path = export(history, tmp_path / "runs.otlp.json")
    doc = json.loads(path.read_text(encoding="utf-8"))
    resource = doc["resourceSpans"][0]
    assert {"key": "service.name", "value": {"stringValue": "voicenb"}} in \
        resource["resource"]["attributes"]
    assert resource["scopeSpans"][0]["scope"]["name"] == "voicenb"
    spans = _spans(path)
    roots = [s for s in spans if s["name"] == "voicenb.turn"]
    assert sorted(_attrs(s)["voicenb.turn"] for s in roots) == ["1", "2", "3"]  # 4 never ran
    for span in spans:
        assert len(span["traceId"]) == 32 and int(span["traceId"], 16)
        assert len(span["spanId"]) == 16 and int(span["spanId"], 16)
        assert isinstance(span["kind"], int)  # enums as integers, as OTLP/JSON asks


@otel
def test_the_chat_span_follows_the_genai_conventions(history, tmp_path):
    chat = _turn(_spans(export(history, tmp_path / "t.otlp.json")), 1)["chat gpt-4o-mini"]
    attrs = _attrs(chat)
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "openai"
    assert attrs["gen_ai.request.model"] == "gpt-4o-mini"
    assert attrs["gen_ai.usage.input_tokens"] == "12"  # int64 is a string in OTLP/JSON
    assert attrs["gen_ai.usage.output_tokens"] == "21"
    assert attrs["gen_ai.conversation.id"] == "demo"
    assert attrs["gen_ai.response.time_to_first_chunk"] == 0.2
    assert chat["kind"] == 3  # CLIENT
    (event,) = chat["events"]
    assert event["name"] == "first chunk"
    assert int(event["timeUnixNano"]) - int(chat["startTimeUnixNano"]) == 200_000_000


@otel
def test_stage_spans_last_as_long_as_the_row_says_and_lie_inside_their_parent(history,
                                                                              tmp_path):
    spans = _spans(export(history, tmp_path / "t.otlp.json"))
    turn = _turn(spans, 1)
    assert set(turn) == {"voicenb.turn", "setup", "wait", "transcribe assemblyai", "upload",
                         "transcription", "chat gpt-4o-mini"}
    columns = {"voicenb.turn": "total_s", "setup": "setup_s", "wait": "wait_s",
               "transcribe assemblyai": "stt_s", "upload": "upload_s",
               "transcription": "transcribe_s", "chat gpt-4o-mini": "llm_s"}
    for name, column in columns.items():
        assert abs(_ns(turn[name]) - round(OK[column] * 1e9)) <= 1, name
    root = turn["voicenb.turn"]
    assert int(root["startTimeUnixNano"]) == round(STARTED * 1000) * 1_000_000
    by_id = {s["spanId"]: s for s in spans}
    for span in spans:
        if span.get("parentSpanId"):
            parent = by_id[span["parentSpanId"]]
            assert int(parent["startTimeUnixNano"]) <= int(span["startTimeUnixNano"])
            assert int(span["endTimeUnixNano"]) <= int(parent["endTimeUnixNano"])
    order = ["setup", "wait", "transcribe assemblyai", "chat gpt-4o-mini"]
    starts = [int(turn[name]["startTimeUnixNano"]) for name in order]
    assert starts == sorted(starts)


@otel
def test_a_typed_turn_has_no_speech_span(history, tmp_path):
    turn = _turn(_spans(export(history, tmp_path / "t.otlp.json")), 3)
    assert set(turn) == {"voicenb.turn", "chat gpt-4o-mini"}


@otel
def test_a_failed_turn_is_an_error_span_with_its_message(history, tmp_path):
    spans = _spans(export(history, tmp_path / "t.otlp.json"))
    root = _turn(spans, 2)["voicenb.turn"]
    assert root["status"] == {"code": 2, "message": "OpenAI answered 429: rate limited"}
    assert _attrs(root)["voicenb.status"] == "error"
    assert _turn(spans, 1)["voicenb.turn"]["status"] == {}  # unset for a turn that went well


@otel
def test_reexporting_gives_the_same_ids_and_the_same_file(history, tmp_path):
    first = export(history, tmp_path / "a.otlp.json")
    second = export(history.iloc[::-1], tmp_path / "b.otlp.json")
    ids = {(s["name"], s["traceId"], s["spanId"]) for s in _spans(first)}
    assert ids == {(s["name"], s["traceId"], s["spanId"]) for s in _spans(second)}
    assert first.read_bytes() == export(history, tmp_path / "c.otlp.json").read_bytes()
    assert len({s["traceId"] for s in _spans(first)}) == 3  # one trace per turn


@otel
def test_prompt_and_answer_stay_out_unless_content_is_asked_for(history, tmp_path):
    plain = export(history, tmp_path / "plain.otlp.json").read_text(encoding="utf-8")
    assert "What is the capital?" not in plain and "Paris." not in plain
    path = export(history, tmp_path / "content.otlp.json", content=True)
    chat = _attrs(_turn(_spans(path), 1)["chat gpt-4o-mini"])
    assert json.loads(chat["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": "What is the capital?"}]}]
    assert json.loads(chat["gen_ai.output.messages"]) == [
        {"role": "assistant", "parts": [{"type": "text", "content": "Paris."}]}]


@otel
def test_experiment_columns_ride_on_the_turn_span(history, tmp_path):
    df = history.assign(experiment="prompt-v2", wer=0.125)
    root = _turn(_spans(export(df, tmp_path / "t.otlp.json")), 1)["voicenb.turn"]
    assert _attrs(root)["voicenb.experiment"] == "prompt-v2"
    assert _attrs(root)["voicenb.wer"] == 0.125


@otel
def test_a_simulated_session_exports_to_every_format(sim, samples, tmp_path):
    session = vnb.Session("sim", home=str(tmp_path / "home"))
    session.ask_audio(samples[0])
    session.ask_text("What is two and two?")
    df = session.history
    pd.testing.assert_frame_equal(pd.read_parquet(export(df, tmp_path / "s.parquet")), df)
    spans = _spans(export(df, tmp_path / "s.otlp.json"))
    chat = _turn(spans, 1)[f"chat {df['llm_model'][0]}"]
    assert _attrs(chat)["gen_ai.usage.output_tokens"] == str(df["completion_tokens"][0])
    root = _turn(spans, 1)["voicenb.turn"]
    assert abs(_ns(root) - round(df["total_s"][0] * 1e9)) <= 1


def test_without_opentelemetry_the_error_names_the_extra(tmp_path):
    script = textwrap.dedent("""
        import sys

        class Blocker:  # as if opentelemetry were not installed
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "opentelemetry":
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)

        sys.meta_path.insert(0, Blocker())
        import pandas as pd
        import voicenb as vnb
        from voicenb.export import export

        df = pd.DataFrame({"session": ["s"], "turn": [1],
                           "started_at": [pd.Timestamp.now(tz="UTC")]})
        try:
            export(df, "runs.otlp.json")
        except vnb.MissingDependencyError as exc:
            print(exc)
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120, check=False)
    assert "pip install 'voicenb[otel]'" in out.stdout, out.stderr
    assert "OpenTelemetry" in out.stdout
    assert not list(tmp_path.iterdir())  # no file, not even a temporary one
