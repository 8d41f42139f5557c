"""Write a history DataFrame out: Parquet or CSV for analysis elsewhere, OpenTelemetry traces
(OTLP/JSON) for the tools that show latency as spans.

=====================  =======================================================================
``runs.parquet``       every column with its dtype (nullable ints, strings, tz-aware times)
``runs.csv``           UTF-8, a header, ISO 8601 times, no index
``runs.otlp.json``     one trace per turn (needs ``pip install 'voicenb[otel]'``)
=====================  =======================================================================

A trace is rebuilt from a row: the history keeps when a turn started and how long each stage
took, so the stages are laid end to end from ``started_at`` (voicenb's own work, ``overhead_s``,
is the gap at the end of the turn)::

    voicenb.turn                        total_s; status ERROR for error/interrupted turns
     ├── setup                          setup_s (when > 0)
     ├── wait                           wait_s (when > 0)
     ├── transcribe {stt_backend}       stt_s
     │    ├── upload                    upload_s (when > 0)
     │    └── transcription             transcribe_s (when > 0)
     └── chat {llm_model}               llm_s, GenAI attributes, event "first chunk"

Ids derive from the session, turn number and start time, so exporting a history again gives
the same trace and span ids and a tracing backend de-duplicates instead of doubling.
"""

from __future__ import annotations

import base64
import hashlib
import json
import numbers
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd

from ._errors import ConfigError, MissingDependencyError

FORMATS = ("parquet", "csv", "otlp")
_SUFFIXES = {".parquet": "parquet", ".csv": "csv", ".otlp.json": "otlp"}

# The GenAI semantic conventions' client inference span, "Semantic conventions for generative
# AI client inference" (development status): https://github.com/open-telemetry/
# semantic-conventions-genai/blob/main/docs/gen-ai/client-inference.md. It names the span
# "{gen_ai.operation.name} {gen_ai.request.model}", requires gen_ai.operation.name and
# gen_ai.provider.name, and recommends this attribute (seconds from the request to the first
# chunk of a streamed answer). Spelled out rather than imported: the constants in
# opentelemetry-semantic-conventions are marked as moved to that repository.
_TTFC = "gen_ai.response.time_to_first_chunk"
_PROVIDER = "openai"
#: extra columns (added by experiments) carried on the turn's span when a DataFrame has them
_EXTRA = ("experiment", "variant", "wer", "cost_usd", "simulated")


def export(df: pd.DataFrame, path: str | os.PathLike[str], *, format: str | None = None,
           content: bool = False) -> Path:
    """Write ``df`` (``session.history``, ``vnb.load_history()``, or a subset or extension
    of it) to ``path``; return the path.

    ``format`` is ``"parquet"``, ``"csv"`` or ``"otlp"``; by default the suffix decides
    (``.parquet``, ``.csv``, ``.otlp.json``). Parquet and CSV keep every column. ``"otlp"``
    writes one OpenTelemetry trace per started turn as OTLP/JSON (one line, which the
    Collector's ``otlpjsonfile`` receiver reads); it needs ``pip install 'voicenb[otel]'``.
    The prompt and answer texts stay out of traces unless ``content=True``, as the GenAI
    conventions ask (they may hold personal data). The file appears whole or not at all.

    >>> vnb.export(df, "runs.parquet")                       # doctest: +SKIP
    >>> vnb.export(df, "traces/runs.otlp.json")              # doctest: +SKIP
    """
    if not isinstance(df, pd.DataFrame):
        raise ConfigError(f"export() takes a DataFrame (session.history or "
                          f"vnb.load_history()), not {type(df).__name__}.")
    path = Path(path).expanduser()
    kind = _format(path, format)
    if kind == "parquet":
        _atomic(path, lambda tmp: _write_parquet(df, tmp))
    elif kind == "csv":
        _atomic(path, lambda tmp: _csv_frame(df).to_csv(tmp, index=False, encoding="utf-8"))
    else:
        # Build the whole document first: a missing extra or a bad frame touches no file.
        text = json.dumps(_otlp_json(df, content=content), ensure_ascii=False,
                          separators=(",", ":")) + "\n"
        _atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return path


def _format(path: Path, format: str | None) -> str:
    if format is not None:
        if format not in FORMATS:
            raise ConfigError(f"Unknown export format {format!r}; choose one of "
                              f"{', '.join(FORMATS)}.")
        return format
    name = path.name.lower()
    for suffix, kind in _SUFFIXES.items():
        if name.endswith(suffix):
            return kind
    hint = (" For OpenTelemetry traces name it .otlp.json or pass format='otlp'."
            if name.endswith(".json") else "")
    raise ConfigError(f"Cannot tell the export format of {path.name!r} from its suffix; use "
                      f"{', '.join(_SUFFIXES)} or pass format= (one of "
                      f"{', '.join(FORMATS)}).{hint}")


def _atomic(path: Path, write: Callable[[Path], Any]) -> None:
    """Write to a temporary file next to ``path``, then rename it over ``path``: a crash
    leaves the old file (or none), never half of one."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"Cannot create the folder {str(path.parent)!r}: "
                          f"{exc.strerror or exc}. Choose another path.") from exc
    # Not mkstemp: its 0600 mode would stick to the result; a fresh name keeps the umask's.
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.part")
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:  # no permission, disk full, a folder by that name...
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"Cannot write {str(path)!r}: {exc.strerror or exc}. Choose "
                          "another path.") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_parquet(df: pd.DataFrame, tmp: Path) -> None:
    try:
        import pyarrow as pa
    except ImportError:
        raise ConfigError("Writing Parquet needs pyarrow, a voicenb dependency missing from "
                          "this environment: pip install -U voicenb (or pip install pyarrow)."
                          ) from None
    try:
        df.to_parquet(tmp, engine="pyarrow")
    except (pa.ArrowException, ValueError) as exc:
        raise ConfigError(f"This DataFrame cannot be written as Parquet ({exc}). Name "
                          "its columns with strings and give each column one type "
                          "(df[col].astype(...)), or export it as .csv.") from exc


def _csv_frame(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with its times as ISO 8601 text (``2026-11-23T18:21:17.901000+00:00``), which
    spreadsheets and ``pd.read_csv(..., parse_dates=...)`` read back unambiguously."""
    out = df.copy()
    for name in out.columns:
        if pd.api.types.is_datetime64_any_dtype(out[name]):
            out[name] = out[name].map(lambda t: None if pd.isna(t) else t.isoformat())
    return out


# -- OpenTelemetry ----------------------------------------------------------------------------

def _otlp_json(df: pd.DataFrame, *, content: bool = False) -> dict[str, Any]:
    """The turns of ``df`` as an OTLP/JSON ``ExportTraceServiceRequest``."""
    missing = [c for c in ("session", "turn", "started_at") if c not in df.columns]
    if missing:
        raise ConfigError(f"Exporting traces needs the history columns {missing}; pass "
                          "session.history or vnb.load_history() (or a subset that keeps "
                          "them).")
    otel = _otel()
    request = otel.encode_spans(_spans(otel, df, content))
    return _hex_ids(otel.json_format.MessageToDict(request, use_integers_for_enums=True))


def _otel() -> SimpleNamespace:
    """The OpenTelemetry pieces, or the error that names the extra."""
    try:
        from google.protobuf import json_format
        from opentelemetry import trace
        from opentelemetry.context import Context
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter,
        )
        from opentelemetry.sdk.trace.id_generator import IdGenerator
        from opentelemetry.sdk.trace.sampling import ALWAYS_ON
        from opentelemetry.trace import SpanKind, Status, StatusCode
    except ImportError as exc:
        package = ("opentelemetry-exporter-otlp-proto-common"
                   if "exporter" in (exc.name or "") else "opentelemetry-sdk")
        raise MissingDependencyError(package, "otel", "Exporting turns as OpenTelemetry "
                                     "traces (format='otlp')") from None
    return SimpleNamespace(
        json_format=json_format, trace=trace, Context=Context, encode_spans=encode_spans,
        Resource=Resource, TracerProvider=TracerProvider, ALWAYS_ON=ALWAYS_ON,
        SimpleSpanProcessor=SimpleSpanProcessor, InMemorySpanExporter=InMemorySpanExporter,
        IdGenerator=IdGenerator, SpanKind=SpanKind, Status=Status, StatusCode=StatusCode)


def _spans(otel: SimpleNamespace, df: pd.DataFrame, content: bool) -> list[Any]:
    """Make each started turn's spans with the SDK (explicit times, ids from the row) and
    collect them as the SDK's ReadableSpans."""
    from . import __version__

    ids = _turn_ids(otel.IdGenerator)
    collected = otel.InMemorySpanExporter()
    # An explicit sampler and no exit hook: OTEL_TRACES_SAMPLER must not drop turns, and an
    # export should not leave a provider behind for interpreter shutdown.
    resource = otel.Resource.create({"service.name": "voicenb", "service.version": __version__})
    # The SDK gives each provider a random service.instance.id; this process only writes
    # the file (the turns ran elsewhere, earlier), and the same history gives the same file.
    resource = otel.Resource({k: v for k, v in resource.attributes.items()
                              if k != "service.instance.id"}, resource.schema_url)
    provider = otel.TracerProvider(resource=resource, sampler=otel.ALWAYS_ON, id_generator=ids,
                                   shutdown_on_exit=False)
    provider.add_span_processor(otel.SimpleSpanProcessor(collected))
    tracer = provider.get_tracer("voicenb", __version__)
    try:
        for row in df.to_dict("records"):
            start = _start_ns(row.get("started_at"))
            if start is None:
                continue  # never started: nothing to place in time
            ids.seed(f"{row['session']}\0{int(row['turn'])}\0{start}")
            _turn_spans(otel, tracer, row, start, content)
        return list(collected.get_finished_spans())
    finally:
        provider.shutdown()


def _turn_ids(base: type) -> Any:
    class TurnIds(base):  # type: ignore[misc, valid-type]
        """Ids hashed from the turn, so that re-exporting a history gives the same ids."""

        def seed(self, key: str) -> None:
            self.key, self.count = key, 0

        def _hash(self, size: int) -> int:
            self.count += 1
            digest = hashlib.sha256(f"{self.key}\0{self.count}".encode()).digest()
            return int.from_bytes(digest[:size], "big") or 1  # 0 is the invalid id

        def generate_trace_id(self) -> int:
            return self._hash(16)

        def generate_span_id(self) -> int:
            return self._hash(8)

    return TurnIds()


def _turn_spans(otel: SimpleNamespace, tracer: Any, row: dict[str, Any], start: int,
                content: bool) -> None:
    """One turn: the root span, its stages inside it, ERROR status for a failed turn."""
    total = _seconds(row, "total_s")
    limit = None if total is None else start + _ns(total)
    # An empty Context: a turn is never the child of whatever span the caller has open.
    root = tracer.start_span("voicenb.turn", context=otel.Context(), start_time=start,
                             attributes=_attributes(_root_attributes(row)))
    end = _stages(otel, tracer, row, otel.trace.set_span_in_context(root), start, limit,
                  content)
    if row.get("status") in ("error", "interrupted"):
        root.set_status(otel.Status(otel.StatusCode.ERROR,
                                    _text(row, "error") or str(row["status"])))
        root.set_attribute("error.type", "interrupted" if row["status"] == "interrupted"
                           else "_OTHER")
    root.end(end_time=end if limit is None else limit)


def _stages(otel: SimpleNamespace, tracer: Any, row: dict[str, Any], parent: Any,
            cursor: int, limit: int | None, content: bool) -> int:
    """The top-level stages end to end from ``cursor``; returns where the last one ends."""
    for name, column in (("setup", "setup_s"), ("wait", "wait_s")):
        seconds = _seconds(row, column)
        if seconds:  # a stage that took no time (no set-up, no wait) gets no span
            cursor = _span(tracer, name, parent, cursor, _end(cursor, seconds, limit))
    stt = _seconds(row, "stt_s")
    if stt is not None:
        cursor = _stt_span(otel, tracer, row, parent, cursor, _end(cursor, stt, limit),
                           content)
    llm = _seconds(row, "llm_s")
    if llm is not None:
        cursor = _chat_span(otel, tracer, row, parent, cursor, _end(cursor, llm, limit),
                            content)
    return cursor


def _end(start: int, seconds: float | None, limit: int | None) -> int:
    """Where a stage of ``seconds`` from ``start`` ends: its length rounded to whole
    nanoseconds, cut at its parent's end (by the rounding's nanosecond, or a row whose
    parts add up to more than their whole)."""
    end = start + _ns(seconds or 0.0)
    return end if limit is None else max(start, min(end, limit))


def _span(tracer: Any, name: str, parent: Any, start: int, end: int) -> int:
    tracer.start_span(name, context=parent, start_time=start).end(end_time=end)
    return end


def _stt_span(otel: SimpleNamespace, tracer: Any, row: dict[str, Any], parent: Any,
              start: int, end: int, content: bool) -> int:
    """Speech to text, with the upload and the transcription inside it."""
    backend = _text(row, "stt_backend") or "speech"
    # CLIENT for a call to a speech service, INTERNAL for a model run in this process
    kind = otel.SpanKind.CLIENT if backend.startswith("assemblyai") else otel.SpanKind.INTERNAL
    names = ["stt_backend", "speech_model", "transcript_id", "confidence", "polls"]
    if content:  # what was heard, and what was really said, are content like the prompt
        names += ["transcript", "reference"]
    attributes = {f"voicenb.{n}": row.get(n) for n in names}
    span = tracer.start_span(f"transcribe {backend}", context=parent, kind=kind,
                             start_time=start, attributes=_attributes(attributes))
    inner, cursor = otel.trace.set_span_in_context(span), start
    for name, column in (("upload", "upload_s"), ("transcription", "transcribe_s")):
        seconds = _seconds(row, column)
        if seconds:
            cursor = _span(tracer, name, inner, cursor, _end(cursor, seconds, end))
    span.end(end_time=end)
    return end


def _chat_span(otel: SimpleNamespace, tracer: Any, row: dict[str, Any], parent: Any,
               start: int, end: int, content: bool) -> int:
    """The LLM call as a GenAI client inference span."""
    model = _text(row, "llm_model")
    ttft = _seconds(row, "ttft_s")
    attributes = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": _PROVIDER,
        # gen_ai.system is the deprecated name of gen_ai.provider.name; backends built on
        # older conventions still group GenAI spans by it.
        "gen_ai.system": _PROVIDER,
        "gen_ai.request.model": model,
        "gen_ai.conversation.id": str(row["session"]),
        "gen_ai.usage.input_tokens": row.get("prompt_tokens"),
        "gen_ai.usage.output_tokens": row.get("completion_tokens"),
        _TTFC: ttft,
    }
    if content:
        attributes.update(_messages(row))
    span = tracer.start_span(f"chat {model}" if model else "chat", context=parent,
                             kind=otel.SpanKind.CLIENT, start_time=start,
                             attributes=_attributes(attributes))
    if ttft is not None:
        span.add_event("first chunk", {_TTFC: ttft}, timestamp=_end(start, ttft, end))
    span.end(end_time=end)
    return end


def _messages(row: dict[str, Any]) -> dict[str, str]:
    """The opt-in content attributes, as JSON strings (the SDK's attributes cannot nest).
    Only the turn's own prompt is known: the system prompt and earlier turns the model also
    saw are not in the row."""
    out = {}
    for key, column, role in (("gen_ai.input.messages", "prompt", "user"),
                              ("gen_ai.output.messages", "answer", "assistant")):
        text = _text(row, column)
        if text is not None:
            out[key] = json.dumps([{"role": role, "parts": [{"type": "text",
                                                              "content": text}]}],
                                  ensure_ascii=False)
    return out


def _root_attributes(row: dict[str, Any]) -> dict[str, Any]:
    attributes = {f"voicenb.{name}": row.get(name) for name in (
        "session", "turn", "status", "audio_s", "speech_model", "overhead_s", *_EXTRA)}
    attributes["gen_ai.conversation.id"] = str(row["session"])
    return attributes


def _attributes(values: dict[str, Any]) -> dict[str, Any]:
    """Plain Python values, without the missing ones (OTel attributes cannot be null)."""
    out = {}
    for key, value in values.items():
        if value is None or (not isinstance(value, (list, tuple)) and pd.isna(value)):
            continue
        out[key] = value.item() if hasattr(value, "item") else value  # numpy -> Python
    return out


def _seconds(row: dict[str, Any], column: str) -> float | None:
    value = row.get(column)
    return None if value is None or pd.isna(value) else max(0.0, float(value))


def _text(row: dict[str, Any], column: str) -> str | None:
    value = row.get(column)
    return None if value is None or pd.isna(value) else str(value)


def _ns(seconds: float) -> int:
    """Seconds -> whole nanoseconds; a span's length is its column rounded this way."""
    return round(seconds * 1e9)


def _start_ns(value: Any) -> int | None:
    if value is None or pd.isna(value):
        return None
    if isinstance(value, numbers.Real):  # epoch seconds, as history.sqlite stores them
        return _ns(float(value))
    stamp = pd.Timestamp(value)
    return (stamp if stamp.tzinfo else stamp.tz_localize("UTC")).value


def _hex_ids(doc: dict[str, Any]) -> dict[str, Any]:
    """OTLP/JSON writes trace and span ids as hex, not protobuf JSON's base64
    (https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding)."""
    for resource in doc.get("resourceSpans", []):
        for scope in resource.get("scopeSpans", []):
            for span in scope.get("spans", []):
                for item in (span, *span.get("links", [])):
                    for key in ("traceId", "spanId", "parentSpanId"):
                        if item.get(key):
                            item[key] = base64.b64decode(item[key]).hex()
    return doc
