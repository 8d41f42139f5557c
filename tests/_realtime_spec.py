"""What OpenAI's OpenAPI spec (openai/openai-openapi, ``openapi.json``, 2026-08-21) says of the
Realtime API's events, encoded as the facts these tests check: per event type its required
fields, their types and enums, and the shapes of the objects inside (the GA session, a
response with its usage, a conversation item, an error). Nothing is read from the vendor at
test time.

A schema here is a dict ``field -> rule``; a field whose name ends in ``*`` is required. A
rule is a type (or tuple of types), ``Enum(...)``, ``Nullable(rule)``, a nested schema, or
``List(rule)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Enum:
    values: tuple[Any, ...]


@dataclass(frozen=True)
class Nullable:
    rule: Any


@dataclass(frozen=True)
class List:
    rule: Any


@dataclass(frozen=True)
class AnyOf:
    rules: tuple[Any, ...]


NUMBER = (int, float)
#: RealtimeAudioFormats: audio/pcm (rate 24000 only), audio/pcmu, audio/pcma
AUDIO_FORMAT = AnyOf(({"type*": Enum(("audio/pcm",)), "rate": Enum((24000,))},
                      {"type*": Enum(("audio/pcmu",))}, {"type*": Enum(("audio/pcma",))}))
#: VoiceIdsShared: any string, these named; the GA session's default is "alloy"
VOICES = ("alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin",
          "cedar")
DEFAULT_VOICE = "alloy"
#: AudioTranscription.model's enum
TRANSCRIBE_MODELS = ("whisper-1", "gpt-transcribe", "gpt-live-transcribe",
                     "gpt-4o-mini-transcribe", "gpt-4o-mini-transcribe-2025-12-15",
                     "gpt-4o-transcribe", "gpt-4o-transcribe-diarize", "gpt-realtime-whisper")
SERVER_VAD = {"type*": Enum(("server_vad",)), "threshold": NUMBER,
              "prefix_padding_ms": int, "silence_duration_ms": int,
              "create_response": bool, "interrupt_response": bool,
              "idle_timeout_ms": Nullable(int)}
SEMANTIC_VAD = {"type*": Enum(("semantic_vad",)),
                "eagerness": Enum(("low", "medium", "high", "auto")),
                "create_response": bool, "interrupt_response": bool}
TURN_DETECTION = Nullable(AnyOf((SERVER_VAD, SEMANTIC_VAD)))
TRANSCRIPTION = {"model": str, "language": str, "prompt": str}
SESSION_AUDIO = {
    "input": {"format": AUDIO_FORMAT, "transcription": TRANSCRIPTION,
              "noise_reduction": Nullable({"type": Enum(("near_field", "far_field"))}),
              "turn_detection": TURN_DETECTION},
    "output": {"format": AUDIO_FORMAT, "voice": str, "speed": NUMBER}}
#: RealtimeSessionCreateRequestGA (what session.update carries): only ``type`` required
SESSION_REQUEST = {"type*": Enum(("realtime",)), "output_modalities": List(
    Enum(("text", "audio"))), "model": str, "instructions": str, "audio": SESSION_AUDIO,
    "tools": List(dict), "tool_choice": (str, dict), "max_output_tokens": (int, str)}
#: RealtimeSessionCreateResponseGA (session.created / session.updated)
SESSION = {**SESSION_REQUEST, "id*": str, "object*": Enum(("realtime.session",)),
           "expires_at": int, "tracing": Nullable((str, dict)), "prompt": Nullable(dict),
           "include": Nullable(List(str))}
#: RealtimeConversationItem (the message kinds voicenb meets)
CONTENT = {"type": Enum(("input_text", "input_audio", "input_image", "output_text",
                         "output_audio", "text", "audio")),
           "text": str, "audio": str, "transcript": Nullable(str)}
ITEM = {"id": str, "object": Enum(("realtime.item",)), "type*": Enum(("message",)),
        "status": Enum(("completed", "incomplete", "in_progress")),
        "role*": Enum(("user", "assistant", "system")), "content*": List(CONTENT)}
USAGE = {"total_tokens": int, "input_tokens": int, "output_tokens": int,
         "input_token_details": {"cached_tokens": int, "text_tokens": int,
                                 "image_tokens": int, "audio_tokens": int,
                                 "cached_tokens_details": {"text_tokens": int,
                                                           "image_tokens": int,
                                                           "audio_tokens": int}},
         "output_token_details": {"text_tokens": int, "audio_tokens": int}}
#: RealtimeResponse
RESPONSE = {"id": str, "object": Enum(("realtime.response",)),
            "status": Enum(("completed", "cancelled", "failed", "incomplete", "in_progress")),
            "status_details": Nullable({
                "type": Enum(("completed", "cancelled", "failed", "incomplete")),
                "reason": Enum(("turn_detected", "client_cancelled", "max_output_tokens",
                                "content_filter")),
                "error": {"type": str, "code": str}}),
            "output": List(ITEM), "metadata": Nullable(dict),
            "audio": {"output": {"format": AUDIO_FORMAT, "voice": str}},
            "usage": Nullable(USAGE), "conversation_id": str,
            "output_modalities": List(Enum(("text", "audio"))),
            "max_output_tokens": (int, str)}
PART = {"type": Enum(("audio", "text")), "text": str, "audio": str, "transcript": str}
#: TranscriptTextUsageTokens | TranscriptTextUsageDuration
TRANSCRIPT_USAGE = AnyOf((
    {"type*": Enum(("tokens",)), "input_tokens*": int, "output_tokens*": int,
     "total_tokens*": int, "input_token_details": {"text_tokens": int, "audio_tokens": int}},
    {"type*": Enum(("duration",)), "seconds*": NUMBER}))
ERROR = {"type*": str, "code": Nullable(str), "message*": str, "param": Nullable(str),
         "event_id": Nullable(str)}
_AT = {"response_id*": str, "item_id*": str, "output_index*": int, "content_index*": int}

#: RealtimeServerEvent*: every server event has ``event_id`` and ``type`` (required)
SERVER_EVENTS: dict[str, dict[str, Any]] = {
    "error": {"error*": ERROR},
    "session.created": {"session*": SESSION},
    "session.updated": {"session*": SESSION},
    "conversation.created": {"conversation*": {"id": str, "object": str}},
    "conversation.item.added": {"previous_item_id": Nullable(str), "item*": ITEM},
    "conversation.item.created": {"previous_item_id": Nullable(str), "item*": ITEM},
    "conversation.item.done": {"previous_item_id": Nullable(str), "item*": ITEM},
    "conversation.item.retrieved": {"item*": ITEM},
    "conversation.item.deleted": {"item_id*": str},
    "conversation.item.truncated": {"item_id*": str, "content_index*": int,
                                    "audio_end_ms*": int},
    "conversation.item.input_audio_transcription.delta": {
        "item_id*": str, "content_index": int, "delta": str},
    "conversation.item.input_audio_transcription.completed": {
        "item_id*": str, "content_index*": int, "transcript*": str,
        "usage*": TRANSCRIPT_USAGE},
    "conversation.item.input_audio_transcription.failed": {
        "item_id*": str, "content_index*": int, "error*": dict},
    "input_audio_buffer.committed": {"previous_item_id": Nullable(str), "item_id*": str},
    "input_audio_buffer.cleared": {},
    "input_audio_buffer.speech_started": {"audio_start_ms*": int, "item_id*": str},
    "input_audio_buffer.speech_stopped": {"audio_end_ms*": int, "item_id*": str},
    "rate_limits.updated": {"rate_limits*": List({
        "name": Enum(("requests", "tokens")), "limit": int, "remaining": int,
        "reset_seconds": NUMBER})},
    "response.created": {"response*": RESPONSE},
    "response.done": {"response*": RESPONSE},
    "response.output_item.added": {"response_id*": str, "output_index*": int, "item*": ITEM},
    "response.output_item.done": {"response_id*": str, "output_index*": int, "item*": ITEM},
    "response.content_part.added": {**_AT, "part*": PART},
    "response.content_part.done": {**_AT, "part*": PART},
    "response.output_audio.delta": {**_AT, "delta*": str},
    "response.output_audio.done": _AT,
    "response.output_audio_transcript.delta": {**_AT, "delta*": str},
    "response.output_audio_transcript.done": {**_AT, "transcript*": str},
    "response.output_text.delta": {**_AT, "delta*": str},
    "response.output_text.done": {**_AT, "text*": str},
}
#: RealtimeClientEvent*: ``type`` required, ``event_id`` optional
CLIENT_EVENTS: dict[str, dict[str, Any]] = {
    "session.update": {"session*": SESSION_REQUEST},
    "input_audio_buffer.append": {"audio*": str},
    "input_audio_buffer.commit": {},
    "input_audio_buffer.clear": {},
    "output_audio_buffer.clear": {},
    "conversation.item.create": {"previous_item_id": str, "item*": ITEM},
    "conversation.item.retrieve": {"item_id*": str},
    "conversation.item.truncate": {"item_id*": str, "content_index*": int,
                                   "audio_end_ms*": int},
    "conversation.item.delete": {"item_id*": str},
    "response.create": {"response": dict},
    "response.cancel": {"response_id": str},
}


def _check(value: Any, rule: Any, where: str) -> list[str]:
    if isinstance(rule, Nullable):
        return [] if value is None else _check(value, rule.rule, where)
    if value is None:
        return [f"{where}: null where the spec has no null"]
    if isinstance(rule, AnyOf):
        tries = [_check(value, r, where) for r in rule.rules]
        return [] if any(not t for t in tries) else min(tries, key=len)
    if isinstance(rule, Enum):
        return [] if value in rule.values else [f"{where}: {value!r} not in {rule.values}"]
    if isinstance(rule, List):
        if not isinstance(value, list):
            return [f"{where}: expected an array, got {type(value).__name__}"]
        return [p for i, v in enumerate(value) for p in _check(v, rule.rule, f"{where}[{i}]")]
    if isinstance(rule, dict):
        if not isinstance(value, dict):
            return [f"{where}: expected an object, got {type(value).__name__}"]
        problems = []
        for key, sub in rule.items():
            name = key.rstrip("*")
            if name not in value:
                if key.endswith("*"):
                    problems.append(f"{where}.{name}: required, missing")
                continue
            problems += _check(value[name], sub, f"{where}.{name}")
        return problems
    types = rule if isinstance(rule, tuple) else (rule,)
    if isinstance(value, bool) and bool not in types:
        return [f"{where}: expected {rule}, got a boolean"]
    if float in types and isinstance(value, int):
        return []
    return [] if isinstance(value, types) else [
        f"{where}: expected {rule}, got {type(value).__name__}"]


def problems(event: Any, *, server: bool) -> list[str]:
    """Why ``event`` does not validate as a server (or client) event; [] when it does."""
    if not isinstance(event, dict):
        return ["not a JSON object"]
    table = SERVER_EVENTS if server else CLIENT_EVENTS
    kind = event.get("type")
    if kind not in table:
        return [f"unknown {'server' if server else 'client'} event type {kind!r}"]
    head: dict[str, Any] = {"type*": Enum((kind,)),
                            ("event_id*" if server else "event_id"): str}
    return _check(event, {**head, **table[kind]}, kind)
