"""Configuration: one immutable :class:`Settings`, resolved explicit > settings > environment.

Environment names follow the vendors' SDKs (``ASSEMBLYAI_API_KEY``, ``OPENAI_BASE_URL``...);
a ``.env`` file in the working directory is read too, with the real environment winning.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from ._errors import ConfigError, remember_secret

# Named defaults, in one place.
DEFAULT_ASSEMBLYAI_BASE_URL = "https://api.assemblyai.com"
DEFAULT_ASSEMBLYAI_STREAMING_URL = "wss://streaming.assemblyai.com"
DEFAULT_ASSEMBLYAI_SYNC_URL = "https://sync.assemblyai.com"
#: AssemblyAI's text-to-speech host (US data zone; https://tts.eu.assemblyai.com keeps text in
#: the EU), the name the SDK gives it: settings.tts_base_url, ASSEMBLYAI_TTS_BASE_URL
DEFAULT_ASSEMBLYAI_TTS_URL = "https://tts.us.assemblyai.com"
#: AssemblyAI's Voice Agent API (its WebSocket is <this>/v1/ws)
DEFAULT_ASSEMBLYAI_AGENT_URL = "wss://agents.assemblyai.com"
#: OpenAI's speech-to-speech model for session.live(backend="openai-realtime")
DEFAULT_REALTIME_MODEL = "gpt-realtime-2"
#: Pre-recorded models in priority order (see the README: pinned so every account, new or
#: existing, runs the same model before and after AssemblyAI's 2026-12-08 default change, with
#: universal-2 for the languages assemblyai-stt-3-7 does not cover). "default" sends none.
DEFAULT_SPEECH_MODELS = "assemblyai-stt-3-7,universal-2"
#: The Sync API's model (the X-AAI-Model header), as the official SDK 1.8.2 routes it.
DEFAULT_SYNC_MODEL = "universal-3-5-pro"
#: AssemblyAI's recommended real-time model for voice agents.
DEFAULT_STREAMING_MODEL = "u3-rt-pro"
#: which AssemblyAI API a single clip takes: auto (Sync when it accepts the clip), sync, async
ASSEMBLYAI_APIS = ("auto", "sync", "async")
DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1"
#: chosen for a spoken conversation: see the README ("Why gpt-5.4-mini")
DEFAULT_MODEL = "gpt-5.4-mini"
DEFAULT_STT = "assemblyai"
DEFAULT_HOME = "voicenb-data"
DEFAULT_WHISPER_MODEL = "tiny.en"  # installs with the whisper, demo and dev extras
#: AssemblyAI when its key is set, else OpenAI while its speech models live and its key is set,
#: else espeak-ng
DEFAULT_TTS = "auto"

# field -> environment variable
_ENV = {
    "assemblyai_api_key": "ASSEMBLYAI_API_KEY",
    "assemblyai_base_url": "ASSEMBLYAI_BASE_URL",
    "assemblyai_streaming_url": "ASSEMBLYAI_STREAMING_URL",
    "assemblyai_sync_url": "ASSEMBLYAI_SYNC_URL",
    "assemblyai_tts_url": "ASSEMBLYAI_TTS_BASE_URL",
    "assemblyai_agent_url": "ASSEMBLYAI_AGENT_URL",
    "openai_api_key": "OPENAI_API_KEY",
    "openai_base_url": "OPENAI_BASE_URL",
    "model": "VOICENB_MODEL",
    "stt": "VOICENB_STT",
    "home": "VOICENB_HOME",
    "whisper_model": "VOICENB_WHISPER_MODEL",
    "tts": "VOICENB_TTS",
    "tts_voice": "VOICENB_TTS_VOICE",
    "tts_language": "VOICENB_TTS_LANGUAGE",
    "realtime_model": "VOICENB_REALTIME_MODEL",
    "live_voice": "VOICENB_LIVE_VOICE",
    "speech_models": "VOICENB_SPEECH_MODELS",
    "sync_model": "VOICENB_SYNC_MODEL",
    "streaming_model": "VOICENB_STREAMING_MODEL",
    "assemblyai_api": "VOICENB_ASSEMBLYAI_API",
    "prices": "VOICENB_PRICES",
    "history_url": "VOICENB_HISTORY_URL",
    "reasoning_effort": "VOICENB_REASONING_EFFORT",
}
_SECRET_FIELDS = ("assemblyai_api_key", "openai_api_key")

_dotenv_cache: dict[Path, tuple[float, dict[str, str]]] = {}


def _dotenv() -> dict[str, str]:
    """Values from ``./.env`` (re-read only when the file changes)."""
    path = Path.cwd() / ".env"
    try:
        mtime = path.stat().st_mtime
    except OSError:
        return {}
    cached = _dotenv_cache.get(path)
    if cached and cached[0] == mtime:
        return cached[1]
    from dotenv import dotenv_values

    values = {k: v for k, v in dotenv_values(path).items() if v is not None}
    _dotenv_cache[path] = (mtime, values)
    return values


def _from_environment(name: str) -> str | None:
    value = os.environ.get(name)
    if value is None:
        value = _dotenv().get(name)
    return value or None


@dataclass(frozen=True, repr=False)
class Settings:
    """Everything voicenb needs to reach its services.

    Any field left ``None`` falls back to its environment variable, then to the default::

        s = vnb.Settings(openai_base_url="http://127.0.0.1:11434/v1", model="llama3.2")
        vnb.ask("hi", settings=s)

    Settings are never changed in place: ``s.replace(model="gpt-4o")`` returns a new object.
    """

    assemblyai_api_key: str | None = None
    assemblyai_base_url: str | None = None
    assemblyai_streaming_url: str | None = None
    #: the Sync API's host; unset while ``assemblyai_base_url`` points elsewhere: no Sync API
    assemblyai_sync_url: str | None = None
    #: AssemblyAI's text-to-speech host; unset while ``assemblyai_base_url`` points elsewhere
    #: (a simulator, a proxy): then no text goes to AssemblyAI's own host
    assemblyai_tts_url: str | None = None
    #: AssemblyAI's Voice Agent API host (wss://); unset while ``assemblyai_base_url``
    #: points elsewhere, like the text-to-speech host
    assemblyai_agent_url: str | None = None
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    model: str | None = None
    stt: str | None = None
    home: str | os.PathLike[str] | None = None
    #: faster-whisper model: tiny.en (installs with voicenb), a size, a Hugging Face id, a folder
    whisper_model: str | None = None
    #: speech backend of vnb.speak and of answers read aloud: assemblyai, openai, espeak or
    #: auto (the default)
    tts: str | None = None
    #: the voice that reads answers (the backend's own names: aai-jane, alloy, en-us...) and
    #: the language it speaks (AssemblyAI: english, spanish, german, french, italian,
    #: portuguese); unset: the backend's default
    tts_voice: str | None = None
    tts_language: str | None = None
    #: OpenAI's Realtime model (live backend "openai-realtime"), and the voice of a
    #: speech-to-speech live backend (its service's names: marin, cedar, alloy... for OpenAI;
    #: ivy... for AssemblyAI's Voice Agent API); unset: the service's default
    realtime_model: str | None = None
    live_voice: str | None = None
    #: AssemblyAI pre-recorded models, comma-separated in priority order ("default": the
    #: account's default), the Sync API's model, and the streaming model
    speech_models: str | None = None
    sync_model: str | None = None
    streaming_model: str | None = None
    #: which API a single AssemblyAI clip takes: auto, sync or async (see ASSEMBLYAI_APIS)
    assemblyai_api: str | None = None
    #: price overrides for turn costs (see voicenb.pricing): a JSON or TOML file, or a dict
    #: shaped like the shipped table; unset: the prices that ship with voicenb
    prices: str | os.PathLike[str] | Mapping[str, Any] | None = None
    #: where the history is: a SQLite file, or postgresql://user:password@host/db for a
    #: server a team shares; unset: <home>/history.sqlite
    history_url: str | os.PathLike[str] | None = None
    #: reasoning_effort sent to OpenAI's reasoning models (GPT-5 family, o-series) that take
    #: it; unset: each model's default. Other models never get it.
    reasoning_effort: str | None = None
    #: seconds to connect, and to wait for each response
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    #: retries of 429, 5xx and connection errors, with exponential backoff and jitter
    max_retries: int = 5
    backoff: float = 0.5
    #: the longest voicenb waits when a service asks it (Retry-After) to come back later
    max_retry_after: float = 60.0
    #: seconds to wait for a transcript; None scales with the audio (300 s + its duration)
    poll_timeout: float | None = None

    def __post_init__(self) -> None:
        for name in _SECRET_FIELDS:
            remember_secret(getattr(self, name))
        if self.history_url is not None:
            password = urlsplit(os.fspath(self.history_url)).password
            for secret in (password, password and unquote(password)):
                remember_secret(secret)

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied; ``None`` values are ignored."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def resolved(self) -> Settings:
        """A copy with every unset field filled from the environment, then the defaults."""
        filled: dict[str, Any] = {}
        for name, env in _ENV.items():
            if getattr(self, name) is None:
                filled[name] = _from_environment(env)
        out = dataclasses.replace(self, **filled)
        if out.assemblyai_sync_url is None and (out.assemblyai_base_url is None or (
                out.assemblyai_base_url.rstrip("/") == DEFAULT_ASSEMBLYAI_BASE_URL)):
            # Audio only goes to the sync host when the REST host is AssemblyAI's own too.
            out = dataclasses.replace(out, assemblyai_sync_url=DEFAULT_ASSEMBLYAI_SYNC_URL)
        if out.assemblyai_tts_url is None and (out.assemblyai_base_url is None or (
                out.assemblyai_base_url.rstrip("/") == DEFAULT_ASSEMBLYAI_BASE_URL)):
            out = dataclasses.replace(out, assemblyai_tts_url=DEFAULT_ASSEMBLYAI_TTS_URL)
        if out.assemblyai_agent_url is None and (out.assemblyai_base_url is None or (
                out.assemblyai_base_url.rstrip("/") == DEFAULT_ASSEMBLYAI_BASE_URL)):
            out = dataclasses.replace(out, assemblyai_agent_url=DEFAULT_ASSEMBLYAI_AGENT_URL)
        defaults = {
            "assemblyai_base_url": DEFAULT_ASSEMBLYAI_BASE_URL,
            "assemblyai_streaming_url": DEFAULT_ASSEMBLYAI_STREAMING_URL,
            "openai_base_url": DEFAULT_OPENAI_BASE_URL,
            "model": DEFAULT_MODEL,
            "stt": DEFAULT_STT,
            "home": DEFAULT_HOME,
            "whisper_model": DEFAULT_WHISPER_MODEL,
            "tts": DEFAULT_TTS,
            "speech_models": DEFAULT_SPEECH_MODELS,
            "sync_model": DEFAULT_SYNC_MODEL,
            "streaming_model": DEFAULT_STREAMING_MODEL,
            "realtime_model": DEFAULT_REALTIME_MODEL,
            "assemblyai_api": "auto",
        }
        return out.replace(**{k: v for k, v in defaults.items() if getattr(out, k) is None})

    @property
    def speech_model_list(self) -> list[str] | None:
        """The pre-recorded models to send as ``speech_models`` (None: let the account
        decide)."""
        value = self.resolved().speech_models
        names = [m.strip() for m in value.split(",") if m.strip()]
        return None if names in ([], ["default"]) else names

    @property
    def home_path(self) -> Path:
        return Path(self.resolved().home).expanduser()

    def require(self, field: str) -> str:
        """The value of a key field, or a :class:`ConfigError` naming every way to set it."""
        value = getattr(self.resolved(), field)
        if value:
            return value
        env = _ENV[field]
        service = "AssemblyAI" if field.startswith("assemblyai") else "OpenAI"
        raise ConfigError(
            f"No {service} API key found. Set it in one of these ways:\n"
            f"  - the environment: export {env}=...\n"
            f"  - a .env file in the working directory with the line {env}=...\n"
            f"  - voicenb.Settings({field}=...) passed as settings=\n"
            f"  - the api_key= argument of the call\n"
            f"To try voicenb without keys, start the local simulators: "
            f"`with voicenb.sim.running():` or `python -m voicenb.sim`."
        )

    def __repr__(self) -> str:
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _SECRET_FIELDS and value is not None:
                shown = "'<set>'"
            elif f.name == "history_url" and value is not None:
                shown = repr(_masked_url(value))
            else:
                shown = repr(value)
            parts.append(f"{f.name}={shown}")
        return f"Settings({', '.join(parts)})"


def _masked_url(url: str | os.PathLike[str]) -> str:
    """A URL with its password replaced by ``***``."""
    text = os.fspath(url)
    parts = urlsplit(text)
    if not parts.password:
        return text
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{parts.username or ''}:***@{host}").geturl()


def resolve(settings: Settings | None = None, **explicit: Any) -> Settings:
    """Explicit arguments over ``settings`` over the environment, then defaults."""
    base = settings if settings is not None else Settings()
    return base.replace(**explicit).resolved()
