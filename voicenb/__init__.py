"""voicenb: talk to an LLM from a Jupyter notebook, and study the conversation as data.

>>> import voicenb as vnb
>>> with vnb.sim.running():                                      # doctest: +SKIP
...     print(vnb.transcribe(vnb.sim.samples()[0]).text)
What is the capital of France?
"""

from __future__ import annotations

from . import sim
from ._config import Settings
from ._errors import (
    AudioError,
    AuthenticationError,
    ConfigError,
    MissingDependencyError,
    ModelNotFoundError,
    RateLimitError,
    ServiceError,
    ServiceTimeoutError,
    TranscriptionError,
    VoicenbError,
)
from .audio import Audio
from ._show import show
from .experiment import Experiment
from .export import export
from .history import HistoryStore, load_history, play, plot_latency, summary
from .llm import Answer, Chat, ask
from .session import Session, Turn
from .stt import AssemblyAI, Transcript, transcribe, transcribe_many
from .stt.streaming import RealtimeTranscriber
from .tts import speak

__version__ = "0.1.0"

__all__ = [
    "transcribe",
    "transcribe_many",
    "Transcript",
    "ask",
    "Chat",
    "Answer",
    "speak",
    "Session",
    "Turn",
    "HistoryStore",
    "load_history",
    "summary",
    "plot_latency",
    "play",
    "show",
    "Experiment",
    "export",
    "Audio",
    "AssemblyAI",
    "RealtimeTranscriber",
    "Settings",
    "sim",
    "VoicenbError",
    "ConfigError",
    "MissingDependencyError",
    "AudioError",
    "ServiceError",
    "AuthenticationError",
    "RateLimitError",
    "ServiceTimeoutError",
    "ModelNotFoundError",
    "TranscriptionError",
]
