"""AssemblyAI's Voice Agent API (``wss://agents.assemblyai.com/v1/ws``), as its published docs
describe each event: the fields every event must carry, those it may carry, their types and
their allowed values. Written from the docs (the events reference, the WebSocket API reference
and the message-sequence page, read 2026-12-05), not copied from them.

Sources: https://www.assemblyai.com/docs/voice-agents/voice-agent-api/events-reference,
https://www.assemblyai.com/docs/api-reference/voice-agent-api/voice-agent-web-socket,
https://www.assemblyai.com/docs/voice-agents/voice-agent-api/message-sequence.

Where the docs say nothing, this says so: ``session.ended`` shows no field but ``type``;
``reply.done``'s ``status`` is documented as ``completed`` or ``interrupted`` (and may be
absent); ``session.error`` codes are a string (the documented ones are listed in
:data:`ERROR_CODES`, the simulator's assumptions in :data:`ASSUMED_ERROR_CODES`).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

STR, BOOL, OBJ, LIST = str, bool, dict, list
NUM = (int, float)

#: every client event: required fields, optional fields (name -> type)
CLIENT: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "session.update": ({"session": OBJ}, {}),
    "session.resume": ({"session_id": STR}, {}),
    "input.audio": ({"audio": STR}, {}),
    "tool.result": ({"call_id": STR, "result": STR}, {}),
    "reply.create": ({}, {"instructions": STR}),
    "session.end": ({}, {}),
}

#: every server event
SERVER: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "session.ready": ({"session_id": STR}, {}),
    "session.updated": ({}, {}),
    "session.error": ({"code": STR, "message": STR}, {}),
    "session.ended": ({}, {}),
    "input.speech.started": ({}, {}),
    "input.speech.stopped": ({}, {}),
    "transcript.user.delta": ({"text": STR}, {}),
    "transcript.user": ({"text": STR, "item_id": STR}, {}),
    "reply.started": ({"reply_id": STR}, {}),
    "reply.audio": ({"data": STR}, {}),
    "transcript.agent": ({"text": STR, "reply_id": STR, "item_id": STR,
                          "interrupted": BOOL}, {}),
    "reply.done": ({}, {"status": STR}),
    "tool.call": ({"call_id": STR, "name": STR, "arguments": OBJ}, {}),
}

REPLY_DONE_STATUS = ("completed", "interrupted")
#: session.error codes the docs name (a malformed event, e.g. audio before session.ready; a
#: session.resume of an unknown or expired session; of another key's session)
ERROR_CODES = ("invalid_format", "session_not_found", "session_forbidden")
#: codes the simulator sends where the docs name none (an injected service failure)
ASSUMED_ERROR_CODES = ("internal_error",)

#: session.update's ``session`` object: every field optional
SESSION_FIELDS = {"system_prompt": STR, "greeting": STR, "agent_id": STR, "input": OBJ,
                  "output": OBJ, "tools": LIST}
INPUT_FIELDS = {"format": OBJ, "turn_detection": OBJ, "keyterms": LIST}
OUTPUT_FIELDS = {"voice": STR, "format": OBJ, "volume": NUM}
FORMAT_FIELDS = {"encoding": STR, "sample_rate": int}
#: audio/pcm is PCM16 mono 24 kHz; the G.711 ones are 8 kHz (telephony)
ENCODINGS = ("audio/pcm", "audio/pcmu", "audio/pcma")
TURN_DETECTION_FIELDS = {"type": STR, "vad_threshold": NUM, "min_silence": int,
                         "max_silence": int, "interrupt_response": BOOL,
                         "interruption_delay": int}
TOOL_FIELDS = ({"type": STR, "name": STR}, {"description": STR, "parameters": OBJ})
SAMPLE_RATE = 24000


class SpecError(AssertionError):
    pass


def _typed(value: Any, kind: Any) -> bool:
    if kind is int or kind is NUM:
        return isinstance(value, kind) and not isinstance(value, bool)
    return isinstance(value, kind)


def _fields(where: str, data: dict[str, Any], required: dict[str, Any],
            optional: dict[str, Any]) -> None:
    for name, kind in required.items():
        if name not in data:
            raise SpecError(f"{where}: missing required field {name!r}")
    for name, value in data.items():
        kind = required.get(name, optional.get(name))
        if kind is None:
            raise SpecError(f"{where}: field {name!r} is not in the spec")
        if not _typed(value, kind):
            raise SpecError(f"{where}: {name!r} should be {kind}, not {type(value).__name__}")


def _base64(where: str, value: str) -> bytes:
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SpecError(f"{where}: not base64") from exc
    if len(raw) % 2:
        raise SpecError(f"{where}: PCM16 has an even number of bytes, not {len(raw)}")
    return raw


def _session(session: dict[str, Any]) -> None:
    _fields("session.update.session", session, {}, SESSION_FIELDS)
    side = {"input": INPUT_FIELDS, "output": OUTPUT_FIELDS}
    for part, fields in side.items():
        if part not in session:
            continue
        _fields(f"session.{part}", session[part], {}, fields)
        fmt = session[part].get("format")
        if fmt is not None:
            _fields(f"session.{part}.format", fmt, {}, FORMAT_FIELDS)
            if fmt.get("encoding", "audio/pcm") not in ENCODINGS:
                raise SpecError(f"session.{part}.format.encoding {fmt['encoding']!r}")
            if fmt.get("encoding", "audio/pcm") == "audio/pcm" and \
                    fmt.get("sample_rate", SAMPLE_RATE) != SAMPLE_RATE:
                raise SpecError("audio/pcm is 24000 Hz")
    turn = session.get("input", {}).get("turn_detection")
    if turn is not None:
        _fields("session.input.turn_detection", turn, {}, TURN_DETECTION_FIELDS)
        if "vad_threshold" in turn and not 0 <= turn["vad_threshold"] <= 1:
            raise SpecError("vad_threshold is 0 to 1")
    for tool in session.get("tools", []):
        _fields("session.tools[]", tool, *TOOL_FIELDS)


def check_client(event: dict[str, Any]) -> str:
    """Raise :class:`SpecError` unless ``event`` is a valid client event; its type."""
    kind = event.get("type")
    if kind not in CLIENT:
        raise SpecError(f"unknown client event {kind!r}")
    required, optional = CLIENT[kind]
    _fields(kind, {k: v for k, v in event.items() if k != "type"}, required, optional)
    if kind == "session.update":
        _session(event["session"])
    if kind == "input.audio":
        _base64(kind, event["audio"])
    return kind


def check_server(event: dict[str, Any]) -> str:
    """Raise :class:`SpecError` unless ``event`` is a valid server event; its type."""
    kind = event.get("type")
    if kind not in SERVER:
        raise SpecError(f"unknown server event {kind!r}")
    required, optional = SERVER[kind]
    _fields(kind, {k: v for k, v in event.items() if k != "type"}, required, optional)
    if kind == "reply.audio":
        _base64(kind, event["data"])
    if kind == "reply.done" and "status" in event and event["status"] not in \
            REPLY_DONE_STATUS:
        raise SpecError(f"reply.done status {event['status']!r}")
    if kind == "session.error" and event["code"] not in ERROR_CODES + ASSUMED_ERROR_CODES:
        raise SpecError(f"session.error code {event['code']!r}")
    return kind
